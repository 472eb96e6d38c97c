// Package xdsconfig turns the xDS resources a data-plane node receives from
// the control plane into the node's configuration (dataplane/config). It is
// the inverse of controlplane/translate and, like it, pure: no I/O, no
// goroutines. A resource that cannot be read is an error for the whole set
// (the node NACKs it); a listener whose dependencies have not arrived yet
// is left out and reported, and the rest is served.
package xdsconfig

import (
	"cmp"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/dbproxy/dbproxy/dataplane/config"
	"github.com/dbproxy/dbproxy/internal/vocab"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// ErrInvalid is wrapped by every error of Decode: the resource set is
// malformed and must be NACKed as a whole.
var ErrInvalid = errors.New("invalid xDS resources")

// Options carry what the resources do not: where this node binds and its
// node-local settings.
type Options struct {
	// ListenHost is the host every endpoint binds ("0.0.0.0", "127.0.1.1").
	ListenHost string
	// Node is the node-local section of the configuration (zone, admin
	// address, timeouts, TLS files).
	Node config.Node
}

// Decode turns a full resource set (keyed by type URL) into the node's
// configuration at version. Listeners whose cluster, load assignment or
// secrets are missing are left out and named in skipped. Malformed
// resources (bad type, bad payload, invalid values) are an error naming
// the resource, and no configuration is returned. The configuration has
// defaults applied and passes config.Validate.
func Decode(version string, res map[string][]*anypb.Any, opts Options) (cfg *config.Config, skipped []string, err error) {
	d := decoder{
		clusters:    map[string]xdsapi.PoolConfig{},
		assignments: map[string][]config.Target{},
		secrets:     map[string]*tlsv3.Secret{},
	}
	for _, typ := range slices.Sorted(maps.Keys(res)) {
		if !xdsapi.IsResourceType(typ) {
			d.errs = append(d.errs, fmt.Errorf("unknown resource type %q", typ))
		}
	}
	for i, a := range res[resource.ClusterType] {
		d.cluster(i, a)
	}
	for i, a := range res[resource.EndpointType] {
		d.assignment(i, a)
	}
	for i, a := range res[resource.SecretType] {
		d.secret(i, a)
	}
	for i, a := range res[resource.ListenerType] {
		d.listener(i, a)
	}
	if len(d.errs) > 0 {
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalid, errors.Join(d.errs...))
	}
	cfg, skipped, err = d.build(version, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return cfg, skipped, nil
}

type decodedListener struct {
	name string
	port uint32
	cfg  xdsapi.ListenerConfig
}

type decoder struct {
	clusters    map[string]xdsapi.PoolConfig
	assignments map[string][]config.Target
	secrets     map[string]*tlsv3.Secret
	connect     *xdsapi.ConnectKeys
	listeners   []decodedListener
	errs        []error
}

// unpack unmarshals one Any of type typ into m. On failure it records an
// error naming the resource by kind and position, since its name is
// unknown.
func (d *decoder) unpack(kind string, i int, a *anypb.Any, typ string, m proto.Message) bool {
	if a.GetTypeUrl() != typ {
		d.errs = append(d.errs, fmt.Errorf("%s #%d: type %q, want %q", kind, i, a.GetTypeUrl(), typ))
		return false
	}
	if err := proto.Unmarshal(a.GetValue(), m); err != nil {
		d.errs = append(d.errs, fmt.Errorf("%s #%d: %v", kind, i, err))
		return false
	}
	return true
}

// named checks a resource's name (its field, for the message): it must be
// set and not taken by an earlier resource of the set. Failures are
// recorded; it reports whether the name is good.
func (d *decoder) named(kind string, i int, field, name string, taken bool) bool {
	switch {
	case name == "":
		d.errs = append(d.errs, fmt.Errorf("%s #%d: no %s", kind, i, field))
		return false
	case taken:
		d.fail(kind, name, errors.New("sent twice"))
		return false
	}
	return true
}

// fail records err about the named resource.
func (d *decoder) fail(kind, name string, err error) {
	d.errs = append(d.errs, fmt.Errorf("%s %q: %w", kind, name, err))
}

func (d *decoder) cluster(i int, a *anypb.Any) {
	const kind = "cluster"
	var c cluster.Cluster
	if !d.unpack(kind, i, a, resource.ClusterType, &c) {
		return
	}
	name := c.GetName()
	switch {
	case name == "":
		d.errs = append(d.errs, fmt.Errorf("%s #%d: no name", kind, i))
		return
	case c.GetType() != cluster.Cluster_EDS:
		d.fail(kind, name, fmt.Errorf("discovery type %s, want EDS", c.GetType()))
		return
	}
	if _, dup := d.clusters[name]; dup {
		d.fail(kind, name, errors.New("sent twice"))
		return
	}
	if err := c.Validate(); err != nil {
		d.fail(kind, name, err)
		return
	}
	pc, err := xdsapi.DecodePoolMetadata(&c)
	if err == nil {
		err = validatePool(pc)
	}
	if err != nil {
		d.fail(kind, name, err)
		return
	}
	d.clusters[name] = pc
}

// maxSeconds bounds timeouts in seconds (a year) so that they convert to
// a time.Duration without overflow.
const maxSeconds = 365 * 24 * 3600

func validatePool(pc xdsapi.PoolConfig) error {
	var errs []error
	for _, p := range vocab.PoolProblems(pc.MaxConnectionsPercent, pc.MaxIdleConnectionsPercent, pc.SessionPinningFilters) {
		errs = append(errs, fmt.Errorf("%s %s", p.Field, p.Message))
	}
	if pc.ConnectionBorrowTimeoutSec < 0 || pc.ConnectionBorrowTimeoutSec > maxSeconds {
		errs = append(errs, fmt.Errorf("connection_borrow_timeout_seconds must be 0-%d, got %d", maxSeconds, pc.ConnectionBorrowTimeoutSec))
	}
	return errors.Join(errs...)
}

func (d *decoder) assignment(i int, a *anypb.Any) {
	const kind = "cluster load assignment"
	var cla endpoint.ClusterLoadAssignment
	if !d.unpack(kind, i, a, resource.EndpointType, &cla) {
		return
	}
	name := cla.GetClusterName()
	_, taken := d.assignments[name]
	if !d.named(kind, i, "cluster name", name, taken) {
		return
	}
	if err := cla.Validate(); err != nil {
		d.fail(kind, name, err)
		return
	}
	targets := []config.Target{}
	seen := map[string]bool{}
	for _, loc := range cla.GetEndpoints() {
		zone := loc.GetLocality().GetZone()
		for _, lbe := range loc.GetLbEndpoints() {
			t, err := target(lbe, zone)
			if err == nil && seen[t.Name] {
				err = fmt.Errorf("target %q: listed twice", t.Name)
			}
			if err != nil {
				d.fail(kind, name, err)
				return
			}
			seen[t.Name] = true
			targets = append(targets, t)
		}
	}
	slices.SortFunc(targets, func(a, b config.Target) int { return cmp.Compare(a.Name, b.Name) })
	d.assignments[name] = targets
}

func target(lbe *endpoint.LbEndpoint, zone string) (config.Target, error) {
	md, err := xdsapi.DecodeTargetMetadata(lbe)
	if err != nil {
		return config.Target{}, fmt.Errorf("endpoint %q: %w", lbe.GetEndpoint().GetHostname(), err)
	}
	if md.Name == "" {
		return config.Target{}, fmt.Errorf("endpoint %q: target metadata has no name", lbe.GetEndpoint().GetHostname())
	}
	if h := lbe.GetEndpoint().GetHostname(); h != "" && h != md.Name {
		return config.Target{}, fmt.Errorf("target %q: hostname %q differs from the target name", md.Name, h)
	}
	switch md.Role {
	case vocab.RoleAuto, vocab.RoleWriter, vocab.RoleReader:
	default:
		return config.Target{}, fmt.Errorf("target %q: role must be AUTO, WRITER or READER, got %q", md.Name, md.Role)
	}
	sa := lbe.GetEndpoint().GetAddress().GetSocketAddress()
	host, port := sa.GetAddress(), sa.GetPortValue()
	switch {
	case host == "":
		return config.Target{}, fmt.Errorf("target %q: no socket address host", md.Name)
	case port < 1 || port > 65535:
		return config.Target{}, fmt.Errorf("target %q: port must be 1-65535, got %d", md.Name, port)
	}
	return config.Target{Name: md.Name, Host: host, Port: int(port), Zone: zone, Role: md.Role}, nil
}

func (d *decoder) secret(i int, a *anypb.Any) {
	const kind = "secret"
	var s tlsv3.Secret
	if !d.unpack(kind, i, a, resource.SecretType, &s) {
		return
	}
	name := s.GetName()
	_, taken := d.secrets[name]
	if !d.named(kind, i, "name", name, taken) {
		return
	}
	// Checked by hand rather than with the generated validators, whose
	// messages are not promised to leave values out. Nothing here formats
	// a value of the secret.
	switch _, isDB := xdsapi.SecretFromDBSecretName(name); {
	case isDB:
		gs := s.GetGenericSecret()
		if gs == nil {
			d.fail(kind, name, errors.New("want a generic secret"))
			return
		}
		for _, key := range []string{xdsapi.SecretUsernameKey, xdsapi.SecretPasswordKey} {
			if _, ok := inline(gs.GetSecrets()[key]); !ok {
				d.fail(kind, name, fmt.Errorf("no inline %s", key))
				return
			}
		}
		if u, _ := inline(gs.GetSecrets()[xdsapi.SecretUsernameKey]); u == "" {
			d.fail(kind, name, errors.New("empty username"))
			return
		}
	case name == xdsapi.NodeTLSSecret:
		tc := s.GetTlsCertificate()
		if tc == nil {
			d.fail(kind, name, errors.New("want a TLS certificate"))
			return
		}
		cert, ok1 := inline(tc.GetCertificateChain())
		key, ok2 := inline(tc.GetPrivateKey())
		if !ok1 || !ok2 {
			d.fail(kind, name, errors.New("want an inline certificate_chain and private_key"))
			return
		}
		// The parse error names no key material.
		if _, err := tls.X509KeyPair([]byte(cert), []byte(key)); err != nil {
			d.fail(kind, name, fmt.Errorf("not a valid certificate and key pair: %w", err))
			return
		}
	case name == xdsapi.ConnectKeysSecret:
		ck, err := decodeConnectKeys(&s)
		if err != nil {
			d.fail(kind, name, err)
			return
		}
		d.connect = ck
	default:
		// A kind of secret this node does not know: nothing it decodes
		// refers to it.
	}
	d.secrets[name] = &s
}

// ConnectKeys finds the connect-keys secret in a resource set and decodes
// it on its own; ok is false when the set has none or it does not decode.
// A node that rejects a set can still apply the revocations in it (see
// node.Node.RestrictConnectKeys).
func ConnectKeys(res map[string][]*anypb.Any) (keys *xdsapi.ConnectKeys, ok bool) {
	for _, a := range res[resource.SecretType] {
		var s tlsv3.Secret
		if a.GetTypeUrl() != resource.SecretType || a.UnmarshalTo(&s) != nil || s.GetName() != xdsapi.ConnectKeysSecret {
			continue
		}
		ck, err := decodeConnectKeys(&s)
		return ck, err == nil
	}
	return nil, false
}

// decodeConnectKeys decodes the connect-keys secret's payload, strictly.
// Its errors say where the JSON went wrong, never what it holds.
func decodeConnectKeys(s *tlsv3.Secret) (*xdsapi.ConnectKeys, error) {
	payload, ok := inline(s.GetGenericSecret().GetSecrets()[xdsapi.ConnectKeysKey])
	if !ok {
		return nil, fmt.Errorf("want a generic secret with an inline %s", xdsapi.ConnectKeysKey)
	}
	var ck xdsapi.ConnectKeys
	dec := json.NewDecoder(strings.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ck); err != nil {
		return nil, fmt.Errorf("%s is not valid connect-keys JSON at offset %d", xdsapi.ConnectKeysKey, dec.InputOffset())
	}
	return &ck, nil
}

// inline returns the inline bytes or string of a data source.
func inline(ds *core.DataSource) (string, bool) {
	switch v := ds.GetSpecifier().(type) {
	case *core.DataSource_InlineString:
		return v.InlineString, true
	case *core.DataSource_InlineBytes:
		return string(v.InlineBytes), true
	}
	return "", false
}

func (d *decoder) listener(i int, a *anypb.Any) {
	const kind = "listener"
	var l listener.Listener
	if !d.unpack(kind, i, a, resource.ListenerType, &l) {
		return
	}
	name := l.GetName()
	taken := slices.ContainsFunc(d.listeners, func(o decodedListener) bool { return o.name == name })
	if !d.named(kind, i, "name", name, taken) {
		return
	}
	if err := l.Validate(); err != nil {
		d.fail(kind, name, err)
		return
	}
	port := l.GetAddress().GetSocketAddress().GetPortValue()
	if port < 1 || port > 65535 {
		d.fail(kind, name, fmt.Errorf("port must be 1-65535, got %d", port))
		return
	}
	for _, o := range d.listeners {
		if o.port == port {
			d.fail(kind, name, fmt.Errorf("port %d is also used by listener %q", port, o.name))
			return
		}
	}
	lc, err := xdsapi.DecodeListenerConfig(&l)
	if err == nil {
		err = validateListener(name, lc)
	}
	if err != nil {
		d.fail(kind, name, err)
		return
	}
	d.listeners = append(d.listeners, decodedListener{name: name, port: port, cfg: lc})
}

func validateListener(name string, c xdsapi.ListenerConfig) error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Proxy == "" {
		bad("proxy is required")
	}
	if c.Endpoint == "" {
		bad("endpoint is required")
	}
	if c.Proxy != "" && c.Endpoint != "" && xdsapi.ListenerName(c.Proxy, c.Endpoint) != name {
		bad("payload is for %q", xdsapi.ListenerName(c.Proxy, c.Endpoint))
	}
	if c.TargetRole != vocab.TargetRoleReadWrite && c.TargetRole != vocab.TargetRoleReadOnly {
		bad("target_role must be READ_WRITE or READ_ONLY, got %q", c.TargetRole)
	}
	if c.Cluster == "" {
		bad("cluster is required")
	}
	if len(c.Auth) == 0 {
		bad("at least one auth entry is required")
	}
	for j, a := range c.Auth {
		if a.Secret == "" {
			bad("auth[%d].secret is required", j)
		}
		if a.IAMAuth != vocab.IAMAuthDisabled && a.IAMAuth != vocab.IAMAuthRequired {
			bad("auth[%d].iam_auth must be DISABLED or REQUIRED, got %q", j, a.IAMAuth)
		}
		if a.ClientPasswordAuthType != vocab.AuthNativePassword && a.ClientPasswordAuthType != vocab.AuthCachingSHA2Password {
			bad("auth[%d].client_password_auth_type must be %s or %s, got %q", j, vocab.AuthNativePassword, vocab.AuthCachingSHA2Password, a.ClientPasswordAuthType)
		}
	}
	if c.IdleClientTimeoutSec < 0 || c.IdleClientTimeoutSec > maxSeconds {
		bad("idle_client_timeout_seconds must be 0-%d, got %d", maxSeconds, c.IdleClientTimeoutSec)
	}
	if c.MaxClientConnections < 0 {
		bad("max_client_connections must not be negative, got %d", c.MaxClientConnections)
	}
	if c.TLSSecret != "" && c.TLSSecret != xdsapi.NodeTLSSecret {
		bad("tls_secret must be empty or %s, got %q", xdsapi.NodeTLSSecret, c.TLSSecret)
	}
	if c.ConnectSecret != "" && c.ConnectSecret != xdsapi.ConnectKeysSecret {
		bad("connect_secret must be empty or %s, got %q", xdsapi.ConnectKeysSecret, c.ConnectSecret)
	}
	return errors.Join(errs...)
}

