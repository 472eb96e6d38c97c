package xdsconfig

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	xdstype "github.com/cncf/xds/go/xds/type/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/dbproxy/dbproxy/controlplane/translate"
	"github.com/dbproxy/dbproxy/dataplane/config"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/vocab"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// state has two proxies served in zone a (app with three endpoints and
// four targets over zones a, b and none; gamma with defaults everywhere)
// and beta, without targets, in zone c only.
func state() *model.State {
	return &model.State{
		Secrets: []model.Secret{
			{Name: "app-user", Username: "app", Password: "app-pw-123"},
			{Name: "admin", Username: "admin", Password: "admin-pw-456"},
			{Name: "beta-user", Username: "beta", Password: "beta-pw-789"},
		},
		Proxies: []model.Proxy{
			{Name: "app", Zones: []string{"a", "b"}, Port: 6033, RequireTLS: true, DebugLogging: true, MaxClientConnections: 500,
				IdleClientTimeout: 90,
				Auth: []model.Auth{
					{Secret: "app-user"},
					{Secret: "admin", IAMAuth: vocab.IAMAuthRequired, ClientPasswordAuthType: vocab.AuthCachingSHA2Password},
				}},
			{Name: "beta", Zones: []string{"c"}, Port: 7000, Auth: []model.Auth{{Secret: "beta-user"}}},
			{Name: "gamma", Zones: []string{"a", "c"}, Port: 7100, Auth: []model.Auth{{Secret: "beta-user"}}},
		},
		TargetGroups: []model.TargetGroup{{Proxy: "app", Name: model.DefaultTargetGroup, ConnectionPoolConfig: model.PoolConfig{
			MaxConnectionsPercent: 80, MaxIdleConnectionsPercent: 20, ConnectionBorrowTimeout: 30, InitQuery: "SET time_zone = '+00:00'",
			SessionPinningFilters: []string{vocab.PinningFilterExcludeVariableSets},
		}}},
		Targets: []model.Target{
			{Proxy: "app", Name: "w1", Host: "10.0.0.1", Port: 3306, Zone: "a", Role: vocab.RoleWriter},
			{Proxy: "app", Name: "r1", Host: "10.0.1.1", Port: 3306, Zone: "b", Role: vocab.RoleReader},
			{Proxy: "app", Name: "r2", Host: "10.0.0.2", Port: 3307, Zone: "a"},
			{Proxy: "app", Name: "r3", Host: "db-r3.internal", Port: 3306},
			{Proxy: "gamma", Name: "g1", Host: "10.0.2.1", Port: 3306, Zone: "c"},
		},
		Endpoints: []model.Endpoint{
			{Proxy: "app", Name: "reader", TargetRole: vocab.TargetRoleReadOnly, Port: 6034},
			{Proxy: "app", Name: "reader-b", TargetRole: vocab.TargetRoleReadOnly, Zones: []string{"b"}, Port: 6035},
			{Proxy: "app", Name: "writer2", Port: 6036},
		},
	}
}

var passwords = []string{"app-pw-123", "admin-pw-456", "beta-pw-789"}

type pemPair struct{ cert, key []byte }

func newPEMPair(t *testing.T) pemPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemPair{
		cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
	}
}

func nodeIn(zone string) xdsapi.NodeInfo {
	return xdsapi.NodeInfo{ID: "node-" + zone, Zone: zone, Address: "127.0.1.1", ListenHost: "127.0.1.1"}
}

func opts(zone string) Options {
	return Options{ListenHost: "127.0.1.1", Node: config.Node{Zone: zone, AdminAddress: "127.0.0.1:9100"}}
}

// snapshotAnys builds the snapshot for zone and packs its resources as the
// node's ADS client hands them over, in the snapshot's (map) order.
func snapshotAnys(t *testing.T, s *model.State, zone string, to translate.Options) (string, map[string][]*anypb.Any) {
	t.Helper()
	snap, err := translate.Snapshot(s, nodeIn(zone), to)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]*anypb.Any{}
	for _, typ := range xdsapi.ResourceTypes() {
		out[typ] = []*anypb.Any{}
		for _, r := range snap.GetResources(typ) {
			out[typ] = append(out[typ], pack(t, r))
		}
	}
	return snap.GetVersion(resource.ListenerType), out
}

