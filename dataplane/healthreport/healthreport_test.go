package healthreport_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/dbproxy/dbproxy/controlplane/health"
	"github.com/dbproxy/dbproxy/controlplane/identity"
	"github.com/dbproxy/dbproxy/dataplane/config"
	"github.com/dbproxy/dbproxy/dataplane/healthreport"
	"github.com/dbproxy/dbproxy/dataplane/node"
	"github.com/dbproxy/dbproxy/dataplane/xdsclient"
	"github.com/dbproxy/dbproxy/internal/mysqltest"
	"github.com/dbproxy/dbproxy/internal/nodetest"
	"github.com/dbproxy/dbproxy/internal/testing/testutil"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

const waitFor = 15 * time.Second

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitServing waits until the node's endpoint answers with a greeting, so
// that its accept loop runs: a node closed before that keeps it running
// (dataplane/proxy Endpoint.Drain only closes a listener Serve has
// registered), which goleak would report.
func waitServing(t *testing.T, n *node.Node, proxy, endpoint string) {
	t.Helper()
	addr, ok := n.Addr(proxy, endpoint)
	if !ok {
		t.Fatalf("no endpoint %s/%s", proxy, endpoint)
	}
	c, err := net.DialTimeout("tcp", addr, waitFor)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(waitFor))
	if _, err := c.Read(make([]byte, 4)); err != nil {
		t.Fatalf("no greeting from %s: %v", addr, err)
	}
}

func validOptions() healthreport.Options {
	return healthreport.Options{
		Target:   "127.0.0.1:1",
		Node:     xdsapi.NodeInfo{ID: "n1", Zone: "a"},
		Token:    func(context.Context) (string, error) { return "tok-n1", nil },
		Snapshot: func() []healthreport.ProxyHealth { return nil },
	}
}

