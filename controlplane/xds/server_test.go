package xds

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"go.uber.org/goleak"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/dbproxy/dbproxy/controlplane/identity"
	"github.com/dbproxy/dbproxy/internal/testing/testutil"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
	"github.com/dbproxy/dbproxy/internal/xdstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestNewRequiresAuthorizerAndBuild(t *testing.T) {
	build := func(context.Context, xdsapi.NodeInfo) (*cache.Snapshot, uint64, error) { return nil, 0, nil }
	auth := identity.AuthorizerFunc(func(context.Context, metadata.MD, xdsapi.NodeInfo) error { return nil })
	tests := []struct {
		name    string
		opts    Options
		wantErr bool
	}{
		{"both", Options{Authorizer: auth, Build: build}, false},
		{"no authorizer", Options{Build: build}, true},
		{"no build", Options{Authorizer: auth}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.opts)
			if (err != nil) != tt.wantErr {
				t.Fatalf("New error = %v, want error %v", err, tt.wantErr)
			}
			if s != nil {
				s.Close()
			}
		})
	}
}

func TestInitialSyncAndAck(t *testing.T) {
	env := startServer(t)
	c := dial(t, env.addr, "tok-n1", false)
	c.subscribe(node("n1", "a"))

	version, set := c.recvSet()
	if want := env.build.version("a"); version != want {
		t.Fatalf("version = %s, want %s", version, want)
	}
	for typ, r := range set {
		if len(r.GetResources()) != 1 {
			t.Errorf("%s: %d resources, want 1", typ, len(r.GetResources()))
		}
	}
	st, _ := nodeStatus(env.srv, "n1")
	if !st.Connected || st.CurrentVersion != version || st.CurrentRevision != 1 || st.AckedVersion != "" {
		t.Fatalf("before ack: %+v", st)
	}

	c.ackAll(set)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	statuses, err := env.srv.WaitRollout(ctx, 1, nil)
	if err != nil {
		t.Fatalf("WaitRollout: %v", err)
	}
	if len(statuses) != 1 || statuses[0].AckedVersion != version || statuses[0].AckedRevision != 1 {
		t.Fatalf("statuses = %+v", statuses)
	}
	if st := statuses[0]; st.Zone != "a" || st.Address != "127.0.0.1" || st.ConnectedAt.IsZero() || st.LastNack != nil {
		t.Fatalf("status = %+v", st)
	}
}

func TestRefreshPublishesNewVersion(t *testing.T) {
	env := startServer(t)
	c := dial(t, env.addr, "tok-n1", false)
	c.subscribe(node("n1", "a"))
	_, set := c.recvSet()
	c.ackAll(set)

	rev, want := env.build.set("a", "g1")
	if err := env.srv.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}

	// Not acked yet: the wait times out and says so.
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	statuses, err := env.srv.WaitRollout(short, rev, []string{"a"})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitRollout before ack: %v, want deadline exceeded", err)
	}
	if len(statuses) != 1 || statuses[0].CurrentVersion != want || statuses[0].CurrentRevision != rev {
		t.Fatalf("statuses = %+v", statuses)
	}

	version, set := c.recvSet()
	if version != want {
		t.Fatalf("version = %s, want %s", version, want)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		_, err := env.srv.WaitRollout(ctx, rev, nil)
		done <- err
	}()
	c.ackAll(set)
	if err := <-done; err != nil {
		t.Fatalf("WaitRollout after ack: %v", err)
	}
}

