package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// DefaultLockTimeout is how long OpenBolt waits for the file lock when
// BoltOptions.LockTimeout is zero: long enough for a previous process that
// is shutting down to let go, short enough to report a second control plane
// on the same data directory promptly.
const DefaultLockTimeout = 5 * time.Second

// Layout of the bbolt file. Objects live in one nested bucket per kind
// under objectsBucket, so that no kind name can collide with the store's
// own metadata.
var (
	metaBucket    = []byte("meta")
	objectsBucket = []byte("objects")
	formatKey     = []byte("format")   // one byte: the file layout version
	revisionKey   = []byte("revision") // uint64, big endian
)

// fileFormatV1 is the layout described above with objects encoded as
// envelope version 1 (envelope.go).
const fileFormatV1 = 1

// errNoWrite makes bbolt roll back a transaction that wrote nothing, so
// that no revision and no disk write is spent on it.
var errNoWrite = errors.New("transaction wrote nothing")

// errTxDone is returned by a transaction used after its function returned.
var errTxDone = errors.New("transaction already finished")

// BoltOptions tune OpenBolt.
type BoltOptions struct {
	// LockTimeout bounds the wait for the exclusive lock on the file, which
	// another process may hold. Zero means DefaultLockTimeout; a negative
	// value tries once.
	LockTimeout time.Duration
	// FileMode is the permission of a newly created file; zero means 0600.
	FileMode os.FileMode
}

// Bolt is the embedded single-node Store: one bbolt file, every committed
// Update fsynced before it returns. It is safe for concurrent use.
type Bolt struct {
	db   *bolt.DB
	path string

	// writeMu serialises Update beyond bbolt's own writer lock, so that
	// revisions are published (rev, subscribers) in commit order.
	writeMu sync.Mutex
	rev     atomic.Uint64
	closed  atomic.Bool

	mu struct {
		sync.Mutex
		closed bool
		subs   map[chan uint64]struct{}
	}
}

var _ Store = (*Bolt)(nil)

// OpenBolt opens, or creates, the store file at path. The directory must
// exist. When another process holds the file, OpenBolt fails with an error
// wrapping ErrLocked after opts.LockTimeout; a file in a newer layout fails
// with ErrFormat.
func OpenBolt(path string, opts BoltOptions) (*Bolt, error) {
	timeout := opts.LockTimeout
	switch {
	case timeout == 0:
		timeout = DefaultLockTimeout
	case timeout < 0:
		// bbolt treats 0 as "wait forever"; any short positive timeout
		// below its retry interval means a single attempt.
		timeout = time.Nanosecond
	}
	mode := opts.FileMode
	if mode == 0 {
		mode = 0o600
	}
	db, err := bolt.Open(path, mode, &bolt.Options{Timeout: timeout})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("open store %s: no lock within %s: %w", path, timeout, ErrLocked)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	b := &Bolt{db: db, path: path}
	b.mu.subs = make(map[chan uint64]struct{})
	var rev uint64
	err = db.Update(func(tx *bolt.Tx) error {
		var err error
		rev, err = initLayout(tx)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	b.rev.Store(rev)
	return b, nil
}

// initLayout creates the buckets of a new file and checks the layout of an
// existing one; it returns the stored revision.
func initLayout(tx *bolt.Tx) (uint64, error) {
	meta := tx.Bucket(metaBucket)
	if meta == nil {
		var err error
		if meta, err = tx.CreateBucket(metaBucket); err != nil {
			return 0, fmt.Errorf("create meta bucket: %w", err)
		}
		if err := meta.Put(formatKey, []byte{fileFormatV1}); err != nil {
			return 0, fmt.Errorf("write format: %w", err)
		}
		if err := putRevision(meta, 0); err != nil {
			return 0, err
		}
	}
	if f := meta.Get(formatKey); len(f) != 1 || f[0] != fileFormatV1 {
		return 0, fmt.Errorf("file layout %v (this build reads [%d]): %w", f, fileFormatV1, ErrFormat)
	}
	if _, err := tx.CreateBucketIfNotExists(objectsBucket); err != nil {
		return 0, fmt.Errorf("create objects bucket: %w", err)
	}
	return readRevision(tx)
}

func readRevision(tx *bolt.Tx) (uint64, error) {
	meta := tx.Bucket(metaBucket)
	if meta == nil {
		return 0, fmt.Errorf("meta bucket missing: %w", ErrFormat)
	}
	v := meta.Get(revisionKey)
	if len(v) != 8 {
		return 0, fmt.Errorf("revision of %d bytes: %w", len(v), ErrFormat)
	}
	return binary.BigEndian.Uint64(v), nil
}

func putRevision(meta *bolt.Bucket, rev uint64) error {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], rev)
	if err := meta.Put(revisionKey, v[:]); err != nil {
		return fmt.Errorf("write revision: %w", err)
	}
	return nil
}

// Path returns the file the store lives in.
func (b *Bolt) Path() string { return b.path }

