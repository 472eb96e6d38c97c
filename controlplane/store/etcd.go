package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// DefaultEtcdPrefix is where the etcd backend keeps its keys when
// EtcdOptions.Prefix is empty.
const DefaultEtcdPrefix = "/dbproxy/"

// DefaultEtcdRequestTimeout bounds each etcd request when
// EtcdOptions.RequestTimeout is zero: a cluster without quorum answers
// nothing, and a control plane must say so instead of hanging a request.
const DefaultEtcdRequestTimeout = 5 * time.Second

// Layout under the prefix P. The store keeps its own revision counter
// instead of using etcd's revision:
//
//   - etcd's revision counts every write to the whole cluster, including
//     other applications, other prefixes, leases and the leader-election
//     keys of the control plane itself, so it would move without a change
//     of state and differ from a restored copy;
//   - the counter moves by exactly one per committed Update, like the bbolt
//     backend's, so that revisions, Object revisions and backups mean the
//     same on both backends, and a backup restores at its own revision;
//   - every Update compares the counter's etcd mod revision, so a commit
//     fails when anything under the prefix changed since its snapshot:
//     serialisable transactions from one comparison.
//
// Objects are stored in the bbolt backend's envelope (envelope.go), which
// carries their create and mod revisions in counter terms; the kind is
// path-escaped so that a "/" in it cannot make two names collide.
//
//	P + "format"               "1": the layout version
//	P + "rev"                  the counter, decimal
//	P + "obj/" + kind + "/" + key  envelope
const (
	etcdFormatKey = "format"
	etcdRevKey    = "rev"
	etcdObjPrefix = "obj/"
	etcdFormatV1  = "1"
)

// etcdBackupPage is how many objects Backup reads per request: a bounded
// response size whatever the size of the store.
const etcdBackupPage = 1000

// EtcdOptions configure OpenEtcd.
type EtcdOptions struct {
	// Endpoints are the etcd client URLs (http:// or https://).
	Endpoints []string
	// Prefix is the key prefix of this control plane's state; it gets a
	// trailing "/" when it has none. Empty means DefaultEtcdPrefix.
	Prefix string
	// CAFile is the CA bundle that signs the etcd servers' certificates;
	// empty uses the system roots (for https:// endpoints).
	CAFile string
	// CertFile and KeyFile are the client certificate and its key, for
	// clusters that authenticate clients by certificate.
	CertFile, KeyFile string
	// DialTimeout bounds the first connection; zero means 5 s.
	DialTimeout time.Duration
	// RequestTimeout bounds each request; zero means
	// DefaultEtcdRequestTimeout.
	RequestTimeout time.Duration
	// Client, when set, is used instead of dialling Endpoints (with the
	// TLS options ignored); Close leaves it open.
	Client *clientv3.Client
}

// Etcd is the Store on an etcd cluster, shared by every control-plane
// replica that uses the same prefix. Commits are durable once etcd
// acknowledges them (a quorum has them on disk). It is safe for concurrent
// use.
type Etcd struct {
	client     *clientv3.Client
	ownsClient bool
	prefix     string
	timeout    time.Duration

	// writeMu serialises this process's Updates: they would only conflict
	// with each other, and revisions are published in commit order.
	// Replicas still race one another; the counter comparison settles it.
	writeMu sync.Mutex
	rev     atomic.Uint64

	stopWatch context.CancelFunc
	watchDone chan struct{}

	mu struct {
		sync.Mutex
		closed bool
		ops    sync.WaitGroup // running View, Update and Backup calls
		subs   map[chan uint64]struct{}
	}
}

var _ Store = (*Etcd)(nil)

// OpenEtcd connects to etcd, creates the layout under the prefix when the
// prefix is empty, checks it otherwise, and starts watching the revision
// so that subscribers hear of commits by other replicas. Keys under the
// prefix without a layout (another application's data, or an interrupted
// RestoreEtcd) fail with ErrFormat.
func OpenEtcd(ctx context.Context, opts EtcdOptions) (*Etcd, error) {
	prefix := opts.KeyPrefix()
	timeout := opts.RequestTimeout
	if timeout <= 0 {
		timeout = DefaultEtcdRequestTimeout
	}
	e := &Etcd{client: opts.Client, prefix: prefix, timeout: timeout}
	e.mu.subs = make(map[chan uint64]struct{})
	if e.client == nil {
		c, err := dialEtcd(opts)
		if err != nil {
			return nil, err
		}
		e.client, e.ownsClient = c, true
	}
	rev, watchFrom, err := e.initLayout(ctx)
	if err != nil {
		// The open failed: its error says more than one from the close.
		defer func() { _ = e.closeClient() }()
		return nil, fmt.Errorf("open etcd store %s on %s: %w", prefix, strings.Join(e.client.Endpoints(), ","), err)
	}
	e.rev.Store(rev)
	wctx, stop := context.WithCancel(context.Background())
	e.stopWatch, e.watchDone = stop, make(chan struct{})
	go e.watch(wctx, watchFrom)
	return e, nil
}

