package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Tests of what only the bbolt backend has: the file, its lock and its
// layout. The contract every backend keeps is in contract_test.go.

func TestBoltSyncsCommits(t *testing.T) {
	if b := openTemp(t); b.db.NoSync {
		t.Fatal("bbolt opened without fsync on commit")
	}
}

func TestLockTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	first, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, timeout := range []time.Duration{-1, 200 * time.Millisecond} {
		t.Run(timeout.String(), func(t *testing.T) {
			start := time.Now()
			second, err := OpenBolt(path, BoltOptions{LockTimeout: timeout})
			if err == nil {
				second.Close()
				t.Fatal("second OpenBolt of a held file succeeded")
			}
			if !errors.Is(err, ErrLocked) {
				t.Fatalf("error = %v, want ErrLocked", err)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
			if elapsed := time.Since(start); elapsed > timeout+3*time.Second {
				t.Errorf("gave up after %s, timeout %s", elapsed, timeout)
			}
		})
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := OpenBolt(path, BoltOptions{LockTimeout: time.Second})
	if err != nil {
		t.Fatalf("open after the holder closed: %v", err)
	}
	again.Close()
}

func TestFormatChecks(t *testing.T) {
	t.Run("newer file layout", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "store.db")
		rawUpdate(t, path, func(tx *bolt.Tx) error {
			meta, err := tx.CreateBucket(metaBucket)
			if err != nil {
				return err
			}
			return meta.Put(formatKey, []byte{fileFormatV1 + 1})
		})
		if b, err := OpenBolt(path, BoltOptions{}); !errors.Is(err, ErrFormat) {
			if err == nil {
				b.Close()
			}
			t.Fatalf("OpenBolt = %v, want ErrFormat", err)
		}
	})
	t.Run("not a bolt file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "store.db")
		rawWrite(t, path, []byte(strings.Repeat("not a database ", 1000)))
		if b, err := OpenBolt(path, BoltOptions{}); err == nil {
			b.Close()
			t.Fatal("OpenBolt of garbage succeeded")
		}
	})
	for _, tt := range []struct {
		name  string
		value []byte
	}{
		{"newer envelope", append([]byte{envelopeV1 + 1}, make([]byte, 20)...)},
		{"short envelope", []byte{envelopeV1, 0, 0}},
		{"empty envelope", []byte{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := openTemp(t)
			put(t, b, "k", "good", "v")
			path := b.Path()
			b.Close()
			rawUpdate(t, path, func(tx *bolt.Tx) error {
				return tx.Bucket(objectsBucket).Bucket([]byte("k")).Put([]byte("bad"), tt.value)
			})
			b, err := OpenBolt(path, BoltOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if _, err := get(t, b, "k", "bad"); !errors.Is(err, ErrFormat) {
				t.Errorf("Get = %v, want ErrFormat", err)
			}
			if _, err := b.View(context.Background(), func(r Reader) error { _, err := r.List("k", ""); return err }); !errors.Is(err, ErrFormat) {
				t.Errorf("List = %v, want ErrFormat", err)
			}
			if err := b.Check(context.Background()); !errors.Is(err, ErrFormat) {
				t.Errorf("Check = %v, want ErrFormat", err)
			}
			mustGet(t, b, "k", "good")
		})
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		create, mod uint64
		value       string
	}{
		{0, 0, ""},
		{1, 2, "x"},
		{1<<64 - 1, 1 << 40, strings.Repeat("v", 1000)},
	} {
		t.Run(fmt.Sprintf("%d-%d-%d", tt.create, tt.mod, len(tt.value)), func(t *testing.T) {
			data := encodeEnvelope(tt.create, tt.mod, []byte(tt.value))
			if data[0] != envelopeV1 || len(data) != envelopeHeaderSize+len(tt.value) {
				t.Fatalf("envelope % x", data[:envelopeHeaderSize])
			}
			c, m, v, err := decodeEnvelope(data)
			if err != nil || c != tt.create || m != tt.mod || string(v) != tt.value {
				t.Fatalf("decode = %d, %d, %q, %v", c, m, v, err)
			}
		})
	}
}
