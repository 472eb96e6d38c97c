package health

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	hds "github.com/envoyproxy/go-control-plane/envoy/service/health/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/dbproxy/dbproxy/dataplane/healthreport"
	"github.com/dbproxy/dbproxy/dataplane/xdsclient"
	"github.com/dbproxy/dbproxy/internal/mysqltest"
	"github.com/dbproxy/dbproxy/internal/testing/testutil"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

const waitFor = 10 * time.Second

// fakeAuth accepts token "tok-<id>" for a node id in the zone it was
// registered with; refuse revokes a node.
type fakeAuth struct {
	mu struct {
		sync.Mutex
		zones map[string]string // node id → zone
		also  map[string]bool   // more "id/zone" pairs allowed
		calls map[string]int
	}
}

func newFakeAuth(nodes map[string]string) *fakeAuth {
	a := &fakeAuth{}
	a.mu.zones = nodes
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
	if z, ok := a.mu.zones[node.ID]; (!ok || z != node.Zone) && !a.mu.also[node.ID+"/"+node.Zone] {
		return status.Errorf(codes.PermissionDenied, "node %s may not receive configuration for zone %s", node.ID, node.Zone)
	}
	return nil
}

// allow lets node id in zone too.
func (a *fakeAuth) allow(id, zone string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.mu.also == nil {
		a.mu.also = map[string]bool{}
	}
	a.mu.also[id+"/"+zone] = true
}

func (a *fakeAuth) refuse(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.mu.zones, id)
}

func (a *fakeAuth) callCount(id string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.mu.calls[id]
}

// fakeClock moves only when told to.
type fakeClock struct {
	mu struct {
		sync.Mutex
		now time.Time
	}
}

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.mu.now = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	return c
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mu.now = c.mu.now.Add(d)
}

type testEnv struct {
	svc   *Service
	addr  string
	auth  *fakeAuth
	clock *fakeClock
}

// testInterval is the report interval the test services ask for.
const testInterval = 50 * time.Millisecond

// testStaleAfter is the test services' StaleAfter, in fake-clock time.
const testStaleAfter = time.Minute

// startService runs a Service on a loopback gRPC server. Nodes n1 (zone
// a), n2 (zone b) and n3 (zone a) are authorized.
func startService(t *testing.T) *testEnv {
	t.Helper()
	env := &testEnv{
		auth:  newFakeAuth(map[string]string{"n1": "a", "n2": "b", "n3": "a"}),
		clock: newFakeClock(),
	}
	svc, err := New(Options{
		Authorizer: env.auth,
		Logger:     mysqltest.TestLogger(t).Named("hds"),
		Now:        env.clock.Now,
		Interval:   testInterval,
		StaleAfter: testStaleAfter,
	})
	if err != nil {
		t.Fatal(err)
	}
	env.svc = svc
	env.addr = testutil.ServeGRPC(t, "127.0.0.1:0", svc.Register, svc.Close).Addr
	return env
}

// snapshot is a Snapshot func whose value a test changes.
type snapshot struct {
	mu struct {
		sync.Mutex
		ps []healthreport.ProxyHealth
	}
}

func newSnapshot(ps ...healthreport.ProxyHealth) *snapshot {
	s := &snapshot{}
	s.mu.ps = ps
	return s
}

func (s *snapshot) set(ps ...healthreport.ProxyHealth) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.ps = ps
}

func (s *snapshot) get() []healthreport.ProxyHealth {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.ps
}

// proxy returns a one-proxy snapshot value.
func proxy(name string, targets ...healthreport.TargetHealth) healthreport.ProxyHealth {
	return healthreport.ProxyHealth{Proxy: name, Targets: targets}
}

func writer(name string, healthy bool) healthreport.TargetHealth {
	th := healthreport.TargetHealth{Name: name, Host: "127.0.0.1", Port: 3306, Zone: "a", Role: RoleWriter, Healthy: healthy}
	if !healthy {
		th.Reason = "dial tcp 127.0.0.1:3306: connection refused"
	}
	return th
}

