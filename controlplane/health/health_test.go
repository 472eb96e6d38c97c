package health

import (
	"context"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	hds "github.com/envoyproxy/go-control-plane/envoy/service/health/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/dbproxy/dbproxy/dataplane/healthreport"
	"github.com/dbproxy/dbproxy/internal/testing/testutil"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestNewOptions(t *testing.T) {
	auth := newFakeAuth(nil)
	tests := []struct {
		name          string
		opts          Options
		wantErr       bool
		wantInterval  time.Duration
		wantStaleness time.Duration
	}{
		{"defaults", Options{Authorizer: auth}, false, DefaultInterval, 3 * DefaultInterval},
		{"interval only", Options{Authorizer: auth, Interval: time.Second}, false, time.Second, 3 * time.Second},
		{"both", Options{Authorizer: auth, Interval: time.Second, StaleAfter: 10 * time.Second}, false, time.Second, 10 * time.Second},
		{"no authorizer", Options{}, true, 0, 0},
		{"stale not after interval", Options{Authorizer: auth, Interval: time.Second, StaleAfter: time.Second}, true, 0, 0},
		{"negative", Options{Authorizer: auth, Interval: -time.Second}, true, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.opts)
			if (err != nil) != tt.wantErr {
				t.Fatalf("New error = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			defer s.Close()
			if s.interval != tt.wantInterval || s.staleAfter != tt.wantStaleness {
				t.Fatalf("interval %s, stale after %s; want %s, %s", s.interval, s.staleAfter, tt.wantInterval, tt.wantStaleness)
			}
		})
	}
}

func TestAggregate(t *testing.T) {
	up := func(node, role string) Report { return Report{Node: node, Healthy: true, Role: role} }
	down := func(node, role string) Report { return Report{Node: node, Role: role, Reason: "refused"} }
	tests := []struct {
		name       string
		reports    []Report
		wantHealth string
		wantRole   string
	}{
		{"no reports", nil, HealthUnknown, ""},
		{"one healthy writer", []Report{up("n1", RoleWriter)}, HealthAvailable, RoleWriter},
		{"all healthy readers", []Report{up("n1", RoleReader), up("n2", RoleReader)}, HealthAvailable, RoleReader},
		{"all unhealthy", []Report{down("n1", RoleWriter), down("n2", RoleWriter)}, HealthUnavailable, RoleWriter},
		{"disagree", []Report{up("n1", RoleWriter), down("n2", RoleWriter)}, HealthDegraded, RoleWriter},
		{"healthy views decide the role", []Report{up("n1", RoleReader), down("n2", RoleWriter), down("n3", RoleWriter)}, HealthDegraded, RoleReader},
		{"majority role", []Report{up("n1", RoleReader), up("n2", RoleWriter), up("n3", RoleReader)}, HealthAvailable, RoleReader},
		{"tied role", []Report{up("n1", RoleReader), up("n2", RoleWriter)}, HealthAvailable, ""},
		{"role not known", []Report{up("n1", "")}, HealthAvailable, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := aggregate(tt.reports)
			if got.Health != tt.wantHealth || got.Role != tt.wantRole {
				t.Fatalf("aggregate = %s/%q, want %s/%q", got.Health, got.Role, tt.wantHealth, tt.wantRole)
			}
		})
	}
}

