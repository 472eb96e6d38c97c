package node_test

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/dbproxy/dbproxy/dataplane/config"
	"github.com/dbproxy/dbproxy/internal/mysqltest"
	"github.com/dbproxy/dbproxy/internal/nodetest"
	"github.com/dbproxy/dbproxy/internal/testing/testutil"
	"github.com/dbproxy/dbproxy/internal/vocab"
)

// TestReadOnlyEndpointZones checks that a READ_ONLY endpoint reads from a
// healthy reader in the node's zone, then from another zone, and that the
// READ_WRITE endpoint always reaches the writer (roles discovered from
// read_only).
func TestReadOnlyEndpointZones(t *testing.T) {
	primary, reps := mysqltest.StartReplicatedT(t, 2, mysqltest.Options{})
	nodetest.PrepareServer(t, primary)
	for _, r := range reps {
		if err := r.WaitCaughtUp(t.Context(), primary); err != nil {
			t.Fatal(err)
		}
	}
	cfg := nodetest.Config(primary, reps[0], reps[1])
	cfg.Proxies[0].Targets[1].Zone = "a"
	cfg.Proxies[0].Targets[2].Zone = "b"
	cfg.Proxies[0].Endpoints = append(cfg.Proxies[0].Endpoints, config.Endpoint{Name: "ro", Address: "127.0.0.1:0", TargetRole: vocab.TargetRoleReadOnly})
	port := func(p int) string { return fmt.Sprint(p) }
	for _, zone := range []string{"a", "b"} {
		cfg := *cfg
		cfg.Node.Zone = zone
		env := nodetest.Start(t, &cfg, primary, reps[0], reps[1])
		roAddr, _ := env.Node.Addr("main", "ro")
		ro := nodetest.OpenAddr(t, roAddr, "")
		rw := env.Open(t, "")
		want := map[string]string{"a": port(reps[0].Port), "b": port(reps[1].Port)}[zone]
		for range 5 {
			if got := queryString(t, ro, "SELECT @@port"); got != want {
				t.Fatalf("zone %s: READ_ONLY endpoint reached port %s, want the local reader %s", zone, got, want)
			}
			if got := queryString(t, rw, "SELECT @@port"); got != port(primary.Port) {
				t.Fatalf("zone %s: READ_WRITE endpoint reached port %s, want the writer %d", zone, got, primary.Port)
			}
		}
	}
	// With the zone's reader gone, reads go to the other zone.
	env := nodetest.Start(t, cfg, primary, reps[0], reps[1])
	roAddr, _ := env.Node.Addr("main", "ro")
	if err := reps[0].Stop(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for env.Node.Targets("main")[1].Health().Healthy {
		if time.Now().After(deadline) {
			t.Fatal("stopped reader still healthy")
		}
		time.Sleep(50 * time.Millisecond)
	}
	ro := nodetest.OpenAddr(t, roAddr, "")
	if got := queryString(t, ro, "SELECT @@port"); got != port(reps[1].Port) {
		t.Fatalf("READ_ONLY endpoint reached port %s after the local reader stopped, want %d", got, reps[1].Port)
	}
}

// TestWriterFailover kills the writer: idle clients stay connected, new
// work waits for the promoted writer instead of failing, and reads of the
// data written before the failover succeed through the new writer.
func TestWriterFailover(t *testing.T) {
	primary, reps := mysqltest.StartReplicatedT(t, 1, mysqltest.Options{})
	nodetest.PrepareServer(t, primary)
	if err := primary.Exec(t.Context(), "CREATE TABLE app.f (a INT)", "INSERT INTO app.f VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	if err := reps[0].WaitCaughtUp(t.Context(), primary); err != nil {
		t.Fatal(err)
	}
	cfg := nodetest.Config(primary, reps[0])
	cfg.Proxies[0].Pool.ConnectionBorrowTimeout = config.Duration(30 * time.Second)
	env := nodetest.Start(t, cfg, primary, reps[0])
	db := env.Open(t, "")
	idle := make([]*sql.Conn, 0, 5)
	for range 5 {
		c, err := db.Conn(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got := queryString(t, c, "SELECT @@port"); got != fmt.Sprint(primary.Port) {
			t.Fatalf("before failover: port %s", got)
		}
		idle = append(idle, c)
	}
	if err := primary.Kill(); err != nil {
		t.Fatal(err)
	}
	// Promote once the node has seen the writer go.
	writer := env.Node.Targets("main")[0]
	promoted := make(chan struct{})
	defer func() { <-promoted }()
	go func() {
		defer close(promoted)
		deadline := time.Now().Add(20 * time.Second)
		for writer.Health().Healthy && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if err := reps[0].Promote(t.Context()); err != nil {
			t.Error(err)
		}
	}()
	for i, c := range idle {
		var port string
		if err := c.QueryRowContext(t.Context(), "SELECT @@port").Scan(&port); err != nil {
			t.Fatalf("idle client %d after failover: %v", i, err)
		}
		if port != fmt.Sprint(reps[0].Port) {
			t.Fatalf("idle client %d reached port %s, want the new writer %d", i, port, reps[0].Port)
		}
		if got := queryString(t, c, "SELECT COUNT(*) FROM f"); got != "1" {
			t.Fatalf("rows after failover: %s", got)
		}
	}
	mustExec(t, db, "INSERT INTO f VALUES (2)")
}

// TestReloadDrains applies a changed configuration while a client is in a
// transaction: Apply returns at once, the old client finishes on the old
// proxy, new clients reach the new one, and a broken configuration leaves
// the running one serving.
func TestReloadDrains(t *testing.T) {
	env := nodetest.StartSimple(t)
	db := env.Open(t, "")
	mustExec(t, db, "CREATE TABLE r (a INT)")
	old, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	mustExec(t, old, "START TRANSACTION")
	mustExec(t, old, "INSERT INTO r VALUES (1)")

	next := *env.Config
	next.Proxies = []config.Proxy{env.Config.Proxies[0]}
	next.Proxies[0].IdleClientTimeout = config.Duration(time.Hour)
	start := time.Now()
	if err := env.Node.Apply(t.Context(), &next); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Apply took %s with a client in a transaction", d)
	}
	mustExec(t, old, "INSERT INTO r VALUES (2)")
	mustExec(t, old, "COMMIT")
	addr, _ := env.Node.Addr("main", "rw")
	if got := queryString(t, nodetest.OpenAddr(t, addr, ""), "SELECT COUNT(*) FROM r"); got != "2" {
		t.Fatalf("rows through the new proxy: %s", got)
	}

	broken := next
	broken.Proxies = []config.Proxy{next.Proxies[0]}
	broken.Proxies[0].IdleClientTimeout = config.Duration(2 * time.Hour)
	broken.Proxies[0].Endpoints = []config.Endpoint{{Name: "rw", Address: "192.0.2.1:1"}} // not a local address
	if err := env.Node.Apply(t.Context(), &broken); err == nil {
		t.Fatal("Apply of an unbindable address succeeded")
	}
	addr, ok := env.Node.Addr("main", "rw")
	if !ok {
		t.Fatal("proxy gone after a failed apply")
	}
	if got := queryString(t, nodetest.OpenAddr(t, addr, ""), "SELECT COUNT(*) FROM r"); got != "2" {
		t.Fatalf("rows after a failed apply: %s", got)
	}
}

// TestReadRunsAgainWhenItsConnectionDies: the database connection under a
// SELECT is killed before any of its response came. The read runs again on
// another connection and the client gets its result; a statement that may
// write, or a read inside a transaction, gets error 2013 instead, and the
// client connection stays usable. Each statement waits on a table lock
// until it is killed, so no timing matters.
func TestReadRunsAgainWhenItsConnectionDies(t *testing.T) {
	env := nodetest.StartSimple(t)
	direct := env.OpenDirect(t, 0, "")
	mustExec(t, direct, "CREATE TABLE held (a INT)")
	locker, err := direct.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close()
	// killBlocked runs stmt while held is locked, kills the server
	// connection running it, lets go of the lock and returns what run
	// returned.
	killBlocked := func(stmt string, run func(string) error) error {
		t.Helper()
		mustExec(t, locker, "LOCK TABLES held WRITE")
		done := make(chan error, 1)
		go func() { done <- run(stmt) }()
		var id int64
		testutil.Eventually(t, 10*time.Second, "the statement waiting for the lock", func() bool {
			return direct.QueryRowContext(t.Context(), "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO = ?", stmt).Scan(&id) == nil
		})
		mustExec(t, direct, fmt.Sprintf("KILL CONNECTION %d", id))
		mustExec(t, locker, "UNLOCK TABLES")
		return <-done
	}
	db := env.Open(t, "")
	c, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	var tag string
	if err := killBlocked("SELECT COUNT(*), 'rerun' FROM held", func(q string) error {
		var n int
		return c.QueryRowContext(t.Context(), q).Scan(&n, &tag)
	}); err != nil {
		t.Fatalf("a read whose connection was killed: %v", err)
	}
	if tag != "rerun" {
		t.Fatalf("read returned %q", tag)
	}

	lost := func(what, q string) {
		t.Helper()
		err := killBlocked(q, func(q string) error {
			_, err := c.ExecContext(t.Context(), q)
			return err
		})
		var me *gomysql.MySQLError
		if !errors.As(err, &me) || me.Number != 2013 {
			t.Fatalf("%s whose connection was killed: %v; want error 2013", what, err)
		}
		if got := queryString(t, c, "SELECT 'still usable'"); got != "still usable" {
			t.Fatalf("after %s: %q", what, got)
		}
	}
	lost("a statement that may write", "DO (SELECT COUNT(*) FROM held)")
	mustExec(t, c, "BEGIN")
	lost("a read in a transaction", "SELECT COUNT(*), 'in tx' FROM held")
}

// dropOn forwards connections to target; once armed, the first client
// packet holding trigger closes both sides instead of reaching target.
func dropOn(t *testing.T, target string, trigger []byte, armed *atomic.Bool) (string, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				s, err := net.Dial("tcp", target)
				if err != nil {
					c.Close()
					return
				}
				go func() { _, _ = io.Copy(c, s); c.Close() }()
				buf := make([]byte, 1<<16)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						if bytes.Contains(buf[:n], trigger) && armed.CompareAndSwap(true, false) {
							c.Close()
							s.Close()
							return
						}
						if _, err := s.Write(buf[:n]); err != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				s.Close()
			}()
		}
	}()
	h, p, _ := net.SplitHostPort(ln.Addr().String())
	port, _ := strconv.Atoi(p)
	return h, port
}

