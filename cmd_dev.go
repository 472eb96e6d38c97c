package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dbproxy/dbproxy/controlplane"
	"github.com/dbproxy/dbproxy/dataplane/config"
	"github.com/dbproxy/dbproxy/dataplane/managed"
	"github.com/dbproxy/dbproxy/internal/apiclient"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/mysqltest"
	"github.com/dbproxy/dbproxy/internal/sigv4"
)

// Database account that dbproxy dev creates for the quickstart.
const (
	devDBUser     = "app"
	devDBPassword = "app-password"
	devDatabase   = "app"
)

// devInfo is what dbproxy dev writes to <dir>/dev.json for scripts.
type devInfo struct {
	APIEndpoint     string        `json:"api_endpoint"`
	XDSAddress      string        `json:"xds_address"`
	CredentialsFile string        `json:"credentials_file"`
	CAFile          string        `json:"ca_file"`
	Region          string        `json:"region"`
	Nodes           []devNodeInfo `json:"nodes"`
	Database        *devDatabaseT `json:"database,omitempty"`
}

type devNodeInfo struct {
	ID      string `json:"id"`
	Zone    string `json:"zone"`
	Address string `json:"address"`
	Admin   string `json:"admin"`
}

type devDatabaseT struct {
	Host     string `json:"host"`
	Port     int    `json:"port"`
	User     string `json:"user"`
	Password string `json:"password"`
	Database string `json:"database"`
}

// runDev runs everything on one machine: a control plane, a node per zone
// on 127.0.x.1 and a MariaDB server to point proxies at.
func runDev(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", filepath.Join(os.TempDir(), "dbproxy-dev"), "state directory (kept between runs)")
	zonesFlag := fs.String("zones", "a,b,c", "zones; the i-th zone's node listens on 127.0.<i+1>.1")
	apiAddr := fs.String("api-address", "127.0.0.1:8443", "admin API address")
	xdsAddr := fs.String("xds-address", "127.0.0.1:18000", "xDS address")
	ports := fs.String("port-range", "6033-6999", "ports allocated to proxies and endpoints")
	noDB := fs.Bool("no-database", false, "do not start a MariaDB server")
	dbPort := fs.Int("database-port", 0, "port of the MariaDB server on 127.0.0.1 (0: a free one)")
	logLevel := fs.String("log-level", "info", "log level")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	zones := strings.Split(*zonesFlag, ",")
	if len(zones) == 0 || len(zones) > 250 {
		fmt.Fprintln(stderr, "dbproxy dev: --zones needs 1-250 zone names")
		return 2
	}
	seen := map[string]bool{}
	for _, z := range zones {
		if !model.ValidZone(z) || seen[z] {
			fmt.Fprintf(stderr, "dbproxy dev: --zones: %q is not a valid zone name (lower-case letters, digits and hyphens) or is listed twice\n", z)
			return 2
		}
		seen[z] = true
	}
	lo, hi, ok := parseRange(*ports)
	if !ok {
		fmt.Fprintf(stderr, "dbproxy dev: --port-range %q: want LOW-HIGH\n", *ports)
		return 2
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "dev", Level: hclog.LevelFromString(*logLevel), Output: stderr})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		log.Error("cannot create the state directory", "error", err)
		return 1
	}
	info, cleanup, err := startDev(ctx, devOptions{
		dir: *dir, zones: zones, apiAddr: *apiAddr, xdsAddr: *xdsAddr, portMin: lo, portMax: hi,
		database: !*noDB, dbPort: *dbPort, log: log,
	})
	defer cleanup()
	if err != nil {
		log.Error("dbproxy dev failed to start", "error", err)
		return 1
	}
	b, _ := json.MarshalIndent(info, "", "  ")
	infoPath := filepath.Join(*dir, "dev.json")
	if err := os.WriteFile(infoPath, append(b, '\n'), 0o600); err != nil {
		log.Error("cannot write dev.json", "error", err)
		return 1
	}
	fmt.Fprintf(stdout, "dbproxy dev is running (Ctrl-C stops it); details in %s\n\n", infoPath)
	fmt.Fprintf(stdout, "  admin API    %s\n  credentials  %s\n  CA           %s\n", info.APIEndpoint, info.CredentialsFile, info.CAFile)
	for _, n := range info.Nodes {
		fmt.Fprintf(stdout, "  node         %s in zone %s on %s (metrics http://%s/metrics)\n", n.ID, n.Zone, n.Address, n.Admin)
	}
	if d := info.Database; d != nil {
		fmt.Fprintf(stdout, "  database     %s:%d, user %s, password %s, database %s\n", d.Host, d.Port, d.User, d.Password, d.Database)
	}
	fmt.Fprintf(stdout, "\ntry: dbproxy api --credentials %s GET /v1/nodes\n", info.CredentialsFile)
	<-ctx.Done()
	log.Info("stopping")
	return 0
}