// KeyPrefix returns the prefix the store uses: Prefix with the default
// applied and a trailing "/", without which "/dbproxy" would also cover
// "/dbproxy2/".
func (o EtcdOptions) KeyPrefix() string {
	prefix := o.Prefix
	if prefix == "" {
		prefix = DefaultEtcdPrefix
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return prefix
}

// dialEtcd makes a client from the endpoints and TLS files of opts.
func dialEtcd(opts EtcdOptions) (*clientv3.Client, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("open etcd store: no endpoints")
	}
	cfg := clientv3.Config{
		Endpoints:   opts.Endpoints,
		DialTimeout: opts.DialTimeout,
		// The client's own log is zap; its failures reach us as errors,
		// which the control plane logs with context.
		Logger: zap.NewNop(),
		// Without keepalives a half-open connection to a dead member
		// would be noticed only when a request times out.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	tlsCfg, err := etcdTLS(opts)
	if err != nil {
		return nil, fmt.Errorf("open etcd store: %w", err)
	}
	cfg.TLS = tlsCfg
	c, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("open etcd store %s: %w", strings.Join(opts.Endpoints, ","), err)
	}
	return c, nil
}

// etcdTLS returns the client's TLS configuration: nil (plain) unless a CA,
// a client certificate or an https:// endpoint asks for TLS.
func etcdTLS(opts EtcdOptions) (*tls.Config, error) {
	https := false
	for _, ep := range opts.Endpoints {
		if strings.HasPrefix(ep, "https://") {
			https = true
		}
	}
	if (opts.CertFile == "") != (opts.KeyFile == "") {
		return nil, errors.New("give both an etcd client certificate and its key, or neither")
	}
	if !https && opts.CAFile == "" && opts.CertFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if opts.CAFile != "" {
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read etcd CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd CA %s holds no PEM certificate", opts.CAFile)
		}
		cfg.RootCAs = pool
	}
	if opts.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(opts.CertFile, opts.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load etcd client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Prefix returns the key prefix the store lives under.
func (e *Etcd) Prefix() string { return e.prefix }

// Client returns the etcd client, for what shares the cluster with the
// store (leader election, leases).
func (e *Etcd) Client() *clientv3.Client { return e.client }

func (e *Etcd) key(name string) string { return e.prefix + name }

// objKey returns the etcd key of kind/key. PathEscape never leaves a "/"
// and is reversible, so the kind ends at the first "/" after obj/.
func (e *Etcd) objKey(kind, key string) string {
	return e.prefix + etcdObjPrefix + url.PathEscape(kind) + "/" + key
}

// reqCtx bounds one request.
func (e *Etcd) reqCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, e.timeout)
}

// etcdErr marks a failed request as the store being unavailable, unless
// the caller's own context ended it.
func etcdErr(ctx context.Context, what string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%s: %w", what, cerr)
	}
	return fmt.Errorf("%s: %w: %w", what, ErrUnavailable, err)
}

// initLayout creates the format marker and the counter under an empty
// prefix, or checks them; it returns the counter and the etcd revision to
// watch from.
func (e *Etcd) initLayout(ctx context.Context) (rev uint64, watchFrom int64, err error) {
	rctx, cancel := e.reqCtx(ctx)
	defer cancel()
	// One transaction: on an empty prefix write the layout, otherwise read
	// it; a replica starting at the same time sees either none or all.
	resp, err := e.client.Txn(rctx).
		If(clientv3.Compare(clientv3.CreateRevision(e.prefix), "=", 0).WithPrefix()).
		Then(clientv3.OpPut(e.key(etcdFormatKey), etcdFormatV1), clientv3.OpPut(e.key(etcdRevKey), "0")).
		Else(clientv3.OpGet(e.key(etcdFormatKey)), clientv3.OpGet(e.key(etcdRevKey))).
		Commit()
	if err != nil {
		return 0, 0, etcdErr(ctx, "initialise", err)
	}
	if resp.Succeeded {
		return 0, resp.Header.Revision + 1, nil
	}
	format, counter := resp.Responses[0].GetResponseRange().Kvs, resp.Responses[1].GetResponseRange().Kvs
	if len(format) == 0 {
		return 0, 0, fmt.Errorf("keys under the prefix but no layout marker (another application's data, or an interrupted restore): %w", ErrFormat)
	}
	if string(format[0].Value) != etcdFormatV1 {
		return 0, 0, fmt.Errorf("layout %q (this build reads %q): %w", format[0].Value, etcdFormatV1, ErrFormat)
	}
	if len(counter) == 0 {
		return 0, 0, fmt.Errorf("revision counter missing: %w", ErrFormat)
	}
	if rev, err = parseCounter(counter[0].Value); err != nil {
		return 0, 0, err
	}
	return rev, resp.Header.Revision + 1, nil
}

