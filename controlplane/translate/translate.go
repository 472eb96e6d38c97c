// Package translate turns the control plane's desired state into the xDS
// resources of one data-plane node. Everything here is a pure function of
// its arguments: the same state and zone give the same resources and the
// same content-hash version on every run and every control-plane replica.
package translate

import (
	"cmp"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/vocab"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// DefaultMaxClientConnections is what a proxy's max_client_connections of 0
// means (the model keeps the 0; the API documents it): the data plane's
// config.DefaultMaxClientConnections.
const (
	DefaultMaxClientConnections = 20000
)

// ErrInvalidState is wrapped by errors about desired state the translator
// cannot turn into resources a node would accept (the admin API's
// validation should have refused it).
var ErrInvalidState = errors.New("invalid desired state")

// Options carry what the translator cannot read from the model.
type Options struct {
	// NodeTLS is the certificate nodes present to clients; it must be a
	// valid PEM pair. nil pushes none (nodes use their own or a
	// self-signed one).
	NodeTLS *TLSMaterial
	// Now is when the snapshot is built: connect signing keys are derived
	// for the UTC days around it (ConnectDates).
	Now time.Time
	// Region is the region connect tokens are signed for; empty means
	// sigv4.DefaultRegion.
	Region string
}

// TLSMaterial is a PEM certificate chain and its private key.
type TLSMaterial struct {
	CertPEM []byte
	KeyPEM  []byte
}

// String hides the key.
func (m TLSMaterial) String() string {
	return fmt.Sprintf("TLS material (%d bytes of certificate, key hidden)", len(m.CertPEM))
}

// Snapshot builds the snapshot for node from state. It holds only the
// proxies whose zones contain node.Zone (a node without a zone gets none),
// and of those the endpoints whose zones (default: the proxy's) contain
// it; only the secrets their listeners reference. Listeners on port 0 (not
// allocated yet) are left out. Every type carries the same content-hash
// version, and the snapshot is Consistent. State the node would have to
// reject (two listeners on one port in the zone, a proxy without auth, a
// port out of range) is an error wrapping ErrInvalidState that names the
// object; it concerns only the zones that serve the object.
func Snapshot(state *model.State, node xdsapi.NodeInfo, opts Options) (*cache.Snapshot, error) {
	res, version, err := Resources(state, node, opts)
	if err != nil {
		return nil, err
	}
	snap, err := cache.NewSnapshot(version, res)
	if err != nil {
		return nil, fmt.Errorf("snapshot for node %s: %w", node.ID, err)
	}
	if err := snap.Consistent(); err != nil {
		return nil, fmt.Errorf("snapshot for node %s: %w", node.ID, err)
	}
	return snap, nil
}

// Resources is Snapshot without the cache wrapper: the resources by type
// URL (every type present, each sorted by name) and their version.
func Resources(state *model.State, node xdsapi.NodeInfo, opts Options) (map[resource.Type][]types.Resource, string, error) {
	if state == nil {
		state = &model.State{}
	}
	if opts.NodeTLS != nil {
		// Checked here rather than by every node: material a node cannot
		// load would be NACKed by all of them.
		if _, err := tls.X509KeyPair(opts.NodeTLS.CertPEM, opts.NodeTLS.KeyPEM); err != nil {
			return nil, "", fmt.Errorf("node TLS material: %w", err)
		}
	}
	ix := index(state)
	b := builder{node: node, opts: opts, state: state, ix: ix, out: map[resource.Type][]types.Resource{}, ports: map[int]string{}, secrets: map[string]model.Secret{},
		grants: map[string]*grantSet{}}
	for _, p := range ix.proxies {
		if err := b.addProxy(p); err != nil {
			return nil, "", err
		}
	}
	if opts.NodeTLS != nil && len(b.out[resource.ListenerType]) > 0 {
		b.out[resource.SecretType] = append(b.out[resource.SecretType], MakeNodeTLSSecret(*opts.NodeTLS))
	}
	for _, name := range slices.Sorted(maps.Keys(b.secrets)) {
		b.out[resource.SecretType] = append(b.out[resource.SecretType], MakeDBSecret(b.secrets[name]))
	}
	if b.connect {
		sec, err := MakeConnectKeysSecret(b.connectKeys())
		if err != nil {
			return nil, "", err
		}
		b.out[resource.SecretType] = append(b.out[resource.SecretType], sec)
	}
	res := map[resource.Type][]types.Resource{}
	for _, typ := range xdsapi.ResourceTypes() {
		rs := b.out[typ]
		if rs == nil {
			rs = []types.Resource{}
		}
		slices.SortFunc(rs, func(a, b types.Resource) int { return cmp.Compare(cache.GetResourceName(a), cache.GetResourceName(b)) })
		res[typ] = rs
	}
	version, err := Version(res)
	if err != nil {
		return nil, "", err
	}
	return res, version, nil
}

// Version returns the content hash of res: hex of the first 16 bytes of
// the SHA-256 of every resource's deterministic encoding, type by type in
// xdsapi.ResourceTypes order and in the given order within a type.
func Version(res map[resource.Type][]types.Resource) (string, error) {
	h := sha256.New()
	var n [8]byte
	frame := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	for _, typ := range xdsapi.ResourceTypes() {
		frame([]byte(typ))
		binary.BigEndian.PutUint64(n[:], uint64(len(res[typ])))
		h.Write(n[:])
		for _, r := range res[typ] {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
			if err != nil {
				return "", fmt.Errorf("hash %s %s: %w", typ, cache.GetResourceName(r), err)
			}
			frame(b)
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:16]), nil
}

// stateIndex is the state grouped by proxy, each group sorted by name.
type stateIndex struct {
	proxies      []model.Proxy
	secrets      map[string]model.Secret
	targetGroups map[string]model.TargetGroup
	targets      map[string][]model.Target
	endpoints    map[string][]model.Endpoint
}

func index(s *model.State) stateIndex {
	ix := stateIndex{
		proxies:      slices.Clone(s.Proxies),
		secrets:      map[string]model.Secret{},
		targetGroups: map[string]model.TargetGroup{},
		targets:      map[string][]model.Target{},
		endpoints:    map[string][]model.Endpoint{},
	}
	slices.SortFunc(ix.proxies, func(a, b model.Proxy) int { return cmp.Compare(a.Name, b.Name) })
	for _, sec := range s.Secrets {
		ix.secrets[sec.Name] = sec
	}
	for _, g := range s.TargetGroups {
		// A proxy has one target group; prefer the one named default if
		// several are stored.
		if old, ok := ix.targetGroups[g.Proxy]; ok && (old.Name == model.DefaultTargetGroup || g.Name != model.DefaultTargetGroup) {
			continue
		}
		ix.targetGroups[g.Proxy] = g
	}
	for _, t := range s.Targets {
		t.Normalize()
		if t.Name == "" {
			t.Name = fmt.Sprintf("%s:%d", t.Host, t.Port)
		}
		ix.targets[t.Proxy] = append(ix.targets[t.Proxy], t)
	}
	for _, e := range s.Endpoints {
		e.Zones = slices.Clone(e.Zones)
		e.Normalize()
		ix.endpoints[e.Proxy] = append(ix.endpoints[e.Proxy], e)
	}
	for _, ts := range ix.targets {
		slices.SortFunc(ts, func(a, b model.Target) int { return cmp.Compare(a.Name, b.Name) })
	}
	for _, es := range ix.endpoints {
		slices.SortFunc(es, func(a, b model.Endpoint) int { return cmp.Compare(a.Name, b.Name) })
	}
	return ix
}

type builder struct {
	node  xdsapi.NodeInfo
	opts  Options
	state *model.State
	ix    stateIndex
	out   map[resource.Type][]types.Resource
	// ports maps each port in use to the listener using it.
	ports   map[int]string
	secrets map[string]model.Secret
	// connect is set when a served proxy requires IAM authentication:
	// the node then gets the connect-keys secret, even with no keys.
	connect bool
	// principals are the users that may hold dbproxy:Connect, read from
	// the state the first time a proxy needs them.
	principals []connectPrincipal
	// grants are the connect grants by access key id.
	grants map[string]*grantSet
}

func (b *builder) addProxy(p model.Proxy) error {
	// Normalize writes into the slices; keep the caller's state intact.
	p.Auth = slices.Clone(p.Auth)
	p.Zones = slices.Clone(p.Zones)
	p.Normalize()
	if !model.HasZone(p.Zones, b.node.Zone) {
		return nil
	}
	if p.EngineFamily != vocab.EngineMySQL {
		return fmt.Errorf("%w: proxy %s: engine family %q is not %s", ErrInvalidState, p.Name, p.EngineFamily, vocab.EngineMySQL)
	}
	if len(p.Auth) == 0 {
		return fmt.Errorf("%w: proxy %s: no auth blocks", ErrInvalidState, p.Name)
	}
	// The API refuses this; state stored before it did is named here
	// rather than NACKed by every node of the zone.
	users := make([]string, len(p.Auth))
	for i, a := range p.Auth {
		if s, ok := b.ix.secrets[a.Secret]; ok {
			users[i] = s.Username
		}
	}
	if j, i, dup := vocab.DuplicateUsername(users); dup {
		return fmt.Errorf("%w: proxy %s: secrets %s and %s have the same username %q; give each auth block its own user", ErrInvalidState, p.Name, p.Auth[j].Secret, p.Auth[i].Secret, users[i])
	}
	maxClients := p.MaxClientConnections
	if maxClients == 0 {
		maxClients = DefaultMaxClientConnections
	}
	base := xdsapi.ListenerConfig{
		Proxy:                p.Name,
		Cluster:              p.Name,
		RequireTLS:           p.RequireTLS,
		IdleClientTimeoutSec: p.IdleClientTimeout,
		MaxClientConnections: maxClients,
		DebugLogging:         p.DebugLogging,
	}
	iamAuth := false
	for _, a := range p.Auth {
		base.Auth = append(base.Auth, xdsapi.AuthConfig{Secret: a.Secret, IAMAuth: a.IAMAuth, ClientPasswordAuthType: a.ClientPasswordAuthType})
		iamAuth = iamAuth || a.IAMAuth == vocab.IAMAuthRequired
	}
	if iamAuth {
		base.ConnectSecret = xdsapi.ConnectKeysSecret
	}
	if b.opts.NodeTLS != nil {
		base.TLSSecret = xdsapi.NodeTLSSecret
	}

	type ep struct {
		name, role string
		port       int
	}
	eps := []ep{{model.DefaultEndpoint, vocab.TargetRoleReadWrite, p.Port}}
	for _, e := range b.ix.endpoints[p.Name] {
		if e.Name == model.DefaultEndpoint {
			return fmt.Errorf("%w: endpoint %s/%s: the name is taken by the proxy's own endpoint", ErrInvalidState, p.Name, e.Name)
		}
		if model.HasZone(e.ZonesOf(&p), b.node.Zone) {
			eps = append(eps, ep{e.Name, e.TargetRole, e.Port})
		}
	}
	listeners := 0
	for _, e := range eps {
		name := xdsapi.ListenerName(p.Name, e.name)
		switch {
		case e.port == 0:
			// Not allocated yet: nothing to bind.
			continue
		case e.port < 0 || e.port > 65535:
			return fmt.Errorf("%w: listener %s: port must be 1-65535, got %d", ErrInvalidState, name, e.port)
		}
		if other, ok := b.ports[e.port]; ok {
			return fmt.Errorf("%w: listener %s: port %d is already used by %s in zone %s", ErrInvalidState, name, e.port, other, b.node.Zone)
		}
		b.ports[e.port] = name
		cfg := base
		cfg.Endpoint, cfg.TargetRole = e.name, e.role
		l, err := MakeListener(cfg, uint32(e.port))
		if err != nil {
			return fmt.Errorf("listener %s: %w", name, err)
		}
		b.out[resource.ListenerType] = append(b.out[resource.ListenerType], l)
		listeners++
	}
	if listeners > 0 {
		// Least privilege: a node gets the credentials of the proxies it
		// serves and no others. A secret not (yet) stored is left out; the
		// node keeps the listener inactive until it arrives.
		for _, a := range p.Auth {
			if s, ok := b.ix.secrets[a.Secret]; ok {
				b.secrets[s.Name] = s
			}
		}
		if iamAuth {
			b.addConnectGrants(p)
		}
	}

	g, ok := b.ix.targetGroups[p.Name]
	if !ok {
		g = model.TargetGroup{Proxy: p.Name}
	}
	g.ConnectionPoolConfig.SessionPinningFilters = slices.Clone(g.ConnectionPoolConfig.SessionPinningFilters)
	g.Normalize()
	pc := g.ConnectionPoolConfig
	filters := slices.Compact(slices.Sorted(slices.Values(pc.SessionPinningFilters)))
	c, err := MakeCluster(p.Name, xdsapi.PoolConfig{
		MaxConnectionsPercent:      pc.MaxConnectionsPercent,
		MaxIdleConnectionsPercent:  pc.MaxIdleConnectionsPercent,
		ConnectionBorrowTimeoutSec: pc.ConnectionBorrowTimeout,
		InitQuery:                  pc.InitQuery,
		SessionPinningFilters:      append([]string{}, filters...),
	})
	if err != nil {
		return fmt.Errorf("cluster %s: %w", p.Name, err)
	}
	cla, err := MakeLoadAssignment(p.Name, b.node.Zone, b.ix.targets[p.Name])
	if err != nil {
		return fmt.Errorf("%w: cluster %s: %w", ErrInvalidState, p.Name, err)
	}
	b.out[resource.ClusterType] = append(b.out[resource.ClusterType], c)
	b.out[resource.EndpointType] = append(b.out[resource.EndpointType], cla)
	return nil
}
