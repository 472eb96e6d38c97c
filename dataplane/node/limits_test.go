package node_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/dbproxy/dbproxy/dataplane/backend"
	"github.com/dbproxy/dbproxy/dataplane/config"
	"github.com/dbproxy/dbproxy/dataplane/mysql"
	"github.com/dbproxy/dbproxy/dataplane/node"
	"github.com/dbproxy/dbproxy/internal/mysqltest"
	"github.com/dbproxy/dbproxy/internal/nodetest"
	"github.com/dbproxy/dbproxy/internal/testing/testutil"
)

// rawConn is a client connection spoken to packet by packet, without the
// sequence checks of a real client, to misbehave on purpose.
type rawConn struct {
	t  *testing.T
	nc net.Conn
}

// dialRaw opens a TCP connection to addr without logging in.
func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, nc: nc}
}

// loginRaw logs in through the node as the test user and returns the
// connection at a command boundary.
func loginRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, _, err := mysql.Dial(ctx, addr, mysql.DialConfig{
		User: nodetest.User, Password: nodetest.Password, DB: nodetest.Database,
		Caps: backend.BaseCaps &^ mysql.ClientLocalFiles, Collation: backend.DefaultCollation,
	}, mysql.NewBufferPool(0))
	if err != nil {
		t.Fatal(err)
	}
	if c.Buffered() != 0 {
		t.Fatalf("%d bytes read ahead after login", c.Buffered())
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, nc: c.NetConn()}
}

// write sends one wire packet with the given sequence id.
func (c *rawConn) write(seq byte, payload []byte) {
	c.t.Helper()
	c.writeRaw(append([]byte{byte(len(payload)), byte(len(payload) >> 8), byte(len(payload) >> 16), seq}, payload...))
}

func (c *rawConn) writeRaw(b []byte) {
	c.t.Helper()
	_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// read returns the next packet's payload, or the error that ended the
// connection; it waits at most d.
func (c *rawConn) read(d time.Duration) ([]byte, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	var hdr [4]byte
	if _, err := io.ReadFull(c.nc, hdr[:]); err != nil {
		return nil, err
	}
	p := make([]byte, int(hdr[0])|int(hdr[1])<<8|int(hdr[2])<<16)
	if _, err := io.ReadFull(c.nc, p); err != nil {
		return nil, err
	}
	return p, nil
}

// closedByPeer reports whether err means the other side closed the
// connection (as opposed to our own deadline passing).
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// expectClosed waits up to d for the node to close the connection,
// skipping packets it sends first, and returns how long that took.
func (c *rawConn) expectClosed(d time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	for {
		_, err := c.read(d - time.Since(start))
		if err == nil {
			continue
		}
		if !closedByPeer(err) {
			c.t.Fatalf("connection still open after %s: %v", time.Since(start).Round(time.Millisecond), err)
		}
		return time.Since(start)
	}
}

// expectErr reads the next packet and wants an ERR packet with code num.
func (c *rawConn) expectErr(num uint16) {
	c.t.Helper()
	_ = c.readErr(num)
}

// readErr reads the next packet, wants an ERR packet with code num, and
// returns it.
func (c *rawConn) readErr(num uint16) *mysql.SQLError {
	c.t.Helper()
	p, err := c.read(5 * time.Second)
	if err != nil {
		c.t.Fatalf("want error %d, got %v", num, err)
	}
	if len(p) == 0 || p[0] != mysql.ErrPacket {
		c.t.Fatalf("want error %d, got packet %q", num, p)
	}
	e, err := mysql.ParseErr(p)
	if err != nil {
		c.t.Fatal(err)
	}
	if e.Num != num {
		c.t.Fatalf("want error %d, got %v", num, e)
	}
	return e
}

// ping sends COM_PING and wants OK.
func (c *rawConn) ping() {
	c.t.Helper()
	c.write(0, []byte{mysql.ComPing})
	p, err := c.read(5 * time.Second)
	if err != nil || len(p) == 0 || p[0] != mysql.OKPacket {
		c.t.Fatalf("ping: %q, %v", p, err)
	}
}

// wantMySQLError fails unless err is a server error with code num.
func wantMySQLError(t *testing.T, err error, num uint16) {
	t.Helper()
	_ = asMySQLError(t, err, num)
}

// asMySQLError returns err as a server error, failing unless its code is
// num.
func asMySQLError(t *testing.T, err error, num uint16) *gomysql.MySQLError {
	t.Helper()
	var me *gomysql.MySQLError
	if !errors.As(err, &me) || me.Number != num {
		t.Fatalf("want error %d, got %v", num, err)
	}
	return me
}

// background runs queries on db until stopped and reports how many ran;
// any error fails the test. It returns once the first query succeeded.
func background(t *testing.T, db *sql.DB) (stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	var n atomic.Int64
	var firstErr error
	done := make(chan struct{})
	running := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			qctx, qcancel := context.WithTimeout(ctx, 10*time.Second)
			var v int
			err := db.QueryRowContext(qctx, "SELECT 41 + 1").Scan(&v)
			qcancel()
			if ctx.Err() != nil {
				return
			}
			if err == nil && v != 42 {
				err = fmt.Errorf("SELECT 41 + 1 = %d", v)
			}
			if err != nil {
				firstErr = err
				return
			}
			if n.Add(1) == 1 {
				close(running)
			}
		}
	}()
	select {
	case <-running:
	case <-done:
		t.Fatalf("another client's query failed: %v", firstErr)
	}
	return func() int {
		t.Helper()
		cancel()
		<-done
		if firstErr != nil {
			t.Fatalf("another client's query failed: %v", firstErr)
		}
		if n.Load() == 0 {
			t.Fatal("another client ran no query")
		}
		return int(n.Load())
	}
}

