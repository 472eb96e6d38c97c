// Package controlplane wires the control plane together: the store in the
// data directory (encrypted at rest), the root credentials and the CA
// created at first start, the admin API over HTTPS and the xDS server over
// gRPC with TLS, and the loop that republishes node snapshots after every
// store commit.
package controlplane

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/dbproxy/dbproxy/controlplane/api"
	"github.com/dbproxy/dbproxy/controlplane/health"
	"github.com/dbproxy/dbproxy/controlplane/identity"
	"github.com/dbproxy/dbproxy/controlplane/metrics"
	"github.com/dbproxy/dbproxy/controlplane/pki"
	"github.com/dbproxy/dbproxy/controlplane/snapshot"
	"github.com/dbproxy/dbproxy/controlplane/store"
	"github.com/dbproxy/dbproxy/controlplane/xds"
	"github.com/dbproxy/dbproxy/internal/apiclient"
	"github.com/dbproxy/dbproxy/internal/atomicfile"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/seal"
	"github.com/dbproxy/dbproxy/internal/sigv4"
)

// Files in the data directory.
const (
	StateFile           = "state.db"
	MasterKeyFile       = "master.key"
	RootCredentialsFile = "root-credentials.json"
)

// MasterKeyEnv names the environment variable that may hold the master key
// (base64 of 32 bytes) instead of the key file.
const MasterKeyEnv = "DBPROXY_MASTER_KEY"

// Options configure a control plane.
type Options struct {
	// DataDir holds the store, the master key (unless given otherwise),
	// the CA and the root credentials.
	DataDir string
	// APIAddress and XDSAddress are where the admin API (HTTPS) and the
	// xDS server (gRPC over TLS) listen; port 0 picks a free port.
	APIAddress, XDSAddress string
	// Hosts are extra names and addresses for the server certificate.
	Hosts []string
	// TLSCertFile and TLSKeyFile, when set, are the operator's
	// certificate for the API and the xDS server instead of one from the
	// control plane's CA. Node certificates still come from the CA.
	TLSCertFile, TLSKeyFile string
	// MasterKeyFile overrides <data-dir>/master.key; $DBPROXY_MASTER_KEY
	// overrides both.
	MasterKeyFile string
	// Region is the SigV4 region requests and tokens are signed for.
	Region string
	// PortMin and PortMax bound the ports allocated to proxies.
	PortMin, PortMax int
	// MetricsAddress, when set, serves Prometheus /metrics and /healthz
	// over plain HTTP there (no authentication: bind it privately).
	MetricsAddress string
	// Store names the store backend: StoreBolt (the default, a file in
	// DataDir) or StoreEtcd (shared by the replicas on one etcd prefix;
	// DataDir still holds the master key, the CA and the root
	// credentials).
	Store string
	// Etcd configures the etcd backend.
	Etcd   store.EtcdOptions
	Logger hclog.Logger
	Now    func() time.Time
}

// Store backends.
const (
	StoreBolt = "bbolt"
	StoreEtcd = "etcd"
)

// RootCredentials is the content of root-credentials.json, a key file.
type RootCredentials = apiclient.KeyFile

// Server is a running control plane.
type Server struct {
	opts   Options
	log    hclog.Logger
	store  store.Store
	ca     *pki.CA
	xds    *xds.Server
	health *health.Service
	apiLn  net.Listener
	// metricsLn and metricsHTTP serve /metrics when MetricsAddress is set.
	metricsLn   net.Listener
	metricsHTTP *http.Server
	xdsLn       net.Listener
	http        *http.Server
	grpc        *grpc.Server
	root        RootCredentials
	stop        context.CancelFunc
	wg          sync.WaitGroup
	closeMu     sync.Once
	// snapshots builds what each node serves, memoised per revision.
	snapshots *snapshot.Builder
}

