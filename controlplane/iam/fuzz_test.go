package iam_test

import (
	"reflect"
	"testing"

	"github.com/dbproxy/dbproxy/controlplane/iam"
)

// FuzzParsePolicy checks that ParsePolicy never panics, that what it
// accepts is well formed, survives a MarshalJSON round trip and evaluates
// without panicking.
func FuzzParsePolicy(f *testing.F) {
	for _, seed := range []string{
		`{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"dbproxy:Connect","Resource":"proxy/app/dbuser/*"}}`,
		`{"Version":"2012-10-17","Statement":[{"Sid":"a","Effect":"Deny","NotAction":["dbproxy:Get*","*"],"NotResource":["secret/?"]}]}`,
		`{"Statement":[{"Sid":"a","Effect":"Deny","NotAction":["dbproxy:Get*","*"],"NotResource":["secret/?"]}]}`,
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"dbproxy:Frob*","Resource":"*"}]}`,
		`{"Version":"2012-10-17","Id":"x","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","Action":"dbproxy:Delete*","Resource":"proxy/prod"}]}`,
		`{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{}}}`,
		`{"Statement":{"Effect":"Allow","Effect":"Deny","Action":"*","Resource":"*"}}`,
		`{"Statement":[]}`,
		`{"Statement":"`,
		`[1,2,3]`,
		`{"Statement":{"Effect":"Allow","Action":["\u00e9"],"Resource":"\ud800"}}`,
		``,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		if sp, err := iam.ParseStoredPolicy(doc); (sp == nil) == (err == nil) {
			t.Fatalf("ParseStoredPolicy = %+v, %v", sp, err)
		}
		p, err := iam.ParsePolicy(doc)
		if err != nil {
			if p != nil {
				t.Fatalf("policy %+v returned with error %v", p, err)
			}
			return
		}
		if len(p.Statements) == 0 || len(p.Statements) > iam.MaxStatements {
			t.Fatalf("accepted a policy with %d statements", len(p.Statements))
		}
		if p.Version != iam.Version {
			t.Fatalf("accepted Version %q", p.Version)
		}
		// The stored documents' parser accepts a superset, to the same
		// policy.
		if stored, err := iam.ParseStoredPolicy(doc); err != nil || !reflect.DeepEqual(stored, p) {
			t.Fatalf("ParseStoredPolicy = %+v, %v; ParsePolicy = %+v", stored, err, p)
		}
		for i, st := range p.Statements {
			if st.Effect != iam.EffectAllow && st.Effect != iam.EffectDeny {
				t.Fatalf("statement %d: effect %q", i, st.Effect)
			}
			if (len(st.Actions) == 0) == (len(st.NotActions) == 0) {
				t.Fatalf("statement %d: want exactly one of Action and NotAction: %+v", i, st)
			}
			if (len(st.Resources) == 0) == (len(st.NotResources) == 0) {
				t.Fatalf("statement %d: want exactly one of Resource and NotResource: %+v", i, st)
			}
		}
		b, err := p.MarshalJSON()
		if err != nil {
			t.Fatalf("MarshalJSON: %v", err)
		}
		again, err := iam.ParsePolicy(string(b))
		if err != nil {
			t.Fatalf("ParsePolicy(MarshalJSON(p)) = %v\n%s", err, b)
		}
		if !reflect.DeepEqual(p, again) {
			t.Fatalf("round trip changed the policy:\n got %+v\nwant %+v", again, p)
		}
		iam.Evaluate([]*iam.Policy{p}, "dbproxy:Connect", "proxy/app/dbuser/u")
	})
}

// FuzzMatch compares Match with a regular-expression reference.
func FuzzMatch(f *testing.F) {
	for _, seed := range []struct {
		pattern, s string
		ci         bool
	}{
		{"proxy/*", "proxy/a/b", false},
		{"a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
		{"dbproxy:Get*", "DBPROXY:getproxy", true},
		{"?é?", "xéy", false},
		{"k*", "\u212aelvin", true},
		{"*\xff", "a\xff", false},
		{"", "", true},
		{"*?", "", false},
		{"ǅ", "ǆ", true},
	} {
		f.Add(seed.pattern, seed.s, seed.ci)
	}
	f.Fuzz(func(t *testing.T, pattern, s string, ci bool) {
		if len(pattern) > 256 || len(s) > 1024 {
			return
		}
		got := iam.Match(pattern, s, ci)
		if want := refMatch(t, pattern, s, ci); got != want {
			t.Fatalf("Match(%q, %q, %v) = %v, reference says %v", pattern, s, ci, got, want)
		}
	})
}
