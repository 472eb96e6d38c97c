// Package xdstest builds small synthetic xDS resource sets for the tests of
// the ADS server and the node's ADS client, which exercise the protocol
// without the translator.
package xdstest

import (
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/dbproxy/dbproxy/controlplane/translate"
)

// Resources builds a small synthetic resource set: one listener, its
// cluster and assignment, one database secret. gen varies the content.
func Resources(zone, gen string) map[resource.Type][]types.Resource {
	return map[resource.Type][]types.Resource{
		resource.ClusterType: {&cluster.Cluster{
			Name:                 "p1",
			ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_EDS},
			EdsClusterConfig: &cluster.Cluster_EdsClusterConfig{
				EdsConfig: &core.ConfigSource{ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}},
			},
			ConnectTimeout: durationpb.New(5 * time.Second),
		}},
		resource.EndpointType: {&endpoint.ClusterLoadAssignment{
			ClusterName: "p1",
			Endpoints: []*endpoint.LocalityLbEndpoints{{
				Locality: &core.Locality{Zone: zone},
				LbEndpoints: []*endpoint.LbEndpoint{{
					HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{
						Hostname: "db-" + gen,
						Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
							Address: "127.0.0.1", PortSpecifier: &core.SocketAddress_PortValue{PortValue: 3306},
						}}},
					}},
				}},
			}},
		}},
		resource.ListenerType: {&listener.Listener{
			Name:       "p1/default",
			StatPrefix: gen,
			Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
				Address: "0.0.0.0", PortSpecifier: &core.SocketAddress_PortValue{PortValue: 6033},
			}}},
		}},
		resource.SecretType: {&tlsv3.Secret{
			Name: "db/s1",
			Type: &tlsv3.Secret_GenericSecret{GenericSecret: &tlsv3.GenericSecret{
				Secrets: map[string]*core.DataSource{
					"username": {Specifier: &core.DataSource_InlineString{InlineString: "app"}},
					"password": {Specifier: &core.DataSource_InlineString{InlineString: "pw-" + gen}},
				},
			}},
		}},
	}
}

// Version is the content hash the translator would give res.
func Version(t testing.TB, res map[resource.Type][]types.Resource) string {
	t.Helper()
	v, err := translate.Version(res)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
