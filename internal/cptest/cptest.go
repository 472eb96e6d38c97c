// Package cptest runs an in-process control plane and data-plane nodes fed
// by it over xDS, for tests and benchmarks: the control plane on a
// temporary data directory, nodes on 127.0.x.1 addresses (one per zone),
// an API client with the root key.
package cptest

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dbproxy/dbproxy/controlplane"
	"github.com/dbproxy/dbproxy/dataplane/managed"
	"github.com/dbproxy/dbproxy/dataplane/node"
	"github.com/dbproxy/dbproxy/internal/apiclient"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/mysqltest"
	"github.com/dbproxy/dbproxy/internal/sigv4"
)

// ControlPlane is a control plane running in the test process.
type ControlPlane struct {
	*controlplane.Server
	// Client calls the API with the root key.
	Client *apiclient.Client
	Dir    string
	// CA is the control plane's CA certificate; it stays valid while the
	// control plane is stopped.
	CA   []byte
	opts controlplane.Options
	log  io.Writer
	t    testing.TB
}

// Options configure StartOptions.
type Options struct {
	// Log, when set, receives every line the control plane and its nodes
	// log, at trace level, instead of the test log. Many goroutines write
	// to it: it must be safe for concurrent use.
	Log io.Writer
	// Now, when set, is the clock of the control plane, its API client
	// and its nodes (they sign and check tokens with it).
	Now func() time.Time
	// Metrics serves the control plane's /metrics on a free port
	// (MetricsAddr).
	Metrics bool
}

// ZoneHost returns the loopback address of the nodes of the i-th zone
// (0 for "a"): 127.0.1.1, 127.0.2.1, ...
func ZoneHost(i int) string { return fmt.Sprintf("127.0.%d.1", i+1) }

// Start starts a control plane. Its proxies get ports from a block that is
// free on the loopback addresses of zones a-c.
func Start(t testing.TB) *ControlPlane {
	t.Helper()
	return StartOptions(t, Options{})
}

// StartOptions starts a control plane configured by opts.
func StartOptions(t testing.TB, opts Options) *ControlPlane {
	t.Helper()
	lo, hi := freePortBlock(t, 40)
	cp := &ControlPlane{t: t, Dir: t.TempDir(), log: opts.Log}
	cp.opts = controlplane.Options{
		DataDir: cp.Dir, APIAddress: "127.0.0.1:0", XDSAddress: "127.0.0.1:0",
		PortMin: lo, PortMax: hi, Logger: cp.logger("controlplane"), Now: opts.Now,
	}
	if opts.Metrics {
		cp.opts.MetricsAddress = "127.0.0.1:0"
	}
	cp.start()
	// Restarts keep the addresses.
	cp.opts.APIAddress, cp.opts.XDSAddress = cp.APIAddr(), cp.XDSAddr()
	if opts.Metrics {
		cp.opts.MetricsAddress = cp.MetricsAddr()
	}
	t.Cleanup(cp.Stop)
	return cp
}

// logger returns the logger of a part of the test fleet.
func (cp *ControlPlane) logger(name string) hclog.Logger {
	if cp.log == nil {
		return mysqltest.TestLogger(cp.t).Named(name)
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Output: cp.log, Level: hclog.Trace, DisableTime: true})
}

func (cp *ControlPlane) start() {
	cp.t.Helper()
	s, err := controlplane.Start(context.Background(), cp.opts)
	if err != nil {
		cp.t.Fatalf("start control plane: %v", err)
	}
	cp.Server = s
	cp.CA = s.CAPEM()
	root := s.Root()
	cp.Client, err = apiclient.New(apiclient.Options{
		Endpoint:    "https://" + s.APIAddr(),
		Credentials: sigv4.Credentials{AccessKeyID: root.AccessKeyID, SecretAccessKey: root.SecretAccessKey},
		CAPEM:       s.CAPEM(),
		Now:         cp.opts.Now,
	})
	if err != nil {
		cp.t.Fatal(err)
	}
}

// Stop stops the control plane (nodes keep serving what they have).
func (cp *ControlPlane) Stop() {
	if cp.Server != nil {
		cp.Close()
		cp.Server = nil
	}
}

// Restart starts the control plane again on the same data directory and
// addresses.
func (cp *ControlPlane) Restart() {
	cp.t.Helper()
	cp.Stop()
	cp.start()
}

// freePortBlock finds n consecutive ports that are free on 127.0.0.1 and
// the zone addresses. It looks below the kernel's ephemeral range
// (32768 and up by default), where the other tests' outgoing connections
// do not land.
func freePortBlock(t testing.TB, n int) (int, int) {
	t.Helper()
	for range 200 {
		base := 10000 + rand.IntN(22000-n)
		if blockFree(base, n) {
			return base, base + n - 1
		}
	}
	t.Fatal("no free block of ports")
	return 0, 0
}