func TestReportAvailableWithRole(t *testing.T) {
	env := startService(t)
	reader := writer("db2", true)
	reader.Role, reader.Port, reader.Zone = RoleReader, 3307, "b"
	snap := newSnapshot(proxy("app", writer("db1", true), reader), proxy("other", writer("db9", true)))
	startReporter(t, env, nodeInfo("n1", "a"), snap.get, nil)

	testutil.Eventually(t, waitFor, "db1 AVAILABLE", func() bool { return env.svc.TargetHealth("app", "db1").Health == HealthAvailable })
	got := env.svc.TargetHealth("app", "db1")
	if got.Role != RoleWriter {
		t.Fatalf("role = %q, want WRITER", got.Role)
	}
	want := Report{Node: "n1", Zone: "a", Healthy: true, Role: RoleWriter, Address: "127.0.0.1:3306", At: env.clock.Now()}
	if len(got.Reports) != 1 || got.Reports[0] != want {
		t.Fatalf("reports = %+v, want [%+v]", got.Reports, want)
	}
	if r := env.svc.TargetHealth("app", "db2"); r.Health != HealthAvailable || r.Role != RoleReader || r.Reports[0].Address != "127.0.0.1:3307" {
		t.Fatalf("db2 = %+v, want AVAILABLE READER at port 3307", r)
	}
	if r := env.svc.TargetHealth("other", "db9"); r.Health != HealthAvailable {
		t.Fatalf("other/db9 = %+v", r)
	}
	for _, tc := range []struct{ proxy, target string }{{"app", "db9"}, {"nope", "db1"}} {
		if r := env.svc.TargetHealth(tc.proxy, tc.target); r.Health != HealthUnknown || r.Role != "" || len(r.Reports) != 0 {
			t.Fatalf("%s/%s = %+v, want UNKNOWN", tc.proxy, tc.target, r)
		}
	}

	// A change reaches the control plane without waiting for an interval
	// (the reporter polls its snapshot).
	snap.set(proxy("app", writer("db1", false), reader))
	testutil.Eventually(t, waitFor, "db1 UNAVAILABLE", func() bool { return env.svc.TargetHealth("app", "db1").Health == HealthUnavailable })
	r := env.svc.TargetHealth("app", "db1")
	if r.Reports[0].Reason == "" || !strings.Contains(r.Reports[0].Reason, "connection refused") {
		t.Fatalf("reason = %q", r.Reports[0].Reason)
	}
	// Each report replaces the node's whole view: a target left out of
	// the next report is no longer known.
	snap.set(proxy("app", writer("db1", true)))
	testutil.Eventually(t, waitFor, "db2 forgotten", func() bool { return env.svc.TargetHealth("app", "db2").Health == HealthUnknown })
}

func TestNodesDisagree(t *testing.T) {
	tests := []struct {
		name       string
		n1, n2     bool
		wantHealth string
	}{
		{"one node cannot reach it", true, false, HealthDegraded},
		{"no node reaches it", false, false, HealthUnavailable},
		{"every node reaches it", true, true, HealthAvailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := startService(t)
			startReporter(t, env, nodeInfo("n1", "a"), newSnapshot(proxy("app", writer("db1", tt.n1))).get, nil)
			startReporter(t, env, nodeInfo("n2", "b"), newSnapshot(proxy("app", writer("db1", tt.n2))).get, nil)
			testutil.Eventually(t, waitFor, "two reports", func() bool { return len(env.svc.TargetHealth("app", "db1").Reports) == 2 })
			got := env.svc.TargetHealth("app", "db1")
			if got.Health != tt.wantHealth || got.Role != RoleWriter {
				t.Fatalf("health = %s/%q, want %s/WRITER", got.Health, got.Role, tt.wantHealth)
			}
			for i, want := range []struct {
				node, zone string
				healthy    bool
			}{{"n1", "a", tt.n1}, {"n2", "b", tt.n2}} {
				r := got.Reports[i]
				if r.Node != want.node || r.Zone != want.zone || r.Healthy != want.healthy || (r.Reason == "") != want.healthy {
					t.Errorf("report %d = %+v, want node %s zone %s healthy %v", i, r, want.node, want.zone, want.healthy)
				}
			}
		})
	}
}

func TestStaleReport(t *testing.T) {
	t.Run("stream closed", func(t *testing.T) {
		env := startService(t)
		rr := startReporter(t, env, nodeInfo("n1", "a"), newSnapshot(proxy("app", writer("db1", true))).get, nil)
		testutil.Eventually(t, waitFor, "AVAILABLE", func() bool { return env.svc.TargetHealth("app", "db1").Health == HealthAvailable })
		rr.stop(t)
		testutil.Eventually(t, waitFor, "stream closed", func() bool {
			env.svc.mu.Lock()
			defer env.svc.mu.Unlock()
			n := env.svc.mu.nodes[nodeInfo("n1", "a").Key()]
			return n != nil && n.stream == 0
		})
		// Still fresh: a node that just reconnects keeps counting.
		env.clock.Advance(testStaleAfter - time.Second)
		if got := env.svc.TargetHealth("app", "db1").Health; got != HealthAvailable {
			t.Fatalf("before StaleAfter: %s, want AVAILABLE", got)
		}
		env.clock.Advance(time.Second)
		if got := env.svc.TargetHealth("app", "db1"); got.Health != HealthUnknown || got.Role != "" || len(got.Reports) != 0 {
			t.Fatalf("after StaleAfter: %+v, want UNKNOWN", got)
		}
		if n := env.svc.recordCount(); n != 0 {
			t.Fatalf("%d node records kept after the stream ended plus StaleAfter, want 0", n)
		}
	})
	t.Run("stream open, no new report", func(t *testing.T) {
		env := startService(t)
		st := dialRaw(t, env.addr, "tok-n1")
		st.hello(nodeInfo("n1", "a"))
		if iv := st.recv().GetInterval().AsDuration(); iv != testInterval {
			t.Fatalf("interval = %s, want %s", iv, testInterval)
		}
		st.report(proxy("app", writer("db1", true)))
		testutil.Eventually(t, waitFor, "AVAILABLE", func() bool { return env.svc.TargetHealth("app", "db1").Health == HealthAvailable })
		env.clock.Advance(testStaleAfter)
		if got := env.svc.TargetHealth("app", "db1").Health; got != HealthUnknown {
			t.Fatalf("stale report: %s, want UNKNOWN", got)
		}
		if n := env.svc.recordCount(); n != 1 {
			t.Fatalf("%d node records, want the connected node's 1", n)
		}
		// The next report counts again.
		st.report(proxy("app", writer("db1", false)))
		testutil.Eventually(t, waitFor, "UNAVAILABLE", func() bool { return env.svc.TargetHealth("app", "db1").Health == HealthUnavailable })
	})
}

