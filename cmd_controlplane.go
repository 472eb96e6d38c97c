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

	"github.com/hashicorp/go-hclog"

	"github.com/dbproxy/dbproxy/controlplane"
	"github.com/dbproxy/dbproxy/controlplane/store"
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
	storeKind := fs.String("store", controlplane.StoreBolt, "store backend: bbolt (a file in --data-dir) or etcd (shared by replicas)")
	etcdEndpoints := fs.String("etcd-endpoints", "", "etcd client URLs, comma-separated (with --store etcd)")
	etcdPrefix := fs.String("etcd-prefix", store.DefaultEtcdPrefix, "key prefix of the control plane's state in etcd")
	etcdCA := fs.String("etcd-ca", "", "CA bundle that signs the etcd servers' certificates (PEM)")
	etcdCert := fs.String("etcd-cert", "", "client certificate for etcd (PEM)")
	etcdKey := fs.String("etcd-key", "", "the key of --etcd-cert (PEM)")
	etcdRestore := fs.String("etcd-restore", "", "before starting, load this backup (from GET /v1/backup of either store) under --etcd-prefix, which must be empty")
	logLevel := fs.String("log-level", "info", "log level: trace, debug, info, warn, error")
	logJSON := fs.Bool("log-json", false, "log in JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dataDir == "" {
		fmt.Fprintln(stderr, "dbproxy controlplane: --data-dir is required")
		return 2
	}
	var endpoints []string
	for ep := range strings.SplitSeq(*etcdEndpoints, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			endpoints = append(endpoints, ep)
		}
	}
	switch {
	case *storeKind != controlplane.StoreBolt && *storeKind != controlplane.StoreEtcd:
		fmt.Fprintf(stderr, "dbproxy controlplane: --store %q: want %s or %s\n", *storeKind, controlplane.StoreBolt, controlplane.StoreEtcd)
		return 2
	case *storeKind == controlplane.StoreEtcd && len(endpoints) == 0:
		fmt.Fprintln(stderr, "dbproxy controlplane: --store etcd needs --etcd-endpoints")
		return 2
	case *storeKind == controlplane.StoreBolt && (len(endpoints) > 0 || *etcdRestore != ""):
		fmt.Fprintln(stderr, "dbproxy controlplane: --etcd-endpoints and --etcd-restore are for --store etcd (to restore into bbolt, put the backup in place of <data-dir>/state.db)")
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
	etcdOpts := store.EtcdOptions{Endpoints: endpoints, Prefix: *etcdPrefix, CAFile: *etcdCA, CertFile: *etcdCert, KeyFile: *etcdKey}
	if *etcdRestore != "" {
		rev, err := restoreEtcd(ctx, etcdOpts, *etcdRestore)
		if err != nil {
			log.Error("cannot restore the backup", "file", *etcdRestore, "error", err)
			return 1
		}
		log.Info("restored the backup", "file", *etcdRestore, "prefix", etcdOpts.KeyPrefix(), "revision", rev)
	}
	s, err := controlplane.Start(ctx, controlplane.Options{
		DataDir: *dataDir, APIAddress: *apiAddr, XDSAddress: *xdsAddr, Hosts: hosts, TLSCertFile: *tlsCert, TLSKeyFile: *tlsKey,
		MasterKeyFile: *masterKey, Region: *region, PortMin: lo, PortMax: hi, MetricsAddress: *metricsAddr, Logger: log,
		Store: *storeKind, Etcd: etcdOpts,
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

// restoreEtcd loads the backup file into etcd.
func restoreEtcd(ctx context.Context, opts store.EtcdOptions, path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return store.RestoreEtcd(ctx, opts, f)
}

func parseRange(s string) (int, int, bool) {
	a, b, ok := strings.Cut(s, "-")
	lo, err1 := strconv.Atoi(a)
	hi, err2 := strconv.Atoi(b)
	return lo, hi, ok && err1 == nil && err2 == nil && lo >= 1 && hi <= 65535 && lo <= hi
}
