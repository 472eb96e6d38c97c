package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The store contract: every test here runs on each backend (backends in
// main_test.go).

var errBoom = errors.New("boom")

func TestRevisions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		b := be.open(t)
		if got := b.Revision(); got != 0 {
			t.Fatalf("new store at revision %d, want 0", got)
		}

		t.Run("create", func(t *testing.T) {
			var txRev uint64
			rev, err := b.Update(ctx, func(tx Tx) error {
				txRev = tx.Revision()
				return tx.Put("k", "a", []byte("1"))
			})
			if err != nil {
				t.Fatal(err)
			}
			if rev != 1 || txRev != 1 || b.Revision() != 1 {
				t.Fatalf("Update = %d, tx.Revision = %d, Revision = %d; want 1 each", rev, txRev, b.Revision())
			}
			obj := mustGet(t, b, "k", "a")
			if obj.CreateRevision != 1 || obj.ModRevision != 1 || string(obj.Value) != "1" || obj.Kind != "k" || obj.Key != "a" {
				t.Fatalf("object = %+v", obj)
			}
		})
		t.Run("modify keeps create revision", func(t *testing.T) {
			if rev := put(t, b, "k", "a", "2"); rev != 2 {
				t.Fatalf("Update = %d, want 2", rev)
			}
			obj := mustGet(t, b, "k", "a")
			if obj.CreateRevision != 1 || obj.ModRevision != 2 || string(obj.Value) != "2" {
				t.Fatalf("object = %+v, want create 1, mod 2, value 2", obj)
			}
		})
		t.Run("several writes are one revision", func(t *testing.T) {
			rev, err := b.Update(ctx, func(tx Tx) error {
				for _, k := range []string{"b", "c", "d"} {
					if err := tx.Put("k", k, []byte(k)); err != nil {
						return err
					}
				}
				return tx.Put("other", "x", nil)
			})
			if err != nil || rev != 3 {
				t.Fatalf("Update = %d, %v; want 3", rev, err)
			}
			for _, k := range []string{"b", "c", "d"} {
				if obj := mustGet(t, b, "k", k); obj.ModRevision != 3 || obj.CreateRevision != 3 {
					t.Errorf("%s: %+v, want revision 3", k, obj)
				}
			}
			if obj := mustGet(t, b, "other", "x"); len(obj.Value) != 0 {
				t.Errorf("empty value read back as %q", obj.Value)
			}
		})
		t.Run("transaction sees its own writes", func(t *testing.T) {
			_, err := b.Update(ctx, func(tx Tx) error {
				if err := tx.Put("k", "e", []byte("own")); err != nil {
					return err
				}
				obj, err := tx.Get("k", "e")
				if err != nil {
					return err
				}
				if string(obj.Value) != "own" || obj.ModRevision != tx.Revision() {
					return fmt.Errorf("read own write %+v", obj)
				}
				return tx.Delete("k", "e")
			})
			if err != nil {
				t.Fatal(err)
			}
			wantNotFound(t, b, "k", "e")
		})
		t.Run("delete and recreate", func(t *testing.T) {
			rev, err := b.Update(ctx, func(tx Tx) error { return tx.Delete("k", "a") })
			if err != nil {
				t.Fatal(err)
			}
			wantNotFound(t, b, "k", "a")
			rev2 := put(t, b, "k", "a", "again")
			if rev2 != rev+1 {
				t.Fatalf("recreate at %d, want %d", rev2, rev+1)
			}
			if obj := mustGet(t, b, "k", "a"); obj.CreateRevision != rev2 || obj.ModRevision != rev2 {
				t.Fatalf("recreated object %+v, want create and mod %d", obj, rev2)
			}
		})
		t.Run("read-only update makes no revision", func(t *testing.T) {
			before := b.Revision()
			var txRev uint64
			rev, err := b.Update(ctx, func(tx Tx) error {
				txRev = tx.Revision()
				_, err := tx.Get("k", "a")
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if rev != before || b.Revision() != before || txRev != before+1 {
				t.Fatalf("no-op Update = %d, Revision %d, tx.Revision %d; want %d, %d, %d", rev, b.Revision(), txRev, before, before, before+1)
			}
			if next := put(t, b, "k", "z", "z"); next != before+1 {
				t.Fatalf("next write at %d, want %d: the no-op used up a revision", next, before+1)
			}
		})
		t.Run("failed delete makes no revision", func(t *testing.T) {
			before := b.Revision()
			rev, err := b.Update(ctx, func(tx Tx) error {
				if err := tx.Delete("k", "missing"); !errors.Is(err, ErrNotFound) {
					return fmt.Errorf("delete missing: %v", err)
				}
				return nil
			})
			if err != nil || rev != before {
				t.Fatalf("Update = %d, %v; want %d", rev, err, before)
			}
		})
		t.Run("error rolls back", func(t *testing.T) {
			before := b.Revision()
			_, err := b.Update(ctx, func(tx Tx) error {
				if err := tx.Put("k", "a", []byte("lost")); err != nil {
					return err
				}
				if err := tx.Put("k", "new", []byte("lost")); err != nil {
					return err
				}
				return errBoom
			})
			if err != errBoom {
				t.Fatalf("Update error = %v, want errBoom as is", err)
			}
			if b.Revision() != before {
				t.Fatalf("revision moved to %d after a failed Update", b.Revision())
			}
			if obj := mustGet(t, b, "k", "a"); string(obj.Value) != "again" {
				t.Fatalf("value after rollback = %q, want %q", obj.Value, "again")
			}
			wantNotFound(t, b, "k", "new")
		})
		t.Run("panic rolls back", func(t *testing.T) {
			before := b.Revision()
			func() {
				defer func() {
					if r := recover(); r != errBoom {
						t.Fatalf("recovered %v, want the panic value", r)
					}
				}()
				_, _ = b.Update(ctx, func(tx Tx) error {
					if err := tx.Put("k", "a", []byte("lost")); err != nil {
						return err
					}
					panic(errBoom)
				})
			}()
			if b.Revision() != before {
				t.Fatalf("revision moved to %d after a panic", b.Revision())
			}
			if obj := mustGet(t, b, "k", "a"); string(obj.Value) != "again" {
				t.Fatalf("value after panic = %q", obj.Value)
			}
			// The store is still usable, and writes are not blocked.
			if rev := put(t, b, "k", "after-panic", "ok"); rev != before+1 {
				t.Fatalf("write after panic at %d, want %d", rev, before+1)
			}
			checkStore(t, b)
		})
		t.Run("view returns its snapshot revision", func(t *testing.T) {
			rev, err := b.View(ctx, func(Reader) error { return nil })
			if err != nil || rev != b.Revision() {
				t.Fatalf("View = %d, %v; want %d", rev, err, b.Revision())
			}
			if _, err := b.View(ctx, func(Reader) error { return errBoom }); err != errBoom {
				t.Fatalf("View error = %v, want errBoom as is", err)
			}
		})
	})
}