func TestNewRequires(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*healthreport.Options)
		wantErr bool
	}{
		{"complete", func(*healthreport.Options) {}, false},
		{"no target", func(o *healthreport.Options) { o.Target = "" }, true},
		{"no node id", func(o *healthreport.Options) { o.Node.ID = "" }, true},
		{"no token", func(o *healthreport.Options) { o.Token = nil }, true},
		{"no snapshot", func(o *healthreport.Options) { o.Snapshot = nil }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := validOptions()
			tt.mutate(&o)
			if _, err := healthreport.New(o); (err != nil) != tt.wantErr {
				t.Fatalf("New error = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestEncode(t *testing.T) {
	w := healthreport.TargetHealth{Name: "w", Host: "10.0.0.1", Port: 3306, Zone: "b", Role: "WRITER", Healthy: true}
	r1 := healthreport.TargetHealth{Name: "r1", Host: "10.0.0.2", Port: 3307, Zone: "a", Role: "READER", Healthy: false, Reason: "connection refused"}
	r2 := healthreport.TargetHealth{Name: "r2", Host: "10.0.0.3", Port: 3306, Zone: "a", Role: "READER", Healthy: true}
	fresh := healthreport.TargetHealth{Name: "new", Host: "10.0.0.4", Port: 3306, Zone: "a", Unchecked: true}
	snap := []healthreport.ProxyHealth{
		{Proxy: "zeta", Targets: []healthreport.TargetHealth{w}},
		{Proxy: "app", Targets: []healthreport.TargetHealth{w, r1, fresh, r2}},
	}
	resp := healthreport.Encode(snap)

	t.Run("one cluster per proxy, sorted", func(t *testing.T) {
		var names []string
		for _, c := range resp.GetClusterEndpointsHealth() {
			names = append(names, c.GetClusterName())
		}
		if strings.Join(names, ",") != "app,zeta" {
			t.Fatalf("clusters = %v", names)
		}
	})
	t.Run("one locality per zone and role", func(t *testing.T) {
		type ep struct {
			zone, subZone, name, addr string
			status                    core.HealthStatus
			reason                    string
		}
		var got []ep
		for _, l := range resp.GetClusterEndpointsHealth()[0].GetLocalityEndpointsHealth() {
			for _, e := range l.GetEndpointsHealth() {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				got = append(got, ep{
					zone: l.GetLocality().GetZone(), subZone: l.GetLocality().GetSubZone(),
					name: e.GetEndpoint().GetHostname(), addr: net.JoinHostPort(sa.GetAddress(), itoa(sa.GetPortValue())),
					status: e.GetHealthStatus(),
					reason: e.GetHealthMetadata().GetFields()[healthreport.ReasonMetadataKey].GetStringValue(),
				})
			}
		}
		want := []ep{
			{"a", "", "new", "10.0.0.4:3306", core.HealthStatus_UNKNOWN, ""},
			{"a", "READER", "r1", "10.0.0.2:3307", core.HealthStatus_UNHEALTHY, "connection refused"},
			{"a", "READER", "r2", "10.0.0.3:3306", core.HealthStatus_HEALTHY, ""},
			{"b", "WRITER", "w", "10.0.0.1:3306", core.HealthStatus_HEALTHY, ""},
		}
		if len(got) != len(want) {
			t.Fatalf("endpoints = %+v, want %+v", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("endpoint %d = %+v, want %+v", i, got[i], want[i])
			}
		}
	})
	t.Run("deterministic", func(t *testing.T) {
		again := healthreport.Encode([]healthreport.ProxyHealth{snap[1], snap[0]})
		if !proto.Equal(resp, again) {
			t.Fatal("the same snapshot in another proxy order encodes differently")
		}
	})
	t.Run("reason bounded", func(t *testing.T) {
		long := r1
		long.Reason = strings.Repeat("x", 10_000)
		e := healthreport.Encode([]healthreport.ProxyHealth{{Proxy: "p", Targets: []healthreport.TargetHealth{long}}})
		reason := e.GetClusterEndpointsHealth()[0].GetLocalityEndpointsHealth()[0].GetEndpointsHealth()[0].GetHealthMetadata().GetFields()[healthreport.ReasonMetadataKey].GetStringValue()
		if len(reason) == 0 || len(reason) > 256 {
			t.Fatalf("reason of %d bytes sent", len(reason))
		}
	})
}

func itoa(v uint32) string {
	var b [10]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}

func TestRunWithoutControlPlane(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	// Backoff waits are handed to the test, which lets each one pass.
	waits := make(chan time.Duration, 16)
	o := validOptions()
	o.Target = addr
	o.Backoff = xdsclient.Backoff{Initial: time.Millisecond, Max: 4 * time.Millisecond, After: func(d time.Duration) <-chan time.Time {
		select {
		case waits <- d:
		default:
		}
		c := make(chan time.Time, 1)
		c <- time.Time{}
		return c
	}}
	r, err := healthreport.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	for range 3 {
		select {
		case d := <-waits:
			if d > 4*time.Millisecond {
				t.Errorf("backoff wait %s over the 4ms cap", d)
			}
		case <-time.After(waitFor):
			t.Fatal("no reconnect attempt")
		}
	}
	if err := r.Run(ctx); !errors.Is(err, healthreport.ErrRunning) {
		t.Fatalf("second Run = %v, want ErrRunning", err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	if st := r.Status(); st.Connected || st.LastError == "" {
		t.Fatalf("status = %+v, want disconnected with an error", st)
	}
}

// TestFromNodeTargetNeverReached runs a node whose target has no server:
// the target is unhealthy with a reason, and its AUTO role is not known.
// A proxy of another zone is not served and not reported.
func TestFromNodeTargetNeverReached(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	cfg := nodetest.Config()
	cfg.Proxies[0].Targets = []config.Target{{Name: "dead", Host: "127.0.0.1", Port: port, Zone: "a"}}
	other := cfg.Proxies[0]
	other.Name, other.Zones = "elsewhere", []string{"b"}
	other.Endpoints = []config.Endpoint{{Name: "rw", Address: "127.0.0.1:0"}}
	cfg.Proxies = append(cfg.Proxies, other)
	cfg.ApplyDefaults()
	n, err := node.New(node.Options{Logger: mysqltest.TestLogger(t), MonitorInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n.Close(ctx)
	}()
	snap := healthreport.FromNode(n)
	if got := snap(); got != nil {
		t.Fatalf("before Apply: %+v, want nothing", got)
	}
	if err := n.Apply(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	waitServing(t, n, "main", "rw")
	var got []healthreport.ProxyHealth
	testutil.Eventually(t, waitFor, "a finished check", func() bool {
		got = snap()
		return len(got) == 1 && len(got[0].Targets) == 1 && !got[0].Targets[0].Unchecked
	})
	th := got[0].Targets[0]
	if got[0].Proxy != "main" || th.Name != "dead" || th.Host != "127.0.0.1" || th.Port != port || th.Zone != "a" {
		t.Fatalf("snapshot = %+v", got)
	}
	if th.Healthy || th.Reason == "" || th.Role != "" {
		t.Fatalf("target = %+v, want unhealthy with a reason and no role", th)
	}
}

// TestRealNode reports a node in front of a real MariaDB through the
// health service: healthy WRITER, then unhealthy once the server stops.
func TestRealNode(t *testing.T) {
	env := nodetest.StartSimple(t)
	waitServing(t, env.Node, "main", "rw")
	snap := healthreport.FromNode(env.Node)
	got := snap()
	if len(got) != 1 || got[0].Proxy != "main" || len(got[0].Targets) != 1 {
		t.Fatalf("snapshot = %+v", got)
	}
	srv := env.Servers[0]
	want := healthreport.TargetHealth{Name: "db1", Host: srv.Host, Port: srv.Port, Zone: "a", Role: "WRITER", Healthy: true}
	if got[0].Targets[0] != want {
		t.Fatalf("target = %+v, want %+v", got[0].Targets[0], want)
	}

	auth := identity.AuthorizerFunc(func(_ context.Context, md metadata.MD, n xdsapi.NodeInfo) error {
		if v := md.Get(xdsapi.TokenMetadataKey); len(v) != 1 || v[0] != "tok-"+n.ID || n.Zone != "a" {
			return errors.New("refused")
		}
		return nil
	})
	svc, err := health.New(health.Options{Authorizer: auth, Logger: mysqltest.TestLogger(t).Named("hds"), Interval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	gs := testutil.ServeGRPC(t, "127.0.0.1:0", svc.Register, svc.Close)
	defer gs.Stop()

	o := validOptions()
	o.Target = gs.Addr
	o.Snapshot = snap
	o.Logger = mysqltest.TestLogger(t).Named("reporter")
	o.PollInterval = 20 * time.Millisecond
	r, err := healthreport.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	}()

	testutil.Eventually(t, waitFor, "AVAILABLE WRITER", func() bool {
		th := svc.TargetHealth("main", "db1")
		return th.Health == health.HealthAvailable && th.Role == health.RoleWriter
	})
	if st := r.Status(); !st.Connected || st.LastReport.IsZero() {
		t.Fatalf("reporter status = %+v", st)
	}

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, waitFor, "the node to see the server gone", func() bool {
		th := snap()[0].Targets[0]
		return !th.Healthy && th.Reason != ""
	})
	if th := snap()[0].Targets[0]; th.Role != "WRITER" {
		t.Fatalf("role after the server stopped = %q, want the last seen WRITER", th.Role)
	}
	testutil.Eventually(t, waitFor, "UNAVAILABLE", func() bool { return svc.TargetHealth("main", "db1").Health == health.HealthUnavailable })
	if rep := svc.TargetHealth("main", "db1").Reports; len(rep) != 1 || rep[0].Reason == "" || rep[0].Node != "n1" {
		t.Fatalf("reports = %+v", rep)
	}
}
