package xdsclient

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/dbproxy/dbproxy/internal/testing/testutil"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// scriptedADS is an ADS server the test drives response by response, to
// check the client's side of the protocol exactly.
type scriptedADS struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	md    chan metadata.MD
	reqs  chan *discovery.DiscoveryRequest
	resps chan *discovery.DiscoveryResponse
}

func (s *scriptedADS) StreamAggregatedResources(st grpc.BidiStreamingServer[discovery.DiscoveryRequest, discovery.DiscoveryResponse]) error {
	md, _ := metadata.FromIncomingContext(st.Context())
	s.md <- md
	errc := make(chan error, 1)
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				errc <- err
				return
			}
			s.reqs <- r
		}
	}()
	for {
		select {
		case r := <-s.resps:
			if err := st.Send(r); err != nil {
				return err
			}
		case err := <-errc:
			return err
		case <-st.Context().Done():
			return nil
		}
	}
}

type scriptedEnv struct {
	t     *testing.T
	ads   *scriptedADS
	addr  string
	nonce int
}

func startScripted(t *testing.T) *scriptedEnv {
	t.Helper()
	ads := &scriptedADS{
		md:    make(chan metadata.MD, 4),
		reqs:  make(chan *discovery.DiscoveryRequest, 64),
		resps: make(chan *discovery.DiscoveryResponse),
	}
	gs := testutil.ServeGRPC(t, "127.0.0.1:0", func(g *grpc.Server) { discovery.RegisterAggregatedDiscoveryServiceServer(g, ads) }, nil)
	return &scriptedEnv{t: t, ads: ads, addr: gs.Addr}
}

// send sends one response of type typ at version and returns its nonce.
func (e *scriptedEnv) send(typ, version string) string {
	e.t.Helper()
	e.nonce++
	nonce := strconv.Itoa(e.nonce)
	var m proto.Message
	switch typ {
	case resource.ClusterType:
		m = &cluster.Cluster{Name: "p1-" + version}
	case resource.EndpointType:
		m = &endpoint.ClusterLoadAssignment{ClusterName: "p1-" + version}
	case resource.ListenerType:
		m = &listener.Listener{Name: "p1/default-" + version}
	case resource.SecretType:
		m = &tlsv3.Secret{Name: "db/s1-" + version}
	}
	a, err := anypb.New(m)
	if err != nil {
		e.t.Fatal(err)
	}
	select {
	case e.ads.resps <- &discovery.DiscoveryResponse{TypeUrl: typ, VersionInfo: version, Nonce: nonce, Resources: []*anypb.Any{a}}:
	case <-time.After(waitFor):
		e.t.Fatal("client stream not there to send to")
	}
	return nonce
}

func (e *scriptedEnv) sendAll(version string) map[string]string {
	e.t.Helper()
	nonces := map[string]string{}
	for _, typ := range xdsapi.ResourceTypes() {
		nonces[typ] = e.send(typ, version)
	}
	return nonces
}

func (e *scriptedEnv) recv() *discovery.DiscoveryRequest {
	e.t.Helper()
	select {
	case r := <-e.ads.reqs:
		return r
	case <-time.After(waitFor):
		e.t.Fatal("no request from the client")
	}
	return nil
}

// expect reads n requests and checks each against want, by type.
func (e *scriptedEnv) expect(n int, check func(r *discovery.DiscoveryRequest)) map[string]*discovery.DiscoveryRequest {
	e.t.Helper()
	got := map[string]*discovery.DiscoveryRequest{}
	for range n {
		r := e.recv()
		if _, dup := got[r.GetTypeUrl()]; dup {
			e.t.Fatalf("two requests for %s", r.GetTypeUrl())
		}
		got[r.GetTypeUrl()] = r
		check(r)
	}
	return got
}

