package translate

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/vocab"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// fixture is a state with three proxies over zones a, b and c:
//
//	app   zones a,b  endpoints reader (a,b), reader-b (b), writer2 (a,b); 4 targets
//	beta  zone c     no target group, no targets
//	gamma zones a,c  endpoint ro (c); 1 target in c
func fixture() *model.State {
	return &model.State{
		Revision: 7,
		Secrets: []model.Secret{
			{Name: "app-user", Username: "app", Password: "app-pw-123"},
			{Name: "admin", Username: "admin", Password: "admin-pw-456"},
			{Name: "beta-user", Username: "beta", Password: "beta-pw-789"},
			{Name: "unused", Username: "nobody", Password: "unused-pw-000"},
		},
		Proxies: []model.Proxy{
			{Name: "app", Zones: []string{"a", "b"}, Port: 6033, RequireTLS: true, DebugLogging: true, MaxClientConnections: 500,
				Auth: []model.Auth{
					{Secret: "app-user"},
					{Secret: "admin", IAMAuth: vocab.IAMAuthRequired, ClientPasswordAuthType: vocab.AuthCachingSHA2Password},
				}},
			{Name: "beta", Zones: []string{"c"}, Port: 7000, IdleClientTimeout: 60, Auth: []model.Auth{{Secret: "beta-user"}}},
			{Name: "gamma", EngineFamily: vocab.EngineMySQL, Zones: []string{"a", "c"}, Port: 7100, Auth: []model.Auth{{Secret: "beta-user"}}},
		},
		TargetGroups: []model.TargetGroup{{Proxy: "app", Name: model.DefaultTargetGroup, ConnectionPoolConfig: model.PoolConfig{
			MaxConnectionsPercent: 80, ConnectionBorrowTimeout: 30, InitQuery: "SET time_zone = '+00:00'",
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
			{Proxy: "gamma", Name: "ro", TargetRole: vocab.TargetRoleReadOnly, Zones: []string{"c"}, Port: 7101},
		},
	}
}

func nodeIn(zone string) xdsapi.NodeInfo {
	return xdsapi.NodeInfo{ID: "node-" + zone, Zone: zone, Address: "127.0.0.1", ListenHost: "127.0.0.1"}
}

func mustResources(t *testing.T, s *model.State, zone string, opts Options) (map[resource.Type][]types.Resource, string) {
	t.Helper()
	res, v, err := Resources(s, nodeIn(zone), opts)
	if err != nil {
		t.Fatalf("Resources(zone %s): %v", zone, err)
	}
	return res, v
}

func names(rs []types.Resource) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, cache.GetResourceName(r))
	}
	return out
}

func find[T types.Resource](t *testing.T, rs []types.Resource, name string) T {
	t.Helper()
	for _, r := range rs {
		if cache.GetResourceName(r) == name {
			return r.(T)
		}
	}
	t.Fatalf("no resource %s in %v", name, names(rs))
	var zero T
	return zero
}

// testTLS is a certificate and key, made once for the package's tests.
var testTLS = func() *TLSMaterial {
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		panic(err)
	}
	return &TLSMaterial{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
	}
}()

func TestZoneFiltering(t *testing.T) {
	tests := []struct {
		zone                         string
		listeners, clusters, secrets []string
	}{
		{"a", []string{"app/default", "app/reader", "app/writer2", "gamma/default"}, []string{"app", "gamma"},
			[]string{"db/admin", "db/app-user", "db/beta-user", "iam/connect", "tls/node"}},
		{"b", []string{"app/default", "app/reader", "app/reader-b", "app/writer2"}, []string{"app"},
			[]string{"db/admin", "db/app-user", "iam/connect", "tls/node"}},
		{"c", []string{"beta/default", "gamma/default", "gamma/ro"}, []string{"beta", "gamma"},
			[]string{"db/beta-user", "tls/node"}},
		{"d", []string{}, []string{}, []string{}},
	}
	for _, tt := range tests {
		t.Run("zone "+tt.zone, func(t *testing.T) {
			res, _ := mustResources(t, fixture(), tt.zone, Options{NodeTLS: testTLS})
			if len(res) != 4 {
				t.Errorf("resource types %d, want all 4 even when empty", len(res))
			}
			for _, c := range []struct {
				typ  resource.Type
				want []string
			}{
				{resource.ListenerType, tt.listeners},
				{resource.ClusterType, tt.clusters},
				{resource.EndpointType, tt.clusters},
				{resource.SecretType, tt.secrets},
			} {
				if got := names(res[c.typ]); !slices.Equal(got, c.want) {
					t.Errorf("%s: %v, want %v", c.typ, got, c.want)
				}
			}
		})
	}
}