// Start opens the data directory, bootstraps it on first start, and
// serves until Close.
func Start(ctx context.Context, opts Options) (_ *Server, err error) {
	if opts.DataDir == "" {
		return nil, errors.New("controlplane: a data directory is required")
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Region == "" {
		opts.Region = sigv4.DefaultRegion
	}
	if opts.MasterKeyFile == "" {
		opts.MasterKeyFile = filepath.Join(opts.DataDir, MasterKeyFile)
	}
	if opts.APIAddress == "" {
		opts.APIAddress = "127.0.0.1:8443"
	}
	if opts.XDSAddress == "" {
		opts.XDSAddress = "127.0.0.1:18000"
	}
	log := opts.Logger
	if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	masterKey, keyCreated, err := seal.LoadOrCreateMasterKey(MasterKeyEnv, opts.MasterKeyFile)
	if err != nil {
		return nil, err
	}
	if keyCreated {
		log.Info("generated a master key", "path", opts.MasterKeyFile)
	}
	sealer, err := seal.New(derive(masterKey, "store"))
	if err != nil {
		return nil, err
	}
	inner, err := openStore(ctx, opts)
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, log: log, store: store.Encrypted(inner, sealer, model.SensitiveKinds...)}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if err = s.checkMasterKey(ctx); err != nil {
		if keyCreated {
			// A key made just now seals nothing yet; left in place it
			// would be taken for the right one at the next start.
			_ = os.Remove(opts.MasterKeyFile)
		}
		return nil, err
	}
	ca, created, err := pki.LoadOrCreate(opts.DataDir, derive(masterKey, "node-tls"), opts.Now())
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("generated the control plane CA", "path", filepath.Join(opts.DataDir, pki.CAFile))
	}
	s.ca = ca
	s.snapshots = snapshot.New(snapshot.Options{Store: s.store, CA: ca, Region: opts.Region, Now: opts.Now})
	var serverCert tls.Certificate
	switch {
	case opts.TLSCertFile != "" || opts.TLSKeyFile != "":
		if opts.TLSCertFile == "" || opts.TLSKeyFile == "" {
			return nil, errors.New("controlplane: give both a TLS certificate and its key, or neither")
		}
		if serverCert, err = tls.LoadX509KeyPair(opts.TLSCertFile, opts.TLSKeyFile); err != nil {
			return nil, fmt.Errorf("load the API's TLS certificate: %w", err)
		}
	default:
		if serverCert, err = ca.ServerCert(opts.Hosts, opts.Now()); err != nil {
			return nil, err
		}
	}
	if s.apiLn, err = net.Listen("tcp", opts.APIAddress); err != nil {
		return nil, fmt.Errorf("listen for the API: %w", err)
	}
	if s.xdsLn, err = net.Listen("tcp", opts.XDSAddress); err != nil {
		return nil, fmt.Errorf("listen for xDS: %w", err)
	}
	if opts.MetricsAddress != "" {
		if s.metricsLn, err = net.Listen("tcp", opts.MetricsAddress); err != nil {
			return nil, fmt.Errorf("listen for metrics: %w", err)
		}
	}
	if err := s.bootstrapRoot(ctx); err != nil {
		return nil, err
	}

	verifier := &sigv4.Verifier{Lookup: s.lookupKey, Region: opts.Region, Now: opts.Now}
	nodeAuth := identity.NewNodeAuthorizer(verifier, s.store, log.Named("nodeauth"), opts.Now)
	expected, err := loadNodes(opts.DataDir)
	if err != nil {
		log.Warn("not waiting for the nodes of the last run", "error", err)
	}
	s.xds, err = xds.New(xds.Options{
		Logger:     log.Named("xds"),
		Authorizer: nodeAuth,
		Build:      s.snapshots.Build,
		Now:        opts.Now,
		Expected:   expected,
	})
	if err != nil {
		return nil, err
	}
	s.health, err = health.New(health.Options{Authorizer: nodeAuth, Logger: log.Named("hds"), Now: opts.Now})
	if err != nil {
		return nil, err
	}
	m := metrics.New(metrics.Options{Nodes: s.xds.Nodes, Revision: s.store.Revision})
	handler, err := api.New(api.Options{
		Store: s.store, Fleet: fleet{s.xds}, Logger: log.Named("api"), Region: opts.Region,
		Now: opts.Now, PortMin: opts.PortMin, PortMax: opts.PortMax,
		TargetHealth: s.targetHealth, Observe: m.ObserveRequest,
	})
	if err != nil {
		return nil, err
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS12}
	s.http = &http.Server{
		Handler:           handler,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		// Bodies are read before the signature is checked: bound how
		// long an unauthenticated client may take to send one.
		ReadTimeout: 30 * time.Second,
		IdleTimeout: 2 * time.Minute,
		ErrorLog:    log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	s.grpc = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsCfg.Clone())),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	s.xds.Register(s.grpc)
	s.health.Register(s.grpc)

	runCtx, stop := context.WithCancel(context.Background())
	s.stop = stop
	s.wg.Add(4)
	go func() {
		defer s.wg.Done()
		s.keepNodes(runCtx)
	}()
	if s.metricsLn != nil {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", m.Handler())
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
		s.metricsHTTP = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
			WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.metricsHTTP.Serve(s.metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server stopped", "error", err)
			}
		}()
	}
	go func() {
		defer s.wg.Done()
		if err := s.http.ServeTLS(s.apiLn, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("API server stopped", "error", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		if err := s.grpc.Serve(s.xdsLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			log.Error("xDS server stopped", "error", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		s.republish(runCtx)
	}()
	log.Info("control plane serving", "api", "https://"+s.APIAddr(), "xds", s.XDSAddr(), "data_dir", opts.DataDir, "store", storeName(opts), "revision", s.store.Revision())
	return s, nil
}

// openStore opens the backend opts.Store names.
func openStore(ctx context.Context, opts Options) (store.Store, error) {
	switch opts.Store {
	case "", StoreBolt:
		b, err := store.OpenBolt(filepath.Join(opts.DataDir, StateFile), store.BoltOptions{LockTimeout: 5 * time.Second})
		if err != nil {
			return nil, err
		}
		return b, nil
	case StoreEtcd:
		e, err := store.OpenEtcd(ctx, opts.Etcd)
		if err != nil {
			return nil, err
		}
		return e, nil
	}
	return nil, fmt.Errorf("controlplane: unknown store %q (want %s or %s)", opts.Store, StoreBolt, StoreEtcd)
}

// storeName says where the state is, for messages.
func storeName(opts Options) string {
	if opts.Store == StoreEtcd {
		return fmt.Sprintf("etcd %s under %s", strings.Join(opts.Etcd.Endpoints, ","), opts.Etcd.KeyPrefix())
	}
	return filepath.Join(opts.DataDir, StateFile)
}

// checkMasterKey opens every sealed object once, so that a master key that
// is not the one the store was sealed with (a lost key file replaced by a
// fresh one, another $DBPROXY_MASTER_KEY) stops the start with a clear
// error instead of failing every request and sealing new secrets under a
// second key.
func (s *Server) checkMasterKey(ctx context.Context) error {
	_, err := s.store.View(ctx, func(r store.Reader) error {
		for _, kind := range model.SensitiveKinds {
			if _, err := r.List(kind, ""); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, seal.ErrDecrypt) {
		return fmt.Errorf("the master key (%s or $%s) does not open the secrets in %s: restore the key they were sealed with: %w",
			s.opts.MasterKeyFile, MasterKeyEnv, storeName(s.opts), err)
	}
	if err != nil {
		return fmt.Errorf("read the store: %w", err)
	}
	return nil
}

// targetHealth aggregates the nodes' reports about t. Only the reports of
// nodes in the proxy's zones (the nodes the proxy is pushed to) about the
// target's current address count: a node key allowed one zone must not
// decide the health of another zone's proxies, and a target recreated at
// another address must not inherit the old one's health.
func (s *Server) targetHealth(ctx context.Context, t *model.Target) (string, string, string) {
	st, err := s.snapshots.State(ctx)
	if err != nil {
		s.log.Warn("cannot read the state to show target health", "proxy", t.Proxy, "target", t.Name, "error", err)
		return health.HealthUnknown, "", ""
	}
	var zones []string
	for i := range st.Proxies {
		if st.Proxies[i].Name == t.Proxy {
			zones = st.Proxies[i].Zones
			break
		}
	}
	addr := net.JoinHostPort(t.Host, strconv.Itoa(t.Port))
	th := s.health.TargetHealthFrom(t.Proxy, t.Name, func(r health.Report) bool {
		return r.Address == addr && model.HasZone(zones, r.Zone)
	})
	return th.Health, th.Role, th.Reason()
}

// derive gives each use of the master key its own key.
func derive(master []byte, purpose string) []byte {
	h := hmac.New(sha256.New, master)
	h.Write([]byte("dbproxy/" + purpose))
	return h.Sum(nil)
}

// republish refreshes node snapshots after every commit.
// It also refreshes hourly without a commit, so that node certificates are
// renewed when their period turns, connect signing keys when the day turns
// (nodes hold the day before, of and after), and long-gone nodes are
// forgotten.
func (s *Server) republish(ctx context.Context) {
	ch, cancel := s.store.Subscribe()
	defer cancel()
	tick := time.NewTicker(time.Hour)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-tick.C:
		}
		if err := s.xds.Refresh(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("cannot publish the new configuration", "error", err)
		}
	}
}

// bootstrapRoot creates the root user and its access key at first start and
// writes them to root-credentials.json (mode 0600).
func (s *Server) bootstrapRoot(ctx context.Context) error {
	path := filepath.Join(s.opts.DataDir, RootCredentialsFile)
	caPath := filepath.Join(s.opts.DataDir, pki.CAFile)
	if s.opts.TLSCertFile != "" {
		// The API presents the operator's certificate: clients trust
		// whatever issued it, not this CA.
		caPath = ""
	}
	have, err := s.hasRoot(ctx)
	if err != nil {
		return fmt.Errorf("bootstrap the root user: %w", err)
	}
	if have {
		b, err := os.ReadFile(path)
		if err != nil {
			s.log.Warn("root credentials file is missing; the root key stays valid but is not shown again", "path", path)
			return nil
		}
		if err := json.Unmarshal(b, &s.root); err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		// Addresses and certificates may differ from the last start.
		s.root.Endpoint = "https://" + s.APIAddr()
		s.root.CAFile = caPath
		return s.writeRoot(path)
	}

	key, err := api.NewAccessKey(model.RootUser)
	if err != nil {
		return fmt.Errorf("bootstrap the root user: %w", err)
	}
	s.root = RootCredentials{AccessKeyID: key.ID, SecretAccessKey: key.SecretAccessKey, Region: s.opts.Region,
		Endpoint: "https://" + s.APIAddr(), CAFile: caPath}
	// The file is written, durably, before the key is committed: a crash
	// or a write error in between leaves at worst a file naming a key that
	// does not exist (the next start makes another), never a root key
	// whose secret nobody has.
	if err := s.writeRoot(path); err != nil {
		return err
	}
	_, err = s.store.Update(ctx, func(tx store.Tx) error {
		now := s.opts.Now().UTC()
		meta := model.Meta{Revision: tx.Revision(), CreatedAt: now, UpdatedAt: now}
		u, _ := json.Marshal(model.User{Name: model.RootUser, Path: "/", Meta: meta})
		key.Meta = meta
		k, _ := json.Marshal(key)
		if err := tx.Put(model.KindUser, model.RootUser, u); err != nil {
			return err
		}
		return tx.Put(model.KindAccessKey, key.ID, k)
	})
	if err != nil {
		return fmt.Errorf("bootstrap the root user: %w", err)
	}
	s.log.Info("created the root user and its access key", "access_key_id", key.ID, "credentials_file", path)
	return nil
}

// hasRoot reports whether the root user exists.
func (s *Server) hasRoot(ctx context.Context) (bool, error) {
	var have bool
	_, err := s.store.View(ctx, func(r store.Reader) error {
		_, err := r.Get(model.KindUser, model.RootUser)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		have = err == nil
		return err
	})
	return have, err
}

// writeRoot writes s.root to path.
func (s *Server) writeRoot(path string) error {
	b, _ := json.MarshalIndent(s.root, "", "  ")
	return atomicfile.Write(path, append(b, '\n'), 0o600)
}

func (s *Server) lookupKey(ctx context.Context, id string) (string, error) {
	k, err := identity.ActiveKey(ctx, s.store, id)
	if err != nil {
		return "", err
	}
	return k.SecretAccessKey, nil
}

// APIAddr is the admin API's listening address.
func (s *Server) APIAddr() string { return s.apiLn.Addr().String() }

// MetricsAddr returns where /metrics is served, or "" when it is not.
func (s *Server) MetricsAddr() string {
	if s.metricsLn == nil {
		return ""
	}
	return s.metricsLn.Addr().String()
}

// XDSAddr is the xDS server's listening address.
func (s *Server) XDSAddr() string { return s.xdsLn.Addr().String() }

// CAPEM is the CA certificate clients and nodes trust.
func (s *Server) CAPEM() []byte { return s.ca.CertPEM() }

// Root returns the root credentials.
func (s *Server) Root() RootCredentials { return s.root }

// Store returns the store (for tests and tools in the same process).
func (s *Server) Store() store.Store { return s.store }

// XDS returns the xDS server.
func (s *Server) XDS() *xds.Server { return s.xds }

// Close stops serving and closes the store.
func (s *Server) Close() {
	s.closeMu.Do(func() {
		if s.stop != nil {
			s.stop()
		}
		if s.xds != nil {
			// The set connected now is what the next start waits for.
			s.saveConnected(nil)
			s.xds.Close()
		}
		if s.health != nil {
			s.health.Close()
		}
		if s.grpc != nil {
			// Streams are endless; cut them after a short grace.
			done := make(chan struct{})
			go func() { s.grpc.GracefulStop(); close(done) }()
			select {
			case <-done:
			case <-time.After(2 * time.Second):
				s.grpc.Stop()
				<-done
			}
		}
		for _, srv := range []*http.Server{s.http, s.metricsHTTP} {
			if srv != nil {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_ = srv.Shutdown(ctx)
				cancel()
			}
		}
		for _, ln := range []net.Listener{s.apiLn, s.xdsLn, s.metricsLn} {
			if ln != nil {
				_ = ln.Close()
			}
		}
		s.wg.Wait()
		if s.store != nil {
			_ = s.store.Close()
		}
	})
}