func setupFailures(env *nodetest.Env, reason string) func(t testing.TB) float64 {
	c := env.Node.Metrics().ClientSetupFailures.WithLabelValues(env.Config.Proxies[0].Name, env.Config.Proxies[0].Endpoints[0].Name, reason)
	return func(t testing.TB) float64 { return promValue(t, c) }
}

// TestMaxClientConnections fills max_client_connections and wants the next
// client refused with "Too many connections" until one leaves.
func TestMaxClientConnections(t *testing.T) {
	s := mysqltest.StartT(t, mysqltest.Options{})
	nodetest.PrepareServer(t, s)
	cfg := nodetest.Config(s)
	cfg.Proxies[0].MaxClientConnections = 5
	env := nodetest.Start(t, cfg, s)
	refused := setupFailures(env, "too_many_connections")
	db := env.Open(t, "")
	db.SetMaxIdleConns(0) // a released sql.Conn is closed, not kept
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conns := make([]*sql.Conn, 5)
	for i := range conns {
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		defer c.Close()
		if err := c.PingContext(ctx); err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		conns[i] = c
	}
	_, err := db.Conn(ctx)
	me := asMySQLError(t, err, 1040)
	if me.Message != "Too many connections" || me.SQLState != [5]byte{'0', '8', '0', '0', '4'} {
		t.Fatalf("error %q state %s", me.Message, me.SQLState)
	}
	// At the protocol level: an ERR packet in place of the greeting, then
	// the node closes the connection.
	raw := dialRaw(t, env.Addr)
	if e := raw.readErr(mysql.ERConCountError); e.State != "08004" {
		t.Fatalf("state %s", e.State)
	}
	raw.expectClosed(5 * time.Second)
	testutil.Eventually(t, 5*time.Second, "2 refusals counted", func() bool { return refused(t) == 2 })

	// The five are unaffected.
	for i, c := range conns {
		if got := queryString(t, c, "SELECT CONNECTION_ID() > 0"); got != "1" {
			t.Fatalf("connection %d: %s", i+1, got)
		}
	}
	// One leaves: a new client gets in once the node has seen it go.
	if err := conns[0].Close(); err != nil {
		t.Fatal(err)
	}
	var sixth *sql.Conn
	testutil.Eventually(t, 5*time.Second, "a slot after a client left", func() bool {
		c, err := db.Conn(ctx)
		if err != nil {
			wantMySQLError(t, err, 1040)
			return false
		}
		sixth = c
		return true
	})
	defer sixth.Close()
	if got := queryString(t, sixth, "SELECT 'in'"); got != "in" {
		t.Fatalf("got %s", got)
	}
	// Full again.
	_, err = db.Conn(ctx)
	wantMySQLError(t, err, 1040)
}

