// Package node runs a data-plane node: it turns a configuration into
// targets, routers and listening endpoints, serves /metrics and /healthz,
// and applies new configurations.
package node

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dbproxy/dbproxy/dataplane/backend"
	"github.com/dbproxy/dbproxy/dataplane/config"
	"github.com/dbproxy/dbproxy/dataplane/metrics"
	"github.com/dbproxy/dbproxy/dataplane/mysql"
	"github.com/dbproxy/dbproxy/dataplane/proxy"
	"github.com/dbproxy/dbproxy/dataplane/tokenauth"
	"github.com/dbproxy/dbproxy/internal/vocab"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// DefaultVersion is announced to clients until a target's version is known.
const DefaultVersion = "5.5.5-10.11.0-MariaDB-dbproxy"

// Options configure a Node.
type Options struct {
	Logger  hclog.Logger
	Metrics *metrics.Metrics
	// Listen opens endpoint listeners (tests inject one); nil uses net.Listen.
	Listen func(network, addr string) (net.Listener, error)
	// MonitorInterval overrides the targets' health check period.
	MonitorInterval time.Duration
	// WriterDiscoveryInterval is the health check period of every target
	// of a proxy while it has no usable writer (default
	// backend.DefaultDiscoveryInterval, 50ms): it bounds how long writes
	// wait after a replica is promoted.
	WriterDiscoveryInterval time.Duration
	// DrainTimeout bounds how long clients of a replaced or removed proxy
	// keep their sessions (default 5m).
	DrainTimeout time.Duration
}

// Node is one running data-plane node.
type Node struct {
	opts    Options
	log     hclog.Logger
	metrics *metrics.Metrics
	buffers *mysql.BufferPool
	ids     atomic.Uint64
	tls     *nodeTLS
	rsaKey  *rsa.PrivateKey
	rsaPEM  []byte
	fast    *mysql.FastAuthCache
	// retiring tracks proxies draining in the background; stopRetiring
	// cuts their drains short when the node closes.
	retiring     sync.WaitGroup
	retireCtx    context.Context
	stopRetiring context.CancelFunc

	// tokens verifies connect tokens with the keys of the configuration
	// being applied or served; it changes without restarting proxies.
	tokens atomic.Pointer[tokenauth.Verifier]

	mu struct {
		sync.Mutex
		cfg     *config.Config
		proxies map[string]*runningProxy
		admin   *http.Server
		adminLn net.Listener
	}
}

type runningProxy struct {
	cfg       config.Proxy
	targets   []*backend.Target
	router    *backend.Router
	endpoints []*runningEndpoint
	limits    *proxy.Limits
}

type runningEndpoint struct {
	ep *proxy.Endpoint
	ln net.Listener
}

// New returns a node; Apply starts serving a configuration.
func New(opts Options) (*Node, error) {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	if opts.Listen == nil {
		// No TCP keep-alive on client connections: setting it costs three
		// system calls per accepted connection, and idle_client_timeout
		// already ends connections whose client went away.
		lc := net.ListenConfig{KeepAlive: -1}
		opts.Listen = func(network, addr string) (net.Listener, error) {
			return lc.Listen(context.Background(), network, addr)
		}
	}
	key, pemKey, err := rsaKey()
	if err != nil {
		return nil, err
	}
	n := &Node{opts: opts, log: opts.Logger, metrics: opts.Metrics, buffers: mysql.NewBufferPool(16 << 10),
		rsaKey: key, rsaPEM: pemKey, fast: mysql.NewFastAuthCache(), tls: newNodeTLS()}
	n.mu.proxies = map[string]*runningProxy{}
	n.retireCtx, n.stopRetiring = context.WithCancel(context.Background())
	return n, nil
}

// Metrics returns the node's metrics.
func (n *Node) Metrics() *metrics.Metrics { return n.metrics }