// complete reports whether the set has everything listener l needs: its
// cluster, its load assignment and its secrets.
func (d *decoder) complete(l decodedListener) bool {
	if _, ok := d.clusters[l.cfg.Cluster]; !ok {
		return false
	}
	if _, ok := d.assignments[l.cfg.Cluster]; !ok {
		return false
	}
	for _, s := range l.cfg.SecretNames() {
		if _, ok := d.secrets[s]; !ok {
			return false
		}
	}
	return true
}

// build assembles the configuration from the active listeners.
func (d *decoder) build(version string, opts Options) (*config.Config, []string, error) {
	cfg := &config.Config{Version: version, Node: opts.Node, Secrets: []config.Secret{}, Proxies: []config.Proxy{}}
	byProxy := map[string][]decodedListener{}
	var skipped []string
	for _, l := range d.listeners {
		if !d.complete(l) {
			skipped = append(skipped, l.name)
			continue
		}
		byProxy[l.cfg.Proxy] = append(byProxy[l.cfg.Proxy], l)
	}
	slices.Sort(skipped)
	secrets := map[string]config.Secret{}
	useTLS, useConnect := false, false
	for _, name := range slices.Sorted(maps.Keys(byProxy)) {
		ls := byProxy[name]
		// The proxy's own endpoint first, then the others by name.
		slices.SortFunc(ls, func(a, b decodedListener) int {
			return cmp.Or(cmp.Compare(boolInt(b.cfg.Endpoint == xdsapi.DefaultEndpoint), boolInt(a.cfg.Endpoint == xdsapi.DefaultEndpoint)), cmp.Compare(a.cfg.Endpoint, b.cfg.Endpoint))
		})
		first := ls[0].cfg
		for _, l := range ls[1:] {
			if !sameProxy(first, l.cfg) {
				return nil, nil, fmt.Errorf("listener %q: proxy settings differ from those of listener %q", l.name, ls[0].name)
			}
		}
		p := proxy(first, d.clusters[first.Cluster], d.assignments[first.Cluster], opts.Node.Zone)
		for _, l := range ls {
			p.Endpoints = append(p.Endpoints, config.Endpoint{
				Name:       l.cfg.Endpoint,
				Address:    net.JoinHostPort(opts.ListenHost, strconv.Itoa(int(l.port))),
				TargetRole: l.cfg.TargetRole,
			})
			useTLS = useTLS || l.cfg.TLSSecret != ""
			useConnect = useConnect || l.cfg.ConnectSecret != ""
		}
		for _, a := range first.Auth {
			gs := d.secrets[xdsapi.DBSecretName(a.Secret)].GetGenericSecret().GetSecrets()
			user, _ := inline(gs[xdsapi.SecretUsernameKey])
			pass, _ := inline(gs[xdsapi.SecretPasswordKey])
			secrets[a.Secret] = config.Secret{Name: a.Secret, Username: user, Password: pass}
		}
		cfg.Proxies = append(cfg.Proxies, p)
	}
	for _, name := range slices.Sorted(maps.Keys(secrets)) {
		cfg.Secrets = append(cfg.Secrets, secrets[name])
	}
	if useTLS {
		// The pushed certificate replaces the node's own (files or
		// self-signed): the control plane manages it for every node.
		tc := d.secrets[xdsapi.NodeTLSSecret].GetTlsCertificate()
		cert, _ := inline(tc.GetCertificateChain())
		key, _ := inline(tc.GetPrivateKey())
		cfg.Node.TLS = config.TLS{CertPEM: cert, KeyPEM: key}
	}
	if useConnect {
		cfg.Connect = d.connect
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, nil, fmt.Errorf("decoded configuration: %w", err)
	}
	return cfg, skipped, nil
}