func TestPriorities(t *testing.T) {
	type loc struct {
		zone    string
		prio    uint32
		targets []string
	}
	tests := []struct {
		zone, cluster string
		want          []loc
	}{
		{"a", "app", []loc{{"a", 0, []string{"r2", "w1"}}, {"", 1, []string{"r3"}}, {"b", 1, []string{"r1"}}}},
		{"b", "app", []loc{{"b", 0, []string{"r1"}}, {"", 1, []string{"r3"}}, {"a", 1, []string{"r2", "w1"}}}},
		{"a", "gamma", []loc{{"c", 1, []string{"g1"}}}},
		{"c", "gamma", []loc{{"c", 0, []string{"g1"}}}},
		{"c", "beta", []loc{}},
	}
	for _, tt := range tests {
		t.Run(tt.cluster+" in zone "+tt.zone, func(t *testing.T) {
			res, _ := mustResources(t, fixture(), tt.zone, Options{})
			cla := find[*endpoint.ClusterLoadAssignment](t, res[resource.EndpointType], tt.cluster)
			got := []loc{}
			for _, l := range cla.GetEndpoints() {
				g := loc{l.GetLocality().GetZone(), l.GetPriority(), nil}
				for _, e := range l.GetLbEndpoints() {
					g.targets = append(g.targets, e.GetEndpoint().GetHostname())
				}
				got = append(got, g)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("localities %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestEndpointContents(t *testing.T) {
	res, _ := mustResources(t, fixture(), "a", Options{})
	cla := find[*endpoint.ClusterLoadAssignment](t, res[resource.EndpointType], "app")
	want := map[string]struct {
		host string
		port uint32
		role string
	}{
		"w1": {"10.0.0.1", 3306, vocab.RoleWriter},
		"r1": {"10.0.1.1", 3306, vocab.RoleReader},
		"r2": {"10.0.0.2", 3307, vocab.RoleAuto},
		"r3": {"db-r3.internal", 3306, vocab.RoleAuto},
	}
	seen := 0
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			seen++
			md, err := xdsapi.DecodeTargetMetadata(e)
			if err != nil {
				t.Fatal(err)
			}
			w, ok := want[md.Name]
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			if !ok || md.Name != e.GetEndpoint().GetHostname() || sa.GetAddress() != w.host || sa.GetPortValue() != w.port || md.Role != w.role {
				t.Errorf("endpoint %s: %s:%d role %s, want %+v", md.Name, sa.GetAddress(), sa.GetPortValue(), md.Role, w)
			}
		}
	}
	if seen != len(want) {
		t.Errorf("%d endpoints, want %d", seen, len(want))
	}
}

func TestListenerContents(t *testing.T) {
	tests := []struct {
		name, zone, listener string
		opts                 Options
		port                 uint32
		want                 xdsapi.ListenerConfig
	}{
		{"proxy fields and defaults", "a", "app/reader", Options{}, 6034, xdsapi.ListenerConfig{
			Proxy: "app", Endpoint: "reader", TargetRole: vocab.TargetRoleReadOnly, Cluster: "app",
			Auth: []xdsapi.AuthConfig{
				{Secret: "app-user", IAMAuth: vocab.IAMAuthDisabled, ClientPasswordAuthType: vocab.AuthNativePassword},
				{Secret: "admin", IAMAuth: vocab.IAMAuthRequired, ClientPasswordAuthType: vocab.AuthCachingSHA2Password},
			},
			RequireTLS: true, IdleClientTimeoutSec: 1800, MaxClientConnections: 500, DebugLogging: true,
			ConnectSecret: xdsapi.ConnectKeysSecret,
		}},
		{"default endpoint with tls", "c", "beta/default", Options{NodeTLS: testTLS}, 7000, xdsapi.ListenerConfig{
			Proxy: "beta", Endpoint: "default", TargetRole: vocab.TargetRoleReadWrite, Cluster: "beta",
			Auth:                 []xdsapi.AuthConfig{{Secret: "beta-user", IAMAuth: vocab.IAMAuthDisabled, ClientPasswordAuthType: vocab.AuthNativePassword}},
			IdleClientTimeoutSec: 60, MaxClientConnections: DefaultMaxClientConnections, TLSSecret: xdsapi.NodeTLSSecret,
		}},
		{"endpoint role defaults to read-write", "b", "app/writer2", Options{}, 6036, xdsapi.ListenerConfig{
			Proxy: "app", Endpoint: "writer2", TargetRole: vocab.TargetRoleReadWrite, Cluster: "app",
			Auth: []xdsapi.AuthConfig{
				{Secret: "app-user", IAMAuth: vocab.IAMAuthDisabled, ClientPasswordAuthType: vocab.AuthNativePassword},
				{Secret: "admin", IAMAuth: vocab.IAMAuthRequired, ClientPasswordAuthType: vocab.AuthCachingSHA2Password},
			},
			RequireTLS: true, IdleClientTimeoutSec: 1800, MaxClientConnections: 500, DebugLogging: true,
			ConnectSecret: xdsapi.ConnectKeysSecret,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, _ := mustResources(t, fixture(), tt.zone, tt.opts)
			l := find[*listener.Listener](t, res[resource.ListenerType], tt.listener)
			sa := l.GetAddress().GetSocketAddress()
			if sa.GetAddress() != ListenAddress || sa.GetPortValue() != tt.port {
				t.Errorf("address %s:%d, want %s:%d", sa.GetAddress(), sa.GetPortValue(), ListenAddress, tt.port)
			}
			got, err := xdsapi.DecodeListenerConfig(l)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("listener config\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestClusterContents(t *testing.T) {
	tests := []struct {
		zone, cluster string
		want          xdsapi.PoolConfig
	}{
		{"a", "app", xdsapi.PoolConfig{MaxConnectionsPercent: 80, MaxIdleConnectionsPercent: 50, ConnectionBorrowTimeoutSec: 30,
			InitQuery: "SET time_zone = '+00:00'", SessionPinningFilters: []string{vocab.PinningFilterExcludeVariableSets}}},
		// No target group stored: the defaults.
		{"c", "beta", xdsapi.PoolConfig{MaxConnectionsPercent: 100, MaxIdleConnectionsPercent: 50, ConnectionBorrowTimeoutSec: 120,
			SessionPinningFilters: []string{}}},
	}
	for _, tt := range tests {
		t.Run(tt.cluster, func(t *testing.T) {
			res, _ := mustResources(t, fixture(), tt.zone, Options{})
			c := find[*cluster.Cluster](t, res[resource.ClusterType], tt.cluster)
			if c.GetType() != cluster.Cluster_EDS || c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil ||
				c.GetConnectTimeout().AsDuration() != 5*time.Second {
				t.Errorf("cluster %s: type %v, eds %v, connect timeout %v", tt.cluster, c.GetType(), c.GetEdsClusterConfig(), c.GetConnectTimeout())
			}
			got, err := xdsapi.DecodePoolMetadata(c)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("pool %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestSecretsLeastPrivilege(t *testing.T) {
	res, _ := mustResources(t, fixture(), "c", Options{NodeTLS: testTLS})
	all := strings.Join(func() []string {
		var out []string
		for _, r := range res[resource.SecretType] {
			out = append(out, r.(*tlsv3.Secret).String())
		}
		return out
	}(), "\n")
	for _, leaked := range []string{"app-pw-123", "admin-pw-456", "unused-pw-000"} {
		if strings.Contains(all, leaked) {
			t.Errorf("zone c received the password %s of a proxy it does not serve", leaked)
		}
	}
	s := find[*tlsv3.Secret](t, res[resource.SecretType], "db/beta-user")
	gs := s.GetGenericSecret().GetSecrets()
	if gs["username"].GetInlineString() != "beta" || gs["password"].GetInlineString() != "beta-pw-789" {
		t.Errorf("db/beta-user carries %v", gs)
	}
	tc := find[*tlsv3.Secret](t, res[resource.SecretType], xdsapi.NodeTLSSecret).GetTlsCertificate()
	if string(tc.GetCertificateChain().GetInlineBytes()) != string(testTLS.CertPEM) || string(tc.GetPrivateKey().GetInlineBytes()) != string(testTLS.KeyPEM) {
		t.Errorf("tls/node carries other material")
	}

	// A secret not stored yet is left out; the listener still names it.
	s2 := fixture()
	s2.Secrets = slices.DeleteFunc(s2.Secrets, func(s model.Secret) bool { return s.Name == "admin" })
	res, _ = mustResources(t, s2, "b", Options{})
	if got := names(res[resource.SecretType]); !slices.Equal(got, []string{"db/app-user", "iam/connect"}) {
		t.Errorf("secrets %v, want only db/app-user and iam/connect", got)
	}
	if got := names(res[resource.ListenerType]); len(got) != 4 {
		t.Errorf("listeners %v, want all four of app", got)
	}

	// A proxy whose endpoints are all unallocated gets no credentials.
	s3 := fixture()
	s3.Proxies[1].Port = 0
	res, _ = mustResources(t, s3, "c", Options{})
	if got := names(res[resource.SecretType]); !slices.Equal(got, []string{"db/beta-user"}) {
		t.Errorf("secrets %v, want db/beta-user for gamma only", got)
	}
	if got := names(res[resource.ListenerType]); !slices.Equal(got, []string{"gamma/default", "gamma/ro"}) {
		t.Errorf("listeners %v: the unallocated beta/default should be left out", got)
	}
}

func TestSnapshotConsistent(t *testing.T) {
	for _, zone := range []string{"a", "b", "c", "d"} {
		t.Run("zone "+zone, func(t *testing.T) {
			snap, err := Snapshot(fixture(), nodeIn(zone), Options{NodeTLS: testTLS})
			if err != nil {
				t.Fatal(err)
			}
			if err := snap.Consistent(); err != nil {
				t.Fatal(err)
			}
			_, version := mustResources(t, fixture(), zone, Options{NodeTLS: testTLS})
			for _, typ := range xdsapi.ResourceTypes() {
				if got := snap.GetVersion(typ); got != version {
					t.Errorf("%s version %q, want %q", typ, got, version)
				}
			}
			if len(version) != 32 {
				t.Errorf("version %q is not 16 hex bytes", version)
			}
		})
	}
}

// shuffled returns the fixture with every list in a random order.
func shuffled(seed uint64) *model.State {
	s := fixture()
	r := rand.New(rand.NewPCG(seed, seed))
	shuffle := func(n int, swap func(i, j int)) { r.Shuffle(n, swap) }
	shuffle(len(s.Secrets), func(i, j int) { s.Secrets[i], s.Secrets[j] = s.Secrets[j], s.Secrets[i] })
	shuffle(len(s.Proxies), func(i, j int) { s.Proxies[i], s.Proxies[j] = s.Proxies[j], s.Proxies[i] })
	shuffle(len(s.Targets), func(i, j int) { s.Targets[i], s.Targets[j] = s.Targets[j], s.Targets[i] })
	shuffle(len(s.Endpoints), func(i, j int) { s.Endpoints[i], s.Endpoints[j] = s.Endpoints[j], s.Endpoints[i] })
	return s
}

func TestDeterminism(t *testing.T) {
	for _, zone := range []string{"a", "b", "c"} {
		_, want := mustResources(t, fixture(), zone, Options{NodeTLS: testTLS})
		for seed := range uint64(20) {
			if _, got := mustResources(t, shuffled(seed), zone, Options{NodeTLS: testTLS}); got != want {
				t.Fatalf("zone %s: shuffled input (seed %d) gives version %s, want %s", zone, seed, got, want)
			}
		}
	}
}

func TestVersionChanges(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(s *model.State)
		changes map[string]bool // zone -> version changes
	}{
		{"pool setting of app", func(s *model.State) { s.TargetGroups[0].ConnectionPoolConfig.MaxConnectionsPercent = 90 },
			map[string]bool{"a": true, "b": true, "c": false}},
		{"new target of app", func(s *model.State) {
			s.Targets = append(s.Targets, model.Target{Proxy: "app", Name: "r4", Host: "10.0.1.4", Port: 3306, Zone: "b"})
		}, map[string]bool{"a": true, "b": true, "c": false}},
		{"removed endpoint of app", func(s *model.State) { s.Endpoints = s.Endpoints[1:] },
			map[string]bool{"a": true, "b": true, "c": false}},
		{"endpoint of app only in zone b", func(s *model.State) { s.Endpoints[1].Port = 6099 },
			map[string]bool{"a": false, "b": true, "c": false}},
		{"password used by app", func(s *model.State) { s.Secrets[0].Password = "rotated" },
			map[string]bool{"a": true, "b": true, "c": false}},
		{"password used by beta and gamma", func(s *model.State) { s.Secrets[2].Password = "rotated" },
			map[string]bool{"a": true, "b": false, "c": true}},
		{"unused secret", func(s *model.State) { s.Secrets[3].Password = "rotated" },
			map[string]bool{"a": false, "b": false, "c": false}},
		{"beta, only in zone c", func(s *model.State) { s.Proxies[1].DebugLogging = true },
			map[string]bool{"a": false, "b": false, "c": true}},
		{"store revision and metadata only", func(s *model.State) {
			s.Revision++
			s.Proxies[0].Revision = 99
			s.Proxies[0].Endpoint = "app.example"
		}, map[string]bool{"a": false, "b": false, "c": false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for zone, changes := range tt.changes {
				_, before := mustResources(t, fixture(), zone, Options{})
				s := fixture()
				tt.mutate(s)
				_, after := mustResources(t, s, zone, Options{})
				if (before != after) != changes {
					t.Errorf("zone %s: version %s -> %s, want changed=%v", zone, before, after, changes)
				}
			}
		})
	}
}

func TestInputNotModified(t *testing.T) {
	s := fixture()
	mustResources(t, s, "a", Options{NodeTLS: testTLS})
	if !reflect.DeepEqual(s, fixture()) {
		t.Fatal("Resources changed its input")
	}
}

func TestInvalidState(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(s *model.State)
		want   string
	}{
		{"engine", func(s *model.State) { s.Proxies[0].EngineFamily = "POSTGRESQL" }, "proxy app: engine family"},
		{"no auth", func(s *model.State) { s.Proxies[0].Auth = nil }, "proxy app: no auth"},
		{"endpoint named default", func(s *model.State) { s.Endpoints[0].Name = "default" }, "endpoint app/default"},
		{"port shared in a zone", func(s *model.State) { s.Proxies[2].Port = 6034 }, "listener gamma/default: port 6034 is already used by app/reader"},
		{"port out of range", func(s *model.State) { s.Endpoints[0].Port = 70000 }, "listener app/reader: port"},
		{"target port out of range", func(s *model.State) { s.Targets[0].Port = -1 }, "target app/w1: port"},
		{"two auth blocks for one username", func(s *model.State) {
			for i := range s.Secrets {
				if s.Secrets[i].Name == "admin" {
					s.Secrets[i].Username = "app"
				}
			}
		}, `proxy app: secrets app-user and admin have the same username "app"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := fixture()
			tt.mutate(s)
			_, _, err := Resources(s, nodeIn("a"), Options{})
			if !errors.Is(err, ErrInvalidState) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Resources: %v, want ErrInvalidState mentioning %q", err, tt.want)
			}
			if _, err := Snapshot(s, nodeIn("a"), Options{}); err == nil {
				t.Fatal("Snapshot accepted the state")
			}
			// Zone-local: a zone that does not serve the proxy is unaffected.
			if _, _, err := Resources(s, nodeIn("d"), Options{}); err != nil {
				t.Fatalf("zone d: %v", err)
			}
		})
	}
	for name, m := range map[string]*TLSMaterial{
		"no key":    {CertPEM: testTLS.CertPEM},
		"garbage":   {CertPEM: []byte("x"), KeyPEM: []byte("y")},
		"key first": {CertPEM: testTLS.KeyPEM, KeyPEM: testTLS.CertPEM},
	} {
		_, _, err := Resources(fixture(), nodeIn("a"), Options{NodeTLS: m})
		if err == nil {
			t.Errorf("TLS material (%s) accepted", name)
		} else if strings.Contains(err.Error(), string(testTLS.KeyPEM[30:60])) {
			t.Errorf("error %q shows the key", err)
		}
	}
}

func TestEmptyState(t *testing.T) {
	for _, s := range []*model.State{nil, {}} {
		snap, err := Snapshot(s, nodeIn("a"), Options{NodeTLS: testTLS})
		if err != nil {
			t.Fatal(err)
		}
		for _, typ := range xdsapi.ResourceTypes() {
			if n := len(snap.GetResources(typ)); n != 0 {
				t.Errorf("%s: %d resources in an empty state", typ, n)
			}
		}
	}
}

func TestTLSMaterialStringHidesKey(t *testing.T) {
	if s := fmt.Sprintf("%v %+v", *testTLS, Options{NodeTLS: testTLS}); strings.Contains(s, string(testTLS.KeyPEM[30:60])) || strings.Contains(s, "PRIVATE") {
		t.Fatalf("String() = %q", s)
	}
}