func parseCounter(v []byte) (uint64, error) {
	n, err := strconv.ParseUint(string(v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("revision counter %q: %w", v, ErrFormat)
	}
	return n, nil
}

// begin registers a call that Close waits for.
func (e *Etcd) begin(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mu.closed {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	e.mu.ops.Add(1)
	return nil
}

func (e *Etcd) end() { e.mu.ops.Done() }

// snapshot is one consistent point of the store: the counter and the etcd
// revision every read of a transaction is made at.
type snapshot struct {
	counter    uint64
	etcdRev    int64
	counterMod int64 // the counter key's etcd mod revision, for the commit
}

// readSnapshot reads the counter with a linearizable read, so the
// snapshot holds every commit acknowledged before it began, on any
// replica.
func (e *Etcd) readSnapshot(ctx context.Context) (snapshot, error) {
	rctx, cancel := e.reqCtx(ctx)
	defer cancel()
	resp, err := e.client.Get(rctx, e.key(etcdRevKey))
	if err != nil {
		return snapshot{}, etcdErr(ctx, "read revision", err)
	}
	if len(resp.Kvs) == 0 {
		return snapshot{}, fmt.Errorf("revision counter missing: %w", ErrFormat)
	}
	n, err := parseCounter(resp.Kvs[0].Value)
	if err != nil {
		return snapshot{}, err
	}
	e.publish(n)
	return snapshot{counter: n, etcdRev: resp.Header.Revision, counterMod: resp.Kvs[0].ModRevision}, nil
}

// View runs fn on a snapshot: every read is made at the etcd revision of
// the snapshot's start, so fn sees one committed state however long it
// runs (until etcd compacts that revision away).
func (e *Etcd) View(ctx context.Context, fn func(r Reader) error) (uint64, error) {
	if err := e.begin(ctx); err != nil {
		return 0, err
	}
	defer e.end()
	snap, err := e.readSnapshot(ctx)
	if err != nil {
		return 0, fmt.Errorf("view: %w", err)
	}
	t := newEtcdTx(ctx, e, snap, false)
	defer func() { t.done = true }()
	if err := fn(t); err != nil {
		return 0, err
	}
	return snap.counter, nil
}

// Update runs fn on a snapshot, buffering its writes, and commits them in
// one etcd transaction on condition that the revision counter has not
// moved since the snapshot. When another replica committed meanwhile, fn
// runs again on a new snapshot, so fn must leave nothing behind but its
// writes to tx and the results it assigns (every caller's does). Conflicts
// are retried, with jittered backoff, until ctx ends or twice the request
// timeout has passed.
func (e *Etcd) Update(ctx context.Context, fn func(tx Tx) error) (uint64, error) {
	if err := e.begin(ctx); err != nil {
		return 0, err
	}
	defer e.end()
	e.writeMu.Lock()
	defer e.writeMu.Unlock()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	giveUp := time.Now().Add(2 * e.timeout)
	backoff := time.Millisecond
	for attempt := 1; ; attempt++ {
		rev, committed, err := e.tryUpdate(ctx, fn)
		if err != nil || committed {
			return rev, err
		}
		if time.Now().After(giveUp) {
			return 0, fmt.Errorf("update: %d attempts conflicted with other replicas' writes: %w", attempt, ErrUnavailable)
		}
		// Another replica committed first: run fn again on its result.
		sleep := backoff/2 + rand.N(backoff)
		backoff = min(2*backoff, 100*time.Millisecond)
		timer := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			timer.Stop()
			return 0, ctx.Err()
		case <-timer.C:
		}
	}
}

// tryUpdate makes one attempt; committed is false on a conflict.
func (e *Etcd) tryUpdate(ctx context.Context, fn func(tx Tx) error) (rev uint64, committed bool, err error) {
	snap, err := e.readSnapshot(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("update: %w", err)
	}
	t := newEtcdTx(ctx, e, snap, true)
	fnErr := fn(t)
	t.done = true
	if fnErr != nil {
		return 0, false, fnErr
	}
	if len(t.writes) == 0 {
		return snap.counter, true, nil
	}
	next := snap.counter + 1
	ops := make([]clientv3.Op, 0, len(t.writes)+1)
	for _, k := range slices.Sorted(maps.Keys(t.writes)) {
		w := t.writes[k]
		if w.deleted {
			ops = append(ops, clientv3.OpDelete(k))
			continue
		}
		ops = append(ops, clientv3.OpPut(k, string(encodeEnvelope(w.obj.CreateRevision, next, w.obj.Value))))
	}
	ops = append(ops, clientv3.OpPut(e.key(etcdRevKey), strconv.FormatUint(next, 10)))
	rctx, cancel := e.reqCtx(ctx)
	defer cancel()
	resp, err := e.client.Txn(rctx).
		If(clientv3.Compare(clientv3.ModRevision(e.key(etcdRevKey)), "=", snap.counterMod)).
		Then(ops...).
		Commit()
	if err != nil {
		// The commit may or may not have happened (a timeout after etcd
		// applied it); the caller cannot tell, as with any remote store.
		return 0, false, etcdErr(ctx, "update: commit", err)
	}
	if !resp.Succeeded {
		return 0, false, nil
	}
	e.publish(next)
	return next, true, nil
}

// Revision returns the newest revision this process knows of: its own
// commits at once, other replicas' as the watch delivers them.
func (e *Etcd) Revision() uint64 { return e.rev.Load() }

// publish raises the known revision to rev and tells subscribers; older
// or repeated revisions (the watch echoing an own commit) are dropped, so
// subscribers see an increasing sequence.
func (e *Etcd) publish(rev uint64) {
	// One lock around the comparison and the sends: two publishers racing
	// could otherwise leave the older revision in a channel.
	e.mu.Lock()
	defer e.mu.Unlock()
	if rev <= e.rev.Load() {
		return
	}
	e.rev.Store(rev)
	for ch := range e.mu.subs {
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

// Subscribe returns a channel that receives the newest revision after
// every commit by any replica, coalesced as in Bolt.Subscribe.
func (e *Etcd) Subscribe() (<-chan uint64, func()) {
	ch := make(chan uint64, 1)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mu.closed {
		close(ch)
		return ch, func() {}
	}
	e.mu.subs[ch] = struct{}{}
	return ch, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if _, ok := e.mu.subs[ch]; ok {
			delete(e.mu.subs, ch)
			close(ch)
		}
	}
}

// watch follows the counter key from etcd revision from on and publishes
// every value, watching again (with backoff) whenever a watch ends.
func (e *Etcd) watch(ctx context.Context, from int64) {
	defer close(e.watchDone)
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		next := e.follow(ctx, from)
		if next > from {
			backoff = 50 * time.Millisecond
		}
		from = next
		timer := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			timer.Stop()
		case <-timer.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// follow runs one watch of the counter key from etcd revision from until
// it fails or ctx ends, and returns the revision to watch from next. When
// the revision it needs has been compacted away it reads the counter
// afresh instead: subscribers are coalesced anyway, so the values skipped
// lose nothing.
func (e *Etcd) follow(ctx context.Context, from int64) int64 {
	// A watch of its own context, ended on return: leaving a failed watch
	// registered would pile up watches on the client.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := e.client.Watch(clientv3.WithRequireLeader(wctx), e.key(etcdRevKey), clientv3.WithRev(from))
	for resp := range wch {
		if resp.CompactRevision != 0 {
			if snap, err := e.readSnapshot(ctx); err == nil {
				return snap.etcdRev + 1
			}
			return from
		}
		if resp.Err() != nil {
			return from
		}
		for _, ev := range resp.Events {
			if n, err := parseCounter(ev.Kv.Value); err == nil {
				e.publish(n)
			}
		}
		from = resp.Header.Revision + 1
	}
	return from
}

// Backup reads every object at one etcd revision and writes them as a
// bbolt file (the same file Bolt.Backup writes, at the same revision), so
// that a backup of either backend restores into either: OpenBolt opens it,
// RestoreEtcd loads it. The file is built in a temporary file, because
// bbolt needs one.
func (e *Etcd) Backup(ctx context.Context, w io.Writer) (uint64, error) {
	if err := e.begin(ctx); err != nil {
		return 0, err
	}
	defer e.end()
	snap, err := e.readSnapshot(ctx)
	if err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	f, err := os.CreateTemp("", "dbproxy-backup-*.db")
	if err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	path := f.Name()
	f.Close()
	defer os.Remove(path)
	b, err := OpenBolt(path, BoltOptions{LockTimeout: -1})
	if err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	defer b.Close()
	err = b.load(snap.counter, func(put func(kind, key string, envelope []byte) error) error {
		return e.scan(ctx, snap.etcdRev, put)
	})
	if err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	if _, err := b.Backup(ctx, w); err != nil {
		return 0, err
	}
	return snap.counter, nil
}

// scan hands every object stored at etcd revision rev to fn, in key order,
// a page at a time.
func (e *Etcd) scan(ctx context.Context, rev int64, fn func(kind, key string, envelope []byte) error) error {
	start := e.key(etcdObjPrefix)
	end := clientv3.GetPrefixRangeEnd(start)
	for {
		rctx, cancel := e.reqCtx(ctx)
		resp, err := e.client.Get(rctx, start, clientv3.WithRange(end), clientv3.WithRev(rev), clientv3.WithLimit(etcdBackupPage))
		cancel()
		if err != nil {
			return etcdErr(ctx, "read objects", err)
		}
		for _, kv := range resp.Kvs {
			kind, key, err := e.splitObjKey(string(kv.Key))
			if err != nil {
				return err
			}
			if err := fn(kind, key, kv.Value); err != nil {
				return err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// splitObjKey is the inverse of objKey.
func (e *Etcd) splitObjKey(k string) (kind, key string, err error) {
	rest, ok := strings.CutPrefix(k, e.prefix+etcdObjPrefix)
	if !ok {
		return "", "", fmt.Errorf("key %.64q outside the objects: %w", k, ErrFormat)
	}
	esc, key, ok := strings.Cut(rest, "/")
	if !ok {
		return "", "", fmt.Errorf("object key %.64q without a kind: %w", k, ErrFormat)
	}
	kind, err = url.PathUnescape(esc)
	if err != nil {
		return "", "", fmt.Errorf("object key %.64q: %w", k, ErrFormat)
	}
	return kind, key, nil
}

// Check verifies that every stored object decodes, reading one snapshot,
// so it may run while the store is in use (etcd checks its own storage).
func (e *Etcd) Check(ctx context.Context) error {
	if err := e.begin(ctx); err != nil {
		return err
	}
	defer e.end()
	snap, err := e.readSnapshot(ctx)
	if err != nil {
		return fmt.Errorf("check etcd store %s: %w", e.prefix, err)
	}
	err = e.scan(ctx, snap.etcdRev, func(kind, key string, envelope []byte) error {
		if err := checkName(kind, key); err != nil {
			return err
		}
		if _, _, _, err := decodeEnvelope(envelope); err != nil {
			return fmt.Errorf("%s/%s: %w", kind, key, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("check etcd store %s: %w", e.prefix, err)
	}
	return nil
}

// Close ends all subscriptions, waits for running calls, stops the watch
// and closes the client it dialled. It is idempotent; afterwards other
// calls return ErrClosed.
func (e *Etcd) Close() error {
	e.mu.Lock()
	if e.mu.closed {
		e.mu.Unlock()
		return nil
	}
	e.mu.closed = true
	for ch := range e.mu.subs {
		delete(e.mu.subs, ch)
		close(ch)
	}
	e.mu.Unlock()
	e.mu.ops.Wait()
	e.stopWatch()
	<-e.watchDone
	return e.closeClient()
}

func (e *Etcd) closeClient() error {
	if !e.ownsClient {
		return nil
	}
	if err := e.client.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("close etcd client: %w", err)
	}
	return nil
}

// etcdWrite is one buffered write of an Update.
type etcdWrite struct {
	obj     Object // Value and CreateRevision; ModRevision is the tx's
	deleted bool
}

// etcdTx is both the Reader of View and the Tx of Update: reads at the
// snapshot's etcd revision, overlaid by the transaction's own writes. It
// is not safe for concurrent use.
type etcdTx struct {
	ctx      context.Context
	e        *Etcd
	snap     snapshot
	writable bool
	done     bool
	writes   map[string]etcdWrite // by etcd key
}

func newEtcdTx(ctx context.Context, e *Etcd, snap snapshot, writable bool) *etcdTx {
	return &etcdTx{ctx: ctx, e: e, snap: snap, writable: writable, writes: make(map[string]etcdWrite)}
}

// Revision is the revision the transaction commits as.
func (t *etcdTx) Revision() uint64 { return t.snap.counter + 1 }

// lookup returns kind/key as the transaction sees it.
func (t *etcdTx) lookup(kind, key string) (Object, bool, error) {
	k := t.e.objKey(kind, key)
	if w, ok := t.writes[k]; ok {
		if w.deleted {
			return Object{}, false, nil
		}
		obj := w.obj
		obj.Value = slices.Clone(w.obj.Value)
		return obj, true, nil
	}
	rctx, cancel := t.e.reqCtx(t.ctx)
	defer cancel()
	resp, err := t.e.client.Get(rctx, k, clientv3.WithRev(t.snap.etcdRev))
	if err != nil {
		return Object{}, false, etcdErr(t.ctx, fmt.Sprintf("get %s/%s", kind, key), err)
	}
	if len(resp.Kvs) == 0 {
		return Object{}, false, nil
	}
	obj, err := decodeObject(kind, key, resp.Kvs[0].Value)
	return obj, err == nil, err
}

func (t *etcdTx) Get(kind, key string) (Object, error) {
	if t.done {
		return Object{}, errTxDone
	}
	if err := checkName(kind, key); err != nil {
		return Object{}, err
	}
	obj, ok, err := t.lookup(kind, key)
	if err != nil {
		return Object{}, err
	}
	if !ok {
		return Object{}, fmt.Errorf("%s/%s: %w", kind, key, ErrNotFound)
	}
	return obj, nil
}

func (t *etcdTx) List(kind, prefix string) ([]Object, error) {
	if t.done {
		return nil, errTxDone
	}
	if kind == "" {
		return nil, fmt.Errorf("empty kind: %w", ErrInvalidKey)
	}
	p := t.e.objKey(kind, prefix)
	rctx, cancel := t.e.reqCtx(t.ctx)
	defer cancel()
	resp, err := t.e.client.Get(rctx, p, clientv3.WithPrefix(), clientv3.WithRev(t.snap.etcdRev))
	if err != nil {
		return nil, etcdErr(t.ctx, fmt.Sprintf("list %s", kind), err)
	}
	keyStart := len(t.e.objKey(kind, ""))
	byKey := make(map[string]Object, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		key := string(kv.Key[keyStart:])
		obj, err := decodeObject(kind, key, kv.Value)
		if err != nil {
			return nil, err
		}
		byKey[key] = obj
	}
	for k, w := range t.writes {
		if !strings.HasPrefix(k, p) {
			continue
		}
		key := k[keyStart:]
		if w.deleted {
			delete(byKey, key)
			continue
		}
		obj := w.obj
		obj.Value = slices.Clone(w.obj.Value)
		byKey[key] = obj
	}
	if len(byKey) == 0 {
		return nil, nil
	}
	out := make([]Object, 0, len(byKey))
	for _, key := range slices.Sorted(maps.Keys(byKey)) {
		out = append(out, byKey[key])
	}
	return out, nil
}

func (t *etcdTx) Put(kind, key string, value []byte) error {
	if t.done {
		return errTxDone
	}
	if !t.writable {
		return fmt.Errorf("put %s/%s: read-only transaction", kind, key)
	}
	if err := checkName(kind, key); err != nil {
		return err
	}
	old, ok, err := t.lookup(kind, key)
	if err != nil {
		return fmt.Errorf("put %s/%s: %w", kind, key, err)
	}
	createRev := t.Revision()
	if ok {
		createRev = old.CreateRevision
	}
	t.writes[t.e.objKey(kind, key)] = etcdWrite{obj: Object{
		Kind: kind, Key: key, Value: slices.Clone(value),
		CreateRevision: createRev, ModRevision: t.Revision(),
	}}
	return nil
}

func (t *etcdTx) Delete(kind, key string) error {
	if t.done {
		return errTxDone
	}
	if !t.writable {
		return fmt.Errorf("delete %s/%s: read-only transaction", kind, key)
	}
	if err := checkName(kind, key); err != nil {
		return err
	}
	_, ok, err := t.lookup(kind, key)
	if err != nil {
		return fmt.Errorf("delete %s/%s: %w", kind, key, err)
	}
	if !ok {
		return fmt.Errorf("%s/%s: %w", kind, key, ErrNotFound)
	}
	t.writes[t.e.objKey(kind, key)] = etcdWrite{deleted: true}
	return nil
}