func TestReopenKeepsState(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		b := be.open(t)
		put(t, b, "k", "a", "1")
		put(t, b, "k", "a", "2")
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		b = be.reopen(t, b)
		if b.Revision() != 2 {
			t.Fatalf("reopened at revision %d, want 2", b.Revision())
		}
		if obj := mustGet(t, b, "k", "a"); string(obj.Value) != "2" || obj.CreateRevision != 1 || obj.ModRevision != 2 {
			t.Fatalf("reopened object %+v", obj)
		}
		if rev := put(t, b, "k", "b", "3"); rev != 3 {
			t.Fatalf("first write after reopen at %d, want 3", rev)
		}
	})
}

func TestList(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		b := be.open(t)
		keys := []string{"b", "a/2", "abc", "a", "ab", "a/1", "c/x", "a/10"}
		_, err := b.Update(context.Background(), func(tx Tx) error {
			for _, k := range keys {
				if err := tx.Put("k", k, []byte("v"+k)); err != nil {
					return err
				}
			}
			return tx.Put("other", "a/3", []byte("elsewhere"))
		})
		if err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			kind, prefix string
			want         string // keys, space-separated
		}{
			{"k", "", "a a/1 a/10 a/2 ab abc b c/x"},
			{"k", "a", "a a/1 a/10 a/2 ab abc"},
			{"k", "a/", "a/1 a/10 a/2"},
			{"k", "a/1", "a/1 a/10"},
			{"k", "ab", "ab abc"},
			{"k", "abc", "abc"},
			{"k", "abcd", ""},
			{"k", "0", ""},
			{"k", "z", ""},
			{"missing-kind", "", ""},
			{"other", "", "a/3"},
		}
		for _, tt := range tests {
			t.Run(tt.kind+"/"+tt.prefix, func(t *testing.T) {
				objs := list(t, b, tt.kind, tt.prefix)
				var got []string
				for _, o := range objs {
					got = append(got, o.Key)
					if string(o.Value) != "v"+o.Key && tt.kind == "k" {
						t.Errorf("%s = %q", o.Key, o.Value)
					}
					if o.Kind != tt.kind || o.ModRevision != 1 {
						t.Errorf("%s: %+v", o.Key, o)
					}
				}
				if s := strings.Join(got, " "); s != tt.want {
					t.Errorf("List = %q, want %q", s, tt.want)
				}
			})
		}
	})
}

