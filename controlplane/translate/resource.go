package translate

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// ListenAddress is the address every listener names; the node binds its
// own listen host instead.
const ListenAddress = "0.0.0.0"

// ConnectTimeout is the connect_timeout of every cluster.
const ConnectTimeout = 5 * time.Second

// Locality priorities: the node's own zone first, then every other zone
// and targets without a zone.
const (
	PriorityLocal  = 0
	PriorityRemote = 1
)

// MakeListener returns the listener of one proxy endpoint: its name is
// "<proxy>/<endpoint>" and its one filter carries cfg.
func MakeListener(cfg xdsapi.ListenerConfig, port uint32) (*listener.Listener, error) {
	tc, err := xdsapi.EncodeListenerConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &listener.Listener{
		Name:    xdsapi.ListenerName(cfg.Proxy, cfg.Endpoint),
		Address: socketAddress(ListenAddress, port),
		FilterChains: []*listener.FilterChain{{
			Filters: []*listener.Filter{{
				Name:       xdsapi.ListenerFilterName,
				ConfigType: &listener.Filter_TypedConfig{TypedConfig: tc},
			}},
		}},
	}, nil
}

// MakeCluster returns an EDS cluster fed over ADS whose metadata carries
// the pool settings.
func MakeCluster(name string, pool xdsapi.PoolConfig) (*cluster.Cluster, error) {
	md, err := xdsapi.EncodePoolMetadata(pool)
	if err != nil {
		return nil, err
	}
	return &cluster.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(ConnectTimeout),
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_EDS},
		EdsClusterConfig: &cluster.Cluster_EdsClusterConfig{
			EdsConfig: &core.ConfigSource{
				ResourceApiVersion:    resource.DefaultAPIVersion,
				ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}},
			},
		},
		Metadata: md,
	}, nil
}

// MakeLoadAssignment returns the load assignment of a cluster for a node
// in nodeZone: targets grouped by zone, the node's zone at PriorityLocal
// and the others at PriorityRemote. Targets must be normalised (see
// model.Target.Normalize). Localities are ordered by priority and zone,
// endpoints by target name, whatever the order of targets.
func MakeLoadAssignment(clusterName, nodeZone string, targets []model.Target) (*endpoint.ClusterLoadAssignment, error) {
	byZone := map[string][]model.Target{}
	for _, t := range targets {
		byZone[t.Zone] = append(byZone[t.Zone], t)
	}
	cla := &endpoint.ClusterLoadAssignment{ClusterName: clusterName, Endpoints: []*endpoint.LocalityLbEndpoints{}}
	for zone, ts := range byZone {
		slices.SortFunc(ts, func(a, b model.Target) int { return cmp.Compare(a.Name, b.Name) })
		prio := uint32(PriorityRemote)
		if zone != "" && zone == nodeZone {
			prio = PriorityLocal
		}
		loc := &endpoint.LocalityLbEndpoints{Locality: &core.Locality{Zone: zone}, Priority: prio}
		for _, t := range ts {
			ep, err := MakeLbEndpoint(t)
			if err != nil {
				return nil, err
			}
			loc.LbEndpoints = append(loc.LbEndpoints, ep)
		}
		cla.Endpoints = append(cla.Endpoints, loc)
	}
	slices.SortFunc(cla.Endpoints, func(a, b *endpoint.LocalityLbEndpoints) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.GetLocality().GetZone(), b.GetLocality().GetZone()))
	})
	return cla, nil
}

// MakeLbEndpoint returns one target as an LbEndpoint: its socket address,
// hostname = target name, and its name and declared role in the metadata.
func MakeLbEndpoint(t model.Target) (*endpoint.LbEndpoint, error) {
	if t.Port < 1 || t.Port > 65535 {
		return nil, fmt.Errorf("target %s/%s: port must be 1-65535, got %d", t.Proxy, t.Name, t.Port)
	}
	md, err := xdsapi.EncodeTargetMetadata(xdsapi.TargetMetadata{Name: t.Name, Role: t.Role})
	if err != nil {
		return nil, err
	}
	return &endpoint.LbEndpoint{
		HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{
			Address:  socketAddress(t.Host, uint32(t.Port)),
			Hostname: t.Name,
		}},
		Metadata: md,
	}, nil
}

// MakeDBSecret returns a database secret as a GenericSecret named
// xdsapi.DBSecretName(s.Name) with the username and password inline.
func MakeDBSecret(s model.Secret) *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: xdsapi.DBSecretName(s.Name),
		Type: &tlsv3.Secret_GenericSecret{GenericSecret: &tlsv3.GenericSecret{
			Secrets: map[string]*core.DataSource{
				xdsapi.SecretUsernameKey: {Specifier: &core.DataSource_InlineString{InlineString: s.Username}},
				xdsapi.SecretPasswordKey: {Specifier: &core.DataSource_InlineString{InlineString: s.Password}},
			},
		}},
	}
}

// MakeNodeTLSSecret returns the node's certificate and key as the
// TlsCertificate secret xdsapi.NodeTLSSecret.
func MakeNodeTLSSecret(m TLSMaterial) *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: xdsapi.NodeTLSSecret,
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: m.CertPEM}},
			PrivateKey:       &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: m.KeyPEM}},
		}},
	}
}

func socketAddress(host string, port uint32) *core.Address {
	return &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
		Protocol:      core.SocketAddress_TCP,
		Address:       host,
		PortSpecifier: &core.SocketAddress_PortValue{PortValue: port},
	}}}
}
