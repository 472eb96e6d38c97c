package identity

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/dbproxy/dbproxy/controlplane/iam"
	"github.com/dbproxy/dbproxy/controlplane/store"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/sigv4"
)

const allowGet = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"dbproxy:Get*","Resource":"*"}]}`

// A document stored before a stricter parser existed: it must grant
// nothing, wherever it is read.
const unparsable = `{"Version":"2012-10-17","Statement":[{"Effect":"Maybe","Action":"dbproxy:*","Resource":"*"}]}`

func openStore(t testing.TB) store.Store {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "state.db"), store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func put(t testing.TB, st store.Store, kind, key string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Update(context.Background(), func(tx store.Tx) error { return tx.Put(kind, key, b) }); err != nil {
		t.Fatal(err)
	}
}

func TestParsePoliciesAndAttached(t *testing.T) {
	parsed, bad := ParsePolicies([]model.Policy{{Name: "read", Document: allowGet}, {Name: "broken", Document: unparsable}})
	if parsed["read"] == nil || parsed["broken"] != nil {
		t.Fatalf("parsed = %v", parsed)
	}
	if bad["broken"] == nil || len(bad) != 1 {
		t.Fatalf("bad = %v, want the broken policy only", bad)
	}
	atts := []model.Attachment{
		{User: "alice", Policy: "read"}, {User: "alice", Policy: "broken"},
		{User: "alice", Policy: "gone"}, {User: "bob", Policy: "read"},
	}
	got := Attached(parsed, atts, "alice")
	if len(got) != 1 || got[0] != parsed["read"] {
		t.Fatalf("Attached(alice) = %v, want only the parsed read policy", got)
	}
	if got := Attached(parsed, atts, "carol"); len(got) != 0 {
		t.Fatalf("Attached(carol) = %v, want none", got)
	}
}

func TestUserPoliciesFromTheStore(t *testing.T) {
	st := openStore(t)
	put(t, st, model.KindPolicy, "read", model.Policy{Name: "read", Document: allowGet})
	put(t, st, model.KindPolicy, "broken", model.Policy{Name: "broken", Document: unparsable})
	put(t, st, model.KindAttachment, "alice/read", model.Attachment{User: "alice", Policy: "read"})
	put(t, st, model.KindAttachment, "alice/broken", model.Attachment{User: "alice", Policy: "broken"})
	put(t, st, model.KindAttachment, "alice/gone", model.Attachment{User: "alice", Policy: "gone"})
	put(t, st, model.KindAttachment, "bob/read", model.Attachment{User: "bob", Policy: "read"})
	pols, err := UserPolicies(context.Background(), st, "alice", hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	if len(pols) != 1 {
		t.Fatalf("alice has %d policies, want 1 (the broken and the missing one grant nothing)", len(pols))
	}
	if !iam.Evaluate(pols, "dbproxy:GetProxy", "proxy/main").Allowed() {
		t.Fatal("alice's read policy does not allow dbproxy:GetProxy")
	}
	if iam.Evaluate(pols, "dbproxy:PutProxy", "proxy/main").Allowed() {
		t.Fatal("the unparsable policy granted dbproxy:PutProxy")
	}
}

func TestActiveKey(t *testing.T) {
	st := openStore(t)
	put(t, st, model.KindAccessKey, "AK1", model.AccessKey{ID: "AK1", User: "alice", Status: model.KeyActive, SecretAccessKey: "s"})
	put(t, st, model.KindAccessKey, "AK2", model.AccessKey{ID: "AK2", User: "alice", Status: model.KeyInactive, SecretAccessKey: "s"})
	ctx := context.Background()
	if k, err := ActiveKey(ctx, st, "AK1"); err != nil || k.User != "alice" {
		t.Fatalf("ActiveKey(AK1) = %v, %v", k, err)
	}
	if _, err := ActiveKey(ctx, st, "AK2"); !errors.Is(err, sigv4.ErrInactiveKey) {
		t.Fatalf("ActiveKey(inactive) err = %v, want ErrInactiveKey", err)
	}
	if _, err := ActiveKey(ctx, st, "AK3"); !errors.Is(err, sigv4.ErrUnknownKey) {
		t.Fatalf("ActiveKey(unknown) err = %v, want ErrUnknownKey", err)
	}
}