func TestInvalidNames(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		b := be.open(t)
		long := strings.Repeat("x", bolt.MaxKeySize+1)
		tests := []struct {
			name string
			op   func(tx Tx) error
		}{
			{"put empty kind", func(tx Tx) error { return tx.Put("", "a", nil) }},
			{"put empty key", func(tx Tx) error { return tx.Put("k", "", nil) }},
			{"put long key", func(tx Tx) error { return tx.Put("k", long, nil) }},
			{"get empty key", func(tx Tx) error { _, err := tx.Get("k", ""); return err }},
			{"delete empty key", func(tx Tx) error { return tx.Delete("k", "") }},
			{"list empty kind", func(tx Tx) error { _, err := tx.List("", ""); return err }},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var opErr error
				rev, err := b.Update(context.Background(), func(tx Tx) error {
					opErr = tt.op(tx)
					return nil
				})
				if err != nil || rev != 0 {
					t.Fatalf("Update = %d, %v", rev, err)
				}
				if !errors.Is(opErr, ErrInvalidKey) {
					t.Fatalf("error = %v, want ErrInvalidKey", opErr)
				}
			})
		}
	})
}

func TestNotFound(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		b := be.open(t)
		put(t, b, "k", "a", "1")
		wantNotFound(t, b, "k", "b")
		wantNotFound(t, b, "nokind", "a")
		for _, kind := range []string{"k", "nokind"} {
			_, err := b.Update(context.Background(), func(tx Tx) error { return tx.Delete(kind, "b") })
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("delete %s/b = %v, want ErrNotFound", kind, err)
			}
		}
	})
}

func TestViewIsReadOnly(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		b := be.open(t)
		_, err := b.View(context.Background(), func(r Reader) error {
			tx, ok := r.(Tx)
			if !ok {
				return nil
			}
			return tx.Put("k", "a", []byte("x"))
		})
		if err == nil {
			t.Fatal("Put through a View's reader succeeded")
		}
		wantNotFound(t, b, "k", "a")
	})
}

