package iam_test

import (
	"testing"

	"github.com/dbproxy/dbproxy/controlplane/iam"
)

func mustParse(t *testing.T, doc string) *iam.Policy {
	t.Helper()
	p, err := iam.ParsePolicy(doc)
	if err != nil {
		t.Fatalf("ParsePolicy(%s): %v", doc, err)
	}
	return p
}

func TestEvaluate(t *testing.T) {
	const (
		connectApp = `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"dbproxy:Connect","Resource":"proxy/app/dbuser/*"}}`
		denyAdmin  = `{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"dbproxy:Connect","Resource":"proxy/*/dbuser/admin"}}`
		readOnly   = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["dbproxy:Get*","dbproxy:List*"],"Resource":"*"}]}`
		allButDel  = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","NotAction":"dbproxy:Delete*","Resource":"*"}]}`
		notSecrets = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"dbproxy:*","NotResource":["secret/*","policy/*"]}]}`
		denyNotGet = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","NotAction":"dbproxy:Get*","Resource":"proxy/prod"}]}`
		zoneOne    = `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"dbproxy:ReceiveConfig","Resource":"zone/?"}}`
		mixedCase  = `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"DBPROXY:getproxy","Resource":"proxy/App"}}`
		everything = `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}`
		denyAll    = `{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"*","Resource":"*"}}`
	)
	cases := []struct {
		name     string
		docs     []string
		action   string
		resource string
		want     iam.Decision
	}{
		{"no policies", nil, "dbproxy:Connect", "proxy/app/dbuser/u", iam.DefaultDeny},
		{"allowed", []string{connectApp}, "dbproxy:Connect", "proxy/app/dbuser/u", iam.Allow},
		{"star spans slashes", []string{connectApp}, "dbproxy:Connect", "proxy/app/dbuser/u/x", iam.Allow},
		{"other action", []string{connectApp}, "dbproxy:GetProxy", "proxy/app/dbuser/u", iam.DefaultDeny},
		{"other resource", []string{connectApp}, "dbproxy:Connect", "proxy/other/dbuser/u", iam.DefaultDeny},
		{"prefix is not enough", []string{connectApp}, "dbproxy:Connect", "proxy/app/dbuser", iam.DefaultDeny},
		{"explicit deny wins in the same set", []string{connectApp, denyAdmin}, "dbproxy:Connect", "proxy/app/dbuser/admin", iam.ExplicitDeny},
		{"explicit deny wins whatever the order", []string{denyAdmin, connectApp}, "dbproxy:Connect", "proxy/app/dbuser/admin", iam.ExplicitDeny},
		{"deny elsewhere does not block", []string{connectApp, denyAdmin}, "dbproxy:Connect", "proxy/app/dbuser/app", iam.Allow},
		{"deny alone is explicit", []string{denyAdmin}, "dbproxy:Connect", "proxy/x/dbuser/admin", iam.ExplicitDeny},
		{"deny all beats allow all", []string{everything, denyAll}, "dbproxy:GetProxy", "proxy/p", iam.ExplicitDeny},
		{"wildcard action get", []string{readOnly}, "dbproxy:GetProxy", "proxy/p", iam.Allow},
		{"wildcard action list", []string{readOnly}, "dbproxy:ListProxies", "proxy/p", iam.Allow},
		{"wildcard action put", []string{readOnly}, "dbproxy:PutProxy", "proxy/p", iam.DefaultDeny},
		{"NotAction allows others", []string{allButDel}, "dbproxy:PutSecret", "secret/s", iam.Allow},
		{"NotAction excludes", []string{allButDel}, "dbproxy:DeleteSecret", "secret/s", iam.DefaultDeny},
		{"NotAction is case-insensitive", []string{allButDel}, "DBPROXY:deletesecret", "secret/s", iam.DefaultDeny},
		{"NotResource allows others", []string{notSecrets}, "dbproxy:GetProxy", "proxy/p", iam.Allow},
		{"NotResource excludes", []string{notSecrets}, "dbproxy:GetSecret", "secret/s", iam.DefaultDeny},
		{"NotResource is case-sensitive", []string{notSecrets}, "dbproxy:GetSecret", "Secret/s", iam.Allow},
		{"Deny with NotAction denies others", []string{denyNotGet}, "dbproxy:PutProxy", "proxy/prod", iam.ExplicitDeny},
		{"Deny with NotAction spares listed", []string{denyNotGet}, "dbproxy:GetProxy", "proxy/prod", iam.Allow},
		{"Deny with NotAction on other resource", []string{denyNotGet}, "dbproxy:PutProxy", "proxy/dev", iam.Allow},
		{"question mark one character", []string{zoneOne}, "dbproxy:ReceiveConfig", "zone/a", iam.Allow},
		{"question mark not two", []string{zoneOne}, "dbproxy:ReceiveConfig", "zone/ab", iam.DefaultDeny},
		{"question mark not zero", []string{zoneOne}, "dbproxy:ReceiveConfig", "zone/", iam.DefaultDeny},
		{"question mark one multibyte character", []string{zoneOne}, "dbproxy:ReceiveConfig", "zone/é", iam.Allow},
		{"action case-insensitive", []string{mixedCase}, "dbproxy:GetProxy", "proxy/App", iam.Allow},
		{"resource case-sensitive", []string{mixedCase}, "dbproxy:GetProxy", "proxy/app", iam.DefaultDeny},
		{"star action", []string{everything}, "dbproxy:AnythingAtAll", "user/u", iam.Allow},
		{"service star action", []string{notSecrets}, "dbproxy:PutUser", "user/u", iam.Allow},
		{"service star does not cover other services", []string{notSecrets}, "rds-db:connect", "user/u", iam.DefaultDeny},
		{"empty request matches only stars", []string{connectApp}, "", "", iam.DefaultDeny},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var policies []*iam.Policy
			for _, d := range c.docs {
				policies = append(policies, mustParse(t, d))
			}
			policies = append(policies, nil) // nil policies are skipped
			if got := iam.Evaluate(policies, c.action, c.resource); got != c.want {
				t.Fatalf("Evaluate(%q, %q) = %v, want %v", c.action, c.resource, got, c.want)
			}
		})
	}
}

