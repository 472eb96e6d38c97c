package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"

	"github.com/dbproxy/dbproxy/controlplane/store/etcdtest"
)

func TestMain(m *testing.M) {
	// The durability test re-executes this binary as the process it kills.
	if os.Getenv(crashChildEnv) != "" {
		os.Exit(runCrashChild())
	}
	goleak.VerifyTestMain(m)
}

// backend is one Store implementation the contract tests run on.
type backend struct {
	name string
	// open returns a new, empty store that is closed at the end of the
	// test.
	open func(t *testing.T) Store
	// reopen opens the state of s again after s was closed, as a restart
	// of the control plane would; the new store is closed at the end of
	// the test.
	reopen func(t *testing.T, s Store) Store
}

// checker is a store that can verify its own consistency.
type checker interface {
	Check(ctx context.Context) error
}

// checkStore runs the store's consistency check when it has one.
func checkStore(t *testing.T, s Store) {
	t.Helper()
	if c, ok := s.(checker); ok {
		if err := c.Check(context.Background()); err != nil {
			t.Fatalf("Check: %v", err)
		}
	}
}

// forEachBackend runs fn as a subtest for each backend. The etcd backend's
// subtests share one etcd server per top-level test, each store on its own
// prefix, which also shows that prefixes keep stores apart.
func forEachBackend(t *testing.T, fn func(t *testing.T, be backend)) {
	t.Helper()
	t.Run("bbolt", func(t *testing.T) {
		fn(t, backend{
			name: "bbolt",
			open: func(t *testing.T) Store { return openTemp(t) },
			reopen: func(t *testing.T, s Store) Store {
				t.Helper()
				b, err := OpenBolt(s.(*Bolt).Path(), BoltOptions{})
				if err != nil {
					t.Fatalf("reopen: %v", err)
				}
				t.Cleanup(func() { b.Close() })
				return b
			},
		})
	})
	t.Run("etcd", func(t *testing.T) {
		srv := etcdtest.Start(t, etcdtest.Options{})
		var n atomic.Int64
		fn(t, backend{
			name: "etcd",
			open: func(t *testing.T) Store {
				return openEtcdTemp(t, srv, fmt.Sprintf("/test/%d/", n.Add(1)))
			},
			reopen: func(t *testing.T, s Store) Store {
				return openEtcdTemp(t, srv, s.(*Etcd).Prefix())
			},
		})
	})
}

// openEtcdTemp opens the store under prefix on srv and closes it at the
// end of the test.
func openEtcdTemp(t *testing.T, srv *etcdtest.Server, prefix string) *Etcd {
	t.Helper()
	e, err := OpenEtcd(context.Background(), EtcdOptions{Endpoints: srv.Endpoints, Prefix: prefix})
	if err != nil {
		t.Fatalf("OpenEtcd: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// openTemp opens a new store in a temporary directory and closes it at the
// end of the test.
func openTemp(t *testing.T) *Bolt {
	t.Helper()
	b, err := OpenBolt(filepath.Join(t.TempDir(), "store.db"), BoltOptions{})
	if err != nil {
		t.Fatalf("OpenBolt: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// put writes kind/key = value in one Update and returns its revision.
func put(t *testing.T, s Store, kind, key, value string) uint64 {
	t.Helper()
	rev, err := s.Update(context.Background(), func(tx Tx) error {
		return tx.Put(kind, key, []byte(value))
	})
	if err != nil {
		t.Fatalf("put %s/%s: %v", kind, key, err)
	}
	return rev
}

// get reads kind/key in one View.
func get(t *testing.T, s Store, kind, key string) (Object, error) {
	t.Helper()
	var obj Object
	_, err := s.View(context.Background(), func(r Reader) error {
		var err error
		obj, err = r.Get(kind, key)
		return err
	})
	return obj, err
}

// mustGet reads kind/key and fails the test when it is absent.
func mustGet(t *testing.T, s Store, kind, key string) Object {
	t.Helper()
	obj, err := get(t, s, kind, key)
	if err != nil {
		t.Fatalf("get %s/%s: %v", kind, key, err)
	}
	return obj
}

// list reads kind by prefix in one View.
func list(t *testing.T, s Store, kind, prefix string) []Object {
	t.Helper()
	var objs []Object
	_, err := s.View(context.Background(), func(r Reader) error {
		var err error
		objs, err = r.List(kind, prefix)
		return err
	})
	if err != nil {
		t.Fatalf("list %s %q: %v", kind, prefix, err)
	}
	return objs
}

func wantNotFound(t *testing.T, s Store, kind, key string) {
	t.Helper()
	if obj, err := get(t, s, kind, key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get %s/%s = %q, %v; want ErrNotFound", kind, key, obj.Value, err)
	}
}