// TestIdleClientTimeout wants an idle client disconnected after
// idle_client_timeout with error 4031, and a busy one left alone.
func TestIdleClientTimeout(t *testing.T) {
	const idle = time.Second
	s := mysqltest.StartT(t, mysqltest.Options{})
	nodetest.PrepareServer(t, s)
	cfg := nodetest.Config(s)
	cfg.Proxies[0].IdleClientTimeout = config.Duration(idle)
	env := nodetest.Start(t, cfg, s)

	t.Run("raw", func(t *testing.T) {
		c := loginRaw(t, env.Addr)
		c.ping()
		start := time.Now()
		e := c.readErr(mysql.ERClientInteractionTimeout)
		waited := time.Since(start)
		if waited < idle-100*time.Millisecond || waited > idle+3*time.Second {
			t.Fatalf("disconnected after %s, want about %s", waited, idle)
		}
		if !strings.Contains(e.Message, "inactivity") {
			t.Fatalf("message %q", e.Message)
		}
		c.expectClosed(time.Second)
	})

	t.Run("go-sql-driver", func(t *testing.T) {
		db := env.Open(t, "")
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// A transaction left open is rolled back when the node drops the
		// client.
		mustExec(t, conn, "CREATE TABLE IF NOT EXISTS idle_t (id INT PRIMARY KEY)")
		mustExec(t, conn, "BEGIN")
		mustExec(t, conn, "INSERT INTO idle_t VALUES (1)")
		testutil.Eventually(t, idle+5*time.Second, "the node to drop its idle clients", func() bool { return nodeOpenClients(t, env) == 0 })
		err = conn.PingContext(ctx)
		t.Logf("ping after the idle timeout: %v", err)
		var me *gomysql.MySQLError
		switch {
		case err == nil:
			t.Fatal("ping on a connection the node closed succeeded")
		case errors.As(err, &me):
			if me.Number != 4031 {
				t.Fatalf("want error 4031, got %v", err)
			}
		case errors.Is(err, driver.ErrBadConn), errors.Is(err, gomysql.ErrInvalidConn):
		default:
			t.Fatalf("want the closed connection reported, got %v", err)
		}
		// The pool replaces the connection; the open transaction is gone.
		if got := queryString(t, db, "SELECT COUNT(*) FROM idle_t"); got != "0" {
			t.Fatalf("rows after the idle client was dropped: %s", got)
		}
	})

	t.Run("busy", func(t *testing.T) {
		db := env.Open(t, "")
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// A statement running longer than the timeout is not idleness.
		if got := queryString(t, conn, "SELECT SLEEP(1.5)"); got != "0" {
			t.Fatalf("SLEEP = %s", got)
		}
		// Nor is a LOAD DATA LOCAL INFILE whose file arrives slowly, over
		// more than the timeout.
		gomysql.RegisterReaderHandler("slow-idle", func() io.Reader { return &slowReader{lines: 15, every: idle / 10} })
		defer gomysql.DeregisterReaderHandler("slow-idle")
		mustExec(t, conn, "CREATE TABLE IF NOT EXISTS idle_load (id INT PRIMARY KEY)")
		start := time.Now()
		if _, err := conn.ExecContext(ctx, "LOAD DATA LOCAL INFILE 'Reader::slow-idle' INTO TABLE idle_load"); err != nil {
			t.Fatalf("slow LOAD DATA LOCAL INFILE over %s: %v", time.Since(start).Round(time.Millisecond), err)
		}
		if got := queryString(t, conn, "SELECT COUNT(*) FROM idle_load"); got != "15" {
			t.Fatalf("loaded %s rows", got)
		}
		// Commands closer together than the timeout keep the client in,
		// over more than twice the timeout.
		tick := time.NewTicker(idle / 4)
		defer tick.Stop()
		for end := time.Now().Add(2 * idle); time.Now().Before(end); <-tick.C {
			if err := conn.PingContext(ctx); err != nil {
				t.Fatalf("busy client dropped: %v", err)
			}
		}
	})
}

// slowReader yields one line of a LOAD DATA file at a time, each after a
// pause, like a client reading its file from a slow source.
type slowReader struct {
	lines, n int
	every    time.Duration
	tick     *time.Ticker
}

func (r *slowReader) Read(p []byte) (int, error) {
	if r.n == r.lines {
		r.tick.Stop()
		return 0, io.EOF
	}
	if r.tick == nil {
		r.tick = time.NewTicker(r.every)
	}
	<-r.tick.C
	r.n++
	return copy(p, fmt.Sprintf("%d\n", r.n)), nil
}