func TestTxUsedAfterReturn(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		b := be.open(t)
		var kept Tx
		if _, err := b.Update(context.Background(), func(tx Tx) error {
			kept = tx
			return tx.Put("k", "a", []byte("1"))
		}); err != nil {
			t.Fatal(err)
		}
		if err := kept.Put("k", "b", []byte("2")); err == nil {
			t.Error("Put on a finished transaction succeeded")
		}
		if _, err := kept.Get("k", "a"); err == nil {
			t.Error("Get on a finished transaction succeeded")
		}
		if _, err := kept.List("k", ""); err == nil {
			t.Error("List on a finished transaction succeeded")
		}
		if err := kept.Delete("k", "a"); err == nil {
			t.Error("Delete on a finished transaction succeeded")
		}
	})
}

func TestContextCancelled(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		b := be.open(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		called := false
		if _, err := b.Update(ctx, func(Tx) error { called = true; return nil }); !errors.Is(err, context.Canceled) {
			t.Errorf("Update = %v, want context.Canceled", err)
		}
		if _, err := b.View(ctx, func(Reader) error { called = true; return nil }); !errors.Is(err, context.Canceled) {
			t.Errorf("View = %v, want context.Canceled", err)
		}
		if called {
			t.Error("fn ran under a cancelled context")
		}
	})
}

// recv reads one value or fails after a deadline.
func recv(t *testing.T, ch <-chan uint64) (uint64, bool) {
	t.Helper()
	select {
	case v, ok := <-ch:
		return v, ok
	case <-time.After(5 * time.Second):
		t.Fatal("no notification within 5s")
		return 0, false
	}
}

func wantNothing(t *testing.T, ch <-chan uint64) {
	t.Helper()
	select {
	case v, ok := <-ch:
		t.Fatalf("unexpected notification %d (open %v)", v, ok)
	default:
	}
}

func TestSubscribe(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		b := be.open(t)

		ch1, cancel1 := b.Subscribe()
		ch2, cancel2 := b.Subscribe()
		defer cancel2()

		t.Run("coalesces to the newest", func(t *testing.T) {
			for i := range 5 {
				put(t, b, "k", strconv.Itoa(i), "v")
			}
			for _, ch := range []<-chan uint64{ch1, ch2} {
				if v, ok := recv(t, ch); !ok || v != 5 {
					t.Fatalf("got %d (open %v), want 5", v, ok)
				}
				wantNothing(t, ch)
			}
		})
		t.Run("one per commit when read", func(t *testing.T) {
			for want := uint64(6); want <= 8; want++ {
				put(t, b, "k", "x", "v")
				if v, _ := recv(t, ch1); v != want {
					t.Fatalf("got %d, want %d", v, want)
				}
			}
			if v, _ := recv(t, ch2); v != 8 {
				t.Fatalf("second subscriber got %d, want 8", v)
			}
		})
		t.Run("nothing for no-op or failed updates", func(t *testing.T) {
			if _, err := b.Update(ctx, func(Tx) error { return nil }); err != nil {
				t.Fatal(err)
			}
			if _, err := b.Update(ctx, func(tx Tx) error {
				_ = tx.Put("k", "y", nil)
				return errBoom
			}); err != errBoom {
				t.Fatal(err)
			}
			wantNothing(t, ch1)
			wantNothing(t, ch2)
		})
		t.Run("unsubscribe closes", func(t *testing.T) {
			cancel1()
			cancel1() // idempotent
			if _, ok := recv(t, ch1); ok {
				t.Fatal("channel still open after unsubscribe")
			}
			put(t, b, "k", "z", "v") // must not panic on the closed channel
			if v, _ := recv(t, ch2); v != 9 {
				t.Fatalf("remaining subscriber got %d, want 9", v)
			}
		})
	})
}

