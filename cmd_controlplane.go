package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dbproxy/dbproxy/controlplane"
	"github.com/dbproxy/dbproxy/dataplane/config"
	"github.com/dbproxy/dbproxy/dataplane/managed"
)

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func runControlplane(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "", "data directory: store, master key, CA, root credentials (required)")
	apiAddr := fs.String("api-address", "127.0.0.1:8443", "admin API address (HTTPS)")
	xdsAddr := fs.String("xds-address", "127.0.0.1:18000", "xDS server address (gRPC over TLS)")
	var hosts listFlag
	fs.Var(&hosts, "host", "extra host name or address for the server certificate (repeatable)")
	tlsCert := fs.String("tls-cert-file", "", "the API's and xDS server's certificate (PEM); default: one issued by the control plane's CA")
	tlsKey := fs.String("tls-key-file", "", "the key of --tls-cert-file (PEM)")
	region := fs.String("region", "", "SigV4 region (default local)")
	masterKey := fs.String("master-key-file", "", "master key file (default <data-dir>/master.key; $"+controlplane.MasterKeyEnv+" overrides)")
	ports := fs.String("port-range", "6033-6999", "ports allocated to proxies and endpoints")
	metricsAddr := fs.String("metrics-address", "", "address of Prometheus /metrics and /healthz (plain HTTP, no authentication); empty disables it")
	logLevel := fs.String("log-level", "info", "log level: trace, debug, info, warn, error")
	logJSON := fs.Bool("log-json", false, "log in JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dataDir == "" {
		fmt.Fprintln(stderr, "dbproxy controlplane: --data-dir is required")
		return 2
	}
	lo, hi, ok := parseRange(*ports)
	if !ok {
		fmt.Fprintf(stderr, "dbproxy controlplane: --port-range %q: want LOW-HIGH within 1-65535\n", *ports)
		return 2
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "controlplane", Level: hclog.LevelFromString(*logLevel), Output: stderr, JSONFormat: *logJSON})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := controlplane.Start(ctx, controlplane.Options{
		DataDir: *dataDir, APIAddress: *apiAddr, XDSAddress: *xdsAddr, Hosts: hosts, TLSCertFile: *tlsCert, TLSKeyFile: *tlsKey,
		MasterKeyFile: *masterKey, Region: *region, PortMin: lo, PortMax: hi, MetricsAddress: *metricsAddr, Logger: log,
	})
	if err != nil {
		log.Error("cannot start the control plane", "error", err)
		return 1
	}
	<-ctx.Done()
	log.Info("shutting down")
	s.Close()
	return 0
}

func parseRange(s string) (int, int, bool) {
	a, b, ok := strings.Cut(s, "-")
	lo, err1 := strconv.Atoi(a)
	hi, err2 := strconv.Atoi(b)
	return lo, hi, ok && err1 == nil && err2 == nil && lo >= 1 && hi <= 65535 && lo <= hi
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

func (m *managedFlags) run(zone string, log hclog.Logger, stderr io.Writer) int {
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
		Node: config.Node{AdminAddress: m.adminAddress}, Logger: log,
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
