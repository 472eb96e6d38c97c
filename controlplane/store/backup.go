package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	bolt "go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Backups of both backends are bbolt files (Bolt.Backup, Etcd.Backup): the
// objects in their stored envelopes and the revision. To restore into
// bbolt, put the file in place of the store file; to restore into etcd,
// RestoreEtcd loads it under an empty prefix.

// Restore batches: etcd refuses transactions of more than --max-txn-ops
// operations (128 by default) or requests over --max-request-bytes (1.5 MiB
// by default).
const (
	restoreBatchOps   = 100
	restoreBatchBytes = 1 << 20
)

// load writes objects into a store that has none, as one bbolt
// transaction, and sets its revision: fn calls put for every object with
// its stored envelope, which is checked and kept as is.
func (b *Bolt) load(rev uint64, fn func(put func(kind, key string, envelope []byte) error) error) error {
	err := b.db.Update(func(tx *bolt.Tx) error {
		cur, err := readRevision(tx)
		if err != nil {
			return err
		}
		objects := tx.Bucket(objectsBucket)
		if objects == nil {
			return fmt.Errorf("objects bucket missing: %w", ErrFormat)
		}
		if first, _ := objects.Cursor().First(); cur != 0 || first != nil {
			return errors.New("load into a store that is not empty")
		}
		err = fn(func(kind, key string, envelope []byte) error {
			if err := checkName(kind, key); err != nil {
				return err
			}
			if _, _, _, err := decodeEnvelope(envelope); err != nil {
				return fmt.Errorf("%s/%s: %w", kind, key, err)
			}
			kb, err := objects.CreateBucketIfNotExists([]byte(kind))
			if err != nil {
				return fmt.Errorf("create bucket %s: %w", kind, err)
			}
			return kb.Put([]byte(key), envelope)
		})
		if err != nil {
			return err
		}
		return putRevision(tx.Bucket(metaBucket), rev)
	})
	if err != nil {
		return dbErr(err)
	}
	b.rev.Store(rev)
	return nil
}

// scan hands every object to fn in kind, then key order, with its stored
// envelope; it returns the revision of the snapshot it read.
func (b *Bolt) scan(ctx context.Context, fn func(kind, key string, envelope []byte) error) (uint64, error) {
	if err := b.usable(ctx); err != nil {
		return 0, err
	}
	var rev uint64
	err := b.db.View(func(tx *bolt.Tx) error {
		var err error
		if rev, err = readRevision(tx); err != nil {
			return err
		}
		objects := tx.Bucket(objectsBucket)
		if objects == nil {
			return fmt.Errorf("objects bucket missing: %w", ErrFormat)
		}
		return objects.ForEachBucket(func(kind []byte) error {
			return objects.Bucket(kind).ForEach(func(k, v []byte) error {
				if err := ctx.Err(); err != nil {
					return err
				}
				return fn(string(kind), string(k), v)
			})
		})
	})
	if err != nil {
		return 0, dbErr(err)
	}
	return rev, nil
}

// RestoreEtcd loads a backup (a bbolt file from either backend's Backup,
// read from r) under opts.Prefix, which must hold no keys, and returns its
// revision. The store it makes is the backup: the same objects, object
// revisions and store revision. Values are copied as stored, so sealed
// secrets stay sealed and need the same master key.
//
// A large backup takes several etcd transactions; the layout marker is
// written last, so a control plane that opens the prefix before the
// restore finished refuses it (ErrFormat) instead of serving half of it,
// and a restore that failed half way leaves keys that must be deleted
// (etcdctl del --prefix) before another attempt.
func RestoreEtcd(ctx context.Context, opts EtcdOptions, r io.Reader) (uint64, error) {
	f, err := os.CreateTemp("", "dbproxy-restore-*.db")
	if err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	path := f.Name()
	defer os.Remove(path)
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("restore: read the backup: %w", err)
	}
	b, err := OpenBolt(path, BoltOptions{LockTimeout: -1})
	if err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	defer b.Close()
	if err := b.Check(ctx); err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}

	// A handle for its key names and client, without the layout check
	// and watch of OpenEtcd: the prefix must be empty.
	e := &Etcd{client: opts.Client, prefix: opts.KeyPrefix(), timeout: opts.RequestTimeout}
	if e.timeout <= 0 {
		e.timeout = DefaultEtcdRequestTimeout
	}
	if e.client == nil {
		if e.client, err = dialEtcd(opts); err != nil {
			return 0, fmt.Errorf("restore: %w", err)
		}
		e.ownsClient = true
		defer func() { _ = e.closeClient() }()
	}

	var (
		ops   []clientv3.Op
		bytes int
		first = true
	)
	flush := func(final ...clientv3.Op) error {
		ops = append(ops, final...)
		// The first batch needs an empty prefix; later ones that nothing
		// initialised the prefix in between.
		cond := clientv3.Compare(clientv3.CreateRevision(e.key(etcdFormatKey)), "=", 0)
		if first {
			cond = clientv3.Compare(clientv3.CreateRevision(e.prefix), "=", 0).WithPrefix()
		}
		rctx, cancel := e.reqCtx(ctx)
		defer cancel()
		resp, err := e.client.Txn(rctx).If(cond).Then(ops...).Commit()
		if err != nil {
			return etcdErr(ctx, "write", err)
		}
		if !resp.Succeeded {
			if first {
				return fmt.Errorf("prefix %s is not empty", e.prefix)
			}
			return fmt.Errorf("prefix %s was initialised while restoring", e.prefix)
		}
		first, ops, bytes = false, ops[:0], 0
		return nil
	}
	rev, err := b.scan(ctx, func(kind, key string, envelope []byte) error {
		k := e.objKey(kind, key)
		if len(ops) >= restoreBatchOps || bytes+len(k)+len(envelope) > restoreBatchBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		ops = append(ops, clientv3.OpPut(k, string(envelope)))
		bytes += len(k) + len(envelope)
		return nil
	})
	if err == nil {
		err = flush(clientv3.OpPut(e.key(etcdRevKey), strconv.FormatUint(rev, 10)), clientv3.OpPut(e.key(etcdFormatKey), etcdFormatV1))
	}
	if err != nil {
		return 0, fmt.Errorf("restore into etcd %s: %w", e.prefix, err)
	}
	return rev, nil
}