func TestWaitRolloutZones(t *testing.T) {
	env := startServer(t)
	a := dial(t, env.addr, "tok-n1", false)
	a.subscribe(node("n1", "a"))
	_, setA := a.recvSet()
	a.ackAll(setA)
	b := dial(t, env.addr, "tok-n2", false)
	b.subscribe(node("n2", "b"))
	_, setB := b.recvSet() // not acked

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	tests := []struct {
		name    string
		zones   []string
		wantIDs []string
		done    bool
	}{
		{"zone a only", []string{"a"}, []string{"n1"}, true},
		{"no zones", []string{}, nil, true},
		{"zone b waits", []string{"b"}, []string{"n2"}, false},
		{"all zones waits", nil, []string{"n1", "n2"}, false},
		// A named zone without any node is waited for, not skipped.
		{"zone without nodes waits", []string{"c"}, nil, false},
		{"acked zone and a zone without nodes waits", []string{"a", "c"}, []string{"n1"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wctx := ctx
			if !tt.done {
				var c context.CancelFunc
				wctx, c = context.WithTimeout(ctx, 30*time.Millisecond)
				defer c()
			}
			st, err := env.srv.WaitRollout(wctx, 1, tt.zones)
			if tt.done != (err == nil) {
				t.Fatalf("WaitRollout err = %v, want done %v", err, tt.done)
			}
			var ids []string
			for _, s := range st {
				ids = append(ids, s.ID)
			}
			if len(ids) != len(tt.wantIDs) {
				t.Fatalf("ids = %v, want %v", ids, tt.wantIDs)
			}
			for i := range ids {
				if ids[i] != tt.wantIDs[i] {
					t.Fatalf("ids = %v, want %v", ids, tt.wantIDs)
				}
			}
		})
	}
	b.ackAll(setB)
	if _, err := env.srv.WaitRollout(ctx, 1, nil); err != nil {
		t.Fatal(err)
	}
}

// TestNackIsNotResent is the NACK loop check: after a NACK the server sends
// nothing until a different version is published, and then that one.
func TestNackIsNotResent(t *testing.T) {
	env := startServer(t)
	c := dial(t, env.addr, "tok-n1", false)
	c.subscribe(node("n1", "a"))
	_, set := c.recvSet()
	c.ackAll(set)
	good := set[resource.ClusterType].GetVersionInfo()

	rev, bad := env.build.set("a", "bad")
	if err := env.srv.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	version, set := c.recvSet()
	if version != bad {
		t.Fatalf("version = %s, want %s", version, bad)
	}

	// Wait for the rollout in the background: the NACK must end it.
	rolloutErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		_, err := env.srv.WaitRollout(ctx, rev, nil)
		rolloutErr <- err
	}()

	// NACK every type: previous good version plus error detail.
	for _, typ := range xdsapi.ResourceTypes() {
		c.send(&discovery.DiscoveryRequest{
			TypeUrl:       typ,
			VersionInfo:   good,
			ResponseNonce: set[typ].GetNonce(),
			ErrorDetail:   &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: "listener p1/default: port in use"},
		})
	}
	// A barrier: the stream handles requests in order, so once this
	// request reached the authorizer the NACKs' watches exist.
	calls := env.auth.callCount("n1")
	c.send(&discovery.DiscoveryRequest{TypeUrl: resource.RuntimeType})
	testutil.Eventually(t, waitFor, "barrier request", func() bool { return env.auth.callCount("n1") > calls })

	if err := <-rolloutErr; !errors.Is(err, ErrRolloutRejected) {
		t.Fatalf("WaitRollout = %v, want ErrRolloutRejected", err)
	}
	st, _ := nodeStatus(env.srv, "n1")
	if st.LastNack == nil || st.LastNack.Version != bad || st.LastNack.Message != "listener p1/default: port in use" || st.LastNack.At.IsZero() {
		t.Fatalf("LastNack = %+v", st.LastNack)
	}
	if st.AckedVersion != good || st.CurrentVersion != bad {
		t.Fatalf("status = %+v", st)
	}
	mustContain(t, env.logs.String(), "node rejected configuration")

	// Same content at a newer revision: still nothing to send.
	env.build.bump()
	if err := env.srv.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.noResponse()

	// A fixed version is sent, and only that.
	rev, fixed := env.build.set("a", "fixed")
	if err := env.srv.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	version, set = c.recvSet()
	if version != fixed {
		t.Fatalf("after NACK got version %s, want the new %s (rejected was %s)", version, fixed, bad)
	}
	c.ackAll(set)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := env.srv.WaitRollout(ctx, rev, nil); err != nil {
		t.Fatalf("WaitRollout after fix: %v", err)
	}
	c.noResponse()
}

