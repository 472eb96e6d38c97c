package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/dbproxy/dbproxy/controlplane/store/etcdtest"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/testing/testutil"
)

// Tests of what only the etcd backend has: several processes (replicas)
// on one prefix, the layout under the prefix, TLS, and etcd going away.
// The contract every backend keeps is in contract_test.go.

// rawClient is a plain etcd client, for looking under the store.
func rawClient(t *testing.T, srv *etcdtest.Server) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// incrCounter is one read-modify-write of c/n.
func incrCounter(tx Tx) error {
	n := 0
	if obj, err := tx.Get("c", "n"); err == nil {
		if n, err = strconv.Atoi(string(obj.Value)); err != nil {
			return err
		}
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	return tx.Put("c", "n", []byte(strconv.Itoa(n+1)))
}

// TestEtcdReplicas runs two stores on one prefix, as two control-plane
// replicas would: their writes race, conflicts are retried, no increment
// is lost, revisions stay dense and the same on both, and each hears of
// the other's commits.
func TestEtcdReplicas(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.Start(t, etcdtest.Options{})
	a := openEtcdTemp(t, srv, "/replicas/")
	b := openEtcdTemp(t, srv, "/replicas/")
	subB, cancel := b.Subscribe()
	defer cancel()

	rev := put(t, a, "k", "from-a", "1")
	if v, _ := recv(t, subB); v != rev {
		t.Fatalf("replica b heard of revision %d, want %d", v, rev)
	}
	if b.Revision() != rev {
		t.Fatalf("replica b at revision %d, want %d", b.Revision(), rev)
	}
	if obj := mustGet(t, b, "k", "from-a"); obj.ModRevision != rev {
		t.Fatalf("replica b reads %+v", obj)
	}

	const each = 25
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		seen   = map[uint64]bool{}
		errsCh = make(chan error, 2*each)
	)
	for _, s := range []*Etcd{a, b, a, b} {
		wg.Go(func() {
			for range each {
				r, err := s.Update(ctx, incrCounter)
				if err != nil {
					errsCh <- err
					return
				}
				mu.Lock()
				if seen[r] {
					errsCh <- errors.New("revision " + strconv.FormatUint(r, 10) + " returned twice")
				}
				seen[r] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errsCh)
	for err := range errsCh {
		t.Error(err)
	}
	const total = 4 * each
	if obj := mustGet(t, b, "c", "n"); string(obj.Value) != strconv.Itoa(total) || obj.ModRevision != rev+total {
		t.Fatalf("counter %s at revision %d, want %d at %d", obj.Value, obj.ModRevision, total, rev+total)
	}
	for _, s := range []*Etcd{a, b} {
		testutil.Eventually(t, 5*time.Second, "both replicas at the last revision", func() bool {
			return s.Revision() == rev+total
		})
	}
}

// TestEtcdPrefix keeps stores on different prefixes apart, "/p" meaning
// "/p/" so that it does not cover "/p2/", and leaves keys outside the
// prefix alone.
func TestEtcdPrefix(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	raw := rawClient(t, srv)
	if _, err := raw.Put(context.Background(), "/other-app/x", "y"); err != nil {
		t.Fatal(err)
	}
	p := openEtcdTemp(t, srv, "/p")
	p2 := openEtcdTemp(t, srv, "/p2/")
	if p.Prefix() != "/p/" {
		t.Fatalf("prefix %q, want /p/", p.Prefix())
	}
	put(t, p, "k", "a", "in p")
	put(t, p2, "k", "a", "in p2")
	put(t, p2, "k", "b", "in p2")
	if obj := mustGet(t, p, "k", "a"); string(obj.Value) != "in p" || p.Revision() != 1 {
		t.Fatalf("p reads %q at revision %d", obj.Value, p.Revision())
	}
	if objs := list(t, p, "k", ""); len(objs) != 1 {
		t.Fatalf("p lists %d objects, want 1", len(objs))
	}
	if p2.Revision() != 2 {
		t.Fatalf("p2 at revision %d, want 2", p2.Revision())
	}
	resp, err := raw.Get(context.Background(), "/other-app/x")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "y" {
		t.Fatalf("key outside the prefixes: %v, %v", resp, err)
	}
}

// TestEtcdLayout refuses a prefix that holds something other than a store.
func TestEtcdLayout(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	raw := rawClient(t, srv)
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		keys map[string]string
	}{
		{"foreign keys", map[string]string{"/foreign/some/key": "v"}},
		{"newer layout", map[string]string{"/newer/format": "2", "/newer/rev": "0"}},
		{"no counter", map[string]string{"/nocounter/format": "1"}},
		{"bad counter", map[string]string{"/badcounter/format": "1", "/badcounter/rev": "x"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var prefix string
			for k, v := range tt.keys {
				prefix = "/" + strings.Split(k, "/")[1] + "/"
				if _, err := raw.Put(ctx, k, v); err != nil {
					t.Fatal(err)
				}
			}
			e, err := OpenEtcd(ctx, EtcdOptions{Endpoints: srv.Endpoints, Prefix: prefix})
			if err == nil {
				e.Close()
				t.Fatal("OpenEtcd succeeded")
			}
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("OpenEtcd = %v, want ErrFormat", err)
			}
		})
	}
	t.Run("damaged object", func(t *testing.T) {
		e := openEtcdTemp(t, srv, "/damaged/")
		put(t, e, "k", "good", "v")
		if _, err := raw.Put(ctx, "/damaged/obj/k/bad", "\x09short"); err != nil {
			t.Fatal(err)
		}
		if _, err := get(t, e, "k", "bad"); !errors.Is(err, ErrFormat) {
			t.Errorf("Get = %v, want ErrFormat", err)
		}
		if err := e.Check(ctx); !errors.Is(err, ErrFormat) {
			t.Errorf("Check = %v, want ErrFormat", err)
		}
		mustGet(t, e, "k", "good")
	})
	t.Run("kinds with a slash do not collide", func(t *testing.T) {
		e := openEtcdTemp(t, srv, "/slash/")
		put(t, e, "a/b", "c", "kind a/b")
		put(t, e, "a", "b/c", "kind a")
		if obj := mustGet(t, e, "a/b", "c"); string(obj.Value) != "kind a/b" {
			t.Errorf("a/b c = %q", obj.Value)
		}
		if objs := list(t, e, "a", ""); len(objs) != 1 || objs[0].Key != "b/c" {
			t.Errorf("kind a lists %+v", objs)
		}
	})
}

// TestEtcdTLS connects with a CA and a client certificate to a server that
// requires both.
func TestEtcdTLS(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{TLS: true})
	ctx := context.Background()
	e, err := OpenEtcd(ctx, EtcdOptions{Endpoints: srv.Endpoints, CAFile: srv.CAFile, CertFile: srv.CertFile, KeyFile: srv.KeyFile})
	if err != nil {
		t.Fatalf("OpenEtcd over TLS: %v", err)
	}
	defer e.Close()
	if e.Prefix() != DefaultEtcdPrefix {
		t.Errorf("prefix %q, want the default %q", e.Prefix(), DefaultEtcdPrefix)
	}
	put(t, e, "k", "a", "over tls")

	t.Run("without a client certificate", func(t *testing.T) {
		e, err := OpenEtcd(ctx, EtcdOptions{Endpoints: srv.Endpoints, CAFile: srv.CAFile, RequestTimeout: time.Second})
		if err == nil {
			e.Close()
			t.Fatal("OpenEtcd without a client certificate succeeded")
		}
	})
	t.Run("certificate without key", func(t *testing.T) {
		if _, err := OpenEtcd(ctx, EtcdOptions{Endpoints: srv.Endpoints, CertFile: srv.CertFile}); err == nil {
			t.Fatal("OpenEtcd with a certificate but no key succeeded")
		}
	})
}