// TestReadOfThePreviousCountsIsNotRunAgain: SELECT ROW_COUNT() reads what
// the previous statement left on its connection. When that connection
// breaks under it, the client gets error 2013, not the count of another
// connection.
func TestReadOfThePreviousCountsIsNotRunAgain(t *testing.T) {
	s := mysqltest.StartT(t, mysqltest.Options{})
	nodetest.PrepareServer(t, s)
	var armed atomic.Bool
	cfg := nodetest.Config(s)
	cfg.Proxies[0].Targets[0].Host, cfg.Proxies[0].Targets[0].Port = dropOn(t, s.Addr(), []byte("ROW_COUNT"), &armed)
	env := nodetest.Start(t, cfg, s)
	db := env.Open(t, "")
	mustExec(t, db, "CREATE TABLE rc (id INT PRIMARY KEY, v INT)")
	mustExec(t, db, "INSERT INTO rc VALUES (1,1),(2,2),(3,3)")
	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	mustExec(t, conn, "UPDATE rc SET v = v + 1 WHERE id <= 2")
	armed.Store(true)
	var got string
	err = conn.QueryRowContext(t.Context(), "SELECT ROW_COUNT()").Scan(&got)
	if armed.Load() {
		t.Fatal("the statement never reached the breaking connection")
	}
	var me *gomysql.MySQLError
	if !errors.As(err, &me) || me.Number != 2013 {
		t.Fatalf("ROW_COUNT() over a connection that broke: %q, %v; want error 2013", got, err)
	}
	if got := queryString(t, conn, "SELECT 'still usable'"); got != "still usable" {
		t.Fatalf("after the error: %q", got)
	}
}