func TestProtocolExchange(t *testing.T) {
	env := startScripted(t)
	rec := &applyRecorder{}
	rec.failVersion("v3", "secret db/s1: no password")
	opts := testOptions(env.addr, rec, &testutil.SyncBuffer{})
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c)

	// Token in metadata; four wildcard requests, node on the first only.
	select {
	case md := <-env.ads.md:
		if tok := md.Get(xdsapi.TokenMetadataKey); len(tok) != 1 || tok[0] != "tok-n1" {
			t.Fatalf("token metadata = %v", tok)
		}
	case <-time.After(waitFor):
		t.Fatal("no stream")
	}
	var order []string
	for i := range 4 {
		r := env.recv()
		order = append(order, r.GetTypeUrl())
		if (i == 0) != (r.GetNode() != nil) {
			t.Fatalf("request %d node = %v", i, r.GetNode())
		}
		if i == 0 {
			if got := xdsapi.NodeInfoFrom(r.GetNode()); got != opts.Node || r.GetNode().GetUserAgentName() != "dbproxy" {
				t.Fatalf("node = %+v (%s)", got, r.GetNode().GetUserAgentName())
			}
		}
		if r.GetVersionInfo() != "" || r.GetResponseNonce() != "" || len(r.GetResourceNames()) != 0 {
			t.Fatalf("initial request %d = %v", i, r)
		}
	}
	if want := xdsapi.ResourceTypes(); !slices.Equal(order, want[:]) {
		t.Fatalf("request order %v, want %v", order, want)
	}

	// Cluster at v1, then the others at v2: the stale cluster is asked
	// for again (its nonce, no version accepted yet, no error).
	n1 := env.send(resource.ClusterType, "v1")
	n2 := env.send(resource.EndpointType, "v2")
	r := env.recv()
	if r.GetTypeUrl() != resource.ClusterType || r.GetResponseNonce() != n1 || r.GetVersionInfo() != "" || r.GetErrorDetail() != nil {
		t.Fatalf("re-request = %v", r)
	}
	nonces := map[string]string{resource.EndpointType: n2}
	nonces[resource.ListenerType] = env.send(resource.ListenerType, "v2")
	nonces[resource.SecretType] = env.send(resource.SecretType, "v2")
	nonces[resource.ClusterType] = env.send(resource.ClusterType, "v2")

	// Applied once, as a whole, then every response ACKed.
	acks := env.expect(4, func(r *discovery.DiscoveryRequest) {
		if r.GetVersionInfo() != "v2" || r.GetErrorDetail() != nil {
			t.Fatalf("ACK = %v", r)
		}
	})
	for typ, r := range acks {
		if r.GetResponseNonce() != nonces[typ] {
			t.Fatalf("%s ACK nonce %s, want %s", typ, r.GetResponseNonce(), nonces[typ])
		}
	}
	if v := rec.versions(); !slices.Equal(v, []string{"v2"}) {
		t.Fatalf("applied %v", v)
	}
	if got := rec.call(0).res; len(got) != 4 || len(got[resource.ClusterType]) != 1 {
		t.Fatalf("applied set %v", got)
	}

	// v3 fails to apply: NACK every type with the running version and
	// the reason.
	nonces = env.sendAll("v3")
	env.expect(4, func(r *discovery.DiscoveryRequest) {
		if r.GetVersionInfo() != "v2" || r.GetErrorDetail().GetMessage() != "secret db/s1: no password" || r.GetResponseNonce() != nonces[r.GetTypeUrl()] {
			t.Fatalf("NACK = %v", r)
		}
	})

	// A server that resends the rejected version gets NACKs again without
	// another Apply.
	nonces = env.sendAll("v3")
	env.expect(4, func(r *discovery.DiscoveryRequest) {
		if r.GetErrorDetail() == nil || r.GetResponseNonce() != nonces[r.GetTypeUrl()] {
			t.Fatalf("second NACK = %v", r)
		}
	})
	if v := rec.versions(); !slices.Equal(v, []string{"v2", "v3"}) {
		t.Fatalf("applied %v, want v2 and one attempt at v3", v)
	}

	// The running version again (a revert) after a rejection is applied
	// again, as a whole: Apply may have acted on part of the rejected
	// set (the node drops the connect keys it revokes).
	nonces = env.sendAll("v2")
	env.expect(4, func(r *discovery.DiscoveryRequest) {
		if r.GetVersionInfo() != "v2" || r.GetErrorDetail() != nil || r.GetResponseNonce() != nonces[r.GetTypeUrl()] {
			t.Fatalf("ACK of the running version after a rejection = %v", r)
		}
	})
	if v := rec.versions(); !slices.Equal(v, []string{"v2", "v3", "v2"}) {
		t.Fatalf("applied %v, want v2 again after the rejection of v3", v)
	}
	// Otherwise the running version is ACKed without an Apply, type by
	// type.
	for _, typ := range xdsapi.ResourceTypes() {
		nonce := env.send(typ, "v2")
		r := env.recv()
		if r.GetTypeUrl() != typ || r.GetVersionInfo() != "v2" || r.GetResponseNonce() != nonce || r.GetErrorDetail() != nil {
			t.Fatalf("ACK of the running version = %v", r)
		}
	}
	if v := rec.versions(); len(v) != 3 {
		t.Fatalf("applied %v", v)
	}
	if s := c.Status(); s.Version != "v2" || !s.Connected {
		t.Fatalf("status = %+v", s)
	}
}

// The context handed to Apply ends with Run's.
func TestApplyContextEndsWithRun(t *testing.T) {
	env := startScripted(t)
	started := make(chan struct{})
	opts := testOptions(env.addr, &applyRecorder{}, &testutil.SyncBuffer{})
	opts.Apply = func(ctx context.Context, _ string, _ map[string][]*anypb.Any) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	stop := runClient(t, c)
	<-env.ads.md
	env.expect(4, func(*discovery.DiscoveryRequest) {})
	env.sendAll("v1")
	<-started
	stop()
}
