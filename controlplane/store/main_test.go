package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The durability test re-executes this binary as the process it kills.
	if os.Getenv(crashChildEnv) != "" {
		os.Exit(runCrashChild())
	}
	goleak.VerifyTestMain(m)
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