type runningReporter struct {
	r      *healthreport.Reporter
	tokens *atomic.Int64
	cancel context.CancelFunc
	done   chan struct{}
	// err is Run's result once done is closed.
	err error
}

// stop ends the reporter and waits for Run.
func (rr *runningReporter) stop(t *testing.T) {
	t.Helper()
	rr.cancel()
	select {
	case <-rr.done:
		if !errors.Is(rr.err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", rr.err)
		}
	case <-time.After(waitFor):
		t.Fatal("reporter did not stop")
	}
}

// startReporter runs a healthreport.Reporter for node against env;
// tweak may adjust its options.
func startReporter(t *testing.T, env *testEnv, node xdsapi.NodeInfo, snap func() []healthreport.ProxyHealth, tweak func(*healthreport.Options)) *runningReporter {
	t.Helper()
	tokens := &atomic.Int64{}
	opts := healthreport.Options{
		Target: env.addr,
		Node:   node,
		Token: func(context.Context) (string, error) {
			tokens.Add(1)
			return "tok-" + node.ID, nil
		},
		Snapshot:     snap,
		Logger:       mysqltest.TestLogger(t).Named("reporter-" + node.ID),
		Backoff:      xdsclient.Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond},
		PollInterval: 20 * time.Millisecond,
	}
	if tweak != nil {
		tweak(&opts)
	}
	r, err := healthreport.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rr := &runningReporter{r: r, tokens: tokens, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(rr.done)
		rr.err = r.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-rr.done })
	return rr
}

func nodeInfo(id, zone string) xdsapi.NodeInfo {
	return xdsapi.NodeInfo{ID: id, Zone: zone, Address: "127.0.0.1", ListenHost: "127.0.0.1"}
}

// rawStream is a bare HDS stream that lets a test send exactly what it
// wants.
type rawStream struct {
	t      *testing.T
	stream grpc.BidiStreamingClient[hds.HealthCheckRequestOrEndpointHealthResponse, hds.HealthCheckSpecifier]
}

func dialRaw(t *testing.T, addr, token string) *rawStream {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, xdsapi.TokenMetadataKey, token)
	}
	st, err := hds.NewHealthDiscoveryServiceClient(conn).StreamHealthCheck(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		conn.Close()
	})
	return &rawStream{t: t, stream: st}
}

// send sends m; an error (the stream may already be over) is ignored:
// the test reads the outcome with recv or wantCode.
func (r *rawStream) send(m *hds.HealthCheckRequestOrEndpointHealthResponse) {
	_ = r.stream.Send(m)
}

func (r *rawStream) hello(node xdsapi.NodeInfo) {
	r.send(helloMsg(node))
}

func (r *rawStream) report(ps ...healthreport.ProxyHealth) {
	r.send(reportMsg(ps...))
}

func helloMsg(node xdsapi.NodeInfo) *hds.HealthCheckRequestOrEndpointHealthResponse {
	return &hds.HealthCheckRequestOrEndpointHealthResponse{RequestType: &hds.HealthCheckRequestOrEndpointHealthResponse_HealthCheckRequest{
		HealthCheckRequest: &hds.HealthCheckRequest{Node: node.Proto()},
	}}
}

func reportMsg(ps ...healthreport.ProxyHealth) *hds.HealthCheckRequestOrEndpointHealthResponse {
	return &hds.HealthCheckRequestOrEndpointHealthResponse{RequestType: &hds.HealthCheckRequestOrEndpointHealthResponse_EndpointHealthResponse{
		EndpointHealthResponse: healthreport.Encode(ps),
	}}
}

// recv reads one specifier.
func (r *rawStream) recv() *hds.HealthCheckSpecifier {
	r.t.Helper()
	m, err := r.stream.Recv()
	if err != nil {
		r.t.Fatalf("recv: %v", err)
	}
	return m
}

// wantCode reads until the stream ends and checks its code.
func (r *rawStream) wantCode(code codes.Code) *status.Status {
	r.t.Helper()
	for {
		_, err := r.stream.Recv()
		if err == nil {
			continue
		}
		st := status.Convert(err)
		if st.Code() != code {
			r.t.Fatalf("stream ended with %v, want %v", err, code)
		}
		return st
	}
}