type devOptions struct {
	dir              string
	zones            []string
	apiAddr, xdsAddr string
	portMin, portMax int
	database         bool
	dbPort           int
	log              hclog.Logger
}

func startDev(ctx context.Context, o devOptions) (*devInfo, func(), error) {
	var stops []func()
	cleanup := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	info := &devInfo{}
	if o.database && o.dbPort == 0 {
		// Keep the port of the last run: proxies' targets point at it.
		var last devInfo
		if b, err := os.ReadFile(filepath.Join(o.dir, "dev.json")); err == nil && json.Unmarshal(b, &last) == nil && last.Database != nil {
			o.dbPort = last.Database.Port
		}
	}
	if o.database {
		db, err := mysqltest.Start(ctx, mysqltest.Options{Dir: filepath.Join(o.dir, "mariadb"), Port: o.dbPort, Logger: o.log.Named("mariadb")})
		if err != nil {
			return nil, cleanup, fmt.Errorf("start MariaDB: %w", err)
		}
		stops = append(stops, func() { _ = db.Close() })
		err = db.Exec(ctx,
			"CREATE DATABASE IF NOT EXISTS "+devDatabase,
			fmt.Sprintf("CREATE USER IF NOT EXISTS '%s'@'%%' IDENTIFIED BY '%s'", devDBUser, devDBPassword),
			fmt.Sprintf("GRANT ALL PRIVILEGES ON %s.* TO '%s'@'%%'", devDatabase, devDBUser))
		if err != nil {
			return nil, cleanup, fmt.Errorf("prepare MariaDB: %w", err)
		}
		info.Database = &devDatabaseT{Host: db.Host, Port: db.Port, User: devDBUser, Password: devDBPassword, Database: devDatabase}
	}
	cp, err := controlplane.Start(ctx, controlplane.Options{
		DataDir: filepath.Join(o.dir, "controlplane"), APIAddress: o.apiAddr, XDSAddress: o.xdsAddr,
		PortMin: o.portMin, PortMax: o.portMax, Logger: o.log.Named("controlplane"),
	})
	if err != nil {
		return nil, cleanup, err
	}
	stops = append(stops, cp.Close)
	root := cp.Root()
	info.APIEndpoint = "https://" + cp.APIAddr()
	info.XDSAddress = cp.XDSAddr()
	info.CredentialsFile = filepath.Join(o.dir, "controlplane", controlplane.RootCredentialsFile)
	info.CAFile = root.CAFile
	info.Region = root.Region
	client, err := apiclient.New(apiclient.Options{Endpoint: info.APIEndpoint, CAPEM: cp.CAPEM(), Region: root.Region,
		Credentials: sigv4.Credentials{AccessKeyID: root.AccessKeyID, SecretAccessKey: root.SecretAccessKey}})
	if err != nil {
		return nil, cleanup, err
	}
	nctx, cancelNodes := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	stops = append(stops, func() { cancelNodes(); wg.Wait() })
	for i, z := range o.zones {
		host := fmt.Sprintf("127.0.%d.1", i+1)
		creds, err := devNodeCredentials(ctx, client, filepath.Join(o.dir, "nodes"), z)
		if err != nil {
			return nil, cleanup, fmt.Errorf("credentials of the node in zone %s: %w", z, err)
		}
		admin := net.JoinHostPort(host, "9100")
		n, err := managed.New(managed.Options{
			ControlPlane: cp.XDSAddr(), CAPEM: cp.CAPEM(), NodeID: "node-" + z, Zone: z, Credentials: creds,
			Region: root.Region, ListenHost: host, CacheDir: filepath.Join(o.dir, "nodes", "cache-"+z),
			Node: config.Node{AdminAddress: admin}, Logger: o.log.Named("node-" + z),
		})
		if err != nil {
			return nil, cleanup, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.Run(nctx, 5*time.Second); err != nil {
				o.log.Error("node stopped", "zone", z, "error", err)
			}
		}()
		info.Nodes = append(info.Nodes, devNodeInfo{ID: "node-" + z, Zone: z, Address: host, Admin: admin})
	}
	return info, cleanup, nil
}

// devNodeCredentials returns the key of the node user of zone, creating the
// user, a policy that allows only that zone, and a key on first use.
func devNodeCredentials(ctx context.Context, c *apiclient.Client, dir, zone string) (managed.Credentials, error) {
	path := filepath.Join(dir, "node-"+zone+".json")
	if creds, err := managed.LoadCredentials(path); err == nil {
		return creds, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return managed.Credentials{}, err
	}
	key, err := c.CreateUser(ctx, "node-"+zone, apiclient.ReceiveConfigPolicy(zone))
	if err != nil {
		return managed.Credentials{}, err
	}
	creds := managed.Credentials{AccessKeyID: key.AccessKeyID, SecretAccessKey: key.SecretAccessKey}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return creds, err
	}
	b, _ := json.Marshal(creds)
	return creds, os.WriteFile(path, b, 0o600)
}