func TestEvaluateHandBuiltStatements(t *testing.T) {
	cases := []struct {
		name string
		st   iam.Statement
		want iam.Decision
	}{
		{"unknown effect counts as nothing", iam.Statement{Effect: "Maybe", Actions: []string{"*"}, Resources: []string{"*"}}, iam.DefaultDeny},
		{"no actions at all matches nothing", iam.Statement{Effect: "Allow", Resources: []string{"*"}}, iam.DefaultDeny},
		{"no resources at all matches nothing", iam.Statement{Effect: "Deny", Actions: []string{"*"}}, iam.DefaultDeny},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := &iam.Policy{Statements: []iam.Statement{c.st}}
			if got := iam.Evaluate([]*iam.Policy{p}, "dbproxy:GetProxy", "proxy/p"); got != c.want {
				t.Fatalf("Evaluate = %v, want %v", got, c.want)
			}
		})
	}
}

func TestDecision(t *testing.T) {
	cases := []struct {
		d       iam.Decision
		name    string
		allowed bool
	}{
		{iam.DefaultDeny, "DefaultDeny", false},
		{iam.Allow, "Allow", true},
		{iam.ExplicitDeny, "ExplicitDeny", false},
		{iam.Decision(7), "Decision(7)", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.d.String(); got != c.name {
				t.Errorf("String() = %q, want %q", got, c.name)
			}
			if got := c.d.Allowed(); got != c.allowed {
				t.Errorf("Allowed() = %v, want %v", got, c.allowed)
			}
		})
	}
}

func TestResourceNames(t *testing.T) {
	cases := []struct{ got, want string }{
		{iam.ProxyResource("p"), "proxy/p"},
		{iam.ProxyDBUserResource("p", "u"), "proxy/p/dbuser/u"},
		{iam.ZoneResource("z"), "zone/z"},
		{iam.SecretResource("s"), "secret/s"},
		{iam.UserResource("u"), "user/u"},
		{iam.PolicyResource("x"), "policy/x"},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}