func TestRefusedNode(t *testing.T) {
	t.Run("wrong zone", func(t *testing.T) {
		env := startService(t)
		st := dialRaw(t, env.addr, "tok-n1")
		// The report follows at once, before the refusal comes back.
		st.hello(nodeInfo("n1", "b"))
		st.report(proxy("app", writer("db1", true)))
		if s := st.wantCode(codes.PermissionDenied); !strings.Contains(s.Message(), "zone b") {
			t.Fatalf("message = %q", s.Message())
		}
		if got := env.svc.TargetHealth("app", "db1").Health; got != HealthUnknown {
			t.Fatalf("health = %s, want UNKNOWN", got)
		}
		if n := env.svc.recordCount(); n != 0 {
			t.Fatalf("%d node records, want 0", n)
		}
	})
	t.Run("wrong token", func(t *testing.T) {
		env := startService(t)
		st := dialRaw(t, env.addr, "tok-n2")
		st.hello(nodeInfo("n1", "a"))
		st.wantCode(codes.Unauthenticated)
		if n := env.svc.recordCount(); n != 0 {
			t.Fatalf("%d node records, want 0", n)
		}
	})
	t.Run("reporter in the wrong zone", func(t *testing.T) {
		env := startService(t)
		rr := startReporter(t, env, nodeInfo("n1", "b"), newSnapshot(proxy("app", writer("db1", true))).get, nil)
		testutil.Eventually(t, waitFor, "the reporter to see the refusal", func() bool {
			return strings.Contains(rr.r.Status().LastError, "refused") && env.auth.callCount("n1") >= 2
		})
		if st := rr.r.Status(); st.Connected || !st.LastReport.IsZero() {
			t.Fatalf("status = %+v, want never connected", st)
		}
		if got := env.svc.TargetHealth("app", "db1").Health; got != HealthUnknown {
			t.Fatalf("health = %s, want UNKNOWN", got)
		}
	})
	t.Run("revoked mid-stream", func(t *testing.T) {
		env := startService(t)
		st := dialRaw(t, env.addr, "tok-n1")
		st.hello(nodeInfo("n1", "a"))
		st.recv()
		st.report(proxy("app", writer("db1", true)))
		testutil.Eventually(t, waitFor, "AVAILABLE", func() bool { return env.svc.TargetHealth("app", "db1").Health == HealthAvailable })
		env.auth.refuse("n1")
		st.report(proxy("app", writer("db1", true)))
		st.wantCode(codes.PermissionDenied)
		// The refused node's report stops counting at once.
		if got := env.svc.TargetHealth("app", "db1").Health; got != HealthUnknown {
			t.Fatalf("health = %s, want UNKNOWN", got)
		}
	})
	t.Run("identity changed mid-stream", func(t *testing.T) {
		env := startService(t)
		st := dialRaw(t, env.addr, "tok-n1")
		st.hello(nodeInfo("n1", "a"))
		st.recv()
		st.report(proxy("app", writer("db1", true)))
		testutil.Eventually(t, waitFor, "AVAILABLE", func() bool { return env.svc.TargetHealth("app", "db1").Health == HealthAvailable })
		st.hello(nodeInfo("n3", "a"))
		st.wantCode(codes.PermissionDenied)
		if n := env.svc.recordCount(); n != 0 {
			t.Fatalf("%d node records, want 0", n)
		}
	})
}

