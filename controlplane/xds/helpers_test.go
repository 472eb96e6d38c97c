package xds

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/dbproxy/dbproxy/internal/testing/testutil"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
	"github.com/dbproxy/dbproxy/internal/xdstest"
)

const waitFor = 10 * time.Second

func testSnapshot(t testing.TB, zone, gen string) (*cache.Snapshot, string) {
	t.Helper()
	res := xdstest.Resources(zone, gen)
	v := xdstest.Version(t, res)
	snap, err := cache.NewSnapshot(v, res)
	if err != nil {
		t.Fatal(err)
	}
	return snap, v
}

// fakeBuild serves per-zone content generations at a store revision the
// test moves forward.
type fakeBuild struct {
	t  testing.TB
	mu struct {
		sync.Mutex
		rev   uint64
		gen   map[string]string
		err   error
		calls int
	}
}

func newFakeBuild(t testing.TB) *fakeBuild {
	f := &fakeBuild{t: t}
	f.mu.rev = 1
	f.mu.gen = map[string]string{}
	return f
}

// set changes zone's content and bumps the revision; it returns the
// version that content has.
func (f *fakeBuild) set(zone, gen string) (rev uint64, version string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mu.rev++
	f.mu.gen[zone] = gen
	_, v := testSnapshot(f.t, zone, gen)
	return f.mu.rev, v
}

// bump moves the revision without changing any content.
func (f *fakeBuild) bump() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mu.rev++
	return f.mu.rev
}

func (f *fakeBuild) version(zone string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, v := testSnapshot(f.t, zone, f.genLocked(zone))
	return v
}

func (f *fakeBuild) genLocked(zone string) string {
	if g, ok := f.mu.gen[zone]; ok {
		return g
	}
	return "g0"
}

func (f *fakeBuild) Build(_ context.Context, node xdsapi.NodeInfo) (*cache.Snapshot, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mu.calls++
	if f.mu.err != nil {
		return nil, 0, f.mu.err
	}
	snap, _ := testSnapshot(f.t, node.Zone, f.genLocked(node.Zone))
	return snap, f.mu.rev, nil
}

// fakeAuth accepts token "tok-<id>" for a node id in the zone it was
// registered with.
type fakeAuth struct {
	mu struct {
		sync.Mutex
		zones map[string]string  // node id → zone
		also  map[[2]string]bool // more (node id, zone) pairs allowed
		calls map[string]int
	}
}

// allow lets id also receive configuration for zone.
func (a *fakeAuth) allow(id, zone string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.mu.also[[2]string{id, zone}] = true
}

func newFakeAuth(nodes map[string]string) *fakeAuth {
	a := &fakeAuth{}
	a.mu.zones = nodes
	a.mu.also = map[[2]string]bool{}
	a.mu.calls = map[string]int{}
	return a
}

func (a *fakeAuth) Authorize(_ context.Context, md metadata.MD, node xdsapi.NodeInfo) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.mu.calls[node.ID]++
	tok := md.Get(xdsapi.TokenMetadataKey)
	if len(tok) != 1 || tok[0] != "tok-"+node.ID {
		return status.Error(codes.Unauthenticated, "invalid node token")
	}
	if z, ok := a.mu.zones[node.ID]; (!ok || z != node.Zone) && !a.mu.also[[2]string{node.ID, node.Zone}] {
		return status.Errorf(codes.PermissionDenied, "node %s may not receive configuration for zone %s", node.ID, node.Zone)
	}
	return nil
}

func (a *fakeAuth) callCount(id string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.mu.calls[id]
}

type testEnv struct {
	srv   *Server
	addr  string
	build *fakeBuild
	auth  *fakeAuth
	logs  *testutil.SyncBuffer
	clock *fakeClock
}

type fakeClock struct {
	mu struct {
		sync.Mutex
		now time.Time
	}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mu.now = c.mu.now.Add(time.Second)
	return c.mu.now
}

func startServer(t *testing.T) *testEnv {
	t.Helper()
	return startServerWith(t, nil)
}

// startServerWith starts a server whose options adjust may change.
func startServerWith(t *testing.T, adjust func(*Options)) *testEnv {
	t.Helper()
	env := &testEnv{
		build: newFakeBuild(t),
		auth:  newFakeAuth(map[string]string{"n1": "a", "n2": "b", "n3": "a"}),
		logs:  &testutil.SyncBuffer{},
		clock: &fakeClock{},
	}
	env.clock.mu.now = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	opts := Options{
		Logger:     hclog.New(&hclog.LoggerOptions{Output: env.logs, Level: hclog.Debug}),
		Authorizer: env.auth,
		Build:      env.build.Build,
		Now:        env.clock.Now,
	}
	if adjust != nil {
		adjust(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	env.srv = srv
	env.addr = testutil.ServeGRPC(t, "127.0.0.1:0", srv.Register, srv.Close).Addr
	return env
}

// adsClient is a raw ADS client that lets a test send exactly the
// requests it wants.
type adsClient struct {
	t      *testing.T
	cancel context.CancelFunc
	sotw   discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	delta  discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	resps  chan *discovery.DiscoveryResponse
	dresps chan *discovery.DeltaDiscoveryResponse
	errc   chan error
}

func dial(t *testing.T, addr, token string, delta bool) *adsClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, xdsapi.TokenMetadataKey, token)
	}
	c := &adsClient{
		t:      t,
		cancel: cancel,
		resps:  make(chan *discovery.DiscoveryResponse, 64),
		dresps: make(chan *discovery.DeltaDiscoveryResponse, 64),
		errc:   make(chan error, 1),
	}
	client := discovery.NewAggregatedDiscoveryServiceClient(conn)
	done := make(chan struct{})
	if delta {
		c.delta, err = client.DeltaAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			defer close(done)
			for {
				r, err := c.delta.Recv()
				if err != nil {
					c.errc <- err
					return
				}
				c.dresps <- r
			}
		}()
	} else {
		c.sotw, err = client.StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			defer close(done)
			for {
				r, err := c.sotw.Recv()
				if err != nil {
					c.errc <- err
					return
				}
				c.resps <- r
			}
		}()
	}
	t.Cleanup(func() {
		cancel()
		<-done
		conn.Close()
	})
	return c
}

