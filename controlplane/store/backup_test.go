package store

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/dbproxy/dbproxy/controlplane/store/etcdtest"
)

// dump returns every object of s with its revisions, and the revision of
// the snapshot it read.
func dump(t *testing.T, s Store, kinds ...string) (map[string]Object, uint64) {
	t.Helper()
	out := map[string]Object{}
	rev, err := s.View(context.Background(), func(r Reader) error {
		for _, kind := range kinds {
			objs, err := r.List(kind, "")
			if err != nil {
				return err
			}
			for _, o := range objs {
				out[kind+"/"+o.Key] = o
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	return out, rev
}

// openBackup opens a backup as a bbolt store, as a restore into bbolt
// does.
func openBackup(t *testing.T, data []byte) *Bolt {
	t.Helper()
	path := filepath.Join(t.TempDir(), "restored.db")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatalf("open the backup: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	checkStore(t, b)
	return b
}

// TestBackup takes a backup while writers commit: the file opens as a
// bbolt store at the revision Backup returned, holding exactly the
// transactions up to it.
func TestBackup(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		s := be.open(t)
		// Each write adds an item and sets the counter to the item count,
		// in one transaction.
		var n atomic.Int64
		write := func() error {
			_, err := s.Update(ctx, func(tx Tx) error {
				i := n.Add(1)
				if err := tx.Put("item", fmt.Sprintf("%06d", i), []byte("v")); err != nil {
					return err
				}
				return tx.Put("count", "n", []byte(strconv.FormatInt(i, 10)))
			})
			return err
		}
		for range 20 {
			if err := write(); err != nil {
				t.Fatal(err)
			}
		}
		var (
			wg   sync.WaitGroup
			stop atomic.Bool
		)
		wg.Go(func() {
			for !stop.Load() {
				if err := write(); err != nil {
					t.Error(err)
					return
				}
			}
		})
		var buf bytes.Buffer
		rev, err := s.Backup(ctx, &buf)
		stop.Store(true)
		wg.Wait()
		if err != nil {
			t.Fatalf("Backup: %v", err)
		}
		b := openBackup(t, buf.Bytes())
		if b.Revision() != rev || rev < 20 {
			t.Fatalf("backup at revision %d, Backup returned %d", b.Revision(), rev)
		}
		got, _ := dump(t, b, "item", "count")
		if c := got["count/n"]; string(c.Value) != strconv.FormatUint(rev, 10) || c.ModRevision != rev {
			t.Fatalf("counter in the backup %q at %d, want %d: not one revision", c.Value, c.ModRevision, rev)
		}
		if len(got) != int(rev)+1 {
			t.Fatalf("%d objects in the backup at revision %d", len(got), rev)
		}
		if want, _ := dump(t, s, "count"); want["count/n"].CreateRevision != got["count/n"].CreateRevision {
			t.Errorf("create revision %d in the backup, %d in the store", got["count/n"].CreateRevision, want["count/n"].CreateRevision)
		}
		// The restored store goes on counting where the backup stopped.
		if next := put(t, b, "k", "after", "v"); next != rev+1 {
			t.Errorf("first write after restore at %d, want %d", next, rev+1)
		}
	})
}

// TestRestoreEtcd restores backups of both backends into etcd: the same
// objects with the same revisions, more than one etcd transaction's
// worth, and the store counts on from the backup's revision. A prefix
// that is in use is refused.
func TestRestoreEtcd(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.Start(t, etcdtest.Options{})
	sources := map[string]Store{
		"from bbolt": openTemp(t),
		"from etcd":  openEtcdTemp(t, srv, "/source/"),
	}
	i := 0
	for name, src := range sources {
		t.Run(name, func(t *testing.T) {
			i++
			// Enough objects for several restore batches, revisions
			// that differ between objects, and a deleted one.
			for j := range 2*restoreBatchOps + 10 {
				put(t, src, "bulk", fmt.Sprintf("%04d", j), string(bytes.Repeat([]byte{'x'}, j)))
			}
			put(t, src, "a/kind", "key/with/slashes", "1")
			put(t, src, "a/kind", "key/with/slashes", "2")
			put(t, src, "gone", "x", "1")
			if _, err := src.Update(ctx, func(tx Tx) error { return tx.Delete("gone", "x") }); err != nil {
				t.Fatal(err)
			}
			want, wantRev := dump(t, src, "bulk", "a/kind", "gone")
			var buf bytes.Buffer
			rev, err := src.Backup(ctx, &buf)
			if err != nil || rev != wantRev {
				t.Fatalf("Backup = %d, %v; want revision %d", rev, err, wantRev)
			}

			prefix := fmt.Sprintf("/restored-%d/", i)
			got, err := RestoreEtcd(ctx, EtcdOptions{Endpoints: srv.Endpoints, Prefix: prefix}, bytes.NewReader(buf.Bytes()))
			if err != nil || got != rev {
				t.Fatalf("RestoreEtcd = %d, %v; want %d", got, err, rev)
			}
			e := openEtcdTemp(t, srv, prefix)
			if e.Revision() != rev {
				t.Fatalf("restored store at revision %d, want %d", e.Revision(), rev)
			}
			restored, _ := dump(t, e, "bulk", "a/kind", "gone")
			if len(restored) != len(want) {
				t.Fatalf("%d objects restored, want %d", len(restored), len(want))
			}
			for k, w := range want {
				r := restored[k]
				if !bytes.Equal(r.Value, w.Value) || r.CreateRevision != w.CreateRevision || r.ModRevision != w.ModRevision {
					t.Fatalf("%s restored as %+v, want %+v", k, r, w)
				}
			}
			checkStore(t, e)
			if next := put(t, e, "k", "after", "v"); next != rev+1 {
				t.Errorf("first write after restore at %d, want %d", next, rev+1)
			}

			_, err = RestoreEtcd(ctx, EtcdOptions{Endpoints: srv.Endpoints, Prefix: prefix}, bytes.NewReader(buf.Bytes()))
			if err == nil {
				t.Fatal("RestoreEtcd into a prefix in use succeeded")
			}
			if obj := mustGet(t, e, "k", "after"); obj.ModRevision != rev+1 {
				t.Fatalf("the refused restore changed the store: %+v", obj)
			}
		})
	}
	t.Run("not a backup", func(t *testing.T) {
		_, err := RestoreEtcd(ctx, EtcdOptions{Endpoints: srv.Endpoints, Prefix: "/garbage/"}, bytes.NewReader(bytes.Repeat([]byte("junk"), 2000)))
		if err == nil {
			t.Fatal("RestoreEtcd of garbage succeeded")
		}
		// Nothing was left behind: the prefix opens as a new store.
		if e := openEtcdTemp(t, srv, "/garbage/"); e.Revision() != 0 {
			t.Fatalf("a refused restore left revision %d", e.Revision())
		}
	})
}