func TestStreamRenewal(t *testing.T) {
	env := startService(t)
	snap := newSnapshot(proxy("app", writer("db1", true)))
	rr := startReporter(t, env, nodeInfo("n1", "a"), snap.get, func(o *healthreport.Options) {
		o.MaxStreamAge = 100 * time.Millisecond
	})
	testutil.Eventually(t, waitFor, "AVAILABLE", func() bool { return env.svc.TargetHealth("app", "db1").Health == HealthAvailable })
	lastStream := func() uint64 {
		env.svc.mu.Lock()
		defer env.svc.mu.Unlock()
		return env.svc.mu.lastStream
	}
	testutil.Eventually(t, waitFor, "three renewals", func() bool {
		// The view stays known across renewals.
		if h := env.svc.TargetHealth("app", "db1").Health; h != HealthAvailable {
			t.Fatalf("health during renewals = %s", h)
		}
		return lastStream() >= 4
	})
	if n := rr.tokens.Load(); n < 4 {
		t.Fatalf("%d tokens made for %d streams, want one per stream", n, lastStream())
	}
	// Reports keep flowing on the renewed streams.
	snap.set(proxy("app", writer("db1", false)))
	testutil.Eventually(t, waitFor, "UNAVAILABLE", func() bool { return env.svc.TargetHealth("app", "db1").Health == HealthUnavailable })
	if n := env.svc.recordCount(); n != 1 {
		t.Fatalf("%d node records, want 1", n)
	}
	if st := rr.r.Status(); st.LastError != "" {
		t.Fatalf("renewals reported as errors: %q", st.LastError)
	}
}

