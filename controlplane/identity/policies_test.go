package identity

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/dbproxy/dbproxy/controlplane/iam"
	"github.com/dbproxy/dbproxy/controlplane/store"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/testing/testutil"
)

// countingStore counts the snapshots read from a real store.
type countingStore struct {
	store.Store
	views atomic.Int64
}

func (s *countingStore) View(ctx context.Context, fn func(r store.Reader) error) (uint64, error) {
	s.views.Add(1)
	return s.Store.View(ctx, fn)
}

func allowed(t *testing.T, c *Policies, user, action string) bool {
	t.Helper()
	ps, err := c.UserPolicies(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	return iam.Evaluate(ps, action, "proxy/main").Allowed()
}

// TestPoliciesReadOncePerRevision checks that a user's policies are read
// once per store revision and a document parsed once while its text stays,
// and that any change is seen by the next request.
func TestPoliciesReadOncePerRevision(t *testing.T) {
	st := &countingStore{Store: openStore(t)}
	put(t, st, model.KindPolicy, "read", model.Policy{Name: "read", Document: allowGet})
	put(t, st, model.KindAttachment, "alice/read", model.Attachment{User: "alice", Policy: "read"})
	c := NewPolicies(st, hclog.NewNullLogger())
	ctx := context.Background()

	first, err := c.UserPolicies(ctx, "alice")
	if err != nil || len(first) != 1 {
		t.Fatalf("UserPolicies = %v, %v", first, err)
	}
	for range 100 {
		if !allowed(t, c, "alice", "dbproxy:GetProxy") {
			t.Fatal("alice lost dbproxy:GetProxy")
		}
	}
	if n := st.views.Load(); n != 1 {
		t.Fatalf("101 requests at one revision read the store %d times, want 1", n)
	}

	// A write elsewhere makes a new revision: read again, but the
	// unchanged document is not parsed again.
	put(t, st, model.KindSecret, "s", model.Secret{Name: "s"})
	again, err := c.UserPolicies(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if st.views.Load() != 2 || again[0] != first[0] {
		t.Fatalf("after an unrelated write: %d reads, same parsed policy %v; want 2 reads and the same policy", st.views.Load(), again[0] == first[0])
	}

	// A changed document, a new attachment and a detach are each seen by
	// the very next request.
	put(t, st, model.KindPolicy, "read", model.Policy{Name: "read", Document: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"dbproxy:List*","Resource":"*"}]}`})
	if allowed(t, c, "alice", "dbproxy:GetProxy") || !allowed(t, c, "alice", "dbproxy:ListProxies") {
		t.Fatal("the changed document is not what decides")
	}
	put(t, st, model.KindPolicy, "write", model.Policy{Name: "write", Document: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"dbproxy:Put*","Resource":"*"}]}`})
	put(t, st, model.KindAttachment, "alice/write", model.Attachment{User: "alice", Policy: "write"})
	if !allowed(t, c, "alice", "dbproxy:PutProxy") {
		t.Fatal("a new attachment does not grant")
	}
	if _, err := st.Update(ctx, func(tx store.Tx) error { return tx.Delete(model.KindAttachment, "alice/write") }); err != nil {
		t.Fatal(err)
	}
	if allowed(t, c, "alice", "dbproxy:PutProxy") {
		t.Fatal("a detached policy still grants")
	}
	// Users are answered each for themselves.
	if allowed(t, c, "bob", "dbproxy:ListProxies") {
		t.Fatal("bob got alice's policies")
	}
}

// TestPoliciesLogABrokenDocumentOnce checks that a stored document that
// does not parse grants nothing and is logged once, not on every request.
func TestPoliciesLogABrokenDocumentOnce(t *testing.T) {
	st := openStore(t)
	put(t, st, model.KindPolicy, "broken", model.Policy{Name: "broken", Document: unparsable})
	put(t, st, model.KindAttachment, "alice/broken", model.Attachment{User: "alice", Policy: "broken"})
	var buf testutil.SyncBuffer
	c := NewPolicies(st, hclog.New(&hclog.LoggerOptions{Output: &buf}))
	for i := range 10 {
		if allowed(t, c, "alice", "dbproxy:GetProxy") {
			t.Fatal("an unparsable policy granted")
		}
		put(t, st, model.KindSecret, fmt.Sprint(i), model.Secret{}) // a new revision each time
	}
	if n := strings.Count(buf.String(), "stored policy does not parse"); n != 1 {
		t.Fatalf("the broken policy was logged %d times, want 1:\n%s", n, buf.String())
	}
}

// TestPoliciesConcurrent reads through one Policies from many goroutines
// while policies change (run with -race), then checks that the answer is
// the final state's.
func TestPoliciesConcurrent(t *testing.T) {
	st := openStore(t)
	put(t, st, model.KindPolicy, "read", model.Policy{Name: "read", Document: allowGet})
	c := NewPolicies(st, hclog.NewNullLogger())
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := c.UserPolicies(context.Background(), fmt.Sprintf("u%d", g%2)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for i := range 50 {
		key := fmt.Sprintf("u%d/read", i%2)
		if i%4 < 2 {
			put(t, st, model.KindAttachment, key, model.Attachment{User: key[:2], Policy: "read"})
		} else if _, err := st.Update(context.Background(), func(tx store.Tx) error { return tx.Delete(model.KindAttachment, key) }); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	// Whatever the last writes left, the cache answers as a fresh read
	// of the store does.
	for _, u := range []string{"u0", "u1"} {
		want, err := UserPolicies(context.Background(), st, u, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.UserPolicies(context.Background(), u)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d policies cached, %d stored", u, len(got), len(want))
		}
	}
}