// TestEtcdSealedInEtcd finds no plaintext secret in what the encrypted
// store sent to etcd, while it reads back through the store.
func TestEtcdSealedInEtcd(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	e := openEtcdTemp(t, srv, "/sealed/")
	st := Encrypted(e, newTestSealer(t, 1), model.SensitiveKinds...)
	writeSample(t, st)
	if obj := mustGet(t, st, model.KindSecret, "app"); !bytes.Contains(obj.Value, []byte(testPassword)) {
		t.Fatalf("secret reads back as %q", obj.Value)
	}
	resp, err := rawClient(t, srv).Get(context.Background(), "/sealed/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	sawProxy := false
	for _, kv := range resp.Kvs {
		if bytes.Contains(kv.Value, []byte(testPassword)) {
			t.Errorf("%s holds the password in plaintext", kv.Key)
		}
		sawProxy = sawProxy || bytes.Contains(kv.Value, []byte("visible-proxy-name"))
	}
	if !sawProxy {
		t.Error("no plaintext proxy found: the check looked at the wrong keys")
	}
}

// cutter forwards loopback TCP connections to etcd until cut, which
// closes the listener and every connection: to the store, etcd is gone,
// as a dead member or a partition looks, while the server itself stops
// quickly at the end of the test.
type cutter struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newCutter(t *testing.T, target string) *cutter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{ln: ln}
	c.wg.Go(func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, in, out)
			c.mu.Unlock()
			c.wg.Go(func() { _, _ = io.Copy(out, in); out.Close() })
			c.wg.Go(func() { _, _ = io.Copy(in, out); in.Close() })
		}
	})
	t.Cleanup(c.cut)
	return c
}

func (c *cutter) cut() {
	c.ln.Close()
	c.mu.Lock()
	for _, conn := range c.conns {
		conn.Close()
	}
	c.mu.Unlock()
	c.wg.Wait()
}