func TestMalformedFirstMessage(t *testing.T) {
	tests := []struct {
		name string
		msg  *hds.HealthCheckRequestOrEndpointHealthResponse
	}{
		{"empty message", &hds.HealthCheckRequestOrEndpointHealthResponse{}},
		{"report first", reportMsg(proxy("app", writer("db1", true)))},
		{"no node", &hds.HealthCheckRequestOrEndpointHealthResponse{RequestType: &hds.HealthCheckRequestOrEndpointHealthResponse_HealthCheckRequest{
			HealthCheckRequest: &hds.HealthCheckRequest{},
		}}},
		{"no node id", helloMsg(nodeInfo("", "a"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := startService(t)
			st := dialRaw(t, env.addr, "tok-n1")
			st.send(tt.msg)
			st.wantCode(codes.InvalidArgument)
			if n := env.svc.recordCount(); n != 0 {
				t.Fatalf("%d node records, want 0", n)
			}
		})
	}
	t.Run("empty later message", func(t *testing.T) {
		env := startService(t)
		st := dialRaw(t, env.addr, "tok-n1")
		st.hello(nodeInfo("n1", "a"))
		st.recv()
		st.send(&hds.HealthCheckRequestOrEndpointHealthResponse{})
		st.wantCode(codes.InvalidArgument)
	})
}

func TestReplacedStream(t *testing.T) {
	env := startService(t)
	old := dialRaw(t, env.addr, "tok-n1")
	old.hello(nodeInfo("n1", "a"))
	old.recv()
	old.report(proxy("app", writer("db1", false)))
	testutil.Eventually(t, waitFor, "UNAVAILABLE", func() bool { return env.svc.TargetHealth("app", "db1").Health == HealthUnavailable })

	cur := dialRaw(t, env.addr, "tok-n1")
	cur.hello(nodeInfo("n1", "a"))
	cur.recv()
	cur.report(proxy("app", writer("db1", true)))
	testutil.Eventually(t, waitFor, "AVAILABLE", func() bool { return env.svc.TargetHealth("app", "db1").Health == HealthAvailable })

	old.report(proxy("app", writer("db1", false)))
	old.wantCode(codes.Aborted)
	if got := env.svc.TargetHealth("app", "db1"); got.Health != HealthAvailable || len(got.Reports) != 1 {
		t.Fatalf("after the old stream's report: %+v, want the new stream's view", got)
	}
	// The new stream may ask for the specifier again.
	cur.hello(nodeInfo("n1", "a"))
	cur.recv()
}

func TestClose(t *testing.T) {
	env := startService(t)
	st := dialRaw(t, env.addr, "tok-n1")
	st.hello(nodeInfo("n1", "a"))
	st.recv()
	st.report(proxy("app", writer("db1", true)))
	testutil.Eventually(t, waitFor, "AVAILABLE", func() bool { return env.svc.TargetHealth("app", "db1").Health == HealthAvailable })

	env.svc.Close()
	env.svc.Close()
	if got := env.svc.TargetHealth("app", "db1").Health; got != HealthUnknown {
		t.Fatalf("after Close: %s, want UNKNOWN", got)
	}
	st.report(proxy("app", writer("db1", true)))
	st.wantCode(codes.Unavailable)
	fresh := dialRaw(t, env.addr, "tok-n1")
	fresh.hello(nodeInfo("n1", "a"))
	fresh.wantCode(codes.Unavailable)
}

func TestFetchIsRefused(t *testing.T) {
	s, err := New(Options{Authorizer: newFakeAuth(nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(xdsapi.TokenMetadataKey, "tok-n1"))
	if _, err := (hdsService{s: s}).FetchHealthCheck(ctx, helloMsg(nodeInfo("n1", "a"))); err == nil {
		t.Fatal("FetchHealthCheck succeeded")
	}
}

func TestWireFormat(t *testing.T) {
	if ReasonMetadataKey != healthreport.ReasonMetadataKey {
		t.Fatalf("reason keys differ: %q and %q", ReasonMetadataKey, healthreport.ReasonMetadataKey)
	}
	unchecked := writer("db3", false)
	unchecked.Unchecked, unchecked.Reason = true, ""
	noRole := writer("db4", true)
	noRole.Role = ""
	long := writer("db5", false)
	long.Reason = strings.Repeat("é", xdsapi.MaxHealthReasonLen)
	resp := healthreport.Encode([]healthreport.ProxyHealth{
		proxy("app", writer("db1", true), writer("db2", false), unchecked, noRole, long),
		proxy("", writer("orphan", true)),
	})
	got, skipped := decode(resp)
	if skipped != 1 {
		t.Fatalf("skipped %d entries, want the one without a cluster name", skipped)
	}
	want := map[targetKey]entry{
		{"app", "db1"}: {healthy: true, role: RoleWriter, address: "127.0.0.1:3306"},
		{"app", "db2"}: {role: RoleWriter, reason: writer("db2", false).Reason, address: "127.0.0.1:3306"},
		{"app", "db4"}: {healthy: true, address: "127.0.0.1:3306"},
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%v = %+v, want %+v", k, got[k], w)
		}
	}
	e, ok := got[targetKey{"app", "db5"}]
	if !ok || len(e.reason) > xdsapi.MaxHealthReasonLen || !strings.HasPrefix(long.Reason, e.reason) || e.reason == "" {
		t.Errorf("long reason not cut cleanly to %d bytes: %d bytes", xdsapi.MaxHealthReasonLen, len(e.reason))
	}
	if _, ok := got[targetKey{"app", "db3"}]; ok {
		t.Error("an unchecked target was recorded")
	}
	if len(got) != len(want)+1 {
		t.Errorf("decoded %d targets, want %d", len(got), len(want)+1)
	}
}

// TestSameIDOtherZone: a node of zone b that names a zone-a node's id gets
// its own record; it does not replace the zone-a node's report.
func TestSameIDOtherZone(t *testing.T) {
	env := startService(t)
	env.auth.allow("n1", "b")
	startReporter(t, env, nodeInfo("n1", "a"), newSnapshot(proxy("app", writer("db1", true))).get, nil)
	testutil.Eventually(t, waitFor, "zone a's report", func() bool { return env.svc.TargetHealth("app", "db1").Health == HealthAvailable })
	startReporter(t, env, nodeInfo("n1", "b"), newSnapshot(proxy("app", writer("db1", false))).get, nil)
	testutil.Eventually(t, waitFor, "both reports", func() bool { return len(env.svc.TargetHealth("app", "db1").Reports) == 2 })
	if got := env.svc.TargetHealth("app", "db1").Health; got != HealthDegraded {
		t.Fatalf("health with one healthy and one unhealthy report: %s, want DEGRADED", got)
	}
}

func TestTargetHealthReason(t *testing.T) {
	th := TargetHealth{Reports: []Report{
		{Node: "a1", Healthy: true},
		{Node: "a2", Reason: "dial: refused"},
		{Node: "b1", Reason: "dial: refused"},
		{Node: "c1", Reason: "read_only: timeout"},
		{Node: "c2"},
	}}
	want := "a2, b1: dial: refused; c1: read_only: timeout; c2: unhealthy"
	if got := th.Reason(); got != want {
		t.Fatalf("Reason() = %q, want %q", got, want)
	}
	if got := (TargetHealth{Reports: []Report{{Node: "a1", Healthy: true}}}).Reason(); got != "" {
		t.Fatalf("healthy target: Reason() = %q, want none", got)
	}
	long := TargetHealth{Reports: []Report{{Node: "n", Reason: strings.Repeat("é", 2000)}}}
	if got := long.Reason(); len(got) > maxReason || !utf8.ValidString(got) {
		t.Fatalf("long reason: %d bytes, valid UTF-8 %v", len(got), utf8.ValidString(got))
	}
}
