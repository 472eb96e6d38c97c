package xdsapi

import (
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

func TestMetadataNodeInfoRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   NodeInfo
	}{
		{"full", NodeInfo{ID: "node-a1", Zone: "a", Address: "127.0.1.1", ListenHost: "0.0.0.0"}},
		{"empty", NodeInfo{}},
		{"no listen host", NodeInfo{ID: "n", Zone: "b", Address: "10.0.0.2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.in.Proto()
			if p.GetUserAgentName() != UserAgentName {
				t.Errorf("user agent = %q, want %q", p.GetUserAgentName(), UserAgentName)
			}
			if got := NodeInfoFrom(p); got != tt.in {
				t.Errorf("round trip = %+v, want %+v", got, tt.in)
			}
		})
	}
}

func TestMetadataNodeInfoFromPartial(t *testing.T) {
	tests := []struct {
		name string
		in   *core.Node
		want NodeInfo
	}{
		{"nil", nil, NodeInfo{}},
		{"id only", &core.Node{Id: "x"}, NodeInfo{ID: "x"}},
		{"zone only", &core.Node{Locality: &core.Locality{Zone: "c"}}, NodeInfo{Zone: "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NodeInfoFrom(tt.in); got != tt.want {
				t.Errorf("NodeInfoFrom = %+v, want %+v", got, tt.want)
			}
		})
	}
}