// usable reports why a call may not start.
func (b *Bolt) usable(ctx context.Context) error {
	if b.closed.Load() {
		return ErrClosed
	}
	return ctx.Err()
}

// dbErr translates bbolt's errors about the database itself.
func dbErr(err error) error {
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// View runs fn in a read-only snapshot and returns the revision it shows.
// An error from fn is returned as is.
func (b *Bolt) View(ctx context.Context, fn func(r Reader) error) (uint64, error) {
	if err := b.usable(ctx); err != nil {
		return 0, err
	}
	var (
		rev   uint64
		fnErr error
	)
	err := b.db.View(func(btx *bolt.Tx) error {
		var err error
		if rev, err = readRevision(btx); err != nil {
			return err
		}
		t := &boltTx{tx: btx}
		defer func() { t.done = true }()
		fnErr = fn(t)
		return fnErr
	})
	if fnErr != nil {
		return 0, fnErr
	}
	if err != nil {
		return 0, fmt.Errorf("view: %w", dbErr(err))
	}
	return rev, nil
}

// Backup writes the bbolt file as of one read transaction to w: a file
// that OpenBolt opens, with the revision Backup returns.
func (b *Bolt) Backup(ctx context.Context, w io.Writer) (uint64, error) {
	if err := b.usable(ctx); err != nil {
		return 0, err
	}
	var rev uint64
	err := b.db.View(func(btx *bolt.Tx) error {
		var err error
		if rev, err = readRevision(btx); err != nil {
			return err
		}
		_, err = btx.WriteTo(w)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("backup: %w", dbErr(err))
	}
	return rev, nil
}

// Update runs fn in a read-write transaction; see Store.Update. Updates are
// serialised, and a commit is fsynced before Update returns. When fn
// panics, the transaction rolls back and the panic continues in the caller;
// the store stays usable.
func (b *Bolt) Update(ctx context.Context, fn func(tx Tx) error) (uint64, error) {
	if err := b.usable(ctx); err != nil {
		return 0, err
	}
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	// The wait for writeMu may have outlasted ctx or the store.
	if err := b.usable(ctx); err != nil {
		return 0, err
	}
	var (
		rev   uint64
		fnErr error
	)
	err := b.db.Update(func(btx *bolt.Tx) error {
		cur, err := readRevision(btx)
		if err != nil {
			return err
		}
		t := &boltTx{tx: btx, rev: cur + 1, writable: true}
		defer func() { t.done = true }()
		if fnErr = fn(t); fnErr != nil {
			return fnErr
		}
		if !t.wrote {
			rev = cur
			return errNoWrite
		}
		if err := putRevision(btx.Bucket(metaBucket), cur+1); err != nil {
			return err
		}
		rev = cur + 1
		return nil
	})
	switch {
	case fnErr != nil:
		return 0, fnErr
	case errors.Is(err, errNoWrite):
		return rev, nil
	case err != nil:
		return 0, fmt.Errorf("update: %w", dbErr(err))
	}
	b.rev.Store(rev)
	b.notify(rev)
	return rev, nil
}

// Revision returns the newest committed revision.
func (b *Bolt) Revision() uint64 { return b.rev.Load() }

// Subscribe returns a channel that receives the newest revision after every
// commit, coalesced: a slow reader finds only the newest one waiting. It
// does not receive the revision current at the time of the call (read
// Revision after subscribing for that). The returned function ends the
// subscription and closes the channel; Close ends all subscriptions.
func (b *Bolt) Subscribe() (<-chan uint64, func()) {
	ch := make(chan uint64, 1)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mu.closed {
		close(ch)
		return ch, func() {}
	}
	b.mu.subs[ch] = struct{}{}
	return ch, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if _, ok := b.mu.subs[ch]; ok {
			delete(b.mu.subs, ch)
			close(ch)
		}
	}
}

// notify hands rev to every subscriber without blocking, replacing an older
// revision still waiting in the channel. Sends happen only here, under
// b.mu, so after the drain there is room.
func (b *Bolt) notify(rev uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.mu.subs {
		select {
		case <-ch:
		default:
		}
		select {
		case ch <- rev:
		default:
		}
	}
}

// Close ends all subscriptions, waits for running transactions and
// releases the file. It is idempotent; afterwards other calls return
// ErrClosed.
func (b *Bolt) Close() error {
	b.mu.Lock()
	if b.mu.closed {
		b.mu.Unlock()
		return nil
	}
	b.mu.closed = true
	b.closed.Store(true)
	for ch := range b.mu.subs {
		delete(b.mu.subs, ch)
		close(ch)
	}
	b.mu.Unlock()
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("close store %s: %w", b.path, err)
	}
	return nil
}