// Apply serves cfg. The first call starts the admin listener and every
// proxy; later calls replace proxies whose configuration changed and drain
// the removed ones.
func (n *Node) Apply(ctx context.Context, cfg *config.Config) error {
	if err := cfg.Validate(); err != nil {
		// The running configuration stays, but not a key the refused one
		// revokes.
		n.RestrictConnectKeys(cfg.Connect)
		return fmt.Errorf("invalid config: %w", err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	tokens, err := tokenauth.New(cfg.Connect, nil)
	if err != nil {
		n.restrictConnectKeysLocked(cfg.Connect)
		return err
	}
	undoTLS, err := n.tls.update(cfg.Node.TLS)
	if err != nil {
		n.restrictConnectKeysLocked(cfg.Connect)
		return err
	}
	n.tokens.Store(tokens)
	undo := func() {
		undoTLS()
		// The old configuration stays, with only the keys both agree
		// on: a key the new one revokes stays revoked.
		n.restrictConnectKeysLocked(cfg.Connect)
	}
	if n.mu.admin == nil && cfg.Node.AdminAddress != "" {
		if err := n.startAdminLocked(cfg.Node.AdminAddress); err != nil {
			undo()
			return err
		}
	}
	next := map[string]*runningProxy{}
	var started, replaced []*runningProxy
	fail := func(err error) error {
		undo()
		// Undo: stop what this call started and bring back what it
		// replaced, from the running configuration.
		for _, p := range started {
			p.stopAccepting()
			n.retire(p, 0)
		}
		for _, old := range replaced {
			if rp, err := n.startProxy(n.mu.cfg, old.cfg); err == nil {
				n.mu.proxies[old.cfg.Name] = rp
			} else {
				n.log.Error("cannot restore proxy after a failed apply", "proxy", old.cfg.Name, "error", err)
				delete(n.mu.proxies, old.cfg.Name)
			}
			n.retire(old, n.drainTimeout())
		}
		return err
	}
	for _, pc := range cfg.Proxies {
		if !servesZone(pc, cfg.Node.Zone) {
			continue
		}
		old, ok := n.mu.proxies[pc.Name]
		if ok && sameProxy(n.mu.cfg, cfg, old.cfg, pc) {
			next[pc.Name] = old
			continue
		}
		if ok {
			// Free the addresses before the replacement binds them; the
			// old proxy's clients finish on it (see retire).
			old.stopAccepting()
			replaced = append(replaced, old)
		}
		rp, err := n.startProxy(cfg, pc)
		if err != nil {
			return fail(fmt.Errorf("proxy %s: %w", pc.Name, err))
		}
		started = append(started, rp)
		next[pc.Name] = rp
	}
	for _, old := range replaced {
		n.retire(old, n.drainTimeout())
	}
	for name, old := range n.mu.proxies {
		if _, ok := next[name]; !ok {
			old.stopAccepting()
			n.retire(old, n.drainTimeout())
		}
	}
	n.mu.proxies = next
	n.mu.cfg = cfg
	return nil
}

// drainTimeout bounds how long clients of a replaced or removed proxy keep
// their sessions.
func (n *Node) drainTimeout() time.Duration {
	if n.opts.DrainTimeout > 0 {
		return n.opts.DrainTimeout
	}
	return 5 * time.Minute
}

// stopAccepting closes the proxy's listeners.
func (rp *runningProxy) stopAccepting() {
	for _, e := range rp.endpoints {
		e.ln.Close()
	}
}

// retire drains a proxy in the background: its clients may finish until
// the timeout, then it closes.
func (n *Node) retire(rp *runningProxy, timeout time.Duration) {
	n.retiring.Add(1)
	go func() {
		defer n.retiring.Done()
		ctx, cancel := context.WithTimeout(n.retireCtx, timeout)
		defer cancel()
		n.stopProxy(ctx, rp)
	}()
}

func servesZone(p config.Proxy, zone string) bool {
	if len(p.Zones) == 0 || zone == "" {
		return true
	}
	for _, z := range p.Zones {
		if z == zone {
			return true
		}
	}
	return false
}

// sameProxy reports whether a proxy and the secrets it uses are unchanged.
func sameProxy(oldCfg, newCfg *config.Config, a, b config.Proxy) bool {
	if oldCfg == nil || fmt.Sprintf("%+v", a) != fmt.Sprintf("%+v", b) {
		return false
	}
	for _, au := range b.Auth {
		x, _ := oldCfg.SecretByName(au.Secret)
		y, _ := newCfg.SecretByName(au.Secret)
		if x != y {
			return false
		}
	}
	return true
}

func (n *Node) startProxy(cfg *config.Config, pc config.Proxy) (*runningProxy, error) {
	creds := map[string]mysql.Credential{}
	passwords := map[string]string{}
	var monitorUser string
	for _, a := range pc.Auth {
		sec, ok := cfg.SecretByName(a.Secret)
		if !ok {
			return nil, fmt.Errorf("unknown secret %q", a.Secret)
		}
		method := mysql.AuthNativePassword
		if a.ClientPasswordAuthType == vocab.AuthCachingSHA2Password {
			method = mysql.AuthCachingSHA2Password
		}
		if prev, dup := creds[sec.Username]; dup && prev.Token != nil {
			// Validate refuses two blocks for one username; should
			// they get here, IAM authentication wins over a password.
			continue
		}
		cred := mysql.Credential{Password: sec.Password, Method: method}
		if a.IAMAuth == vocab.IAMAuthRequired {
			// Only a connect token logs in as this user, never the
			// password; the keys are the node's current ones.
			cred.Token = n.tokenCheck(pc.Name, sec.Username)
		}
		creds[sec.Username] = cred
		passwords[sec.Username] = sec.Password
		if monitorUser == "" {
			monitorUser = sec.Username
		}
	}
	log := n.log.With("proxy", pc.Name)
	rp := &runningProxy{cfg: pc, limits: &proxy.Limits{MaxClients: int64(pc.MaxClientConnections)}}
	for _, tc := range pc.Targets {
		rp.targets = append(rp.targets, backend.NewTarget(backend.TargetOptions{
			Proxy: pc.Name, Target: tc, Pool: pc.Pool,
			Password:        func(u string) (string, bool) { p, ok := passwords[u]; return p, ok },
			MonitorUser:     monitorUser,
			MonitorInterval: n.opts.MonitorInterval, DiscoveryInterval: n.opts.WriterDiscoveryInterval,
			Logger: log, Metrics: n.metrics, Buffers: n.buffers,
			OnChange: func() {
				if rp.router != nil {
					rp.router.Notify()
				}
			},
		}))
	}
	rp.router = backend.NewRouter(backend.RouterOptions{Proxy: pc.Name, Zone: cfg.Node.Zone, Targets: rp.targets, Logger: log, Metrics: n.metrics})
	for _, t := range rp.targets {
		t.Start()
	}
	greeting := mysql.AuthNativePassword
	if len(pc.Auth) > 0 && allSHA2(pc.Auth) {
		greeting = mysql.AuthCachingSHA2Password
	}
	server := &mysql.ServerConfig{
		GreetingPlugin: greeting,
		Caps:           proxy.ClientCaps, Collation: backend.DefaultCollation, TLS: n.tls.config, RequireTLS: pc.RequireTLS,
		RSAKey: n.rsaKey, RSAPublicPEM: n.rsaPEM, FastAuth: n.fast,
		Lookup: func(user string) (mysql.Credential, bool) { c, ok := creds[user]; return c, ok },
	}
	version := func() string {
		for _, t := range rp.targets {
			if v := t.Health().Version; v != "" {
				if strings.Contains(v, "MariaDB") && !strings.HasPrefix(v, "5.5.5-") {
					// MariaDB 10+ is announced with the 5.5.5- prefix, as the
					// server itself does, so that old clients parse it.
					return "5.5.5-" + v
				}
				return v
			}
		}
		return DefaultVersion
	}
	for _, ec := range pc.Endpoints {
		ln, err := n.listen(ec.Address)
		if err != nil {
			// Closes the listeners opened so far, so that a restore
			// can bind the same addresses. No drain: a client that
			// reached an earlier endpoint of this proxy in the meantime
			// must not hold up Apply.
			done, cancel := context.WithCancel(context.Background())
			cancel()
			n.stopProxy(done, rp)
			return nil, fmt.Errorf("listen on %s: %w", ec.Address, err)
		}
		ep := proxy.NewEndpoint(proxy.Options{
			Proxy: pc, Endpoint: ec, Router: rp.router, Limits: rp.limits, Server: server, Version: version,
			HandshakeTimeout: cfg.Node.HandshakeTimeout.D(), MaxPacket: cfg.Node.MaxPacketSize,
			Logger: log, Metrics: n.metrics, Buffers: n.buffers, IDs: &n.ids,
		})
		rp.endpoints = append(rp.endpoints, &runningEndpoint{ep: ep, ln: ln})
		go func() {
			if err := ep.Serve(ln); err != nil {
				log.Error("endpoint stopped", "endpoint", ec.Name, "error", err)
			}
		}()
		log.Info("endpoint listening", "endpoint", ec.Name, "address", ln.Addr().String(), "role", ec.TargetRole)
	}
	return rp, nil
}

// RestrictConnectKeys keeps, of the running configuration's connect keys,
// only those keys also has (tokenauth.Common): what a node does with the
// keys of a configuration it rejects, so that the revocations in it take
// effect while additions wait for a configuration it accepts. Nil keys
// (a configuration whose proxies need none) leave the running keys.
func (n *Node) RestrictConnectKeys(keys *xdsapi.ConnectKeys) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.restrictConnectKeysLocked(keys)
}

func (n *Node) restrictConnectKeysLocked(keys *xdsapi.ConnectKeys) {
	var cur *xdsapi.ConnectKeys
	if n.mu.cfg != nil {
		cur = n.mu.cfg.Connect
	}
	if keys != nil {
		keys = tokenauth.Common(cur, keys)
	} else {
		// A configuration without connect keys says nothing about them
		// (its proxies need none): the running ones stay.
		keys = cur
	}
	common, err := tokenauth.New(keys, nil)
	if err != nil {
		common = nil // refuse every token rather than keep revoked keys
	}
	n.tokens.Store(common)
}

// tokenCheck returns the check of connect tokens for logging in as dbUser
// through proxy.
func (n *Node) tokenCheck(proxy, dbUser string) func(string) error {
	return func(token string) error {
		id, err := n.tokens.Load().Check(context.Background(), token, proxy, dbUser)
		if err != nil {
			return err
		}
		n.log.Debug("connect token accepted", "proxy", proxy, "db_user", dbUser, "access_key_id", id.AccessKeyID, "iam_user", id.User)
		return nil
	}
}

// allSHA2 reports whether every auth block asks for caching_sha2_password.
func allSHA2(auth []config.Auth) bool {
	for _, a := range auth {
		if a.ClientPasswordAuthType != vocab.AuthCachingSHA2Password {
			return false
		}
	}
	return true
}

func (n *Node) stopProxy(ctx context.Context, rp *runningProxy) {
	// The node closes the listeners itself: an endpoint whose Serve has
	// not started yet would close its listener only once it does, after
	// the node said the proxy stopped.
	rp.stopAccepting()
	for _, e := range rp.endpoints {
		e.ep.Drain(ctx)
	}
	for _, t := range rp.targets {
		t.Close()
	}
}

// Addr returns the bound address of an endpoint (useful with port 0).
func (n *Node) Addr(proxyName, endpoint string) (string, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	rp, ok := n.mu.proxies[proxyName]
	if !ok {
		return "", false
	}
	for i, e := range rp.endpoints {
		if rp.cfg.Endpoints[i].Name == endpoint {
			return e.ln.Addr().String(), true
		}
	}
	return "", false
}

// Config returns the configuration being served (nil before the first
// Apply). Callers must not modify it.
func (n *Node) Config() *config.Config {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.cfg
}

// AdminAddr returns the admin listener's address.
func (n *Node) AdminAddr() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.adminLn == nil {
		return ""
	}
	return n.mu.adminLn.Addr().String()
}

