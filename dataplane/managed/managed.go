// Package managed runs a data-plane node that takes its configuration from
// the control plane over xDS: it signs the node's token, feeds what the ADS
// client receives through the decoder into the node, and keeps the last
// good configuration on disk (encrypted) so that a node restarted while the
// control plane is down still serves.
package managed

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/dbproxy/dbproxy/dataplane/config"
	"github.com/dbproxy/dbproxy/dataplane/healthreport"
	"github.com/dbproxy/dbproxy/dataplane/node"
	"github.com/dbproxy/dbproxy/dataplane/xdsclient"
	"github.com/dbproxy/dbproxy/dataplane/xdsconfig"
	"github.com/dbproxy/dbproxy/internal/cpident"
	"github.com/dbproxy/dbproxy/internal/sigv4"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// Credentials is a node's credentials file: an access key (the control
// plane's root-credentials.json has the same fields).
type Credentials struct {
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
	Region          string `json:"region,omitempty"`
}

// LoadCredentials reads a credentials file.
func LoadCredentials(path string) (Credentials, error) {
	var c Credentials
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("read credentials: %w", err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("parse credentials %s: %w", path, err)
	}
	if c.AccessKeyID == "" || c.SecretAccessKey == "" {
		return c, fmt.Errorf("credentials %s: access_key_id and secret_access_key are required", path)
	}
	return c, nil
}

// Options configure a managed node.
type Options struct {
	// ControlPlane is the xDS server's host:port.
	ControlPlane string
	// CAPEM is the control plane's CA; nil trusts the system roots.
	CAPEM []byte
	// Insecure disables TLS to the control plane (tests only).
	Insecure    bool
	NodeID      string
	Zone        string
	Credentials Credentials
	// Region of the control plane (default sigv4.DefaultRegion).
	Region string
	// ListenHost is the address endpoints bind; Address is what clients
	// use to reach this node (default: ListenHost).
	ListenHost, Address string
	// CacheDir keeps the last good configuration; "" disables it.
	CacheDir string
	// Node holds node-local settings (admin address, timeouts).
	Node   config.Node
	Logger hclog.Logger
	// NodeOptions are passed to node.New (tests set MonitorInterval).
	NodeOptions node.Options
	Now         func() time.Time
}

// Node is a running managed node.
type Node struct {
	opts   Options
	log    hclog.Logger
	node   *node.Node
	info   xdsapi.NodeInfo
	client *xdsclient.Client
	health *healthreport.Reporter
}

// New builds a managed node; Run serves it.
func New(opts Options) (*Node, error) {
	if opts.NodeID == "" || opts.Zone == "" {
		return nil, errors.New("a node id and a zone are required")
	}
	if opts.ControlPlane == "" {
		return nil, errors.New("the control plane address is required")
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Region == "" {
		opts.Region = opts.Credentials.Region
	}
	if opts.Region == "" {
		opts.Region = sigv4.DefaultRegion
	}
	if opts.ListenHost == "" {
		opts.ListenHost = "0.0.0.0"
	}
	if opts.Address == "" {
		opts.Address = opts.ListenHost
	}
	opts.Node.Zone = opts.Zone
	nopts := opts.NodeOptions
	nopts.Logger = opts.Logger
	n, err := node.New(nopts)
	if err != nil {
		return nil, err
	}
	m := &Node{opts: opts, log: opts.Logger, node: n}
	var tlsCfg *tls.Config
	if !opts.Insecure {
		host, _, _ := net.SplitHostPort(opts.ControlPlane)
		// Refuses another node's certificate for the control plane's
		// name (see cpident).
		if tlsCfg, err = cpident.ClientConfig(opts.CAPEM, host); err != nil {
			return nil, fmt.Errorf("the control plane CA file: %w", err)
		}
	}
	var cacheFile string
	if opts.CacheDir != "" {
		if err := os.MkdirAll(opts.CacheDir, 0o700); err != nil {
			return nil, fmt.Errorf("create cache directory: %w", err)
		}
		// One file per zone and id: a node restarted under another zone
		// while the control plane is down must not serve the old zone's
		// configuration.
		cacheFile = filepath.Join(opts.CacheDir, "config-"+url.PathEscape(opts.Zone)+"-"+url.PathEscape(opts.NodeID)+".bin")
	}
	info := xdsapi.NodeInfo{ID: opts.NodeID, Zone: opts.Zone, Address: opts.Address, ListenHost: opts.ListenHost}
	m.info = info
	m.client, err = xdsclient.New(xdsclient.Options{
		Target:    opts.ControlPlane,
		TLS:       tlsCfg,
		Node:      info,
		Token:     m.token,
		Apply:     m.apply,
		CacheFile: cacheFile,
		CacheKey:  cacheKey(opts.Credentials.SecretAccessKey),
		Logger:    opts.Logger.Named("xds"),
	})
	if err != nil {
		return nil, err
	}
	// Target health goes back to the control plane over HDS, on the same
	// address and with the same token, so that the API can show it.
	m.health, err = healthreport.New(healthreport.Options{
		Target: opts.ControlPlane, TLS: tlsCfg, Node: info, Token: m.token,
		Snapshot: healthreport.FromNode(n), Logger: opts.Logger.Named("hds"), Now: opts.Now,
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// cacheKey derives the cache's encryption key from the node's secret, so
// that only a process holding the node's credentials can read it.
func cacheKey(secret string) []byte {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write([]byte("dbproxy/node-config-cache"))
	return h.Sum(nil)
}

// token signs a fresh node token.
func (m *Node) token(ctx context.Context) (string, error) {
	return xdsapi.NodeToken(ctx, m.opts.ControlPlane, m.info, m.opts.Region,
		sigv4.Credentials{AccessKeyID: m.opts.Credentials.AccessKeyID, SecretAccessKey: m.opts.Credentials.SecretAccessKey}, m.opts.Now())
}

// apply decodes a resource set and serves it. An error makes the client
// NACK the set; the running configuration stays.
func (m *Node) apply(ctx context.Context, version string, res map[string][]*anypb.Any) error {
	cfg, skipped, err := xdsconfig.Decode(version, res, xdsconfig.Options{ListenHost: m.opts.ListenHost, Node: m.opts.Node})
	if err != nil {
		// The set is NACKed, but a key it revokes is revoked.
		if keys, ok := xdsconfig.ConnectKeys(res); ok {
			m.node.RestrictConnectKeys(keys)
		}
		return err
	}
	for _, s := range skipped {
		m.log.Warn("listener not activated: its cluster, endpoints or secrets are missing", "listener", s, "version", version)
	}
	if err := m.node.Apply(ctx, cfg); err != nil {
		return fmt.Errorf("apply version %s: %w", version, err)
	}
	m.log.Info("configuration applied", "version", version, "proxies", len(cfg.Proxies))
	return nil
}

// Run serves until ctx ends, then drains clients for up to drain.
func (m *Node) Run(ctx context.Context, drain time.Duration) error {
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		// It returns when ctx ends; its failures are in its log and
		// Status.
		_ = m.health.Run(ctx)
	}()
	err := m.client.Run(ctx)
	<-reported
	dctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	m.node.Close(dctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Node returns the data-plane node (tests read its addresses).
func (m *Node) Node() *node.Node { return m.node }

// Status reports the xDS client's state.
func (m *Node) Status() xdsclient.Status { return m.client.Status() }
