package xdsapi

import (
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// TokenMetadataKey is the gRPC metadata key that carries a node's signed
// token on every xDS stream.
const TokenMetadataKey = "x-dbproxy-token"

// UserAgentName is the user_agent_name every dbproxy node sends.
const UserAgentName = "dbproxy"

// Node metadata keys (fields of core.Node.metadata).
const (
	nodeMetadataAddress    = "address"
	nodeMetadataListenHost = "listen_host"
)

// NodeInfo is a data-plane node's identity as it travels in core.Node.
// Address is the host clients use to reach the node; ListenHost the host
// it binds its listeners to.
type NodeInfo struct {
	ID         string
	Zone       string
	Address    string
	ListenHost string
}

// Proto returns the core.Node a node sends in its first discovery request.
func (n NodeInfo) Proto() *core.Node {
	return &core.Node{
		Id:            n.ID,
		Locality:      &core.Locality{Zone: n.Zone},
		UserAgentName: UserAgentName,
		Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			nodeMetadataAddress:    structpb.NewStringValue(n.Address),
			nodeMetadataListenHost: structpb.NewStringValue(n.ListenHost),
		}},
	}
}

// NodeInfoFrom reads a NodeInfo from a core.Node; a nil node or missing
// fields give empty strings.
func NodeInfoFrom(n *core.Node) NodeInfo {
	fields := n.GetMetadata().GetFields()
	return NodeInfo{
		ID:         n.GetId(),
		Zone:       n.GetLocality().GetZone(),
		Address:    fields[nodeMetadataAddress].GetStringValue(),
		ListenHost: fields[nodeMetadataListenHost].GetStringValue(),
	}
}

// Key identifies a node in the control plane's records: its zone and id
// together, because nodes choose their ids and a key allowed one zone must
// not be able to displace a node of another zone by naming its id.
func (n NodeInfo) Key() string { return n.Zone + "\x00" + n.ID }