func TestConcurrentUpdates(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		b := be.open(t)
		const workers, each = 4, 20

		// Every Update increments two counters by reading them; Views check
		// they are always equal (snapshot isolation), and the final count
		// shows no increment was lost (serialisable writers).
		incr := func(tx Tx) error {
			n := 0
			if obj, err := tx.Get("c", "a"); err == nil {
				if n, err = strconv.Atoi(string(obj.Value)); err != nil {
					return err
				}
			} else if !errors.Is(err, ErrNotFound) {
				return err
			}
			v := []byte(strconv.Itoa(n + 1))
			if err := tx.Put("c", "a", v); err != nil {
				return err
			}
			return tx.Put("c", "b", v)
		}
		var (
			wg      sync.WaitGroup
			revsMu  sync.Mutex
			revs    = map[uint64]bool{}
			errs    = make(chan error, workers+1)
			stopped = make(chan struct{})
		)
		for range workers {
			wg.Go(func() {
				for range each {
					rev, err := b.Update(ctx, incr)
					if err != nil {
						errs <- err
						return
					}
					revsMu.Lock()
					revs[rev] = true
					revsMu.Unlock()
				}
			})
		}
		var readers sync.WaitGroup
		readers.Go(func() {
			for {
				select {
				case <-stopped:
					return
				default:
				}
				_, err := b.View(ctx, func(r Reader) error {
					a, errA := r.Get("c", "a")
					c, errB := r.Get("c", "b")
					if errors.Is(errA, ErrNotFound) && errors.Is(errB, ErrNotFound) {
						return nil
					}
					if errA != nil || errB != nil {
						return errors.Join(errA, errB)
					}
					if string(a.Value) != string(c.Value) || a.ModRevision != c.ModRevision {
						return fmt.Errorf("torn snapshot: a=%s@%d b=%s@%d", a.Value, a.ModRevision, c.Value, c.ModRevision)
					}
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
		wg.Wait()
		close(stopped)
		readers.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		const total = workers * each
		if obj := mustGet(t, b, "c", "a"); string(obj.Value) != strconv.Itoa(total) {
			t.Errorf("counter = %s, want %d", obj.Value, total)
		}
		if b.Revision() != total || len(revs) != total {
			t.Errorf("revision %d, %d distinct revisions returned; want %d each", b.Revision(), len(revs), total)
		}
	})
}

func TestClose(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		b := be.open(t)
		put(t, b, "k", "a", "1")
		ch, cancel := b.Subscribe()
		defer cancel()

		if err := b.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := b.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if _, ok := recv(t, ch); ok {
			t.Error("subscription still open after Close")
		}
		cancel() // after Close: no panic
		if _, err := b.Update(ctx, func(tx Tx) error { return tx.Put("k", "b", nil) }); !errors.Is(err, ErrClosed) {
			t.Errorf("Update after Close = %v, want ErrClosed", err)
		}
		if _, err := b.View(ctx, func(Reader) error { return nil }); !errors.Is(err, ErrClosed) {
			t.Errorf("View after Close = %v, want ErrClosed", err)
		}
		if c, ok := b.(checker); ok {
			if err := c.Check(ctx); !errors.Is(err, ErrClosed) {
				t.Errorf("Check after Close = %v, want ErrClosed", err)
			}
		}
		late, _ := b.Subscribe()
		if _, ok := recv(t, late); ok {
			t.Error("Subscribe after Close returned an open channel")
		}
		if b.Revision() != 1 {
			t.Errorf("Revision after Close = %d, want the last one, 1", b.Revision())
		}
	})
}

func TestCloseWaitsForRunningUpdate(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		b := be.open(t)
		inside := make(chan struct{})
		release := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			_, err := b.Update(context.Background(), func(tx Tx) error {
				close(inside)
				<-release
				return tx.Put("k", "a", []byte("1"))
			})
			done <- err
		}()
		<-inside
		closed := make(chan error, 1)
		go func() { closed <- b.Close() }()
		close(release)
		if err := <-done; err != nil {
			t.Fatalf("Update running while Close was called: %v", err)
		}
		if err := <-closed; err != nil {
			t.Fatalf("Close: %v", err)
		}
		mustGet(t, be.reopen(t, b), "k", "a")
	})
}
