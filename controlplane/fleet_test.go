package controlplane_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/dbproxy/dbproxy/controlplane"
	"github.com/dbproxy/dbproxy/controlplane/pki"
	"github.com/dbproxy/dbproxy/internal/cptest"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/mysqltest"
	"github.com/dbproxy/dbproxy/internal/nodetest"
)

var zones = []string{"a", "b", "c"}

// query runs SELECT through addr and returns the first column.
func query(t *testing.T, addr, q string) (string, error) {
	t.Helper()
	db, err := sql.Open("mysql", nodetest.DSN(addr, "timeout=5s&readTimeout=10s"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var v string
	err = db.QueryRowContext(ctx, q).Scan(&v)
	return v, err
}

func mustQuery(t *testing.T, addr, q string) string {
	t.Helper()
	v, err := query(t, addr, q)
	if err != nil {
		t.Fatalf("%s through %s: %v", q, addr, err)
	}
	return v
}

// fleet is a control plane, one MariaDB and one node per zone.
type fleet struct {
	cp    *cptest.ControlPlane
	db    *mysqltest.Server
	nodes []*cptest.Node
}

func startFleet(t *testing.T) *fleet {
	t.Helper()
	f := &fleet{cp: cptest.Start(t)}
	f.db = mysqltest.StartT(t, mysqltest.Options{})
	nodetest.PrepareServer(t, f.db)
	for i, z := range zones {
		creds := f.cp.NodeCredentials("node-"+z, z)
		f.nodes = append(f.nodes, f.cp.StartNode(cptest.NodeOptions{
			ID: "node-" + z, Zone: z, Host: cptest.ZoneHost(i), Credentials: creds,
		}))
	}
	// A rollout waits for the connected nodes only: connected they must
	// be before the first change.
	for _, n := range f.nodes {
		n.WaitSynced(t)
	}
	return f
}

// declare creates the secret, the proxy in every zone and its target.
func (f *fleet) declare(t *testing.T) model.Proxy {
	t.Helper()
	f.cp.Do("PUT", "/v1/secrets/app", map[string]any{"username": nodetest.User, "password": nodetest.Password}, nil)
	var p model.Proxy
	f.cp.Do("PUT", "/v1/proxies/main", map[string]any{"zones": zones, "auth": []map[string]any{{"secret": "app"}}}, &p)
	var tg model.Target
	f.cp.Do("PUT", "/v1/proxies/main/targets/db1", map[string]any{"host": f.db.Host, "port": f.db.Port, "zone": "a"}, &tg)
	f.cp.WaitRollout(tg.Revision, zones...)
	return p
}

func addr(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

func TestFleetServesThroughEveryZone(t *testing.T) {
	f := startFleet(t)
	p := f.declare(t)
	for _, n := range f.nodes {
		a := addr(n.Host, p.Port)
		if got := mustQuery(t, a, "SELECT 40+2"); got != "42" {
			t.Fatalf("node %s: SELECT 40+2 = %s", n.ID, got)
		}
	}
	// Each node presents the certificate the control plane issued for its
	// address: a client that verifies against the control plane's CA
	// connects.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(f.cp.CA)
	for _, n := range f.nodes {
		name := "cp-" + n.ID
		if err := mysql.RegisterTLSConfig(name, &tls.Config{RootCAs: pool, ServerName: n.Host, MinVersion: tls.VersionTLS12}); err != nil {
			t.Fatal(err)
		}
		db := nodetest.OpenAddr(t, addr(n.Host, p.Port), "tls="+name)
		var cipher string
		if err := db.QueryRow("SELECT 1").Scan(&cipher); err != nil {
			t.Fatalf("TLS verified against the control plane CA, node %s: %v", n.ID, err)
		}
	}

	// The nodes report the target's health back (HDS); the API shows it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var tg model.Target
		f.cp.Do("GET", "/v1/proxies/main/targets/db1", nil, &tg)
		if tg.Health == "AVAILABLE" && tg.DiscoveredRole == "WRITER" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("target db1: health %q, discovered role %q; want AVAILABLE, WRITER", tg.Health, tg.DiscoveredRole)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The API reports the nodes and the proxy's addresses.
	var got model.Proxy
	f.cp.Do("GET", "/v1/proxies/main", nil, &got)
	if len(got.Addresses) != 3 || got.Endpoint != addr(cptest.ZoneHost(0), p.Port) {
		t.Fatalf("proxy endpoint %q addresses %v", got.Endpoint, got.Addresses)
	}
	var nodes struct{ Items []model.Node }
	f.cp.Do("GET", "/v1/nodes", nil, &nodes)
	if len(nodes.Items) != 3 {
		t.Fatalf("nodes = %+v", nodes.Items)
	}
	for _, n := range nodes.Items {
		if !n.Connected || n.AckedVersion == "" || n.AckedVersion != n.CurrentVersion || n.LastNack != nil {
			t.Fatalf("node %+v", n)
		}
	}

	t.Run("changes reach every node", func(t *testing.T) {
		// A pool setting.
		var g model.TargetGroup
		f.cp.Do("PUT", "/v1/proxies/main/target-group", map[string]any{"connection_pool_config": map[string]any{
			"max_connections_percent": 40, "connection_borrow_timeout": 7, "init_query": "SET @@session.wait_timeout=1234"}}, &g)
		f.cp.WaitRollout(g.Revision, zones...)
		for _, n := range f.nodes {
			pc := n.Node.Node().Config().Proxies[0].Pool
			if pc.MaxConnectionsPercent != 40 || pc.ConnectionBorrowTimeout.D() != 7*time.Second {
				t.Fatalf("node %s pool = %+v", n.ID, pc)
			}
			if v := mustQuery(t, addr(n.Host, p.Port), "SELECT @@session.wait_timeout"); v != "1234" {
				t.Fatalf("node %s: init_query not applied: wait_timeout %s", n.ID, v)
			}
		}
		// A new target.
		db2 := mysqltest.StartT(t, mysqltest.Options{})
		nodetest.PrepareServer(t, db2)
		var tg model.Target
		f.cp.Do("PUT", "/v1/proxies/main/targets/db2", map[string]any{"host": db2.Host, "port": db2.Port, "zone": "b", "role": "READER"}, &tg)
		f.cp.WaitRollout(tg.Revision, zones...)
		for _, n := range f.nodes {
			if ts := n.Node.Node().Targets("main"); len(ts) != 2 {
				t.Fatalf("node %s has %d targets, want 2", n.ID, len(ts))
			}
		}
		// An extra endpoint, then its removal.
		var ep model.Endpoint
		f.cp.Do("PUT", "/v1/proxies/main/endpoints/ro", map[string]any{"target_role": "READ_ONLY"}, &ep)
		f.cp.WaitRollout(ep.Revision, zones...)
		for _, n := range f.nodes {
			mustQuery(t, addr(n.Host, ep.Port), "SELECT 1")
		}
		var del struct{ Revision uint64 }
		f.cp.Do("DELETE", "/v1/proxies/main/endpoints/ro", nil, &del)
		f.cp.WaitRollout(del.Revision, zones...)
		for _, n := range f.nodes {
			if _, ok := n.Addr("main", "ro"); ok {
				t.Fatalf("node %s still serves the removed endpoint", n.ID)
			}
			if _, err := query(t, addr(n.Host, ep.Port), "SELECT 1"); err == nil {
				t.Fatalf("node %s answers on the removed endpoint's port", n.ID)
			}
			mustQuery(t, addr(n.Host, p.Port), "SELECT 1")
		}
	})

	t.Run("a rejected config is reported and the node keeps serving", func(t *testing.T) {
		// Something else holds the port on zone b's address: node b
		// cannot bind the new endpoint and NACKs the configuration.
		hog, err := net.Listen("tcp", addr(cptest.ZoneHost(1), 0))
		if err != nil {
			t.Fatal(err)
		}
		defer hog.Close()
		port := hog.Addr().(*net.TCPAddr).Port
		var ep model.Endpoint
		f.cp.Do("PUT", "/v1/proxies/main/endpoints/clash", map[string]any{"port": port}, &ep)
		r, err := f.cp.Client.WaitRollout(context.Background(), ep.Revision, zones, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if r.Complete || !r.Rejected {
			t.Fatalf("rollout of a config node b cannot bind: complete %v rejected %v (%s)", r.Complete, r.Rejected, r.Message)
		}
		// The other zones take it.
		f.cp.WaitRollout(ep.Revision, "a", "c")
		var nodes struct{ Items []model.Node }
		f.cp.Do("GET", "/v1/nodes", nil, &nodes)
		for _, n := range nodes.Items {
			switch {
			case n.Zone == "b" && (n.LastNack == nil || !strings.Contains(n.LastNack.Message, strconv.Itoa(port))):
				t.Fatalf("node b: last NACK %+v, want one naming port %d", n.LastNack, port)
			case n.Zone != "b" && n.AckedRevision < ep.Revision:
				t.Fatalf("node %s did not ack revision %d: %+v", n.ID, ep.Revision, n)
			}
		}
		// Node b still serves the previous configuration.
		mustQuery(t, addr(cptest.ZoneHost(1), p.Port), "SELECT 1")
		mustQuery(t, addr(cptest.ZoneHost(0), port), "SELECT 1")
		// Removing the clash lets node b catch up.
		var del struct{ Revision uint64 }
		f.cp.Do("DELETE", "/v1/proxies/main/endpoints/clash", nil, &del)
		f.cp.WaitRollout(del.Revision, zones...)
	})

	t.Run("nodes keep serving without the control plane, also across a restart", func(t *testing.T) {
		f.cp.Stop()
		for _, n := range f.nodes {
			mustQuery(t, addr(n.Host, p.Port), "SELECT 2")
		}
		// Node a restarts while the control plane is down: it serves
		// from its encrypted cache.
		a := f.nodes[0]
		cacheDir := a.CacheDir()
		a.Stop()
		if _, err := query(t, addr(a.Host, p.Port), "SELECT 1"); err == nil {
			t.Fatal("the stopped node still answers")
		}
		again := f.cp.StartNode(cptest.NodeOptions{ID: a.ID, Zone: a.Zone, Host: a.Host, Credentials: a.Credentials(), CacheDir: cacheDir})
		again.WaitServing(t, "main", model.DefaultEndpoint)
		mustQuery(t, addr(a.Host, p.Port), "SELECT 3")
		f.nodes[0] = again
		// The control plane comes back and at once takes a change: the
		// rollout waits for the nodes it knew before the restart, so it
		// completes only when all three are back and serve the change.
		f.cp.Restart()
		var tg model.Target
		f.cp.Do("PUT", "/v1/proxies/main/targets/db1", map[string]any{"host": f.db.Host, "port": f.db.Port, "zone": "c"}, &tg)
		r := f.cp.WaitRollout(tg.Revision, zones...)
		if len(r.Nodes) != 3 {
			t.Fatalf("rollout after the restart covered %d nodes", len(r.Nodes))
		}
		waitConnected(t, f.cp, 3)
		for _, n := range f.nodes {
			mustQuery(t, addr(n.Host, p.Port), "SELECT 4")
		}
	})
}

// waitConnected polls the API until n nodes are connected.
func waitConnected(t *testing.T, cp *cptest.ControlPlane, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var nodes struct{ Items []model.Node }
		cp.Do("GET", "/v1/nodes", nil, &nodes)
		connected := 0
		for _, nd := range nodes.Items {
			if nd.Connected {
				connected++
			}
		}
		if connected == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d nodes connected, want %d: %+v", connected, n, nodes.Items)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestNodeRefusedOutsideItsZone(t *testing.T) {
	cp := cptest.Start(t)
	creds := cp.NodeCredentials("node-a", "a")
	// The key allows zone a; the node says it is in zone b.
	n := cp.StartNode(cptest.NodeOptions{ID: "node-x", Zone: "b", Host: cptest.ZoneHost(1), Credentials: creds})
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := n.Status()
		if strings.Contains(st.LastError, "not allowed dbproxy:ReceiveConfig on zone/b") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node status %+v; want a refusal naming zone/b", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var nodes struct{ Items []model.Node }
	cp.Do("GET", "/v1/nodes", nil, &nodes)
	for _, nd := range nodes.Items {
		if nd.Connected || nd.AckedVersion != "" {
			t.Fatalf("a refused node is listed as served: %+v", nd)
		}
	}
	// The same key in its own zone is served.
	ok := cp.StartNode(cptest.NodeOptions{ID: "node-a", Zone: "a", Host: cptest.ZoneHost(0), Credentials: creds})
	ok.WaitSynced(t)
	// Disabling the key cuts the node off at once: the commit makes the
	// server check every stream's credentials again, even though the
	// node's configuration does not change.
	cp.Do("PATCH", "/v1/iam/users/node-a/access-keys/"+creds.AccessKeyID, map[string]string{"status": "Inactive"}, nil)
	deadline = time.Now().Add(20 * time.Second)
	for {
		st := ok.Status()
		if !st.Connected && strings.Contains(st.LastError, "inactive") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node with a disabled key: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestOperatorCertificate(t *testing.T) {
	dir := t.TempDir()
	// An operator's certificate from another CA.
	other, _, err := pki.LoadOrCreate(filepath.Join(dir, "other"), []byte("seed"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := other.ServerCert([]string{"cp.test"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	kder, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := controlplane.Start(t.Context(), controlplane.Options{DataDir: filepath.Join(dir, "cp"), APIAddress: "127.0.0.1:0",
		XDSAddress: "127.0.0.1:0", TLSCertFile: certPath, TLSKeyFile: keyPath, Logger: mysqltest.TestLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conn, err := tls.Dial("tcp", s.APIAddr(), &tls.Config{RootCAs: other.Pool(), ServerName: "cp.test"})
	if err != nil {
		t.Fatalf("the API does not present the operator's certificate: %v", err)
	}
	conn.Close()
	if _, err := controlplane.Start(t.Context(), controlplane.Options{DataDir: filepath.Join(dir, "cp2"), APIAddress: "127.0.0.1:0",
		XDSAddress: "127.0.0.1:0", TLSCertFile: certPath}); err == nil {
		t.Fatal("a certificate without its key was accepted")
	}
}