func TestUnchangedContentAdvancesAckedRevision(t *testing.T) {
	env := startServer(t)
	c := dial(t, env.addr, "tok-n1", false)
	c.subscribe(node("n1", "a"))
	_, set := c.recvSet()
	c.ackAll(set)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := env.srv.WaitRollout(ctx, 1, nil); err != nil {
		t.Fatal(err)
	}

	// A commit that does not touch zone a: no push, yet rolled out.
	rev, _ := env.build.set("b", "other")
	if err := env.srv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := env.srv.WaitRollout(ctx, rev, nil)
	if err != nil {
		t.Fatalf("WaitRollout: %v", err)
	}
	if st[0].AckedRevision != rev || st[0].CurrentRevision != rev {
		t.Fatalf("status = %+v", st[0])
	}
	c.noResponse()
}

func TestRefusedNodes(t *testing.T) {
	tests := []struct {
		name  string
		delta bool
		token string
		node  xdsapi.NodeInfo
		code  codes.Code
		msg   string
	}{
		{"sotw no token", false, "", node("n1", "a"), codes.Unauthenticated, "invalid node token"},
		{"sotw wrong token", false, "tok-n2", node("n1", "a"), codes.Unauthenticated, "invalid node token"},
		{"sotw wrong zone", false, "tok-n1", node("n1", "b"), codes.PermissionDenied, "zone b"},
		{"sotw no node id", false, "tok-n1", node("", "a"), codes.InvalidArgument, "node.id"},
		{"delta wrong token", true, "tok-x", node("n1", "a"), codes.Unauthenticated, "invalid node token"},
		{"delta wrong zone", true, "tok-n1", node("n1", "c"), codes.PermissionDenied, "zone c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := startServer(t)
			c := dial(t, env.addr, tt.token, tt.delta)
			if tt.delta {
				c.sendDelta(&discovery.DeltaDiscoveryRequest{Node: tt.node.Proto(), TypeUrl: resource.ClusterType})
			} else {
				c.send(&discovery.DiscoveryRequest{Node: tt.node.Proto(), TypeUrl: resource.ClusterType})
			}
			st := c.wantCode(tt.code)
			mustContain(t, st.Message(), tt.msg)
			if n := env.srv.Nodes(); len(n) != 0 {
				t.Fatalf("refused node recorded: %+v", n)
			}
			if tt.code != codes.InvalidArgument {
				mustContain(t, env.logs.String(), "refusing node")
			}
		})
	}
}

func TestIdentityChangeMidStream(t *testing.T) {
	tests := []struct {
		name  string
		delta bool
		next  xdsapi.NodeInfo
	}{
		{"sotw id", false, node("n3", "a")},
		{"sotw zone", false, node("n1", "b")},
		{"delta id", true, node("n3", "a")},
		{"delta zone", true, node("n1", "b")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := startServer(t)
			// The token fits both identities' authorizer checks where it
			// can, so that the refusal comes from the identity change.
			c := dial(t, env.addr, "tok-n1", tt.delta)
			if tt.delta {
				c.sendDelta(&discovery.DeltaDiscoveryRequest{Node: node("n1", "a").Proto(), TypeUrl: resource.ClusterType})
				r := c.recvDelta()
				c.sendDelta(&discovery.DeltaDiscoveryRequest{Node: tt.next.Proto(), TypeUrl: resource.ClusterType, ResponseNonce: r.GetNonce()})
			} else {
				c.send(&discovery.DiscoveryRequest{Node: node("n1", "a").Proto(), TypeUrl: resource.ClusterType})
				r := c.recv()
				c.send(&discovery.DiscoveryRequest{Node: tt.next.Proto(), TypeUrl: resource.ClusterType, VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()})
			}
			st := c.wantCode(codes.PermissionDenied)
			mustContain(t, st.Message(), "identity changed mid-stream")
			testutil.Eventually(t, waitFor, "disconnect", func() bool {
				n, ok := nodeStatus(env.srv, "n1")
				return ok && !n.Connected
			})
		})
	}
}

