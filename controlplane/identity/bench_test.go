package identity

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/dbproxy/dbproxy/controlplane/iam"
	"github.com/dbproxy/dbproxy/controlplane/store"
	"github.com/dbproxy/dbproxy/internal/model"
)

// fullPolicy is a document of iam.MaxStatements statements, each of which
// a request must look at (the action matches, the resource does not),
// within iam.MaxDocumentSize.
func fullPolicy(tb testing.TB, n int) string {
	tb.Helper()
	sts := make([]string, iam.MaxStatements)
	for i := range sts {
		sts[i] = fmt.Sprintf(`{"Effect":"Deny","Action":"dbproxy:Get*","Resource":"q%03d*"}`, (n*100+i)%1000)
	}
	doc := `{"Version":"2012-10-17","Statement":[` + strings.Join(sts, ",") + `]}`
	if len(doc) > iam.MaxDocumentSize {
		tb.Fatalf("the policy is %d bytes", len(doc))
	}
	if _, err := iam.ParsePolicy(doc); err != nil {
		tb.Fatal(err)
	}
	return doc
}

// benchUser stores a user with attachments policies, each full.
func benchUser(b *testing.B, attachments int) *benchStore {
	b.Helper()
	st := openStore(b)
	for i := range attachments {
		name := fmt.Sprintf("p%03d", i)
		put(b, st, model.KindPolicy, name, model.Policy{Name: name, Document: fullPolicy(b, i)})
		put(b, st, model.KindAttachment, "u/"+name, model.Attachment{User: "u", Policy: name})
	}
	put(b, st, model.KindPolicy, "read", model.Policy{Name: "read", Document: allowGet})
	put(b, st, model.KindAttachment, "u/read", model.Attachment{User: "u", Policy: "read"})
	return &benchStore{st}
}

// BenchmarkUserPolicies measures what authorising one request of a user
// costs: finding the user's policies and evaluating them, for a user at
// the attachment limit and for one at the 125 policies that could be
// attached before there was a limit, read from the store and parsed on
// every request (uncached) or through the per-revision cache (cached).
func BenchmarkUserPolicies(b *testing.B) {
	log := hclog.NewNullLogger()
	ctx := context.Background()
	for _, n := range []int{10, 125} {
		s := benchUser(b, n)
		b.Run(fmt.Sprintf("attachments=%d/uncached", n), func(b *testing.B) {
			for b.Loop() {
				pols, err := UserPolicies(ctx, s.st, "u", log)
				if err != nil {
					b.Fatal(err)
				}
				if !iam.Evaluate(pols, "dbproxy:GetProxy", "proxy/main").Allowed() {
					b.Fatal("not allowed")
				}
			}
		})
		c := NewPolicies(s.st, log)
		b.Run(fmt.Sprintf("attachments=%d/cached", n), func(b *testing.B) {
			for b.Loop() {
				pols, err := c.UserPolicies(ctx, "u")
				if err != nil {
					b.Fatal(err)
				}
				if !iam.Evaluate(pols, "dbproxy:GetProxy", "proxy/main").Allowed() {
					b.Fatal("not allowed")
				}
			}
		})
		// A write to the store between requests, as under a steady
		// stream of changes: every request reads the store again, but
		// parses nothing.
		b.Run(fmt.Sprintf("attachments=%d/cached-new-revision-each-request", n), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				put(b, s.st, model.KindSecret, "s", model.Secret{Name: "s", Description: fmt.Sprint(b.N)})
				b.StartTimer()
				pols, err := c.UserPolicies(ctx, "u")
				if err != nil {
					b.Fatal(err)
				}
				if !iam.Evaluate(pols, "dbproxy:GetProxy", "proxy/main").Allowed() {
					b.Fatal("not allowed")
				}
			}
		})
	}
}

type benchStore struct{ st store.Store }