func pack(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func mustDecode(t *testing.T, version string, res map[string][]*anypb.Any, o Options) (*config.Config, []string) {
	t.Helper()
	cfg, skipped, err := Decode(version, res, o)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	return cfg, skipped
}

func TestRoundTrip(t *testing.T) {
	tlsPair := newPEMPair(t)
	version, res := snapshotAnys(t, state(), "a", translate.Options{NodeTLS: &translate.TLSMaterial{CertPEM: tlsPair.cert, KeyPEM: tlsPair.key}})
	cfg, skipped := mustDecode(t, version, res, opts("a"))
	if len(skipped) != 0 {
		t.Errorf("skipped %v", skipped)
	}
	nativeDisabled := config.Auth{IAMAuth: vocab.IAMAuthDisabled, ClientPasswordAuthType: vocab.AuthNativePassword}
	withSecret := func(a config.Auth, s string) config.Auth { a.Secret = s; return a }
	want := &config.Config{
		Version: version,
		Node: config.Node{Zone: "a", AdminAddress: "127.0.0.1:9100", TLS: config.TLS{CertPEM: string(tlsPair.cert), KeyPEM: string(tlsPair.key)},
			HandshakeTimeout: config.Duration(config.DefaultHandshakeTimeout), MaxPacketSize: config.DefaultMaxPacketSize},
		Secrets: []config.Secret{
			{Name: "admin", Username: "admin", Password: "admin-pw-456"},
			{Name: "app-user", Username: "app", Password: "app-pw-123"},
			{Name: "beta-user", Username: "beta", Password: "beta-pw-789"},
		},
		Proxies: []config.Proxy{
			{
				Name: "app", EngineFamily: "MYSQL", Zones: []string{"a"},
				Auth: []config.Auth{
					withSecret(nativeDisabled, "app-user"),
					{Secret: "admin", IAMAuth: vocab.IAMAuthRequired, ClientPasswordAuthType: vocab.AuthCachingSHA2Password},
				},
				RequireTLS: true, IdleClientTimeout: config.Duration(90 * time.Second), MaxClientConnections: 500, DebugLogging: true,
				Endpoints: []config.Endpoint{
					{Name: "default", Address: "127.0.1.1:6033", TargetRole: vocab.TargetRoleReadWrite},
					{Name: "reader", Address: "127.0.1.1:6034", TargetRole: vocab.TargetRoleReadOnly},
					{Name: "writer2", Address: "127.0.1.1:6036", TargetRole: vocab.TargetRoleReadWrite},
				},
				Targets: []config.Target{
					{Name: "r1", Host: "10.0.1.1", Port: 3306, Zone: "b", Role: vocab.RoleReader},
					{Name: "r2", Host: "10.0.0.2", Port: 3307, Zone: "a", Role: vocab.RoleAuto},
					{Name: "r3", Host: "db-r3.internal", Port: 3306, Role: vocab.RoleAuto},
					{Name: "w1", Host: "10.0.0.1", Port: 3306, Zone: "a", Role: vocab.RoleWriter},
				},
				Pool: config.PoolConfig{
					MaxConnectionsPercent: 80, MaxIdleConnectionsPercent: 20, ConnectionBorrowTimeout: config.Duration(30 * time.Second),
					InitQuery: "SET time_zone = '+00:00'", SessionPinningFilters: []string{vocab.PinningFilterExcludeVariableSets},
					MaxLifetime: config.Duration(config.DefaultMaxLifetime), IdleCheckAfter: config.Duration(config.DefaultIdleCheckAfter),
				},
			},
			{
				// Every field left unset in the model: the translator's
				// defaults are the node's.
				Name: "gamma", EngineFamily: "MYSQL", Zones: []string{"a"},
				Auth:              []config.Auth{withSecret(nativeDisabled, "beta-user")},
				IdleClientTimeout: config.Duration(config.DefaultIdleClientTimeout), MaxClientConnections: config.DefaultMaxClientConnections,
				Endpoints: []config.Endpoint{{Name: "default", Address: "127.0.1.1:7100", TargetRole: vocab.TargetRoleReadWrite}},
				Targets:   []config.Target{{Name: "g1", Host: "10.0.2.1", Port: 3306, Zone: "c", Role: vocab.RoleAuto}},
				Pool: config.PoolConfig{
					MaxConnectionsPercent: config.DefaultMaxConnectionsPercent, MaxIdleConnectionsPercent: config.DefaultMaxIdleConnectionsPercent,
					ConnectionBorrowTimeout: config.Duration(config.DefaultBorrowTimeout), SessionPinningFilters: []string{},
					MaxLifetime: config.Duration(config.DefaultMaxLifetime), IdleCheckAfter: config.Duration(config.DefaultIdleCheckAfter),
				},
			},
		}, // The admin secret requires IAM auth: the connect keys come along
		// (none: the fixture has no IAM users).
		Connect: &xdsapi.ConnectKeys{Region: "local", Keys: []xdsapi.ConnectKey{}},
	}
	if !reflect.DeepEqual(cfg.Node, want.Node) {
		t.Errorf("node\n got %+v\nwant %+v", cfg.Node, want.Node)
	}
	if cfg.Version != want.Version {
		t.Errorf("version %q, want %q", cfg.Version, want.Version)
	}
	if !reflect.DeepEqual(cfg.Secrets, want.Secrets) {
		t.Errorf("secrets\n got %v\nwant %v", cfg.Secrets, want.Secrets)
	}
	if len(cfg.Proxies) != len(want.Proxies) {
		t.Fatalf("%d proxies, want %d", len(cfg.Proxies), len(want.Proxies))
	}
	for i := range want.Proxies {
		g, w := cfg.Proxies[i], want.Proxies[i]
		for _, f := range []struct {
			name      string
			got, want any
		}{
			{"name", g.Name, w.Name}, {"engine", g.EngineFamily, w.EngineFamily}, {"zones", g.Zones, w.Zones},
			{"auth", g.Auth, w.Auth}, {"require_tls", g.RequireTLS, w.RequireTLS},
			{"idle_client_timeout", g.IdleClientTimeout, w.IdleClientTimeout},
			{"max_client_connections", g.MaxClientConnections, w.MaxClientConnections},
			{"debug_logging", g.DebugLogging, w.DebugLogging}, {"endpoints", g.Endpoints, w.Endpoints},
			{"targets", g.Targets, w.Targets}, {"pool", g.Pool, w.Pool},
		} {
			if !reflect.DeepEqual(f.got, f.want) {
				t.Errorf("proxy %s %s\n got %+v\nwant %+v", w.Name, f.name, f.got, f.want)
			}
		}
	}
	// Nothing left over that the field checks above missed.
	if gb, wb := mustJSON(t, cfg), mustJSON(t, want); gb != wb {
		t.Errorf("config\n got %s\nwant %s", gb, wb)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDecodeByZone(t *testing.T) {
	tests := []struct {
		zone    string
		proxies []string
		secrets []string
		// targets of the first proxy
		targets int
	}{
		{"a", []string{"app", "gamma"}, []string{"admin", "app-user", "beta-user"}, 4},
		{"b", []string{"app"}, []string{"admin", "app-user"}, 4},
		// beta has no targets: served anyway; its clients are told no
		// target is available.
		{"c", []string{"beta", "gamma"}, []string{"beta-user"}, 0},
		{"d", []string{}, []string{}, 0},
	}
	for _, tt := range tests {
		t.Run("zone "+tt.zone, func(t *testing.T) {
			version, res := snapshotAnys(t, state(), tt.zone, translate.Options{})
			cfg, skipped := mustDecode(t, version, res, opts(tt.zone))
			if len(skipped) != 0 {
				t.Errorf("skipped %v", skipped)
			}
			var gotProxies, gotSecrets []string
			for _, p := range cfg.Proxies {
				gotProxies = append(gotProxies, p.Name)
				if !slices.Equal(p.Zones, []string{tt.zone}) {
					t.Errorf("proxy %s zones %v, want the node's zone", p.Name, p.Zones)
				}
			}
			for _, s := range cfg.Secrets {
				gotSecrets = append(gotSecrets, s.Name)
			}
			if !slices.Equal(gotProxies, tt.proxies) && !(len(gotProxies) == 0 && len(tt.proxies) == 0) {
				t.Errorf("proxies %v, want %v", gotProxies, tt.proxies)
			}
			if !slices.Equal(gotSecrets, tt.secrets) && !(len(gotSecrets) == 0 && len(tt.secrets) == 0) {
				t.Errorf("secrets %v, want %v", gotSecrets, tt.secrets)
			}
			if len(cfg.Proxies) > 0 && len(cfg.Proxies[0].Targets) != tt.targets {
				t.Errorf("%s has %d targets, want %d", cfg.Proxies[0].Name, len(cfg.Proxies[0].Targets), tt.targets)
			}
			if cfg.Node.TLS != (config.TLS{}) {
				t.Errorf("TLS set without a pushed certificate: %v", cfg.Node.TLS)
			}
		})
	}
}

func TestDecodeWithoutZone(t *testing.T) {
	version, res := snapshotAnys(t, state(), "a", translate.Options{})
	o := opts("")
	o.ListenHost = ""
	cfg, _ := mustDecode(t, version, res, o)
	if cfg.Proxies[0].Zones != nil || cfg.Proxies[0].Endpoints[0].Address != ":6033" {
		t.Fatalf("zones %v address %s", cfg.Proxies[0].Zones, cfg.Proxies[0].Endpoints[0].Address)
	}
}

func TestPushedTLSReplacesFiles(t *testing.T) {
	tlsPair := newPEMPair(t)
	version, res := snapshotAnys(t, state(), "a", translate.Options{NodeTLS: &translate.TLSMaterial{CertPEM: tlsPair.cert, KeyPEM: tlsPair.key}})
	o := opts("a")
	o.Node.TLS = config.TLS{CertFile: "node.pem", KeyFile: "node.key"}
	cfg, _ := mustDecode(t, version, res, o)
	if cfg.Node.TLS != (config.TLS{CertPEM: string(tlsPair.cert), KeyPEM: string(tlsPair.key)}) {
		t.Fatalf("TLS %v", cfg.Node.TLS)
	}
	// Without a pushed certificate the node's own files stay.
	version, res = snapshotAnys(t, state(), "a", translate.Options{})
	cfg, _ = mustDecode(t, version, res, o)
	if cfg.Node.TLS != o.Node.TLS {
		t.Fatalf("TLS %v, want the node's files", cfg.Node.TLS)
	}
}

// without returns res minus the resource of type typ named name.
func without(t *testing.T, res map[string][]*anypb.Any, typ, name string) map[string][]*anypb.Any {
	t.Helper()
	out := map[string][]*anypb.Any{}
	found := false
	for k, as := range res {
		for _, a := range as {
			m, err := a.UnmarshalNew()
			if err != nil {
				t.Fatal(err)
			}
			if k == typ && cache.GetResourceName(m) == name {
				found = true
				continue
			}
			out[k] = append(out[k], a)
		}
	}
	if !found {
		t.Fatalf("no %s %s to remove", typ, name)
	}
	return out
}

func TestSkippedListeners(t *testing.T) {
	tlsPair := newPEMPair(t)
	withTLS := translate.Options{NodeTLS: &translate.TLSMaterial{CertPEM: tlsPair.cert, KeyPEM: tlsPair.key}}
	tests := []struct {
		name          string
		typ, resource string
		skipped       []string
		proxies       []string
		secrets       []string
	}{
		{"missing db secret", resource.SecretType, "db/admin", []string{"app/default", "app/reader", "app/writer2"}, []string{"gamma"}, []string{"beta-user"}},
		{"missing cluster", resource.ClusterType, "gamma", []string{"gamma/default"}, []string{"app"}, []string{"admin", "app-user"}},
		{"missing assignment", resource.EndpointType, "app", []string{"app/default", "app/reader", "app/writer2"}, []string{"gamma"}, []string{"beta-user"}},
		{"missing tls secret", resource.SecretType, xdsapi.NodeTLSSecret, []string{"app/default", "app/reader", "app/writer2", "gamma/default"}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			version, res := snapshotAnys(t, state(), "a", withTLS)
			cfg, skipped := mustDecode(t, version, without(t, res, tt.typ, tt.resource), opts("a"))
			if !slices.Equal(skipped, tt.skipped) {
				t.Errorf("skipped %v, want %v", skipped, tt.skipped)
			}
			var proxies, secrets []string
			for _, p := range cfg.Proxies {
				proxies = append(proxies, p.Name)
			}
			for _, s := range cfg.Secrets {
				secrets = append(secrets, s.Name)
			}
			if !slices.Equal(proxies, tt.proxies) || !slices.Equal(secrets, tt.secrets) {
				t.Errorf("proxies %v secrets %v, want %v %v", proxies, secrets, tt.proxies, tt.secrets)
			}
			if (len(cfg.Proxies) == 0) != (cfg.Node.TLS == config.TLS{}) {
				t.Errorf("node TLS %v with %d proxies", cfg.Node.TLS, len(cfg.Proxies))
			}
		})
	}
}

// mutation edits one decoded resource of a valid zone-a set before it is
// packed.
type mutation struct {
	typ, name string
	edit      func(t *testing.T, m proto.Message)
}

func mutated(t *testing.T, muts ...mutation) (string, map[string][]*anypb.Any) {
	t.Helper()
	tlsPair := newPEMPair(t)
	res, version, err := translate.Resources(state(), nodeIn("a"), translate.Options{NodeTLS: &translate.TLSMaterial{CertPEM: tlsPair.cert, KeyPEM: tlsPair.key}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]*anypb.Any{}
	for typ, rs := range res {
		out[typ] = []*anypb.Any{}
		for _, r := range rs {
			m := proto.Clone(r)
			for _, mu := range muts {
				if mu.typ == typ && mu.name == cache.GetResourceName(r) {
					mu.edit(t, m)
				}
			}
			out[typ] = append(out[typ], pack(t, m))
		}
	}
	return version, out
}

func editListenerConfig(f func(c *xdsapi.ListenerConfig)) func(t *testing.T, m proto.Message) {
	return func(t *testing.T, m proto.Message) {
		l := m.(*listener.Listener)
		c, err := xdsapi.DecodeListenerConfig(l)
		if err != nil {
			t.Fatal(err)
		}
		f(&c)
		tc, err := xdsapi.EncodeListenerConfig(c)
		if err != nil {
			t.Fatal(err)
		}
		l.FilterChains[0].Filters[0].ConfigType = &listener.Filter_TypedConfig{TypedConfig: tc}
	}
}

func editPool(f func(p *xdsapi.PoolConfig)) func(t *testing.T, m proto.Message) {
	return func(t *testing.T, m proto.Message) {
		c := m.(*cluster.Cluster)
		p, err := xdsapi.DecodePoolMetadata(c)
		if err != nil {
			t.Fatal(err)
		}
		f(&p)
		if c.Metadata, err = xdsapi.EncodePoolMetadata(p); err != nil {
			t.Fatal(err)
		}
	}
}

func editTarget(name string, f func(e *endpoint.LbEndpoint)) func(t *testing.T, m proto.Message) {
	return func(t *testing.T, m proto.Message) {
		for _, l := range m.(*endpoint.ClusterLoadAssignment).GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				if e.GetEndpoint().GetHostname() == name {
					f(e)
					return
				}
			}
		}
		t.Fatalf("no target %s", name)
	}
}

func TestMalformed(t *testing.T) {
	lis, clu, eds, sec := resource.ListenerType, resource.ClusterType, resource.EndpointType, resource.SecretType
	other := newPEMPair(t)
	tests := []struct {
		name string
		muts []mutation
		// extra adds raw Anys to the set.
		extra func(t *testing.T, res map[string][]*anypb.Any)
		want  []string
	}{
		{"wrong TypedStruct type URL", []mutation{{lis, "app/default", func(t *testing.T, m proto.Message) {
			s, err := structpb.NewStruct(map[string]any{"proxy": "app"})
			if err != nil {
				t.Fatal(err)
			}
			m.(*listener.Listener).FilterChains[0].Filters[0].ConfigType = &listener.Filter_TypedConfig{TypedConfig: pack(t, &xdstype.TypedStruct{TypeUrl: "type.dbproxy.io/dbproxy.v1.Other", Value: s})}
		}}}, nil, []string{`listener "app/default"`, "dbproxy.v1.Other"}},
		{"listener of the wrong message type", nil, func(t *testing.T, res map[string][]*anypb.Any) {
			res[lis] = append(res[lis], pack(t, &cluster.Cluster{Name: "x"}))
		}, []string{"listener #4", "envoy.config.cluster.v3.Cluster"}},
		{"garbage bytes", nil, func(t *testing.T, res map[string][]*anypb.Any) {
			res[clu] = append(res[clu], &anypb.Any{TypeUrl: clu, Value: []byte{0xff, 0xff, 0xff}})
		}, []string{"cluster #2"}},
		{"unknown resource type", nil, func(t *testing.T, res map[string][]*anypb.Any) {
			res["type.googleapis.com/envoy.config.route.v3.RouteConfiguration"] = nil
		}, []string{"unknown resource type", "RouteConfiguration"}},
		{"invalid target role", []mutation{{eds, "app", editTarget("w1", func(e *endpoint.LbEndpoint) {
			e.Metadata.FilterMetadata[xdsapi.TargetMetadataKey].Fields["role"] = structpb.NewStringValue("PRIMARY")
		})}}, nil, []string{`cluster load assignment "app"`, `target "w1"`, "PRIMARY"}},
		{"target without metadata", []mutation{{eds, "app", editTarget("r1", func(e *endpoint.LbEndpoint) { e.Metadata = nil })}}, nil,
			[]string{`cluster load assignment "app"`, `endpoint "r1"`, "no dbproxy.target metadata"}},
		{"target port 0", []mutation{{eds, "gamma", editTarget("g1", func(e *endpoint.LbEndpoint) {
			e.GetEndpoint().GetAddress().GetSocketAddress().PortSpecifier = &core.SocketAddress_PortValue{PortValue: 0}
		})}}, nil, []string{`cluster load assignment "gamma"`, `target "g1"`, "port"}},
		{"listener port 0", []mutation{{lis, "app/reader", func(t *testing.T, m proto.Message) {
			m.(*listener.Listener).GetAddress().GetSocketAddress().PortSpecifier = &core.SocketAddress_PortValue{PortValue: 0}
		}}}, nil, []string{`listener "app/reader"`, "port must be 1-65535, got 0"}},
		{"two listeners on one port", []mutation{{lis, "gamma/default", func(t *testing.T, m proto.Message) {
			m.(*listener.Listener).GetAddress().GetSocketAddress().PortSpecifier = &core.SocketAddress_PortValue{PortValue: 6033}
		}}}, nil, []string{`listener "gamma/default"`, `port 6033 is also used by listener "app/default"`}},
		{"invalid endpoint role", []mutation{{lis, "app/reader", editListenerConfig(func(c *xdsapi.ListenerConfig) { c.TargetRole = "ANY" })}}, nil,
			[]string{`listener "app/reader"`, "target_role", "ANY"}},
		{"missing proxy name", []mutation{{lis, "app/reader", editListenerConfig(func(c *xdsapi.ListenerConfig) { c.Proxy = "" })}}, nil,
			[]string{`listener "app/reader"`, "proxy is required"}},
		{"missing cluster name", []mutation{{lis, "app/reader", editListenerConfig(func(c *xdsapi.ListenerConfig) { c.Cluster = "" })}}, nil,
			[]string{`listener "app/reader"`, "cluster is required"}},
		{"missing auth", []mutation{{lis, "gamma/default", editListenerConfig(func(c *xdsapi.ListenerConfig) { c.Auth = nil })}}, nil,
			[]string{`listener "gamma/default"`, "auth"}},
		{"missing iam auth", []mutation{{lis, "gamma/default", editListenerConfig(func(c *xdsapi.ListenerConfig) { c.Auth[0].IAMAuth = "" })}}, nil,
			[]string{`listener "gamma/default"`, "auth[0].iam_auth"}},
		{"payload of another listener", []mutation{{lis, "app/reader", editListenerConfig(func(c *xdsapi.ListenerConfig) { c.Endpoint = "writer2" })}}, nil,
			[]string{`listener "app/reader"`, `payload is for "app/writer2"`}},
		{"unknown tls secret", []mutation{{lis, "app/reader", editListenerConfig(func(c *xdsapi.ListenerConfig) { c.TLSSecret = "tls/other" })}}, nil,
			[]string{`listener "app/reader"`, "tls_secret"}},
		{"proxy settings differ between listeners", []mutation{{lis, "app/reader", editListenerConfig(func(c *xdsapi.ListenerConfig) { c.RequireTLS = false })}}, nil,
			[]string{`listener "app/reader"`, `differ from those of listener "app/default"`}},
		{"no filter", []mutation{{lis, "app/reader", func(t *testing.T, m proto.Message) {
			m.(*listener.Listener).FilterChains[0].Filters[0].Name = "envoy.filters.network.tcp_proxy"
		}}}, nil, []string{`listener "app/reader"`, "no filter named dbproxy.mysql_proxy"}},
		{"static cluster", []mutation{{clu, "app", func(t *testing.T, m proto.Message) {
			m.(*cluster.Cluster).ClusterDiscoveryType = &cluster.Cluster_Type{Type: cluster.Cluster_STATIC}
		}}}, nil, []string{`cluster "app"`, "STATIC"}},
		{"cluster without pool metadata", []mutation{{clu, "app", func(t *testing.T, m proto.Message) { m.(*cluster.Cluster).Metadata = nil }}}, nil,
			[]string{`cluster "app"`, "no dbproxy.pool metadata"}},
		{"pool percent", []mutation{{clu, "gamma", editPool(func(p *xdsapi.PoolConfig) { p.MaxConnectionsPercent = 101 })}}, nil,
			[]string{`cluster "gamma"`, "max_connections_percent"}},
		{"pinning filter", []mutation{{clu, "gamma", editPool(func(p *xdsapi.PoolConfig) { p.SessionPinningFilters = []string{"NONE"} })}}, nil,
			[]string{`cluster "gamma"`, "session_pinning_filters"}},
		{"secret without username", []mutation{{sec, "db/admin", func(t *testing.T, m proto.Message) {
			delete(m.(*tlsv3.Secret).GetGenericSecret().Secrets, xdsapi.SecretUsernameKey)
		}}}, nil, []string{`secret "db/admin"`, "no inline username"}},
		{"secret with empty username", []mutation{{sec, "db/admin", func(t *testing.T, m proto.Message) {
			m.(*tlsv3.Secret).GetGenericSecret().Secrets[xdsapi.SecretUsernameKey] = &core.DataSource{Specifier: &core.DataSource_InlineString{}}
		}}}, nil, []string{`secret "db/admin"`, "empty username"}},
		{"db secret of another kind", []mutation{{sec, "db/app-user", func(t *testing.T, m proto.Message) {
			m.(*tlsv3.Secret).Type = &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{}}
		}}}, nil, []string{`secret "db/app-user"`, "generic secret"}},
		{"tls key of another certificate", []mutation{{sec, xdsapi.NodeTLSSecret, func(t *testing.T, m proto.Message) {
			m.(*tlsv3.Secret).GetTlsCertificate().PrivateKey = &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: other.key}}
		}}}, nil, []string{`secret "tls/node"`, "not a valid certificate and key pair"}},
		{"tls secret of another kind", []mutation{{sec, xdsapi.NodeTLSSecret, func(t *testing.T, m proto.Message) {
			m.(*tlsv3.Secret).Type = &tlsv3.Secret_GenericSecret{GenericSecret: &tlsv3.GenericSecret{}}
		}}}, nil, []string{`secret "tls/node"`, "TLS certificate"}},
		{"listener sent twice", nil, func(t *testing.T, res map[string][]*anypb.Any) {
			res[lis] = append(res[lis], res[lis][0])
		}, []string{`listener "app/default"`, "sent twice"}},
		{"two problems", []mutation{
			{clu, "gamma", editPool(func(p *xdsapi.PoolConfig) { p.MaxConnectionsPercent = 0 })},
			{lis, "app/reader", editListenerConfig(func(c *xdsapi.ListenerConfig) { c.TargetRole = "" })},
		}, nil, []string{`cluster "gamma"`, `listener "app/reader"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			version, res := mutated(t, tt.muts...)
			if tt.extra != nil {
				tt.extra(t, res)
			}
			cfg, skipped, err := Decode(version, res, opts("a"))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Decode: %v, want ErrInvalid", err)
			}
			if cfg != nil || skipped != nil {
				t.Errorf("Decode returned a config or skipped list with its error")
			}
			t.Log(err)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			for _, pw := range passwords {
				if strings.Contains(err.Error(), pw) {
					t.Errorf("error %q shows a password", err)
				}
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Errorf("error %q shows a private key", err)
			}
		})
	}
	// The unmutated set decodes: the errors above come from the mutations.
	version, res := mutated(t)
	mustDecode(t, version, res, opts("a"))
}

func TestUnknownSecretKindsIgnored(t *testing.T) {
	version, res := snapshotAnys(t, state(), "a", translate.Options{})
	res[resource.SecretType] = append(res[resource.SecretType], pack(t, &tlsv3.Secret{Name: "signing/2026-01-01"}))
	cfg, _ := mustDecode(t, version, res, opts("a"))
	if len(cfg.Proxies) != 2 {
		t.Fatalf("%d proxies", len(cfg.Proxies))
	}
}

func TestDefaultsAgree(t *testing.T) {
	// The translator fills in the node's defaults explicitly; they must be
	// the same numbers.
	if translate.DefaultMaxClientConnections != config.DefaultMaxClientConnections {
		t.Fatalf("translate.DefaultMaxClientConnections %d, config %d", translate.DefaultMaxClientConnections, config.DefaultMaxClientConnections)
	}
	res, _, err := translate.Resources(state(), nodeIn("a"), translate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var gamma types.Resource
	for _, r := range res[resource.ClusterType] {
		if cache.GetResourceName(r) == "gamma" {
			gamma = r
		}
	}
	pc, err := xdsapi.DecodePoolMetadata(gamma.(*cluster.Cluster))
	if err != nil {
		t.Fatal(err)
	}
	if pc.MaxConnectionsPercent != config.DefaultMaxConnectionsPercent || pc.MaxIdleConnectionsPercent != config.DefaultMaxIdleConnectionsPercent ||
		time.Duration(pc.ConnectionBorrowTimeoutSec)*time.Second != config.DefaultBorrowTimeout {
		t.Fatalf("translator pool defaults %+v differ from the node's", pc)
	}
}

// TestConnectKeysOnTheirOwn: a node that rejects a set still reads its
// connect keys, to apply the revocations in it.
func TestConnectKeysOnTheirOwn(t *testing.T) {
	_, res := snapshotAnys(t, state(), "a", translate.Options{})
	keys, ok := ConnectKeys(res)
	if !ok || keys.Region != "local" {
		t.Fatalf("zone a: %+v, %v; want the connect keys of the set", keys, ok)
	}
	// Broken elsewhere: the keys still decode.
	res[resource.ListenerType] = append(res[resource.ListenerType], &anypb.Any{TypeUrl: resource.ListenerType, Value: []byte("garbage")})
	if _, _, err := Decode("v", res, opts("a")); err == nil {
		t.Fatal("a broken listener decoded")
	}
	if _, ok := ConnectKeys(res); !ok {
		t.Fatal("the connect keys of a set with a broken listener were not found")
	}
	// A set without the secret, and a broken secret, give none.
	_, res = snapshotAnys(t, state(), "d", translate.Options{})
	if _, ok := ConnectKeys(res); ok {
		t.Fatal("zone d has no proxy requiring IAM auth, yet connect keys were found")
	}
	broken := &tlsv3.Secret{Name: xdsapi.ConnectKeysSecret, Type: &tlsv3.Secret_GenericSecret{GenericSecret: &tlsv3.GenericSecret{
		Secrets: map[string]*core.DataSource{xdsapi.ConnectKeysKey: {Specifier: &core.DataSource_InlineString{InlineString: `{"region": 1}`}}}}}}
	res[resource.SecretType] = []*anypb.Any{pack(t, broken)}
	if _, ok := ConnectKeys(res); ok {
		t.Fatal("undecodable connect keys were accepted")
	}
}
