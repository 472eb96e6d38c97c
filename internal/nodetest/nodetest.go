// Package nodetest starts an in-process data-plane node in front of real
// MariaDB servers for tests: one database user, one proxy, endpoints on free
// loopback ports.
package nodetest

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // registers the driver

	"github.com/dbproxy/dbproxy/dataplane/config"
	"github.com/dbproxy/dbproxy/dataplane/node"
	"github.com/dbproxy/dbproxy/internal/mysqltest"
)

// User, Password and Database are what Start creates on every server.
const (
	User     = "app"
	Password = "app-secret"
	Database = "app"
)

// Env is a running node in front of one or more servers.
type Env struct {
	Node    *node.Node
	Servers []*mysqltest.Server
	Config  *config.Config
	// Addr is the READ_WRITE endpoint's address.
	Addr string
}

// PrepareServer creates the test user and database on s.
func PrepareServer(t testing.TB, s *mysqltest.Server) {
	t.Helper()
	ctx := t.Context()
	if err := s.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+Database); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(ctx, User, Password); err != nil {
		t.Fatal(err)
	}
}

// Config returns a node configuration for servers with one READ_WRITE
// endpoint on 127.0.0.1:0; mutate it before Start.
func Config(servers ...*mysqltest.Server) *config.Config {
	cfg := &config.Config{
		Node:    config.Node{Zone: "a", AdminAddress: "127.0.0.1:0"},
		Secrets: []config.Secret{{Name: "app", Username: User, Password: Password}},
		Proxies: []config.Proxy{{
			Name:      "main",
			Auth:      []config.Auth{{Secret: "app"}},
			Endpoints: []config.Endpoint{{Name: "rw", Address: "127.0.0.1:0"}},
			Pool:      config.PoolConfig{ConnectionBorrowTimeout: config.Duration(10 * time.Second)},
		}},
	}
	for i, s := range servers {
		cfg.Proxies[0].Targets = append(cfg.Proxies[0].Targets, config.Target{
			Name: fmt.Sprintf("db%d", i+1), Host: s.Host, Port: s.Port, Zone: "a",
		})
	}
	return cfg
}

// Start applies cfg to a new node and waits until every target is healthy.
func Start(t testing.TB, cfg *config.Config, servers ...*mysqltest.Server) *Env {
	t.Helper()
	return StartWith(t, node.Options{}, cfg, servers...)
}

// StartWith is Start with node options; a nil Logger logs to the test and
// a zero MonitorInterval is Start's 200ms.
func StartWith(t testing.TB, opts node.Options, cfg *config.Config, servers ...*mysqltest.Server) *Env {
	t.Helper()
	cfg.ApplyDefaults()
	if opts.Logger == nil {
		opts.Logger = mysqltest.TestLogger(t)
	}
	if opts.MonitorInterval == 0 {
		opts.MonitorInterval = 200 * time.Millisecond
	}
	n, err := node.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Apply(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n.Close(ctx)
	})
	e := &Env{Node: n, Servers: servers, Config: cfg}
	e.Addr, _ = n.Addr(cfg.Proxies[0].Name, cfg.Proxies[0].Endpoints[0].Name)
	deadline := time.Now().Add(30 * time.Second)
	for _, tg := range n.Targets(cfg.Proxies[0].Name) {
		for !tg.Health().Healthy {
			if time.Now().After(deadline) {
				t.Fatalf("target %s not healthy: %s", tg.Name(), tg.Health().LastError)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return e
}

// StartSimple starts one MariaDB server and a node in front of it.
func StartSimple(t testing.TB) *Env {
	t.Helper()
	s := mysqltest.StartT(t, mysqltest.Options{})
	PrepareServer(t, s)
	return Start(t, Config(s), s)
}

// DSN returns a go-sql-driver/mysql DSN for the node endpoint at addr.
func DSN(addr string, params string) string {
	dsn := fmt.Sprintf("%s:%s@tcp(%s)/%s", User, Password, addr, Database)
	if params != "" {
		dsn += "?" + params
	}
	return dsn
}

// Open opens a database handle through the node.
func (e *Env) Open(t testing.TB, params string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", DSN(e.Addr, params))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// OpenDirect opens a database handle straight to server i (for comparisons).
func (e *Env) OpenDirect(t testing.TB, i int, params string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", DSN(e.Servers[i].Addr(), params))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// HostPort splits the endpoint address.
func (e *Env) HostPort() (string, int) {
	h, p, _ := net.SplitHostPort(e.Addr)
	port, _ := strconv.Atoi(p)
	return h, port
}

// OpenAddr opens a database handle through any node endpoint address.
func OpenAddr(t testing.TB, addr, params string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", DSN(addr, params))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