// Check verifies the file's page structure (bbolt's consistency check) and
// that every stored object decodes. It reads a snapshot, so it may run
// while the store is in use.
func (b *Bolt) Check(ctx context.Context) error {
	if err := b.usable(ctx); err != nil {
		return err
	}
	err := b.db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		if len(errs) > 0 {
			return fmt.Errorf("%d page errors: %w", len(errs), errors.Join(errs...))
		}
		if _, err := readRevision(tx); err != nil {
			return err
		}
		objects := tx.Bucket(objectsBucket)
		if objects == nil {
			return fmt.Errorf("objects bucket missing: %w", ErrFormat)
		}
		return objects.ForEachBucket(func(kind []byte) error {
			return objects.Bucket(kind).ForEach(func(k, v []byte) error {
				if _, _, _, err := decodeEnvelope(v); err != nil {
					return fmt.Errorf("%s/%s: %w", kind, k, err)
				}
				return ctx.Err()
			})
		})
	})
	if err != nil {
		return fmt.Errorf("check store %s: %w", b.path, dbErr(err))
	}
	return nil
}

// boltTx is both the Reader of View and the Tx of Update. Like the bbolt
// transaction under it, it is not safe for concurrent use.
type boltTx struct {
	tx       *bolt.Tx
	rev      uint64
	writable bool
	wrote    bool
	done     bool
}

func checkName(kind, key string) error {
	if kind == "" || key == "" || len(kind) > bolt.MaxKeySize || len(key) > bolt.MaxKeySize {
		return fmt.Errorf("kind %.64q, key %.64q: %w", kind, key, ErrInvalidKey)
	}
	return nil
}

// bucket returns the kind's bucket, nil when it does not exist yet.
func (t *boltTx) bucket(kind string) *bolt.Bucket {
	objects := t.tx.Bucket(objectsBucket)
	if objects == nil {
		return nil
	}
	return objects.Bucket([]byte(kind))
}

func (t *boltTx) Get(kind, key string) (Object, error) {
	if t.done {
		return Object{}, errTxDone
	}
	if err := checkName(kind, key); err != nil {
		return Object{}, err
	}
	b := t.bucket(kind)
	if b == nil {
		return Object{}, fmt.Errorf("%s/%s: %w", kind, key, ErrNotFound)
	}
	v := b.Get([]byte(key))
	if v == nil {
		return Object{}, fmt.Errorf("%s/%s: %w", kind, key, ErrNotFound)
	}
	return decodeObject(kind, key, v)
}

func decodeObject(kind, key string, v []byte) (Object, error) {
	createRev, modRev, value, err := decodeEnvelope(v)
	if err != nil {
		return Object{}, fmt.Errorf("%s/%s: %w", kind, key, err)
	}
	return Object{Kind: kind, Key: key, Value: value, CreateRevision: createRev, ModRevision: modRev}, nil
}

func (t *boltTx) List(kind, prefix string) ([]Object, error) {
	if t.done {
		return nil, errTxDone
	}
	if kind == "" {
		return nil, fmt.Errorf("empty kind: %w", ErrInvalidKey)
	}
	b := t.bucket(kind)
	if b == nil {
		return nil, nil
	}
	var out []Object
	p := []byte(prefix)
	c := b.Cursor()
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		obj, err := decodeObject(kind, string(k), v)
		if err != nil {
			return nil, err
		}
		out = append(out, obj)
	}
	return out, nil
}

func (t *boltTx) Put(kind, key string, value []byte) error {
	if t.done {
		return errTxDone
	}
	if !t.writable {
		return fmt.Errorf("put %s/%s: read-only transaction", kind, key)
	}
	if err := checkName(kind, key); err != nil {
		return err
	}
	objects := t.tx.Bucket(objectsBucket)
	if objects == nil {
		return fmt.Errorf("objects bucket missing: %w", ErrFormat)
	}
	b, err := objects.CreateBucketIfNotExists([]byte(kind))
	if err != nil {
		return fmt.Errorf("put %s/%s: create bucket: %w", kind, key, err)
	}
	createRev := t.rev
	if old := b.Get([]byte(key)); old != nil {
		if createRev, _, _, err = decodeEnvelope(old); err != nil {
			return fmt.Errorf("put %s/%s: %w", kind, key, err)
		}
	}
	if err := b.Put([]byte(key), encodeEnvelope(createRev, t.rev, value)); err != nil {
		return fmt.Errorf("put %s/%s: %w", kind, key, err)
	}
	t.wrote = true
	return nil
}

func (t *boltTx) Delete(kind, key string) error {
	if t.done {
		return errTxDone
	}
	if !t.writable {
		return fmt.Errorf("delete %s/%s: read-only transaction", kind, key)
	}
	if err := checkName(kind, key); err != nil {
		return err
	}
	b := t.bucket(kind)
	if b == nil || b.Get([]byte(key)) == nil {
		return fmt.Errorf("%s/%s: %w", kind, key, ErrNotFound)
	}
	if err := b.Delete([]byte(key)); err != nil {
		return fmt.Errorf("delete %s/%s: %w", kind, key, err)
	}
	t.wrote = true
	return nil
}

func (t *boltTx) Revision() uint64 { return t.rev }
