package iam_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/dbproxy/dbproxy/controlplane/iam"
)

func TestParsePolicy(t *testing.T) {
	cases := []struct {
		name string
		doc  string
		want *iam.Policy
	}{
		{
			name: "single statement object with strings",
			doc:  `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"dbproxy:Connect","Resource":"proxy/app/dbuser/*"}}`,
			want: &iam.Policy{Version: "2012-10-17", Statements: []iam.Statement{
				{Effect: "Allow", Actions: []string{"dbproxy:Connect"}, Resources: []string{"proxy/app/dbuser/*"}},
			}},
		},
		{
			name: "array of statements with lists, Sid and Id",
			doc: `{
				"Version": "2012-10-17",
				"Id": "admin",
				"Statement": [
					{"Sid": "ReadAll", "Effect": "Allow", "Action": ["dbproxy:Get*", "dbproxy:List*"], "Resource": "*"},
					{"Sid": "NoSecrets", "Effect": "Deny", "NotAction": ["dbproxy:Get*"], "NotResource": ["secret/*", "policy/?"]}
				]
			}`,
			want: &iam.Policy{Version: "2012-10-17", ID: "admin", Statements: []iam.Statement{
				{Sid: "ReadAll", Effect: "Allow", Actions: []string{"dbproxy:Get*", "dbproxy:List*"}, Resources: []string{"*"}},
				{Sid: "NoSecrets", Effect: "Deny", NotActions: []string{"dbproxy:Get*"}, NotResources: []string{"secret/*", "policy/?"}},
			}},
		},
		{
			name: "star action, upper-case service",
			doc:  `{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":["*","DBPROXY:put*"],"Resource":"zone/a"}]}`,
			want: &iam.Policy{Version: "2012-10-17", Statements: []iam.Statement{
				{Effect: "Deny", Actions: []string{"*", "DBPROXY:put*"}, Resources: []string{"zone/a"}},
			}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := iam.ParsePolicy(c.doc)
			if err != nil {
				t.Fatalf("ParsePolicy: %v", err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestParsePolicyErrors(t *testing.T) {
	const ok = `"Effect":"Allow","Action":"dbproxy:Connect","Resource":"proxy/p"`
	cases := []struct {
		name, doc, want string
	}{
		{"empty", ``, `policy document is empty`},
		{"blank", " \n\t", `policy document is empty`},
		{"not an object", `[]`, `policy document must be a JSON object`},
		{"string", `"x"`, `policy document must be a JSON object`},
		{"bad json", `{"Statement":`, `invalid JSON`},
		{"trailing data", `{"Statement":{` + ok + `}} {}`, `invalid JSON: data after the top-level object`},
		{"too large", `{"Id":"` + strings.Repeat("x", iam.MaxDocumentSize) + `"}`, `more than`},
		{"unknown top-level key", `{"Statement":{` + ok + `},"Principal":"*"}`, `Principal: unknown element`},
		{"lower-case key", `{"statement":{` + ok + `}}`, `statement: unknown element`},
		{"duplicate top-level key", `{"Statement":{` + ok + `},"Statement":{` + ok + `}}`, `Statement: appears more than once`},
		{"wrong version", `{"Version":"2008-10-17","Statement":{` + ok + `}}`, `Version: must be "2012-10-17"`},
		{"version not a string", `{"Version":2012,"Statement":{` + ok + `}}`, `Version: must be a string`},
		{"id not a string", `{"Id":1,"Statement":{` + ok + `}}`, `Id: must be a string`},
		{"missing statement", `{"Version":"2012-10-17"}`, `Statement: is required`},
		{"empty statement array", `{"Statement":[]}`, `Statement: must not be empty`},
		{"statement is a string", `{"Statement":"x"}`, `Statement: must be an object or an array of objects`},
		{"statement null", `{"Statement":null}`, `Statement: must be an object or an array of objects`},
		{"statement element not an object", `{"Statement":[{` + ok + `},"x"]}`, `Statement[1]: must be an object`},
		{"condition", `{"Statement":[{` + ok + `},{` + ok + `,"Condition":{"Bool":{"aws:SecureTransport":"true"}}}]}`, `Statement[1].Condition: unknown element`},
		{"principal in statement", `{"Statement":{` + ok + `,"Principal":"*"}}`, `Statement.Principal: unknown element`},
		{"duplicate statement key", `{"Statement":[{` + ok + `,"Effect":"Deny"}]}`, `Statement[0].Effect: appears more than once`},
		{"missing effect", `{"Statement":[{"Action":"*","Resource":"*"}]}`, `Statement[0].Effect: is required`},
		{"bad effect", `{"Statement":[{` + ok + `},{"Effect":"allow","Action":"*","Resource":"*"}]}`, `Statement[1].Effect: must be "Allow" or "Deny"`},
		{"effect not a string", `{"Statement":[{"Effect":true,"Action":"*","Resource":"*"}]}`, `Statement[0].Effect: must be a string`},
		{"sid not a string", `{"Statement":[{"Sid":[],` + ok + `}]}`, `Statement[0].Sid: must be a string`},
		{"missing action", `{"Statement":[{"Effect":"Allow","Resource":"*"}]}`, `Statement[0].Action: one of Action and NotAction is required`},
		{"action and not action", `{"Statement":[{"Effect":"Allow","Action":"*","NotAction":"*","Resource":"*"}]}`, `Statement[0].NotAction: only one of Action and NotAction may be given`},
		{"missing resource", `{"Statement":[{"Effect":"Allow","Action":"*"}]}`, `Statement[0].Resource: one of Resource and NotResource is required`},
		{"resource and not resource", `{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*","NotResource":"*"}]}`, `Statement[0].NotResource: only one of Resource and NotResource may be given`},
		{"action number", `{"Statement":[{"Effect":"Allow","Action":1,"Resource":"*"}]}`, `Statement[0].Action: must be a string or an array of strings`},
		{"action empty list", `{"Statement":[{"Effect":"Allow","Action":[],"Resource":"*"}]}`, `Statement[0].Action: must not be empty`},
		{"action empty string", `{"Statement":[{"Effect":"Allow","Action":"","Resource":"*"}]}`, `Statement[0].Action: must not be empty`},
		{"action list element not a string", `{"Statement":[{"Effect":"Allow","Action":["*",2],"Resource":"*"}]}`, `Statement[0].Action[1]: must be a string`},
		{"action list element empty", `{"Statement":[{"Effect":"Allow","Action":["*",""],"Resource":"*"}]}`, `Statement[0].Action[1]: must not be empty`},
		{"action other service", `{"Statement":[{"Effect":"Allow","Action":"rds-db:connect","Resource":"*"}]}`, `Statement[0].Action: "rds-db:connect": must be "*" or "dbproxy:<Action>"`},
		{"action without service", `{"Statement":[{"Effect":"Allow","Action":"Connect","Resource":"*"}]}`, `Statement[0].Action: "Connect": must be "*" or "dbproxy:<Action>"`},
		{"action empty name", `{"Statement":[{"Effect":"Allow","Action":"dbproxy:","Resource":"*"}]}`, `Statement[0].Action: "dbproxy:": action name is empty`},
		{"action bad character", `{"Statement":[{"Effect":"Allow","NotAction":["*","dbproxy:Get Proxy"],"Resource":"*"}]}`, `Statement[0].NotAction[1]: "dbproxy:Get Proxy": action name may contain only letters, digits, * and ?`},
		{"resource arn", `{"Statement":[{"Effect":"Allow","Action":"*","Resource":"arn:aws:rds-db:eu-west-1:1:dbuser:x/y"}]}`, `Statement[0].Resource: "arn:aws:rds-db:eu-west-1:1:dbuser:x/y": resources are plain paths like proxy/<name>, not ARNs`},
		{"resource leading slash", `{"Statement":[{"Effect":"Allow","Action":"*","Resource":["*","/proxy/p"]}]}`, `Statement[0].Resource[1]: "/proxy/p": resources are paths like proxy/<name> without a leading /`},
		{"resource with space", `{"Statement":[{"Effect":"Allow","Action":"*","NotResource":"proxy/a b"}]}`, `Statement[0].NotResource: "proxy/a b": must not contain spaces or control characters`},
		{"missing version", `{"Statement":{` + ok + `}}`, `Version: is required; add "Version": "2012-10-17"`},
		{"unknown action", `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":["dbproxy:Connect","dbproxy:Conect"],"Resource":"*"}}`, `Statement.Action[1]: "dbproxy:Conect": is not a dbproxy action`},
		{"unknown not action", `{"Version":"2012-10-17","Statement":{"Effect":"Allow","NotAction":"dbproxy:DeleteProxys","Resource":"*"}}`, `Statement.NotAction: "dbproxy:DeleteProxys": is not a dbproxy action`},
		{"wildcard matching no action", `{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"dbproxy:Remove*","Resource":"*"}}`, `Statement.Action: "dbproxy:Remove*": matches no dbproxy action`},
		{"too many statements", `{"Version":"2012-10-17","Statement":[` + strings.Repeat(`{"Effect":"Allow","Action":"*","Resource":"*"},`, iam.MaxStatements) + `{` + ok + `}]}`, `Statement: has 101 statements, more than 100`},
		{"resource null", `{"Statement":[{"Effect":"Allow","Action":"*","Resource":null}]}`, `Statement[0].Resource: must be a string or an array of strings`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := iam.ParsePolicy(c.doc)
			if err == nil {
				t.Fatalf("ParsePolicy succeeded: %+v", p)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not contain %q", err, c.want)
			}
			if !errors.Is(err, iam.ErrInvalidPolicy) {
				t.Fatalf("error %v does not match ErrInvalidPolicy", err)
			}
			var fe *iam.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %T is not a *FieldError", err)
			}
		})
	}
}

func TestPolicyMarshalJSONRoundTrip(t *testing.T) {
	doc := `{"Version":"2012-10-17","Id":"x","Statement":[
		{"Sid":"a","Effect":"Allow","Action":"dbproxy:Get*","Resource":["proxy/*","zone/?"]},
		{"Effect":"Deny","NotAction":"dbproxy:Connect","NotResource":"proxy/p/dbuser/admin"}]}`
	p, err := iam.ParsePolicy(doc)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	again, err := iam.ParsePolicy(string(b))
	if err != nil {
		t.Fatalf("ParsePolicy(%s): %v", b, err)
	}
	if !reflect.DeepEqual(p, again) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", again, p)
	}
}

// TestKnownActions checks that actions are matched against the list
// case-insensitively and that wildcards need to match one of them.
func TestKnownActions(t *testing.T) {
	for _, a := range []string{"*", "dbproxy:*", "dbproxy:Get*", "DBPROXY:getproxy", "dbproxy:List?odes", "dbproxy:Connect",
		"dbproxy:ReceiveConfig", "dbproxy:PutUserPolicyAttachment", "dbproxy:GetBackup", "dbproxy:*Secret*"} {
		doc := `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"` + a + `","Resource":"*"}}`
		if _, err := iam.ParsePolicy(doc); err != nil {
			t.Errorf("action %q: %v", a, err)
		}
	}
	for _, a := range iam.KnownActions() {
		if !iam.KnownAction(strings.ToUpper(a)) {
			t.Errorf("KnownAction(%q) is false", strings.ToUpper(a))
		}
	}
}

// TestParseStoredPolicy checks that documents stored under the older,
// laxer rules still parse, and grant what they did.
func TestParseStoredPolicy(t *testing.T) {
	const ok = `{"Effect":"Allow","Action":"dbproxy:Connect","Resource":"proxy/p/dbuser/u"}`
	for name, doc := range map[string]string{
		"no version":      `{"Statement":` + ok + `}`,
		"unknown action":  `{"Version":"2012-10-17","Statement":[` + ok + `,{"Effect":"Deny","Action":"dbproxy:Frobnicate","Resource":"*"}]}`,
		"many statements": `{"Version":"2012-10-17","Statement":[` + strings.Repeat(ok+`,`, 2*iam.MaxStatements) + ok + `]}`,
		"over 6144 bytes": `{"Version":"2012-10-17","Id":"` + strings.Repeat("x", iam.MaxDocumentSize) + `","Statement":` + ok + `}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := iam.ParsePolicy(doc); err == nil {
				t.Fatal("ParsePolicy accepted it; the case tests nothing")
			}
			p, err := iam.ParseStoredPolicy(doc)
			if err != nil {
				t.Fatalf("ParseStoredPolicy: %v", err)
			}
			if d := iam.Evaluate([]*iam.Policy{p}, iam.ActionConnect, "proxy/p/dbuser/u"); d != iam.Allow {
				t.Fatalf("the stored policy decides %v, want Allow", d)
			}
		})
	}
	// What is wrong under any rules stays wrong.
	if _, err := iam.ParseStoredPolicy(`{"Statement":{"Effect":"Maybe","Action":"*","Resource":"*"}}`); err == nil {
		t.Fatal("ParseStoredPolicy accepted a bad Effect")
	}
}
