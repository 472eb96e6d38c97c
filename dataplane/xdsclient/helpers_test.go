package xdsclient

import (
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/dbproxy/dbproxy/controlplane/xds"
	"github.com/dbproxy/dbproxy/internal/testing/testutil"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
	"github.com/dbproxy/dbproxy/internal/xdstest"
)

const waitFor = 10 * time.Second

func versionOf(t testing.TB, zone, gen string) string {
	return xdstest.Version(t, xdstest.Resources(zone, gen))
}

// fakeBuild serves one content generation per zone at a revision the test
// moves forward.
type fakeBuild struct {
	t  testing.TB
	mu struct {
		sync.Mutex
		rev uint64
		gen map[string]string
	}
}

func newFakeBuild(t testing.TB) *fakeBuild {
	f := &fakeBuild{t: t}
	f.mu.rev = 1
	f.mu.gen = map[string]string{}
	return f
}

func (f *fakeBuild) set(zone, gen string) (uint64, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mu.rev++
	f.mu.gen[zone] = gen
	return f.mu.rev, versionOf(f.t, zone, gen)
}

func (f *fakeBuild) bump() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mu.rev++
	return f.mu.rev
}

func (f *fakeBuild) Build(_ context.Context, node xdsapi.NodeInfo) (*cache.Snapshot, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	gen, ok := f.mu.gen[node.Zone]
	if !ok {
		gen = "g0"
	}
	res := xdstest.Resources(node.Zone, gen)
	snap, err := cache.NewSnapshot(xdstest.Version(f.t, res), res)
	return snap, f.mu.rev, err
}

// fakeAuth accepts token "tok-<id>" for a node in its registered zone.
type fakeAuth struct {
	mu struct {
		sync.Mutex
		zones map[string]string
		calls int
	}
}

func newFakeAuth() *fakeAuth {
	a := &fakeAuth{}
	a.mu.zones = map[string]string{"n1": "a", "n2": "b"}
	return a
}

func (a *fakeAuth) Authorize(_ context.Context, md metadata.MD, node xdsapi.NodeInfo) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.mu.calls++
	tok := md.Get(xdsapi.TokenMetadataKey)
	if len(tok) != 1 || tok[0] != "tok-"+node.ID {
		return status.Error(codes.Unauthenticated, "invalid node token")
	}
	if z, ok := a.mu.zones[node.ID]; !ok || z != node.Zone {
		return status.Errorf(codes.PermissionDenied, "node %s may not receive configuration for zone %s", node.ID, node.Zone)
	}
	return nil
}

func (a *fakeAuth) callCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.mu.calls
}

// controlPlane is an in-process xds.Server on a loopback port.
type controlPlane struct {
	t     *testing.T
	build *fakeBuild
	auth  *fakeAuth
	addr  string
	srv   *xds.Server
	gs    *testutil.GRPCServer
}

// startControlPlane serves on addr ("" picks a free port) with build and
// auth (nil makes new ones).
func startControlPlane(t *testing.T, addr string, build *fakeBuild, auth *fakeAuth) *controlPlane {
	t.Helper()
	if build == nil {
		build = newFakeBuild(t)
	}
	if auth == nil {
		auth = newFakeAuth()
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	srv, err := xds.New(xds.Options{Authorizer: auth, Build: build.Build})
	if err != nil {
		t.Fatal(err)
	}
	cp := &controlPlane{t: t, build: build, auth: auth, srv: srv}
	cp.gs = testutil.ServeGRPC(t, addr, srv.Register, srv.Close)
	cp.addr = cp.gs.Addr
	return cp
}

// stop stops the control plane; later calls do nothing.
func (cp *controlPlane) stop() { cp.gs.Stop() }

func (cp *controlPlane) refresh() {
	cp.t.Helper()
	if err := cp.srv.Refresh(context.Background()); err != nil {
		cp.t.Fatal(err)
	}
}

func (cp *controlPlane) waitRollout(rev uint64) ([]xds.NodeStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	return cp.srv.WaitRollout(ctx, rev, nil)
}

func (cp *controlPlane) node(id string) xds.NodeStatus {
	for _, n := range cp.srv.Nodes() {
		if n.ID == id {
			return n
		}
	}
	return xds.NodeStatus{}
}

// applyRecorder records Apply calls and fails the versions it is told to.
type applyRecorder struct {
	mu struct {
		sync.Mutex
		calls []applyCall
		fail  map[string]string // version → error message
	}
}

type applyCall struct {
	version string
	res     map[string][]*anypb.Any
}

func (r *applyRecorder) apply(_ context.Context, version string, res map[string][]*anypb.Any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mu.calls = append(r.mu.calls, applyCall{version: version, res: res})
	if msg, ok := r.mu.fail[version]; ok {
		return &applyError{msg: msg}
	}
	return nil
}

type applyError struct{ msg string }

func (e *applyError) Error() string { return e.msg }

func (r *applyRecorder) failVersion(version, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.fail == nil {
		r.mu.fail = map[string]string{}
	}
	r.mu.fail[version] = msg
}

func (r *applyRecorder) versions() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.mu.calls))
	for _, c := range r.mu.calls {
		out = append(out, c.version)
	}
	return out
}

func (r *applyRecorder) call(i int) applyCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mu.calls[i]
}

func (r *applyRecorder) waitCalls(t *testing.T, n int) []string {
	t.Helper()
	testutil.Eventually(t, waitFor, "apply calls", func() bool { return len(r.versions()) >= n })
	return r.versions()
}

// runClient starts c.Run and stops it at cleanup (or when the returned
// function is called), checking that Run returns ctx.Err().
func runClient(t *testing.T, c *Client) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != context.Canceled {
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func testOptions(target string, rec *applyRecorder, logs io.Writer) Options {
	return Options{
		Target: target,
		Node:   xdsapi.NodeInfo{ID: "n1", Zone: "a", Address: "127.0.0.1", ListenHost: "127.0.0.1"},
		Token:  func(context.Context) (string, error) { return "tok-n1", nil },
		Apply:  rec.apply,
		Logger: hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug}),
		// Fast reconnects keep the tests short.
		Backoff: Backoff{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond},
	}
}

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func mustContain(t *testing.T, s, sub string) {
	t.Helper()
	if !strings.Contains(s, sub) {
		t.Fatalf("%q does not contain %q", s, sub)
	}
}

type anypbAny = anypb.Any

func anypbNew(m proto.Message) (*anypb.Any, error) { return anypb.New(m) }

func writeFile(t *testing.T, file string, b []byte) {
	t.Helper()
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// sealWith writes a cache file for node id under key.
func sealWith(t *testing.T, file string, key []byte, id, version string, res map[string][]*anypb.Any) {
	t.Helper()
	c, err := New(Options{Target: "x", Node: xdsapi.NodeInfo{ID: id}, Token: func(context.Context) (string, error) { return "", nil },
		Apply: func(context.Context, string, map[string][]*anypb.Any) error { return nil }, CacheFile: file, CacheKey: key})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.storeCache(version, res); err != nil {
		t.Fatal(err)
	}
}

func bytesContains(b []byte, s string) bool { return bytes.Contains(b, []byte(s)) }