// sameProxy reports whether two listeners of a proxy agree on the
// proxy-wide settings.
func sameProxy(a, b xdsapi.ListenerConfig) bool {
	return a.Cluster == b.Cluster && slices.Equal(a.Auth, b.Auth) &&
		a.RequireTLS == b.RequireTLS && a.IdleClientTimeoutSec == b.IdleClientTimeoutSec &&
		a.MaxClientConnections == b.MaxClientConnections && a.DebugLogging == b.DebugLogging &&
		a.TLSSecret == b.TLSSecret && a.ConnectSecret == b.ConnectSecret
}

func proxy(lc xdsapi.ListenerConfig, pc xdsapi.PoolConfig, targets []config.Target, zone string) config.Proxy {
	p := config.Proxy{
		Name:                 lc.Proxy,
		EngineFamily:         "MYSQL",
		RequireTLS:           lc.RequireTLS,
		IdleClientTimeout:    config.Duration(time.Duration(lc.IdleClientTimeoutSec) * time.Second),
		MaxClientConnections: lc.MaxClientConnections,
		DebugLogging:         lc.DebugLogging,
		Targets:              slices.Clone(targets),
		Pool: config.PoolConfig{
			MaxConnectionsPercent:     pc.MaxConnectionsPercent,
			MaxIdleConnectionsPercent: pc.MaxIdleConnectionsPercent,
			ConnectionBorrowTimeout:   config.Duration(time.Duration(pc.ConnectionBorrowTimeoutSec) * time.Second),
			InitQuery:                 pc.InitQuery,
			SessionPinningFilters:     slices.Clone(pc.SessionPinningFilters),
		},
	}
	if zone != "" {
		// The node serves the proxies that list its zone; the control plane
		// sends only those.
		p.Zones = []string{zone}
	}
	for _, a := range lc.Auth {
		p.Auth = append(p.Auth, config.Auth{Secret: a.Secret, IAMAuth: a.IAMAuth, ClientPasswordAuthType: a.ClientPasswordAuthType})
	}
	return p
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
