package xdsapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	xdstype "github.com/cncf/xds/go/xds/type/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// ErrMalformed is wrapped by every decode error: the payload is missing,
// of the wrong type or not the JSON its struct expects.
var ErrMalformed = errors.New("malformed payload")

// typedStructURL is the type URL of the Any that wraps a TypedStruct.
const typedStructURL = "type.googleapis.com/xds.type.v3.TypedStruct"

// EncodeListenerConfig returns the listener filter's typed_config: an Any
// of a TypedStruct with type_url ListenerConfigTypeURL whose value is the
// JSON of c.
func EncodeListenerConfig(c ListenerConfig) (*anypb.Any, error) {
	s, err := toStruct(c)
	if err != nil {
		return nil, fmt.Errorf("encode listener config: %w", err)
	}
	// Deterministic, so that content hashes of the listeners that embed
	// this Any agree across runs and control-plane replicas.
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, &xdstype.TypedStruct{TypeUrl: ListenerConfigTypeURL, Value: s}, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, fmt.Errorf("encode listener config: %w", err)
	}
	return a, nil
}

// DecodeListenerConfig reads the ListenerConfig from the one filter named
// ListenerFilterName in l's filter chains. Unknown JSON fields are
// ignored, as Envoy ignores unknown fields of dynamic resources, so that an
// older node accepts a newer control plane's payload.
func DecodeListenerConfig(l *listener.Listener) (ListenerConfig, error) {
	var found []*listener.Filter
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			if f.GetName() == ListenerFilterName {
				found = append(found, f)
			}
		}
	}
	switch len(found) {
	case 0:
		return ListenerConfig{}, fmt.Errorf("%w: no filter named %s", ErrMalformed, ListenerFilterName)
	case 1:
	default:
		return ListenerConfig{}, fmt.Errorf("%w: %d filters named %s, want one", ErrMalformed, len(found), ListenerFilterName)
	}
	tc := found[0].GetTypedConfig()
	if tc == nil {
		return ListenerConfig{}, fmt.Errorf("%w: filter %s has no typed_config", ErrMalformed, ListenerFilterName)
	}
	if tc.GetTypeUrl() != typedStructURL {
		return ListenerConfig{}, fmt.Errorf("%w: filter %s: typed_config is %q, want %q", ErrMalformed, ListenerFilterName, tc.GetTypeUrl(), typedStructURL)
	}
	var ts xdstype.TypedStruct
	if err := tc.UnmarshalTo(&ts); err != nil {
		return ListenerConfig{}, fmt.Errorf("%w: filter %s: %v", ErrMalformed, ListenerFilterName, err)
	}
	if ts.GetTypeUrl() != ListenerConfigTypeURL {
		return ListenerConfig{}, fmt.Errorf("%w: filter %s: TypedStruct type_url is %q, want %q", ErrMalformed, ListenerFilterName, ts.GetTypeUrl(), ListenerConfigTypeURL)
	}
	var c ListenerConfig
	if err := fromStruct(ts.GetValue(), &c); err != nil {
		return ListenerConfig{}, fmt.Errorf("filter %s: %w", ListenerFilterName, err)
	}
	return c, nil
}

// EncodePoolMetadata returns cluster metadata with pc under
// PoolMetadataKey.
func EncodePoolMetadata(pc PoolConfig) (*core.Metadata, error) {
	return encodeMetadata(PoolMetadataKey, pc)
}

// DecodePoolMetadata reads the PoolConfig of a cluster.
func DecodePoolMetadata(c *cluster.Cluster) (PoolConfig, error) {
	var pc PoolConfig
	err := decodeMetadata(c.GetMetadata(), PoolMetadataKey, &pc)
	return pc, err
}

// EncodeTargetMetadata returns LbEndpoint metadata with t under
// TargetMetadataKey.
func EncodeTargetMetadata(t TargetMetadata) (*core.Metadata, error) {
	return encodeMetadata(TargetMetadataKey, t)
}

// DecodeTargetMetadata reads the TargetMetadata of an LbEndpoint.
func DecodeTargetMetadata(e *endpoint.LbEndpoint) (TargetMetadata, error) {
	var t TargetMetadata
	err := decodeMetadata(e.GetMetadata(), TargetMetadataKey, &t)
	return t, err
}

func encodeMetadata(key string, v any) (*core.Metadata, error) {
	s, err := toStruct(v)
	if err != nil {
		return nil, fmt.Errorf("encode %s metadata: %w", key, err)
	}
	return &core.Metadata{FilterMetadata: map[string]*structpb.Struct{key: s}}, nil
}

func decodeMetadata(md *core.Metadata, key string, v any) error {
	s, ok := md.GetFilterMetadata()[key]
	if !ok || s == nil {
		return fmt.Errorf("%w: no %s metadata", ErrMalformed, key)
	}
	if err := fromStruct(s, v); err != nil {
		return fmt.Errorf("%s metadata: %w", key, err)
	}
	return nil
}

// toStruct converts v to a Struct through its JSON.
func toStruct(v any) (*structpb.Struct, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return structpb.NewStruct(m)
}

// fromStruct fills v from the JSON of s. Numbers travel as doubles, which
// encoding/json writes without an exponent below 1e21, so integer fields
// read back exactly.
func fromStruct(s *structpb.Struct, v any) error {
	if s == nil {
		return fmt.Errorf("%w: no value", ErrMalformed)
	}
	b, err := json.Marshal(s.AsMap())
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}