// TestHandshakeTimeout wants clients that do not finish logging in within
// the handshake timeout disconnected, whatever they send meanwhile.
func TestHandshakeTimeout(t *testing.T) {
	const timeout = 500 * time.Millisecond
	s := mysqltest.StartT(t, mysqltest.Options{})
	nodetest.PrepareServer(t, s)
	cfg := nodetest.Config(s)
	cfg.Node.HandshakeTimeout = config.Duration(timeout)
	env := nodetest.Start(t, cfg, s)
	timeouts := setupFailures(env, "timeout")
	// A client logged in before is not subject to the handshake timeout.
	db := env.Open(t, "")
	db.SetMaxOpenConns(1)
	if got := queryString(t, db, "SELECT 1"); got != "1" {
		t.Fatal(got)
	}
	greeting := func(t *testing.T, c *rawConn) {
		t.Helper()
		p, err := c.read(5 * time.Second)
		if err != nil || len(p) == 0 || p[0] != 10 {
			t.Fatalf("greeting: %q, %v", p, err)
		}
	}
	within := func(t *testing.T, took time.Duration) {
		t.Helper()
		if took > timeout+3*time.Second {
			t.Fatalf("closed after %s, want about %s", took, timeout)
		}
	}
	t.Run("silent", func(t *testing.T) {
		c := dialRaw(t, env.Addr)
		start := time.Now()
		greeting(t, c)
		c.expectClosed(timeout + 5*time.Second)
		took := time.Since(start)
		if took < timeout-100*time.Millisecond {
			t.Fatalf("closed after %s, before the timeout %s", took, timeout)
		}
		within(t, took)
	})
	t.Run("partial header", func(t *testing.T) {
		c := dialRaw(t, env.Addr)
		start := time.Now()
		greeting(t, c)
		c.writeRaw([]byte{40, 0})
		c.expectClosed(timeout + 5*time.Second)
		within(t, time.Since(start))
	})
	t.Run("partial response", func(t *testing.T) {
		c := dialRaw(t, env.Addr)
		start := time.Now()
		greeting(t, c)
		c.writeRaw([]byte{100, 0, 0, 1, 1, 2, 3})
		c.expectClosed(timeout + 5*time.Second)
		within(t, time.Since(start))
	})
	t.Run("trickle", func(t *testing.T) {
		// One byte at a time, never a whole response: the timeout bounds
		// the whole login, not the gap between bytes.
		c := dialRaw(t, env.Addr)
		start := time.Now()
		greeting(t, c)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			hdr := []byte{0xff, 0xff, 0, 1}
			for i := 0; ctx.Err() == nil; i++ {
				_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
				b := byte('x')
				if i < len(hdr) {
					b = hdr[i]
				}
				if _, err := c.nc.Write([]byte{b}); err != nil {
					return
				}
				select {
				case <-ctx.Done():
				case <-tick.C:
				}
			}
		}()
		c.expectClosed(timeout + 5*time.Second)
		cancel()
		<-done
		within(t, time.Since(start))
	})
	t.Run("tls request then nothing", func(t *testing.T) {
		c := dialRaw(t, env.Addr)
		start := time.Now()
		greeting(t, c)
		req := make([]byte, 32)
		binary.LittleEndian.PutUint32(req, mysql.ClientProtocol41|mysql.ClientSSL|mysql.ClientSecureConnection|mysql.ClientPluginAuth)
		binary.LittleEndian.PutUint32(req[4:], 1<<24)
		req[8] = 45
		c.write(1, req)
		c.expectClosed(timeout + 5*time.Second)
		within(t, time.Since(start))
	})
	t.Run("never reads", func(t *testing.T) {
		c := dialRaw(t, env.Addr)
		start := time.Now()
		// Nothing read, nothing sent: the greeting waits in our socket
		// buffer until the node gives up.
		c.expectClosed(timeout + 5*time.Second)
		within(t, time.Since(start))
	})
	testutil.Eventually(t, 5*time.Second, "6 handshake timeouts counted", func() bool { return timeouts(t) == 6 })
	// The client logged in before all this waited longer than the
	// handshake timeout and still works.
	if got := queryString(t, db, "SELECT 2"); got != "2" {
		t.Fatal(got)
	}
	// And a normal login is quick enough.
	if got := queryString(t, env.Open(t, ""), "SELECT 3"); got != "3" {
		t.Fatal(got)
	}
}

