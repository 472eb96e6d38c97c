package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dbproxy/dbproxy/dataplane/backend"
	"github.com/dbproxy/dbproxy/dataplane/config"
	"github.com/dbproxy/dbproxy/dataplane/managed"
	"github.com/dbproxy/dbproxy/dataplane/node"
)

// runDataplane runs a data-plane node, fed by the control plane or by a
// static configuration file.
func runDataplane(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("dataplane", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "static configuration file (JSON; see docs/dataplane-config.md)")
	zone := fs.String("zone", "", "zone of this node (overrides node.zone in the file)")
	logLevel := fs.String("log-level", "info", "log level: trace, debug, info, warn, error")
	logJSON := fs.Bool("log-json", false, "log in JSON")
	discovery := fs.Duration("writer-discovery-interval", backend.DefaultDiscoveryInterval,
		"how often every target of a proxy is checked while the proxy has no writer (bounds how long writes wait after a promotion)")
	var m managedFlags
	m.register(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *discovery <= 0 {
		fmt.Fprintln(stderr, "dbproxy dataplane: --writer-discovery-interval must be positive")
		return 2
	}
	nodeOpts := node.Options{WriterDiscoveryInterval: *discovery}
	log := hclog.New(&hclog.LoggerOptions{Name: "dataplane", Level: hclog.LevelFromString(*logLevel), Output: stderr, JSONFormat: *logJSON})
	switch {
	case *cfgPath != "" && m.controlPlane != "":
		fmt.Fprintln(stderr, "dbproxy dataplane: use either --config or --control-plane, not both")
		return 2
	case m.controlPlane != "":
		return m.run(*zone, nodeOpts, log, stderr)
	case *cfgPath == "":
		fmt.Fprintln(stderr, "dbproxy dataplane: --control-plane (with --zone, --node-id, --credentials) or --config is required")
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		log.Error("cannot load configuration", "path", *cfgPath, "error", err)
		return 1
	}
	if *zone != "" {
		cfg.Node.Zone = *zone
	}
	nodeOpts.Logger = log
	n, err := node.New(nodeOpts)
	if err != nil {
		log.Error("cannot start node", "error", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := n.Apply(ctx, cfg); err != nil {
		log.Error("cannot apply configuration", "error", err)
		return 1
	}
	reload := make(chan os.Signal, 1)
	signal.Notify(reload, syscall.SIGHUP)
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down; draining clients for up to 30s")
			dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			n.Close(dctx)
			cancel()
			return 0
		case <-reload:
			next, err := config.Load(*cfgPath)
			if err == nil {
				if *zone != "" {
					next.Node.Zone = *zone
				}
				err = n.Apply(ctx, next)
			}
			if err != nil && !errors.Is(err, context.Canceled) {
				log.Error("reload failed; keeping the running configuration", "error", err)
				continue
			}
			log.Info("configuration reloaded")
		}
	}
}

// managedFlags are the dataplane flags of a node fed by the control plane.
type managedFlags struct {
	controlPlane, nodeID, credentials, caFile, listenHost, address, cacheDir, adminAddress, region string
}

func (m *managedFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&m.controlPlane, "control-plane", "", "the control plane's xDS address (host:port)")
	fs.StringVar(&m.nodeID, "node-id", "", "this node's id (default: <host name>-<zone>)")
	fs.StringVar(&m.credentials, "credentials", "", "credentials file (JSON with access_key_id, secret_access_key)")
	fs.StringVar(&m.caFile, "ca-file", "", "the control plane's CA certificate (PEM; <data-dir>/ca.pem)")
	fs.StringVar(&m.listenHost, "listen-host", "0.0.0.0", "address the proxy endpoints bind")
	fs.StringVar(&m.address, "address", "", "address clients use to reach this node (default: --listen-host)")
	fs.StringVar(&m.cacheDir, "cache-dir", "", "directory for the last good configuration (encrypted); empty disables it")
	fs.StringVar(&m.adminAddress, "admin-address", "", "address of /metrics and /healthz (plain HTTP)")
	fs.StringVar(&m.region, "region", "", "the control plane's SigV4 region (default: the credentials file's, else local)")
}

func (m *managedFlags) run(zone string, nodeOpts node.Options, log hclog.Logger, stderr io.Writer) int {
	if zone == "" || m.credentials == "" {
		fmt.Fprintln(stderr, "dbproxy dataplane: --control-plane needs --zone and --credentials")
		return 2
	}
	if m.nodeID == "" {
		h, err := os.Hostname()
		if err != nil {
			fmt.Fprintln(stderr, "dbproxy dataplane: --node-id is required (no host name)")
			return 2
		}
		m.nodeID = h + "-" + zone
	}
	creds, err := managed.LoadCredentials(m.credentials)
	if err != nil {
		log.Error("cannot read credentials", "error", err)
		return 1
	}
	var ca []byte
	if m.caFile != "" {
		if ca, err = os.ReadFile(m.caFile); err != nil {
			log.Error("cannot read the CA file", "error", err)
			return 1
		}
	}
	log = log.With("node", m.nodeID, "zone", zone)
	n, err := managed.New(managed.Options{
		ControlPlane: m.controlPlane, CAPEM: ca, NodeID: m.nodeID, Zone: zone, Credentials: creds,
		Region: m.region, ListenHost: m.listenHost, Address: m.address, CacheDir: m.cacheDir,
		Node: config.Node{AdminAddress: m.adminAddress}, Logger: log, NodeOptions: nodeOpts,
	})
	if err != nil {
		log.Error("cannot start node", "error", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := n.Run(ctx, 30*time.Second); err != nil {
		log.Error("node stopped", "error", err)
		return 1
	}
	return 0
}