// TestEtcdUnavailable cuts etcd off under an open store: calls fail
// within the request timeout with ErrUnavailable instead of hanging.
func TestEtcdUnavailable(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	c := newCutter(t, strings.TrimPrefix(srv.Endpoints[0], "http://"))
	e, err := OpenEtcd(context.Background(), EtcdOptions{Endpoints: []string{"http://" + c.ln.Addr().String()}, Prefix: "/gone/", RequestTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	rev := put(t, e, "k", "a", "1")
	c.cut()
	start := time.Now()
	_, err = e.Update(context.Background(), func(tx Tx) error { return tx.Put("k", "b", nil) })
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Update without etcd = %v, want ErrUnavailable", err)
	}
	if _, err := e.View(context.Background(), func(Reader) error { return nil }); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("View without etcd = %v, want ErrUnavailable", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("failing took %s with a 500ms request timeout", elapsed)
	}
	if e.Revision() != rev {
		t.Errorf("Revision = %d, want the last known %d", e.Revision(), rev)
	}
}

// TestEtcdWatchAfterCompaction lets a replica's watch fall behind a
// compaction: it reads the revision afresh instead of waiting for events
// that no longer exist.
func TestEtcdWatchAfterCompaction(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.Start(t, etcdtest.Options{})
	a := openEtcdTemp(t, srv, "/compact/")
	b := openEtcdTemp(t, srv, "/compact/")
	// b stops hearing, as during a long partition.
	b.stopWatch()
	<-b.watchDone
	resp, err := rawClient(t, srv).Get(ctx, "/compact/rev")
	if err != nil {
		t.Fatal(err)
	}
	behind := resp.Header.Revision + 1
	var last uint64
	for i := range 5 {
		last = put(t, a, "k", strconv.Itoa(i), "v")
	}
	cresp, err := rawClient(t, srv).Get(ctx, "/compact/rev")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rawClient(t, srv).Compact(ctx, cresp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	sub, cancel := b.Subscribe()
	defer cancel()
	done := make(chan int64, 1)
	go func() { done <- b.follow(ctx, behind) }()
	select {
	case next := <-done:
		if next <= cresp.Header.Revision {
			t.Fatalf("watch again from %d, at or before the compaction at %d", next, cresp.Header.Revision)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch of a compacted revision did not end")
	}
	if v, _ := recv(t, sub); v != last || b.Revision() != last {
		t.Fatalf("b heard %d, at revision %d; want %d", v, b.Revision(), last)
	}
}

// TestEtcdQuorum runs the store on a three-member cluster: with one member
// down writes go on, with two down they fail with ErrUnavailable within
// the request timeout, and when a member comes back writes resume where
// they stopped, the watch included.
func TestEtcdQuorum(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-member etcd cluster")
	}
	ctx := context.Background()
	c := etcdtest.StartCluster(t, 3)
	e, err := OpenEtcd(ctx, EtcdOptions{Endpoints: c.Endpoints, Prefix: "/quorum/", RequestTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	sub, cancel := e.Subscribe()
	defer cancel()
	// tryPut writes k/key once; errors are expected while members go.
	tryPut := func(key string) (uint64, error) {
		return e.Update(ctx, func(tx Tx) error { return tx.Put("k", key, []byte("v")) })
	}
	// putSoon writes k/key, retrying while the cluster elects a leader.
	putSoon := func(key string) uint64 {
		t.Helper()
		var rev uint64
		testutil.Eventually(t, 15*time.Second, "a write to "+key, func() bool {
			var err error
			rev, err = tryPut(key)
			return err == nil
		})
		return rev
	}
	rev := put(t, e, "k", "all-up", "v")

	c.Stop(0)
	if got := putSoon("one-down"); got != rev+1 {
		t.Fatalf("write with one member down at revision %d, want %d", got, rev+1)
	}
	c.Stop(1)
	start := time.Now()
	if _, err := tryPut("two-down"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("write with two members down = %v, want ErrUnavailable", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("refusing took %s with a 1s request timeout", elapsed)
	}

	if err := c.Start(1); err != nil {
		t.Fatal(err)
	}
	back := putSoon("back")
	// The refused write may still commit once the quorum is back: etcd
	// keeps a proposal that timed out for its caller. Then it is revision
	// rev+2, whole, and the next write comes after it.
	refused, refusedErr := get(t, e, "k", "two-down")
	switch {
	case errors.Is(refusedErr, ErrNotFound) && back == rev+2:
	case refusedErr == nil && refused.ModRevision == rev+2 && back == rev+3:
		t.Log("the write refused without a quorum committed when the quorum came back")
	default:
		t.Fatalf("write after a member came back at revision %d (refused write: %+v, %v); want %d, or %d after the refused one",
			back, refused, refusedErr, rev+2, rev+3)
	}
	testutil.Eventually(t, 10*time.Second, "the subscriber to hear of the write", func() bool {
		select {
		case v := <-sub:
			return v == back
		default:
			return false
		}
	})
	for _, k := range []string{"all-up", "one-down", "back"} {
		mustGet(t, e, "k", k)
	}
}