// TestMalformedPacket sends broken packets, before and after logging in:
// the offending client gets an error packet or is disconnected (an
// unknown or malformed command leaves it usable, as on the server), and
// another client's queries go on throughout.
func TestMalformedPacket(t *testing.T) {
	const maxPacket = 1 << 20
	s := mysqltest.StartT(t, mysqltest.Options{})
	nodetest.PrepareServer(t, s)
	cfg := nodetest.Config(s)
	cfg.Node.MaxPacketSize = maxPacket
	env := nodetest.Start(t, cfg, s)
	other := env.Open(t, "")
	stop := background(t, other)

	// Before logging in: the node answers with ERR or closes; never waits
	// for the handshake timeout (10s here).
	for _, tc := range []struct {
		name string
		send func(c *rawConn)
		err  uint16 // 0: closed without error packet is fine
	}{
		{"garbage response", func(c *rawConn) { c.write(1, []byte("hello, world")) }, mysql.ERHandshakeError},
		{"wrong sequence", func(c *rawConn) { c.write(7, make([]byte, 40)) }, 0},
		{"huge header", func(c *rawConn) { c.writeRaw([]byte{0xff, 0xff, 0xff, 1}) }, 0},
		{"over max_packet_size", func(c *rawConn) { c.writeRaw([]byte{0, 0, 0x20, 1}) }, 0},
		{"http request", func(c *rawConn) { c.writeRaw([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")) }, 0},
		{"tls request then garbage", func(c *rawConn) {
			req := make([]byte, 32)
			binary.LittleEndian.PutUint32(req, mysql.ClientProtocol41|mysql.ClientSSL)
			c.write(1, req)
			c.writeRaw([]byte("this is not a TLS client hello......"))
		}, 0},
	} {
		t.Run("before login/"+tc.name, func(t *testing.T) {
			c := dialRaw(t, env.Addr)
			if p, err := c.read(5 * time.Second); err != nil || p[0] != 10 {
				t.Fatalf("greeting: %v", err)
			}
			tc.send(c)
			if tc.err != 0 {
				c.expectErr(tc.err)
			}
			if took := c.expectClosed(5 * time.Second); took > 3*time.Second {
				t.Fatalf("closed after %s", took)
			}
		})
	}

	t.Run("before login/huge header with the default max_packet_size", func(t *testing.T) {
		// 16 MiB announced in four bytes: a client that has not logged in
		// must not make the node reserve that much and wait for it.
		def := nodetest.Start(t, nodetest.Config(s), s)
		c := dialRaw(t, def.Addr)
		if p, err := c.read(5 * time.Second); err != nil || p[0] != 10 {
			t.Fatalf("greeting: %v", err)
		}
		c.writeRaw([]byte{0xff, 0xff, 0xff, 1})
		if took := c.expectClosed(15 * time.Second); took > 3*time.Second {
			t.Fatalf("closed after %s, want at once", took)
		}
	})

	// After logging in.
	for _, tc := range []struct {
		name string
		seq  byte
		send []byte
		// raw is sent as is instead of send.
		raw []byte
		err uint16
		// keep: the connection stays usable; otherwise it is closed.
		keep bool
	}{
		{name: "unknown command", send: []byte{0x7f, 1, 2, 3}, err: mysql.ERUnknownComError, keep: true},
		{name: "empty query", send: []byte{mysql.ComQuery}, err: 1065, keep: true},
		{name: "init db without name", send: []byte{mysql.ComInitDB}, err: mysql.ERNoDB, keep: true},
		{name: "short set option", send: []byte{mysql.ComSetOption, 1}, err: mysql.ERUnknownComError, keep: true},
		{name: "bad set option", send: []byte{mysql.ComSetOption, 9, 0}, err: mysql.ERUnknownComError, keep: true},
		{name: "short execute", send: []byte{mysql.ComStmtExecute}, err: mysql.ERUnknownStmtHandler, keep: true},
		{name: "execute unknown statement", send: []byte{mysql.ComStmtExecute, 9, 0, 0, 0, 0, 1, 0, 0, 0}, err: mysql.ERUnknownStmtHandler, keep: true},
		{name: "short reset", send: []byte{mysql.ComStmtReset, 1}, err: mysql.ERUnknownStmtHandler, keep: true},
		{name: "short fetch", send: []byte{mysql.ComStmtFetch}, err: mysql.ERUnknownStmtHandler, keep: true},
		{name: "short close", send: []byte{mysql.ComStmtClose}, keep: true},
		{name: "short long data", send: []byte{mysql.ComStmtSendLongData, 1}, keep: true},
		{name: "field list garbage", send: []byte{mysql.ComFieldList, 'n', 'o', 'p', 'e'}, err: 1146, keep: true},
		{name: "empty packet", send: []byte{}, err: mysql.ERNetReadError},
		{name: "wrong sequence", seq: 3, send: []byte{mysql.ComPing}, err: mysql.ERNetPacketsOutOfOrder},
		{name: "over max_packet_size", raw: []byte{0, 0, 0x20, 0, mysql.ComQuery}, err: mysql.ERNetPacketTooLarge},
		{name: "huge header", raw: []byte{0xff, 0xff, 0xff, 0, mysql.ComQuery}, err: mysql.ERNetPacketTooLarge},
		{name: "change user garbage", send: []byte{mysql.ComChangeUser}, err: mysql.ERHandshakeError},
	} {
		t.Run("after login/"+tc.name, func(t *testing.T) {
			c := loginRaw(t, env.Addr)
			if tc.raw != nil {
				c.writeRaw(tc.raw)
			} else {
				c.write(tc.seq, tc.send)
			}
			if tc.err != 0 {
				c.expectErr(tc.err)
			}
			if tc.keep {
				c.ping()
				return
			}
			if took := c.expectClosed(5 * time.Second); took > 3*time.Second {
				t.Fatalf("closed after %s", took)
			}
		})
	}

	t.Run("prepared statement with truncated parameters", func(t *testing.T) {
		c := loginRaw(t, env.Addr)
		q := append([]byte{mysql.ComStmtPrepare}, "SELECT ?, ?"...)
		c.write(0, q)
		p, err := c.read(5 * time.Second)
		if err != nil || len(p) < 5 || p[0] != 0 {
			t.Fatalf("prepare: %q, %v", p, err)
		}
		id := binary.LittleEndian.Uint32(p[1:])
		// Column and parameter definitions follow, without EOF packets
		// (CLIENT_DEPRECATE_EOF).
		for range binary.LittleEndian.Uint16(p[5:]) + binary.LittleEndian.Uint16(p[7:]) {
			if _, err := c.read(5 * time.Second); err != nil {
				t.Fatal(err)
			}
		}
		exec := []byte{mysql.ComStmtExecute, byte(id), byte(id >> 8), byte(id >> 16), byte(id >> 24), 0, 1, 0, 0, 0}
		c.write(0, append(exec, 0 /* null bitmap */, 1 /* new params bound */, 8 /* half a type */))
		c.expectErr(mysql.ERWrongArguments)
		// Types bound, values missing: the server itself refuses.
		c.write(0, append(exec, 0, 1, 8, 0, 8, 0))
		p, err = c.read(5 * time.Second)
		if err != nil || len(p) == 0 || p[0] != mysql.ErrPacket {
			t.Fatalf("want an error packet, got %q, %v", p, err)
		}
		c.ping()
	})

	t.Run("go-sql-driver query over max_packet_size", func(t *testing.T) {
		db := env.Open(t, "maxAllowedPacket=0")
		db.SetMaxOpenConns(1)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		_, err := db.ExecContext(ctx, "SELECT '"+strings.Repeat("x", 2*maxPacket)+"'")
		if err == nil {
			t.Fatal("a query over max_packet_size succeeded")
		}
		var me *gomysql.MySQLError
		if errors.As(err, &me) && me.Number != mysql.ERNetPacketTooLarge {
			t.Fatalf("want error 1153 or a closed connection, got %v", err)
		}
		// The pool reconnects.
		if got := queryString(t, db, "SELECT 'after'"); got != "after" {
			t.Fatal(got)
		}
	})

	n := stop()
	t.Logf("the other client ran %d queries meanwhile", n)
}

// TestBorrowTimeout holds the only pooled database connection in a
// transaction: other clients' commands fail with error 9501 after the
// borrow timeout instead of hanging, and work again once it is free.
func TestBorrowTimeout(t *testing.T) {
	const borrow = time.Second
	s := mysqltest.StartT(t, mysqltest.Options{ExtraArgs: []string{"--max-connections=10"}})
	nodetest.PrepareServer(t, s)
	cfg := nodetest.Config(s)
	cfg.Proxies[0].Pool.MaxConnectionsPercent = 10 // 10% of 10: one connection
	cfg.Proxies[0].Pool.ConnectionBorrowTimeout = config.Duration(borrow)
	env := nodetest.Start(t, cfg, s)
	pool := env.Node.Targets(cfg.Proxies[0].Name)[0].Pool
	if st := pool.Stats(); st.Max != 1 {
		t.Fatalf("pool limit %d, want 1", st.Max)
	}
	timeouts := env.Node.Metrics().BorrowTimeouts.WithLabelValues(env.Config.Proxies[0].Name, env.Config.Proxies[0].Targets[0].Name)
	db := env.Open(t, "")
	mustExec(t, db, "CREATE TABLE bt (id INT PRIMARY KEY)")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	conn := func() *sql.Conn {
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.PingContext(ctx); err != nil { // answered by the node
			t.Fatal(err)
		}
		return c
	}
	a, b := conn(), conn()
	txA, err := a.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := txA.ExecContext(ctx, "INSERT INTO bt VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	wantTimeout := func(t *testing.T, what string, run func(ctx context.Context) error) {
		t.Helper()
		start := time.Now()
		qctx, qcancel := context.WithTimeout(ctx, borrow+10*time.Second)
		defer qcancel()
		err := run(qctx)
		took := time.Since(start)
		me := asMySQLError(t, err, mysql.ERBorrowTimeout)
		if !strings.Contains(me.Message, "connection_borrow_timeout") {
			t.Fatalf("%s: message %q", what, me.Message)
		}
		if took < borrow-50*time.Millisecond || took > borrow+3*time.Second {
			t.Fatalf("%s failed after %s, want about %s", what, took, borrow)
		}
	}
	t.Run("query", func(t *testing.T) {
		wantTimeout(t, "SELECT", func(ctx context.Context) error {
			_, err := b.ExecContext(ctx, "SELECT COUNT(*) FROM bt")
			return err
		})
	})
	t.Run("prepare", func(t *testing.T) {
		wantTimeout(t, "PREPARE", func(ctx context.Context) error {
			st, err := b.PrepareContext(ctx, "SELECT COUNT(*) FROM bt WHERE id > ?")
			if err == nil {
				st.Close()
			}
			return err
		})
	})
	t.Run("begin", func(t *testing.T) {
		wantTimeout(t, "BEGIN", func(ctx context.Context) error {
			_, err := b.ExecContext(ctx, "BEGIN")
			return err
		})
	})
	t.Run("many waiters", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 5)
		start := time.Now()
		for range 5 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				qctx, qcancel := context.WithTimeout(ctx, borrow+10*time.Second)
				defer qcancel()
				_, err := db.ExecContext(qctx, "SELECT 1")
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			wantMySQLError(t, err, mysql.ERBorrowTimeout)
		}
		if took := time.Since(start); took > borrow+3*time.Second {
			t.Fatalf("waiters ended after %s", took)
		}
	})
	if got := promValue(t, timeouts); got != 8 {
		t.Fatalf("borrow timeouts counted %v, want 8", got)
	}
	// Free the connection: everyone works again.
	if err := txA.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, b, "SELECT COUNT(*) FROM bt"); got != "1" {
		t.Fatalf("count %s", got)
	}
	if got := queryString(t, db, "SELECT COUNT(*) FROM bt WHERE id > ?", 0); got != "1" {
		t.Fatalf("count %s", got)
	}
	// A waiter gets the connection as soon as the holder lets go, well
	// before the timeout.
	txA, err = a.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := txA.ExecContext(ctx, "INSERT INTO bt VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := b.ExecContext(ctx, "INSERT INTO bt VALUES (3)")
		got <- err
	}()
	testutil.Eventually(t, 5*time.Second, "the waiter to queue", func() bool { return pool.Stats().Waiting == 1 })
	if err := txA.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiter: %v", err)
	}
	// The pool never went over its single connection (plus the node's
	// health monitor).
	if st := pool.Stats(); st.Open > 1 {
		t.Fatalf("pool has %d connections open, want at most 1", st.Open)
	}
	if got := queryString(t, env.OpenDirect(t, 0, ""), "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = ? AND ID <> CONNECTION_ID()", nodetest.User); got > "2" {
		t.Fatalf("database connections of %s: %s, want at most 2", nodetest.User, got)
	}
}

