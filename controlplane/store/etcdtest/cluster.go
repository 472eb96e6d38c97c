package etcdtest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Cluster is a cluster of etcd members in the test process, each of which
// can be stopped and started again. Clients (Endpoints) and the other
// members reach each member through relays of its own: stopping a member
// first cuts its relays' connections, as a dead machine would. That also
// lets the member stop at once instead of waiting for its clients' watch
// streams to end, and leaves no connection between members open after
// Close (etcd's peer transport keeps some that nobody closes otherwise).
type Cluster struct {
	// Endpoints are the members' client URLs, through the relays.
	Endpoints []string

	dir     string
	initial string // the initial-cluster string
	members []*member
}

type member struct {
	name       string
	clientPort string
	peerPort   string
	relay      *relay // to the client port
	peerRelay  *relay // to the peer port
	mu         sync.Mutex
	etcd       *embed.Etcd
}

// StartCluster starts n members and stops them at the end of the test.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c, err := newCluster(n)
	if err != nil {
		t.Fatalf("start an etcd cluster: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func newCluster(n int) (_ *Cluster, err error) {
	dir, err := os.MkdirTemp("", "dbproxy-etcd-cluster-*")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	// Members must know each other's peer URLs before they start, so the
	// ports are picked first (free a moment ago; a clash fails the start).
	var initial []string
	for i := range n {
		ports, err := freePorts(2)
		if err != nil {
			return nil, err
		}
		m := &member{name: fmt.Sprintf("m%d", i), clientPort: ports[0], peerPort: ports[1]}
		if m.relay, err = newRelay("127.0.0.1:" + m.clientPort); err != nil {
			return nil, err
		}
		c.members = append(c.members, m)
		if m.peerRelay, err = newRelay("127.0.0.1:" + m.peerPort); err != nil {
			return nil, err
		}
		c.Endpoints = append(c.Endpoints, "http://"+m.relay.addr())
		initial = append(initial, m.name+"=http://"+m.peerRelay.addr())
	}
	c.initial = strings.Join(initial, ",")
	// Every member waits for a quorum: start them together.
	errs := make(chan error, n)
	for i := range c.members {
		go func() { errs <- c.start(i) }()
	}
	for range n {
		err = errors.Join(err, <-errs)
	}
	return c, err
}

// freePorts returns n loopback ports that were free.
func freePorts(n int) ([]string, error) {
	var ports []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		ln.Close()
		ports = append(ports, port)
	}
	return ports, nil
}

func (c *Cluster) start(i int) error {
	m := c.members[i]
	cfg := embed.NewConfig()
	cfg.Name = m.name
	cfg.Dir = filepath.Join(c.dir, m.name)
	cfg.UnsafeNoFsync = true
	// Longer than a single member's: with three, a member starved of CPU
	// on a loaded machine must not start needless elections.
	cfg.TickMs, cfg.ElectionMs = 50, 500
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	client := url.URL{Scheme: "http", Host: "127.0.0.1:" + m.clientPort}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	// The member listens on its own port and is known to the others by
	// its relay's.
	cfg.ListenPeerUrls = []url.URL{{Scheme: "http", Host: "127.0.0.1:" + m.peerPort}}
	cfg.AdvertisePeerUrls = []url.URL{{Scheme: "http", Host: m.peerRelay.addr()}}
	cfg.InitialCluster = c.initial
	cfg.InitialClusterToken = "dbproxy-test"
	// Open before the start: members wait for each other's quorum.
	m.relay.open()
	m.peerRelay.open()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("member %s: %w", m.name, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("member %s failed while starting: %w", m.name, err)
	case <-time.After(30 * time.Second):
		e.Close()
		return fmt.Errorf("member %s not ready within 30s", m.name)
	}
	m.mu.Lock()
	m.etcd = e
	m.mu.Unlock()
	return nil
}

// Stop stops member i: its relay cuts every connection and refuses new
// ones, and the member shuts down. Its data stays for Start.
func (c *Cluster) Stop(i int) {
	m := c.members[i]
	m.relay.cut()
	m.peerRelay.cut()
	m.mu.Lock()
	e := m.etcd
	m.etcd = nil
	m.mu.Unlock()
	if e != nil {
		e.Close()
	}
}

// Start starts a stopped member i again on its data.
func (c *Cluster) Start(i int) error { return c.start(i) }

// Close stops every member and removes their data.
func (c *Cluster) Close() {
	for i := range c.members {
		c.Stop(i)
		c.members[i].relay.close()
		c.members[i].peerRelay.close()
	}
	_ = os.RemoveAll(c.dir)
}

// relay forwards TCP connections from its own port to target while open.
type relay struct {
	ln        net.Listener
	target    string
	mu        sync.Mutex
	accepting bool
	conns     map[net.Conn]struct{}
	wg        sync.WaitGroup
}

func newRelay(target string) (*relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &relay{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	r.wg.Go(r.accept)
	return r, nil
}

func (r *relay) addr() string { return r.ln.Addr().String() }

func (r *relay) accept() {
	for {
		in, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		ok := r.accepting
		r.mu.Unlock()
		var out net.Conn
		if ok {
			out, err = net.Dial("tcp", r.target)
		}
		if !ok || err != nil {
			in.Close()
			continue
		}
		r.mu.Lock()
		r.conns[in], r.conns[out] = struct{}{}, struct{}{}
		r.mu.Unlock()
		r.wg.Go(func() { r.pipe(out, in) })
		r.wg.Go(func() { r.pipe(in, out) })
	}
}

func (r *relay) pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
	r.mu.Lock()
	delete(r.conns, dst)
	delete(r.conns, src)
	r.mu.Unlock()
}

func (r *relay) open() {
	r.mu.Lock()
	r.accepting = true
	r.mu.Unlock()
}

// cut closes every connection and refuses new ones until open.
func (r *relay) cut() {
	r.mu.Lock()
	r.accepting = false
	for conn := range r.conns {
		conn.Close()
	}
	r.mu.Unlock()
}

// close stops the relay and waits for its goroutines.
func (r *relay) close() {
	r.cut()
	r.ln.Close()
	r.wg.Wait()
}
