package xdsapi

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	xdstype "github.com/cncf/xds/go/xds/type/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func sampleListenerConfig() ListenerConfig {
	return ListenerConfig{
		Proxy: "app", Endpoint: "reader", TargetRole: "READ_ONLY", Cluster: "app",
		Auth: []AuthConfig{
			{Secret: "s1", IAMAuth: "DISABLED", ClientPasswordAuthType: "MYSQL_NATIVE_PASSWORD"},
			{Secret: "s2", IAMAuth: "REQUIRED", ClientPasswordAuthType: "MYSQL_CACHING_SHA2_PASSWORD"},
		},
		RequireTLS: true, IdleClientTimeoutSec: 1800,
		// Large enough that a float formatted with an exponent would not
		// read back into an int.
		MaxClientConnections: 1_000_000_000,
		DebugLogging:         true, TLSSecret: NodeTLSSecret,
	}
}

func listenerWith(filters ...*listener.Filter) *listener.Listener {
	return &listener.Listener{Name: "app/reader", FilterChains: []*listener.FilterChain{{Filters: filters}}}
}

func filterWith(t *testing.T, tc *anypb.Any) *listener.Filter {
	t.Helper()
	return &listener.Filter{Name: ListenerFilterName, ConfigType: &listener.Filter_TypedConfig{TypedConfig: tc}}
}

func TestListenerConfigRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   ListenerConfig
	}{
		{"full", sampleListenerConfig()},
		{"zero", ListenerConfig{}},
		{"no tls secret", func() ListenerConfig { c := sampleListenerConfig(); c.TLSSecret = ""; return c }()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc, err := EncodeListenerConfig(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if tc.GetTypeUrl() != typedStructURL {
				t.Fatalf("type URL %q", tc.GetTypeUrl())
			}
			got, err := DecodeListenerConfig(listenerWith(filterWith(t, tc)))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.in) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, tt.in)
			}
		})
	}
}

func TestEncodeListenerConfigIsDeterministic(t *testing.T) {
	first, err := EncodeListenerConfig(sampleListenerConfig())
	if err != nil {
		t.Fatal(err)
	}
	// Struct fields are a map: without deterministic marshalling their
	// order, and so the bytes, would vary from call to call.
	for range 50 {
		again, err := EncodeListenerConfig(sampleListenerConfig())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first.GetValue(), again.GetValue()) {
			t.Fatal("two encodings of the same config differ")
		}
	}
}