func (c *adsClient) send(req *discovery.DiscoveryRequest) {
	c.t.Helper()
	if err := c.sotw.Send(req); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *adsClient) sendDelta(req *discovery.DeltaDiscoveryRequest) {
	c.t.Helper()
	if err := c.delta.Send(req); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// subscribe sends the four wildcard requests, node info on the first.
func (c *adsClient) subscribe(node xdsapi.NodeInfo) {
	c.t.Helper()
	for i, typ := range xdsapi.ResourceTypes() {
		req := &discovery.DiscoveryRequest{TypeUrl: typ}
		if i == 0 {
			req.Node = node.Proto()
		}
		c.send(req)
	}
}

func (c *adsClient) recv() *discovery.DiscoveryResponse {
	c.t.Helper()
	select {
	case r := <-c.resps:
		return r
	case err := <-c.errc:
		c.t.Fatalf("stream ended: %v", err)
	case <-time.After(waitFor):
		c.t.Fatal("no response")
	}
	return nil
}

func (c *adsClient) recvDelta() *discovery.DeltaDiscoveryResponse {
	c.t.Helper()
	select {
	case r := <-c.dresps:
		return r
	case err := <-c.errc:
		c.t.Fatalf("stream ended: %v", err)
	case <-time.After(waitFor):
		c.t.Fatal("no response")
	}
	return nil
}

// recvSet reads one response per dbproxy type and checks they share a
// version, which it returns with the responses by type.
func (c *adsClient) recvSet() (string, map[string]*discovery.DiscoveryResponse) {
	c.t.Helper()
	got := map[string]*discovery.DiscoveryResponse{}
	version := ""
	for range xdsapi.NumResourceTypes {
		r := c.recv()
		if _, dup := got[r.GetTypeUrl()]; dup {
			c.t.Fatalf("second response for %s before the set was complete", r.GetTypeUrl())
		}
		got[r.GetTypeUrl()] = r
		if version == "" {
			version = r.GetVersionInfo()
		} else if r.GetVersionInfo() != version {
			c.t.Fatalf("%s at version %s, others at %s", r.GetTypeUrl(), r.GetVersionInfo(), version)
		}
	}
	return version, got
}

// ackAll acks every response of a set.
func (c *adsClient) ackAll(set map[string]*discovery.DiscoveryResponse) {
	c.t.Helper()
	for _, typ := range xdsapi.ResourceTypes() {
		r := set[typ]
		c.send(&discovery.DiscoveryRequest{TypeUrl: typ, VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()})
	}
}

// wantCode waits for the stream to end with code.
func (c *adsClient) wantCode(code codes.Code) *status.Status {
	c.t.Helper()
	for {
		select {
		case <-c.resps:
			continue
		case <-c.dresps:
			continue
		case err := <-c.errc:
			st := status.Convert(err)
			if st.Code() != code {
				c.t.Fatalf("stream ended with %v, want %v", err, code)
			}
			return st
		case <-time.After(waitFor):
			c.t.Fatalf("stream did not end with %v", code)
		}
	}
}

// noResponse checks that nothing was received (without waiting: callers
// first make sure the server has processed what it would answer).
func (c *adsClient) noResponse() {
	c.t.Helper()
	select {
	case r := <-c.resps:
		c.t.Fatalf("unexpected response %s version %s", r.GetTypeUrl(), r.GetVersionInfo())
	default:
	}
}

func nodeStatus(s *Server, id string) (NodeStatus, bool) {
	for _, n := range s.Nodes() {
		if n.ID == id {
			return n, true
		}
	}
	return NodeStatus{}, false
}

func node(id, zone string) xdsapi.NodeInfo {
	return xdsapi.NodeInfo{ID: id, Zone: zone, Address: "127.0.0.1", ListenHost: "127.0.0.1"}
}

func mustContain(t *testing.T, s, sub string) {
	t.Helper()
	if !strings.Contains(s, sub) {
		t.Fatalf("%q does not contain %q", s, sub)
	}
}

var errTest = errors.New("test build failure")