func blockFree(base, n int) bool {
	for p := base; p < base+n; p++ {
		for _, h := range []string{"127.0.0.1", ZoneHost(0), ZoneHost(1), ZoneHost(2)} {
			ln, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(p)))
			if err != nil {
				return false
			}
			ln.Close()
		}
	}
	return true
}

// Do calls the API as root and fails the test on error.
func (cp *ControlPlane) Do(method, path string, in, out any, h ...apiclient.Header) {
	cp.t.Helper()
	if err := cp.Client.Do(context.Background(), method, path, in, out, h...); err != nil {
		cp.t.Fatalf("%s %s: %v", method, path, err)
	}
}

// NodeCredentials creates user name with a policy allowing
// dbproxy:ReceiveConfig on the given zones and returns a new key of it.
func (cp *ControlPlane) NodeCredentials(name string, zones ...string) managed.Credentials {
	cp.t.Helper()
	key, err := cp.Client.CreateUser(context.Background(), name, apiclient.ReceiveConfigPolicy(zones...))
	if err != nil {
		cp.t.Fatalf("create node user %s: %v", name, err)
	}
	return managed.Credentials{AccessKeyID: key.AccessKeyID, SecretAccessKey: key.SecretAccessKey}
}

// WaitRollout waits until the nodes of zones serve revision rev and fails
// the test when they do not within a minute.
func (cp *ControlPlane) WaitRollout(rev uint64, zones ...string) *model.Rollout {
	cp.t.Helper()
	r, err := cp.Client.WaitRollout(context.Background(), rev, zones, time.Minute)
	if err != nil {
		cp.t.Fatalf("rollout of revision %d: %v", rev, err)
	}
	if !r.Complete {
		cp.t.Fatalf("rollout of revision %d incomplete: %s", rev, r.Message)
	}
	return r
}

// Node is a managed node running in the test process.
type Node struct {
	*managed.Node
	ID, Zone, Host string
	opts           NodeOptions
	log            hclog.Logger
	cancel         context.CancelFunc
	done           chan error
}

// CacheDir is where the node keeps its last good configuration.
func (n *Node) CacheDir() string { return n.opts.CacheDir }

// Credentials are the node's credentials.
func (n *Node) Credentials() managed.Credentials { return n.opts.Credentials }

// NodeOptions configure StartNode.
type NodeOptions struct {
	ID, Zone, Host string
	Credentials    managed.Credentials
	// CacheDir keeps the node's last good configuration; a node started
	// again with the same directory serves it before it reaches the
	// control plane.
	CacheDir string
}

// StartNode starts a node fed by cp.
func (cp *ControlPlane) StartNode(opts NodeOptions) *Node {
	cp.t.Helper()
	if opts.CacheDir == "" {
		opts.CacheDir = filepath.Join(cp.t.TempDir(), "cache")
	}
	log := cp.logger("node-" + opts.ID)
	m, err := managed.New(managed.Options{
		ControlPlane: cp.opts.XDSAddress, CAPEM: cp.CA, NodeID: opts.ID, Zone: opts.Zone,
		Credentials: opts.Credentials, ListenHost: opts.Host, CacheDir: opts.CacheDir,
		Logger:      log,
		Now:         cp.opts.Now,
		NodeOptions: node.Options{MonitorInterval: 200 * time.Millisecond, DrainTimeout: time.Second},
	})
	if err != nil {
		cp.t.Fatalf("start node %s: %v", opts.ID, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{Node: m, ID: opts.ID, Zone: opts.Zone, Host: opts.Host, opts: opts, log: log, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- m.Run(ctx, time.Second) }()
	cp.t.Cleanup(n.Stop)
	return n
}

// Stop stops the node and waits for it.
func (n *Node) Stop() {
	if n.cancel == nil {
		return
	}
	n.cancel()
	n.cancel = nil
	if err := <-n.done; err != nil {
		n.log.Error("node stopped with an error", "node", n.ID, "error", err)
	}
}

// Addr returns where the node serves an endpoint of a proxy.
func (n *Node) Addr(proxy, endpoint string) (string, bool) {
	return n.Node.Node().Addr(proxy, endpoint)
}

// WaitServing polls until the node serves endpoint of proxy.
func (n *Node) WaitServing(t testing.TB, proxy, endpoint string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if a, ok := n.Addr(proxy, endpoint); ok {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s does not serve %s/%s; xDS status %+v", n.ID, proxy, endpoint, n.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitSynced polls until the node is connected and has applied a
// configuration.
func (n *Node) WaitSynced(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := n.Status()
		if st.Connected && st.Version != "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s not synced: %+v", n.ID, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