// Router returns the router of a proxy (for tests and status).
func (n *Node) Router(proxyName string) *backend.Router {
	n.mu.Lock()
	defer n.mu.Unlock()
	if rp, ok := n.mu.proxies[proxyName]; ok {
		return rp.router
	}
	return nil
}

// Targets returns the targets of a proxy (for tests and status).
func (n *Node) Targets(proxyName string) []*backend.Target {
	n.mu.Lock()
	defer n.mu.Unlock()
	if rp, ok := n.mu.proxies[proxyName]; ok {
		return rp.targets
	}
	return nil
}

func (n *Node) startAdminLocked(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("admin listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(prometheus.Gatherers{n.metrics.Registry, prometheus.GathererFunc(n.gatherPools)}, promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		n.mu.Lock()
		ok := n.mu.cfg != nil
		n.mu.Unlock()
		if !ok {
			http.Error(w, "no configuration applied", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	n.mu.admin, n.mu.adminLn = srv, ln
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("admin server stopped", "error", err)
		}
	}()
	n.log.Info("admin listening", "address", ln.Addr().String())
	return nil
}

// Close stops every proxy (draining clients until ctx ends) and the admin
// listener.
func (n *Node) Close(ctx context.Context) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, rp := range n.mu.proxies {
		n.stopProxy(ctx, rp)
	}
	n.mu.proxies = map[string]*runningProxy{}
	n.stopRetiring()
	n.retiring.Wait()
	if n.mu.admin != nil {
		_ = n.mu.admin.Shutdown(ctx)
		n.mu.admin = nil
	}
}

// rebindWait bounds how long a bind that finds its address in use is
// retried.
const rebindWait = 2 * time.Second

// listen binds addr, retrying for a short while when the address is in
// use: a replaced proxy has just closed its listener on the same address,
// and another process probing ports can hold it for a moment (seen in
// tests); refusing the whole configuration for that would NACK a change
// that serves fine a few hundred milliseconds later. An address held for
// good still fails, after rebindWait.
func (n *Node) listen(addr string) (net.Listener, error) {
	deadline := time.Now().Add(rebindWait)
	pause := 10 * time.Millisecond
	for {
		ln, err := n.opts.Listen("tcp", addr)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			return ln, err
		}
		n.log.Debug("address in use; binding again", "address", addr)
		time.Sleep(pause)
		pause = min(2*pause, 200*time.Millisecond)
	}
}