func TestDecodeListenerConfigErrors(t *testing.T) {
	good, err := EncodeListenerConfig(sampleListenerConfig())
	if err != nil {
		t.Fatal(err)
	}
	typed := func(url string, fields map[string]any) *anypb.Any {
		s, err := structpb.NewStruct(fields)
		if err != nil {
			t.Fatal(err)
		}
		a, err := anypb.New(&xdstype.TypedStruct{TypeUrl: url, Value: s})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	notStruct, err := anypb.New(wrapperspb.String("x"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		l    *listener.Listener
		want string
	}{
		{"no filter chains", &listener.Listener{Name: "x"}, "no filter named"},
		{"other filter only", listenerWith(&listener.Filter{Name: "envoy.filters.network.tcp_proxy"}), "no filter named"},
		{"two filters", listenerWith(filterWith(t, good), filterWith(t, good)), "2 filters"},
		{"no typed config", listenerWith(&listener.Filter{Name: ListenerFilterName}), "no typed_config"},
		{"not a typed struct", listenerWith(filterWith(t, notStruct)), "google.protobuf.StringValue"},
		{"wrong typed struct type", listenerWith(filterWith(t, typed("type.dbproxy.io/dbproxy.v1.Other", map[string]any{}))), "dbproxy.v1.Other"},
		{"wrong field type", listenerWith(filterWith(t, typed(ListenerConfigTypeURL, map[string]any{"max_client_connections": "many"}))), "max_client_connections"},
		{"fraction for an int", listenerWith(filterWith(t, typed(ListenerConfigTypeURL, map[string]any{"idle_client_timeout_seconds": 1.5}))), "idle_client_timeout_seconds"},
		{"no value", listenerWith(filterWith(t, func() *anypb.Any {
			a, err := anypb.New(&xdstype.TypedStruct{TypeUrl: ListenerConfigTypeURL})
			if err != nil {
				t.Fatal(err)
			}
			return a
		}())), "no value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeListenerConfig(tt.l)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

func TestDecodeListenerConfigIgnoresUnknownFields(t *testing.T) {
	s, err := structpb.NewStruct(map[string]any{"proxy": "app", "added_later": true})
	if err != nil {
		t.Fatal(err)
	}
	a, err := anypb.New(&xdstype.TypedStruct{TypeUrl: ListenerConfigTypeURL, Value: s})
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeListenerConfig(listenerWith(filterWith(t, a)))
	if err != nil || got.Proxy != "app" {
		t.Fatalf("DecodeListenerConfig = %+v, %v", got, err)
	}
}

func TestMetadataRoundTrip(t *testing.T) {
	pool := PoolConfig{MaxConnectionsPercent: 80, MaxIdleConnectionsPercent: 40, ConnectionBorrowTimeoutSec: 3600,
		InitQuery: "SET time_zone = '+00:00'", SessionPinningFilters: []string{"EXCLUDE_VARIABLE_SETS"}}
	md, err := EncodePoolMetadata(pool)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodePoolMetadata(&cluster.Cluster{Metadata: md})
	if err != nil || !reflect.DeepEqual(got, pool) {
		t.Fatalf("pool round trip = %+v, %v; want %+v", got, err, pool)
	}
	tm := TargetMetadata{Name: "w1", Role: "WRITER"}
	md, err = EncodeTargetMetadata(tm)
	if err != nil {
		t.Fatal(err)
	}
	gotT, err := DecodeTargetMetadata(&endpoint.LbEndpoint{Metadata: md})
	if err != nil || gotT != tm {
		t.Fatalf("target round trip = %+v, %v; want %+v", gotT, err, tm)
	}
}

func TestMetadataErrors(t *testing.T) {
	wrongKey, err := EncodeTargetMetadata(TargetMetadata{Name: "w1"})
	if err != nil {
		t.Fatal(err)
	}
	badType := &core.Metadata{FilterMetadata: map[string]*structpb.Struct{
		PoolMetadataKey: {Fields: map[string]*structpb.Value{"max_connections_percent": structpb.NewStringValue("all")}},
	}}
	tests := []struct {
		name string
		md   *core.Metadata
		want string
	}{
		{"none", nil, "no dbproxy.pool metadata"},
		{"other key", wrongKey, "no dbproxy.pool metadata"},
		{"wrong type", badType, "max_connections_percent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodePoolMetadata(&cluster.Cluster{Metadata: tt.md})
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("DecodePoolMetadata: %v, want ErrMalformed mentioning %q", err, tt.want)
			}
		})
	}
	if _, err := DecodeTargetMetadata(&endpoint.LbEndpoint{}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("DecodeTargetMetadata without metadata: %v", err)
	}
}

func TestNames(t *testing.T) {
	if got := DBSecretName("app"); got != "db/app" {
		t.Errorf("DBSecretName = %q", got)
	}
	if got := ListenerName("app", "default"); got != "app/default" {
		t.Errorf("ListenerName = %q", got)
	}
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"db/app", "app", true},
		{"db/", "", false},
		{NodeTLSSecret, "", false},
		{"app", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := SecretFromDBSecretName(tt.in)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("SecretFromDBSecretName(%q) = %q, %v", tt.in, got, ok)
			}
		})
	}
	c := sampleListenerConfig()
	if got := c.SecretNames(); !reflect.DeepEqual(got, []string{"db/s1", "db/s2", NodeTLSSecret}) {
		t.Errorf("SecretNames = %v", got)
	}
}
