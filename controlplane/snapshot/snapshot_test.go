package snapshot

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"

	"github.com/dbproxy/dbproxy/controlplane/pki"
	"github.com/dbproxy/dbproxy/controlplane/store"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type env struct {
	st    store.Store
	clock *clock
	b     *Builder
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := store.OpenBolt(filepath.Join(dir, "state.db"), store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	c := &clock{now: time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)}
	ca, _, err := pki.LoadOrCreate(dir, bytes.Repeat([]byte{7}, 32), c.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &env{st: st, clock: c, b: New(Options{Store: st, CA: ca, Now: c.Now})}
}

func (e *env) put(t *testing.T, kind, key string, v any) uint64 {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := e.st.Update(context.Background(), func(tx store.Tx) error { return tx.Put(kind, key, b) })
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// build builds a node's snapshot; tests compare snapshots by identity.
func (e *env) build(t *testing.T, id, zone, addr string) (*cache.Snapshot, uint64) {
	t.Helper()
	snap, rev, err := e.b.Build(context.Background(), xdsapi.NodeInfo{ID: id, Zone: zone, Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	return snap, rev
}

func TestBuildSharesSnapshotsPerZoneAndAddress(t *testing.T) {
	e := newEnv(t)
	e.put(t, model.KindSecret, "app", model.Secret{Name: "app", Username: "app", Password: "pw"})
	rev := e.put(t, model.KindProxy, "main", model.Proxy{Name: "main", EngineFamily: "MYSQL", Zones: []string{"a", "b"},
		Auth: []model.Auth{{Secret: "app", IAMAuth: "DISABLED", ClientPasswordAuthType: "MYSQL_NATIVE_PASSWORD"}}, IdleClientTimeout: 1800, Port: 6033})

	a1, r1 := e.build(t, "n1", "a", "127.0.1.1")
	a2, _ := e.build(t, "n2", "a", "127.0.1.1")
	a3, _ := e.build(t, "n3", "a", "127.0.1.2")
	b1, _ := e.build(t, "n4", "b", "127.0.1.1")
	if r1 != rev {
		t.Fatalf("built from revision %d, want the newest, %d", r1, rev)
	}
	if a1 != a2 {
		t.Fatal("two nodes of one zone and address got different snapshots")
	}
	if a1 == a3 || a1 == b1 {
		t.Fatal("nodes of another address or zone share a snapshot: they need their own certificate and endpoints")
	}
}

func TestBuildFollowsCommitsAndTheEpoch(t *testing.T) {
	e := newEnv(t)
	first, rev1 := e.build(t, "n1", "a", "")
	st1, err := e.b.State(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st2, _ := e.b.State(context.Background()); st2 != st1 {
		t.Fatal("the state was read again without a commit")
	}
	rev2 := e.put(t, model.KindSecret, "app", model.Secret{Name: "app", Username: "app", Password: "pw"})
	second, got := e.build(t, "n1", "a", "")
	if got != rev2 || rev2 <= rev1 {
		t.Fatalf("after a commit the snapshot is built from revision %d, want %d", got, rev2)
	}
	if second == first {
		t.Fatal("a commit did not rebuild the snapshot")
	}
	if again, _ := e.build(t, "n1", "a", ""); again != second {
		t.Fatal("an unchanged revision rebuilt the snapshot")
	}
	// The day turns: connect signing keys (and, in time, certificates)
	// change without any commit.
	e.clock.Add(24 * time.Hour)
	third, got := e.build(t, "n1", "a", "")
	if got != rev2 {
		t.Fatalf("revision %d after the day turned, want %d", got, rev2)
	}
	if third == second {
		t.Fatal("a new day kept the old snapshot")
	}
}