// TestWrongPassword wants error 1045 for bad credentials and the node
// serving other clients throughout.
func TestWrongPassword(t *testing.T) {
	env := nodetest.StartSimple(t)
	authFailures := setupFailures(env, "auth")
	other := env.Open(t, "")
	stop := background(t, other)
	open := func(user, password string) error {
		db, err := sql.Open("mysql", fmt.Sprintf("%s:%s@tcp(%s)/%s", user, password, env.Addr, nodetest.Database))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		return db.PingContext(ctx)
	}
	for _, tc := range []struct {
		name, user, password, msg string
	}{
		{"wrong password", nodetest.User, "not-the-password", "Access denied for user 'app' (using password: YES)"},
		{"no password", nodetest.User, "", "Access denied for user 'app' (using password: NO)"},
		{"unknown user", "mallory", nodetest.Password, "Access denied for user 'mallory' (using password: YES)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			me := asMySQLError(t, open(tc.user, tc.password), mysql.ERAccessDenied)
			if me.Message != tc.msg || string(me.SQLState[:]) != "28000" {
				t.Fatalf("error %q (%s), want %q (28000)", me.Message, me.SQLState[:], tc.msg)
			}
		})
	}
	t.Run("many at once", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- open(nodetest.User, fmt.Sprintf("wrong-%d", i))
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			wantMySQLError(t, err, mysql.ERAccessDenied)
		}
	})
	t.Run("mariadb client", func(t *testing.T) {
		c := nodeCLI(env)
		res := c.run(t, "", "--skip-ssl", "--password=not-the-password", "-e", "SELECT 1")
		if res.exit != 1 || !strings.HasPrefix(res.stderr, "ERROR 1045 (28000): Access denied for user 'app'") {
			t.Fatalf("%s", res)
		}
	})
	testutil.Eventually(t, 5*time.Second, "24 auth failures counted", func() bool { return authFailures(t) == 24 })
	if err := open(nodetest.User, nodetest.Password); err != nil {
		t.Fatalf("right password after wrong ones: %v", err)
	}
	t.Logf("the other client ran %d queries meanwhile", stop())
}