func TestDeltaSyncAndAck(t *testing.T) {
	env := startServer(t)
	c := dial(t, env.addr, "tok-n1", true)
	for i, typ := range xdsapi.ResourceTypes() {
		req := &discovery.DeltaDiscoveryRequest{TypeUrl: typ}
		if i == 0 {
			req.Node = node("n1", "a").Proto()
		}
		c.sendDelta(req)
	}
	want := env.build.version("a")
	got := map[string]*discovery.DeltaDiscoveryResponse{}
	for range xdsapi.NumResourceTypes {
		r := c.recvDelta()
		got[r.GetTypeUrl()] = r
		if r.GetSystemVersionInfo() != want || len(r.GetResources()) != 1 {
			t.Fatalf("%s: version %s with %d resources", r.GetTypeUrl(), r.GetSystemVersionInfo(), len(r.GetResources()))
		}
	}
	// NACK one type, ACK the rest: no whole-node ack, the NACK recorded.
	for _, typ := range xdsapi.ResourceTypes() {
		req := &discovery.DeltaDiscoveryRequest{TypeUrl: typ, ResponseNonce: got[typ].GetNonce()}
		if typ == resource.SecretType {
			req.ErrorDetail = &rpcstatus.Status{Message: "bad secret"}
		}
		c.sendDelta(req)
	}
	testutil.Eventually(t, waitFor, "delta NACK recorded", func() bool {
		st, _ := nodeStatus(env.srv, "n1")
		return st.LastNack != nil
	})
	st, _ := nodeStatus(env.srv, "n1")
	if st.LastNack.Version != want || st.LastNack.TypeURL != resource.SecretType || st.AckedVersion != "" {
		t.Fatalf("status = %+v, nack %+v", st, st.LastNack)
	}
	c.sendDelta(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.SecretType, ResponseNonce: got[resource.SecretType].GetNonce()})
	testutil.Eventually(t, waitFor, "delta ACK after the NACK", func() bool {
		st, _ := nodeStatus(env.srv, "n1")
		return st.AckedVersion == want
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := env.srv.WaitRollout(ctx, 1, nil); err != nil {
		t.Fatalf("WaitRollout: %v", err)
	}

	rev, v2 := env.build.set("a", "g2")
	if err := env.srv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	// The cluster did not change: a delta client is sent the other three.
	for range 3 {
		r := c.recvDelta()
		if r.GetTypeUrl() == resource.ClusterType {
			t.Fatal("unchanged cluster resent")
		}
		if r.GetSystemVersionInfo() != v2 {
			t.Fatalf("%s at %s, want %s", r.GetTypeUrl(), r.GetSystemVersionInfo(), v2)
		}
		c.sendDelta(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
	}
	if _, err := env.srv.WaitRollout(ctx, rev, nil); err != nil {
		t.Fatalf("WaitRollout v2: %v", err)
	}
}

func TestSecondStreamReplacesFirst(t *testing.T) {
	env := startServer(t)
	first := dial(t, env.addr, "tok-n1", false)
	first.subscribe(node("n1", "a"))
	_, set := first.recvSet()
	first.ackAll(set)
	before, _ := nodeStatus(env.srv, "n1")

	second := dial(t, env.addr, "tok-n1", false)
	second.subscribe(node("n1", "a"))
	first.wantCode(codes.Aborted)
	version, set := second.recvSet()
	second.ackAll(set)
	testutil.Eventually(t, waitFor, "second stream's ACK", func() bool {
		st, _ := nodeStatus(env.srv, "n1")
		return st.AckedVersion == version
	})

	st, _ := nodeStatus(env.srv, "n1")
	if !st.Connected || !st.ConnectedAt.After(before.ConnectedAt) {
		t.Fatalf("after replacement: %+v (before %+v)", st, before)
	}
	if n := len(env.srv.Nodes()); n != 1 {
		t.Fatalf("%d node records, want 1", n)
	}

	second.cancel()
	testutil.Eventually(t, waitFor, "disconnect", func() bool {
		st, _ := nodeStatus(env.srv, "n1")
		return !st.Connected
	})
	st, _ = nodeStatus(env.srv, "n1")
	if st.LastSeen.Before(st.ConnectedAt) || st.AckedVersion == "" {
		t.Fatalf("record after disconnect: %+v", st)
	}
	// Disconnected nodes are not waited for.
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	rev, _ := env.build.set("a", "g9")
	if err := env.srv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := env.srv.WaitRollout(ctx, rev, nil); err != nil || len(st) != 0 {
		t.Fatalf("WaitRollout = %+v, %v", st, err)
	}
}

// TestSameIDInAnotherZoneDoesNotTakeOver: node ids are chosen by nodes. A
// principal allowed zone b that names the id of a zone-a node must get a
// node of its own, not replace the zone-a node's stream or record.
func TestSameIDInAnotherZoneDoesNotTakeOver(t *testing.T) {
	env := startServer(t)
	env.auth.allow("n1", "b")
	first := dial(t, env.addr, "tok-n1", false)
	first.subscribe(node("n1", "a"))
	va, set := first.recvSet()
	first.ackAll(set)

	other := dial(t, env.addr, "tok-n1", false)
	other.subscribe(node("n1", "b"))
	_, oset := other.recvSet()
	other.ackAll(oset)
	testutil.Eventually(t, waitFor, "two records of n1", func() bool { return len(env.srv.Nodes()) == 2 })

	// The zone-a stream is still served: a change of zone a reaches it.
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	_, v2 := env.build.set("a", "g2")
	if err := env.srv.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := first.recvSet(); got != v2 || got == va {
		t.Fatalf("zone-a stream got version %s, want %s", got, v2)
	}
	for _, st := range env.srv.Nodes() {
		if !st.Connected {
			t.Fatalf("node %s in zone %s disconnected: %+v", st.ID, st.Zone, st)
		}
	}
}

func TestNodesSorted(t *testing.T) {
	env := startServer(t)
	for _, n := range []xdsapi.NodeInfo{node("n2", "b"), node("n3", "a"), node("n1", "a")} {
		c := dial(t, env.addr, "tok-"+n.ID, false)
		c.subscribe(n)
		c.recvSet()
	}
	var got []string
	for _, n := range env.srv.Nodes() {
		got = append(got, n.Zone+"/"+n.ID)
	}
	want := []string{"a/n1", "a/n3", "b/n2"}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("Nodes order = %v, want %v", got, want)
	}
}

func TestRefreshConcurrentKeepsNewest(t *testing.T) {
	env := startServer(t)
	c := dial(t, env.addr, "tok-n1", false)
	c.subscribe(node("n1", "a"))
	c.recvSet()

	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			env.build.set("a", "c"+string(rune('0'+i)))
			if err := env.srv.Refresh(context.Background()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := env.srv.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	st, _ := nodeStatus(env.srv, "n1")
	env.build.mu.Lock()
	rev, gen := env.build.mu.rev, env.build.genLocked("a")
	env.build.mu.Unlock()
	_, want := testSnapshot(t, "a", gen)
	if st.CurrentRevision != rev || st.CurrentVersion != want {
		t.Fatalf("current = %d/%s, want %d/%s", st.CurrentRevision, st.CurrentVersion, rev, want)
	}
}

func TestRefreshErrors(t *testing.T) {
	env := startServer(t)
	c := dial(t, env.addr, "tok-n1", false)
	c.subscribe(node("n1", "a"))
	c.recvSet()

	env.build.mu.Lock()
	env.build.mu.err = errTest
	env.build.mu.Unlock()
	if err := env.srv.Refresh(context.Background()); !errors.Is(err, errTest) {
		t.Fatalf("Refresh = %v, want the build error", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := env.srv.Refresh(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Refresh with done ctx = %v", err)
	}

	// A new node whose build fails is told so and not served.
	c2 := dial(t, env.addr, "tok-n2", false)
	c2.send(&discovery.DiscoveryRequest{Node: node("n2", "b").Proto(), TypeUrl: resource.ClusterType})
	st := c2.wantCode(codes.Unavailable)
	mustContain(t, st.Message(), "could not build")
}

func TestPublishChecksSnapshots(t *testing.T) {
	env := startServer(t)
	c := dial(t, env.addr, "tok-n1", false)
	c.subscribe(node("n1", "a"))
	_, set := c.recvSet()
	c.ackAll(set)
	info := node("n1", "a")

	res := xdstest.Resources("a", "x")
	delete(res, resource.ClusterType) // the assignment now has no cluster
	inconsistent, _ := cache.NewSnapshot("v-x", res)
	if err := env.srv.publish(info, inconsistent, 5); err == nil {
		t.Fatal("inconsistent snapshot published")
	}

	mixed := &cache.Snapshot{}
	full := xdstest.Resources("a", "y")
	mixed.Resources[types.Cluster] = cache.NewResources("v1", full[resource.ClusterType])
	mixed.Resources[types.Endpoint] = cache.NewResources("v2", full[resource.EndpointType])
	if err := env.srv.publish(info, mixed, 5); err == nil {
		t.Fatal("snapshot with mixed versions published")
	}

	// Missing types are filled in empty at the snapshot's version, so a
	// wildcard subscriber hears about all four.
	partial, _ := cache.NewSnapshot("v-partial", map[resource.Type][]types.Resource{})
	partial.Resources[types.Listener] = cache.NewResources("v-partial", nil)
	if err := env.srv.publish(info, partial, 5); err != nil {
		t.Fatal(err)
	}
	version, set := c.recvSet()
	if version != "v-partial" {
		t.Fatalf("version = %s", version)
	}
	for typ, r := range set {
		if len(r.GetResources()) != 0 {
			t.Fatalf("%s has %d resources", typ, len(r.GetResources()))
		}
	}

	// An older revision does not replace a newer one.
	old, _ := testSnapshot(t, "a", "old")
	if err := env.srv.publish(info, old, 4); err != nil {
		t.Fatal(err)
	}
	if st, _ := nodeStatus(env.srv, "n1"); st.CurrentVersion != "v-partial" || st.CurrentRevision != 5 {
		t.Fatalf("stale publish applied: %+v", st)
	}
}

func TestCloseEndsStreams(t *testing.T) {
	env := startServer(t)
	c := dial(t, env.addr, "tok-n1", false)
	c.subscribe(node("n1", "a"))
	c.recvSet()

	waitErr := make(chan error, 1)
	go func() {
		_, err := env.srv.WaitRollout(context.Background(), 99, nil)
		waitErr <- err
	}()
	env.srv.Close()
	c.wantCode(codes.Unavailable)
	if err := <-waitErr; !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitRollout after Close = %v", err)
	}
	env.srv.Close() // idempotent
	if err := env.srv.Refresh(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Refresh after Close = %v", err)
	}
	c2 := dial(t, env.addr, "tok-n1", false)
	// The stream may be refused before the request is even read.
	_ = c2.sotw.Send(&discovery.DiscoveryRequest{Node: node("n1", "a").Proto(), TypeUrl: resource.ClusterType})
	c2.wantCode(codes.Unavailable)
}

func TestDisconnectedNodesAreForgotten(t *testing.T) {
	env := startServer(t)
	c := dial(t, env.addr, "tok-n1", false)
	c.subscribe(node("n1", "a"))
	c.recvSet()
	c.cancel()
	testutil.Eventually(t, waitFor, "n1 disconnected", func() bool {
		ns := env.srv.Nodes()
		return len(ns) == 1 && !ns[0].Connected
	})
	// Within ForgetAfter the record stays (and is not rebuilt).
	if err := env.srv.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(env.srv.Nodes()) != 1 {
		t.Fatal("a node disconnected a moment ago was forgotten")
	}
	env.clock.mu.Lock()
	env.clock.mu.now = env.clock.mu.now.Add(DefaultForgetAfter + time.Minute)
	env.clock.mu.Unlock()
	if err := env.srv.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ns := env.srv.Nodes(); len(ns) != 0 {
		t.Fatalf("a node gone for over ForgetAfter is still listed: %+v", ns)
	}
	// It comes back as a new node.
	c2 := dial(t, env.addr, "tok-n1", false)
	c2.subscribe(node("n1", "a"))
	c2.recvSet()
	if ns := env.srv.Nodes(); len(ns) != 1 || !ns[0].Connected {
		t.Fatalf("reconnected node: %+v", ns)
	}
}

// TestNormalizeDoesNotWriteTheBuildersSnapshot: snapshots may be shared by
// several nodes, so filling in a missing type must not modify the one the
// builder returned.
func TestNormalizeDoesNotWriteTheBuildersSnapshot(t *testing.T) {
	res := xdstest.Resources("a", "x")
	delete(res, resource.SecretType)
	v := xdstest.Version(t, res)
	snap, err := cache.NewSnapshot(v, res)
	if err != nil {
		t.Fatal(err)
	}
	out, version, err := normalizeSnapshot(snap)
	if err != nil || version != v {
		t.Fatalf("normalizeSnapshot = %q, %v", version, err)
	}
	if out.GetVersion(resource.SecretType) != v {
		t.Fatal("the missing type was not filled in")
	}
	if snap.GetVersion(resource.SecretType) != "" {
		t.Fatal("the builder's snapshot was modified")
	}
	full, err := cache.NewSnapshot(xdstest.Version(t, xdstest.Resources("a", "y")), xdstest.Resources("a", "y"))
	if err != nil {
		t.Fatal(err)
	}
	if same, _, _ := normalizeSnapshot(full); same != full {
		t.Fatal("a complete snapshot was copied")
	}
}

// TestRolloutReportsBuildFailure: a rollout that cannot complete because the
// control plane cannot build a node's configuration says so at once.
func TestRolloutReportsBuildFailure(t *testing.T) {
	env := startServer(t)
	c := dial(t, env.addr, "tok-n1", false)
	c.subscribe(node("n1", "a"))
	_, set := c.recvSet()
	c.ackAll(set)
	rev, _ := env.build.set("a", "g1")
	env.build.mu.Lock()
	env.build.mu.err = errTest
	env.build.mu.Unlock()
	if err := env.srv.Refresh(context.Background()); !errors.Is(err, errTest) {
		t.Fatalf("Refresh = %v, want the build error", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	st, err := env.srv.WaitRollout(ctx, rev, nil)
	if !errors.Is(err, ErrRolloutRejected) {
		t.Fatalf("WaitRollout = %v, want ErrRolloutRejected", err)
	}
	mustContain(t, err.Error(), "cannot build")
	if len(st) != 1 || st[0].BuildError == "" {
		t.Fatalf("statuses %+v, want the build error on n1", st)
	}
	// A later successful build clears it and the rollout completes.
	env.build.mu.Lock()
	env.build.mu.err = nil
	env.build.mu.Unlock()
	if err := env.srv.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, set = c.recvSet()
	c.ackAll(set)
	st, err = env.srv.WaitRollout(ctx, rev, nil)
	if err != nil || st[0].BuildError != "" {
		t.Fatalf("after the fix: %v, %+v", err, st)
	}
}

// TestRolloutWaitsForExpectedNodes: after a restart, a rollout waits for the
// nodes connected before it (Options.Expected) until they are back, and
// stops waiting for those that do not come back once the grace ends.
func TestRolloutWaitsForExpectedNodes(t *testing.T) {
	env := startServerWith(t, func(o *Options) {
		o.Now = time.Now
		o.ReconnectGrace = 500 * time.Millisecond
		o.Expected = []xdsapi.NodeInfo{node("n1", "a"), node("n3", "a")}
	})
	if ns := env.srv.Nodes(); len(ns) != 2 || ns[0].Connected {
		t.Fatalf("expected nodes before they connect: %+v", ns)
	}
	c := dial(t, env.addr, "tok-n1", false)
	c.subscribe(node("n1", "a"))
	_, set := c.recvSet()
	c.ackAll(set)
	// n1 is back and acked; n3 is not back: not complete yet.
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	st, err := env.srv.WaitRollout(short, 1, nil)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || len(st) != 2 {
		t.Fatalf("with n3 expected: %v, %+v", err, st)
	}
	// n3 never comes back: once the grace ends, the rollout is complete.
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	st, err = env.srv.WaitRollout(ctx, 1, nil)
	if err != nil || len(st) != 1 || st[0].ID != "n1" {
		t.Fatalf("after the grace: %v, %+v", err, st)
	}
	if got := env.srv.ConnectedNodes(); len(got) != 1 || got[0].ID != "n1" {
		t.Fatalf("ConnectedNodes = %+v", got)
	}
}