// TestCloseDoesNotWaitForBorrows: a client waiting for a database
// connection (the target is down, the borrow timeout long) does not hold up
// the node's shutdown.
func TestCloseDoesNotWaitForBorrows(t *testing.T) {
	s := mysqltest.StartT(t, mysqltest.Options{})
	nodetest.PrepareServer(t, s)
	cfg := nodetest.Config(s)
	cfg.Proxies[0].Pool.ConnectionBorrowTimeout = config.Duration(10 * time.Minute)
	env := nodetest.Start(t, cfg, s)
	db := env.Open(t, "")
	if err := db.Ping(); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for env.Node.Targets(cfg.Proxies[0].Name)[0].Health().Healthy {
		if time.Now().After(deadline) {
			t.Fatal("the stopped server still looks healthy")
		}
		time.Sleep(10 * time.Millisecond)
	}
	queried := make(chan error, 1)
	go func() {
		_, err := db.Exec("SELECT 1")
		queried <- err
	}()
	// The wait for a writer is not visible from outside; give the query
	// time to reach it. (Were it not there yet, Close would still have to
	// return promptly.)
	time.Sleep(300 * time.Millisecond)
	closed := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		env.Node.Close(ctx)
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(time.Minute):
		t.Fatal("Close is still waiting for a client that waits for a database connection")
	}
	if err := <-queried; err == nil {
		t.Fatal("the query succeeded with the server stopped")
	}
}

// TestCloseRightAfterApply: closing a node before its endpoints' accept
// loops have started still closes their listeners (they used to keep
// accepting forever).
func TestCloseRightAfterApply(t *testing.T) {
	for i := range 30 {
		n, err := node.New(node.Options{Logger: mysqltest.TestLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		cfg := &config.Config{
			Secrets: []config.Secret{{Name: "s", Username: "u", Password: "p"}},
			Proxies: []config.Proxy{{
				Name: "p", Auth: []config.Auth{{Secret: "s"}},
				Endpoints: []config.Endpoint{{Name: "e", Address: "127.0.0.1:0"}},
				Targets:   []config.Target{{Host: "127.0.0.1", Port: 1}},
			}},
		}
		cfg.ApplyDefaults()
		if err := n.Apply(t.Context(), cfg); err != nil {
			t.Fatal(err)
		}
		addr, _ := n.Addr("p", "e")
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		n.Close(ctx)
		cancel()
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Fatalf("round %d: %s still accepts connections after Close", i, addr)
		}
	}
}
