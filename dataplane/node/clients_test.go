package node_test

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/dbproxy/dbproxy/internal/drivertest"
	"github.com/dbproxy/dbproxy/internal/mysqltest"
	"github.com/dbproxy/dbproxy/internal/nodetest"
	"github.com/dbproxy/dbproxy/internal/testing/testutil"
	"github.com/dbproxy/dbproxy/internal/vocab"
)

// TestDrivers runs every driver's scenario (PyMySQL, mysqlclient, PDO,
// mysqli, mysql2, Connector/J) through the node, plain and over TLS with the
// node's self-signed certificate.
func TestDrivers(t *testing.T) {
	env := nodetest.StartSimple(t)
	host, port := env.HostPort()
	for _, tc := range []struct {
		name string
		tls  bool
	}{
		{"plain", false},
		{"tls", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := clientLogins(env, tc.tls)
			drivertest.RunAll(t, drivertest.Target{
				Host: host, Port: port,
				User: nodetest.User, Password: nodetest.Password, Database: nodetest.Database,
				TLS: tc.tls,
			})
			if got := clientLogins(env, tc.tls); got < before+float64(len(drivertest.Drivers())) {
				t.Errorf("node counted %v logins with tls=%v, want at least one per driver (%d)", got-before, tc.tls, len(drivertest.Drivers()))
			}
		})
	}
}

// promValue reads a counter or gauge.
func promValue(t testing.TB, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	t.Fatalf("metric %s is neither a counter nor a gauge", m.Desc())
	return 0
}

// clientLogins is the number of logged-in client connections the node
// has counted on the first endpoint, with or without TLS.
func clientLogins(env *nodetest.Env, tls bool) float64 {
	var d dto.Metric
	c := env.Node.Metrics().ClientConnectionsTotal.WithLabelValues(env.Config.Proxies[0].Name, env.Config.Proxies[0].Endpoints[0].Name, strconv.FormatBool(tls))
	_ = c.Write(&d)
	return d.GetCounter().GetValue()
}

// nodeOpenClients is the number of logged-in client connections open on the
// first endpoint.
func nodeOpenClients(t testing.TB, env *nodetest.Env) float64 {
	t.Helper()
	var n float64
	for _, tls := range []string{"false", "true"} {
		n += promValue(t, env.Node.Metrics().ClientConnections.WithLabelValues(env.Config.Proxies[0].Name, env.Config.Proxies[0].Endpoints[0].Name, tls))
	}
	return n
}

// cli runs the mariadb command-line client against addr (host:port) as the
// test user. The password goes through the environment, never the
// command line.
type cli struct {
	host string
	port int
	// db is the default database; "" for none.
	db string
}

func nodeCLI(env *nodetest.Env) cli {
	h, p := env.HostPort()
	return cli{host: h, port: p, db: nodetest.Database}
}

func directCLI(s *mysqltest.Server) cli {
	return cli{host: s.Host, port: s.Port, db: nodetest.Database}
}

type cliResult struct {
	stdout, stderr string
	exit           int
}

func (r cliResult) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.exit, r.stdout, r.stderr)
}

func (c cli) run(t *testing.T, stdin string, args ...string) cliResult {
	t.Helper()
	path, err := exec.LookPath("mariadb")
	if err != nil {
		t.Fatalf("the mariadb client is not installed (apt-get install mariadb-client): %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	full := append([]string{"--no-defaults", "--protocol=TCP", "--host=" + c.host, "--port=" + strconv.Itoa(c.port),
		"--user=" + nodetest.User, "--connect-timeout=10"}, args...)
	if c.db != "" {
		full = append(full, c.db)
	}
	cmd := exec.CommandContext(ctx, path, full...)
	cmd.Env = append(os.Environ(), "MYSQL_PWD="+nodetest.Password, "LC_ALL=C.UTF-8")
	cmd.Stdin = strings.NewReader(stdin)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	res := cliResult{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("mariadb %v did not finish: %v\nstdout:\n%s\nstderr:\n%s", args, ctx.Err(), res.stdout, res.stderr)
	case errors.As(err, &ee):
		res.exit = ee.ExitCode()
	case err != nil:
		t.Fatalf("mariadb %v: %v", args, err)
	}
	return res
}

// mustRun runs the client and fails the test unless it exits 0 with
// nothing on stderr.
func (c cli) mustRun(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	res := c.run(t, stdin, args...)
	if res.exit != 0 || res.stderr != "" {
		t.Fatalf("mariadb %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, res.exit, res.stdout, res.stderr)
	}
	return res.stdout
}

// batchRows parses --batch output: a header line, then one line per row,
// fields separated by tabs.
func batchRows(t *testing.T, out string) (header []string, rows [][]string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) == 0 || lines[0] == "" {
		t.Fatalf("no header in batch output %q", out)
	}
	header = strings.Split(lines[0], "\t")
	for _, l := range lines[1:] {
		f := strings.Split(l, "\t")
		if len(f) != len(header) {
			t.Fatalf("row %q has %d fields, header has %d", l, len(f), len(header))
		}
		rows = append(rows, f)
	}
	return header, rows
}

// cliScript exercises the client's statement splitting, result printing,
// --force error handling, a rolled-back transaction, a multi-statement
// query and a procedure returning two result sets. It can run repeatedly.
const cliScript = `DROP TABLE IF EXISTS cli_t;
DROP PROCEDURE IF EXISTS cli_p;
CREATE TABLE cli_t (id INT PRIMARY KEY, name VARCHAR(32) NOT NULL, note TEXT NULL) DEFAULT CHARSET=utf8mb4;
INSERT INTO cli_t VALUES (1, 'one', NULL), (2, 'twö 🐬', 'tab	here');
INSERT INTO cli_t VALUES (3, 'three', '');
SELECT id, name, note FROM cli_t ORDER BY id;
INSERT INTO cli_t VALUES (1, 'again', NULL);
SELECT * FROM cli_missing;
SELECT COUNT(*) AS after_errors FROM cli_t;
START TRANSACTION;
INSERT INTO cli_t VALUES (4, 'four', NULL);
UPDATE cli_t SET name = 'ONE' WHERE id = 1;
SELECT COUNT(*) AS in_tx, MAX(name) AS max_name, @@in_transaction AS in_trx FROM cli_t;
ROLLBACK;
SELECT COUNT(*) AS after_rollback, @@in_transaction AS in_trx FROM cli_t;
SELECT name FROM cli_t WHERE id = 1;
DELIMITER //
SELECT 'multi' AS first; SELECT 'statement' AS second//
CREATE PROCEDURE cli_p() BEGIN SELECT COUNT(*) AS c FROM cli_t; SELECT MAX(id) AS m FROM cli_t; END//
DELIMITER ;
CALL cli_p();
SELECT DATABASE() AS db;
DROP PROCEDURE cli_p;
DROP TABLE cli_t;
`

const cliScriptOut = `id	name	note
1	one	NULL
2	twö 🐬	tab\there
3	three	
after_errors
3
in_tx	max_name	in_trx
4	twö 🐬	1
after_rollback	in_trx
3	0
name
one
first
multi
second
statement
c
3
m
3
db
app
`

// cliScriptErr is what the client prints on stderr for the two failing
// statements (it echoes each one in batch mode).
const cliScriptErr = `--------------
INSERT INTO cli_t VALUES (1, 'again', NULL)
--------------

ERROR 1062 (23000) at line 7: Duplicate entry '1' for key 'PRIMARY'
--------------
SELECT * FROM cli_missing
--------------

ERROR 1146 (42S02) at line 8: Table 'app.cli_missing' doesn't exist
`

// TestMariaDBCLI drives the node with the mariadb command-line client,
// plain and over TLS.
func TestMariaDBCLI(t *testing.T) {
	env := nodetest.StartSimple(t)
	node := nodeCLI(env)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"plain", []string{"--skip-ssl"}},
		{"ssl", []string{"--ssl", "--ssl-verify-server-cert=0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tls := tc.args[0] == "--ssl"
			t.Run("status", func(t *testing.T) {
				before := clientLogins(env, tls)
				out := node.mustRun(t, "", append(tc.args, "-e", "status")...)
				cipher := regexp.MustCompile(`(?m)^SSL:\s+(.*)$`).FindStringSubmatch(out)
				if cipher == nil {
					t.Fatalf("no SSL line in status:\n%s", out)
				}
				if got := strings.HasPrefix(cipher[1], "Cipher in use is "); got != tls {
					t.Fatalf("SSL: %q, want TLS %v", cipher[1], tls)
				}
				if got := clientLogins(env, tls); got != before+1 {
					t.Fatalf("node counted %v logins with tls=%v, want 1", got-before, tls)
				}
			})
			t.Run("batch", func(t *testing.T) {
				out := node.mustRun(t, "", append(tc.args, "--batch", "--default-character-set=utf8mb4", "-e",
					`SELECT 1+1 AS two, 'a	b' AS tabbed, NULL AS nothing, 'héllo 🐬' AS utf, CAST('2024-02-29 12:34:56.123456' AS DATETIME(6)) AS dt, @@autocommit AS ac, @@character_set_client AS cs`)...)
				header, rows := batchRows(t, out)
				if got, want := strings.Join(header, ","), "two,tabbed,nothing,utf,dt,ac,cs"; got != want {
					t.Fatalf("header %s, want %s", got, want)
				}
				want := []string{"2", `a\tb`, "NULL", "héllo 🐬", "2024-02-29 12:34:56.123456", "1", "utf8mb4"}
				if len(rows) != 1 || strings.Join(rows[0], "|") != strings.Join(want, "|") {
					t.Fatalf("rows %q, want [%q]", rows, want)
				}
				// Several statements in one -e, and a failing one: the client
				// stops at the error and exits 1.
				res := node.run(t, "", append(tc.args, "--batch", "--skip-column-names", "-e",
					"SELECT 'a'; SELECT 'b'; SELECT * FROM cli_nowhere; SELECT 'never'")...)
				if res.stdout != "a\nb\n" || res.exit != 1 ||
					res.stderr != "--------------\nSELECT * FROM cli_nowhere\n--------------\n\nERROR 1146 (42S02) at line 1: Table 'app.cli_nowhere' doesn't exist\n" {
					t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", res.exit, res.stdout, res.stderr)
				}
			})
			t.Run("script", func(t *testing.T) {
				args := append(tc.args, "--force", "--default-character-set=utf8mb4")
				res := node.run(t, cliScript, args...)
				// The server itself prints the same.
				direct := directCLI(env.Servers[0]).run(t, cliScript, args...)
				if direct != res {
					t.Errorf("direct to the server differs:\n%s\nthrough the node:\n%s", direct, res)
				}
				if res.stdout != cliScriptOut || res.stderr != cliScriptErr || res.exit != 0 {
					t.Fatalf("exit %d (want 0: --force)\nstdout:\n%s\nwant:\n%s\nstderr:\n%s\nwant:\n%s", res.exit, res.stdout, cliScriptOut, res.stderr, cliScriptErr)
				}
			})
		})
	}
}

// sysbenchStats are the counters of a sysbench run's "SQL statistics".
type sysbenchStats struct {
	transactions, queries, ignoredErrors, reconnects int
}

var sysbenchLine = regexp.MustCompile(`(?m)^\s+(transactions|queries|ignored errors|reconnects):\s+(\d+)\s`)

func parseSysbench(t *testing.T, out string) sysbenchStats {
	t.Helper()
	var st sysbenchStats
	seen := map[string]bool{}
	for _, m := range sysbenchLine.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.Atoi(m[2])
		seen[m[1]] = true
		switch m[1] {
		case "transactions":
			st.transactions = v
		case "queries":
			st.queries = v
		case "ignored errors":
			st.ignoredErrors = v
		case "reconnects":
			st.reconnects = v
		}
	}
	if len(seen) != 4 {
		t.Fatalf("sysbench output lacks some of transactions/queries/ignored errors/reconnects:\n%s", out)
	}
	return st
}

// TestSysbenchReadWrite runs a short sysbench oltp_read_write through the
// node with server-side prepared statements (sysbench's default). The only
// error sysbench may meet is an InnoDB deadlock (1213), which the workload
// produces on a direct connection too: sysbench rolls back and retries
// those, and every one it counts must be a deadlock the server itself
// detected (Innodb_deadlocks). Any other error, and any reconnect, fails.
func TestSysbenchReadWrite(t *testing.T) {
	path, err := exec.LookPath("sysbench")
	if err != nil {
		t.Fatalf("sysbench is not installed (apt-get install sysbench): %v", err)
	}
	env := nodetest.StartSimple(t)
	host, port := env.HostPort()
	direct := env.OpenDirect(t, 0, "")
	deadlocks := func() int {
		var name string
		var v int
		if err := direct.QueryRowContext(t.Context(), "SHOW GLOBAL STATUS LIKE 'Innodb_deadlocks'").Scan(&name, &v); err != nil {
			t.Fatalf("read Innodb_deadlocks: %v", err)
		}
		return v
	}
	stmtCounters := func() (prepares, executes int) {
		rows, err := direct.QueryContext(t.Context(), "SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_stmt_prepare', 'Com_stmt_execute')")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var name string
			var v int
			if err := rows.Scan(&name, &v); err != nil {
				t.Fatal(err)
			}
			if strings.EqualFold(name, "Com_stmt_prepare") {
				prepares = v
			} else {
				executes = v
			}
		}
		return prepares, executes
	}
	sysbench := func(t *testing.T, command string, extra ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		args := append([]string{"oltp_read_write", "--db-driver=mysql",
			"--mysql-host=" + host, "--mysql-port=" + strconv.Itoa(port),
			"--mysql-user=" + nodetest.User, "--mysql-password=" + nodetest.Password, "--mysql-db=" + nodetest.Database,
			"--tables=2", "--table-size=10000"}, extra...)
		cmd := exec.CommandContext(ctx, path, append(args, command)...)
		cmd.WaitDelay = 5 * time.Second
		out, err := cmd.CombinedOutput()
		if err != nil || ctx.Err() != nil {
			t.Fatalf("sysbench %s: %v (%v)\n%s", command, err, ctx.Err(), out)
		}
		if bytes.Contains(out, []byte("FATAL")) {
			t.Fatalf("sysbench %s reported an error:\n%s", command, out)
		}
		return string(out)
	}
	t.Run("prepare", func(t *testing.T) {
		sysbench(t, "prepare", "--threads=2")
		for _, tbl := range []string{"sbtest1", "sbtest2"} {
			if got := queryString(t, direct, "SELECT COUNT(*) FROM "+tbl); got != "10000" {
				t.Fatalf("%s has %s rows, want 10000", tbl, got)
			}
		}
	})
	t.Run("run", func(t *testing.T) {
		prep0, exec0 := stmtCounters()
		dead0 := deadlocks()
		start := time.Now()
		out := sysbench(t, "run", "--threads=4", "--time=5", "--events=0", "--report-interval=0",
			"--db-ps-mode=auto", "--mysql-ignore-errors=1213")
		st := parseSysbench(t, out)
		dead := deadlocks() - dead0
		t.Logf("sysbench run in %s: %d transactions, %d queries, %d ignored errors, %d reconnects; server saw %d deadlocks",
			time.Since(start).Round(time.Millisecond), st.transactions, st.queries, st.ignoredErrors, st.reconnects, dead)
		if st.reconnects != 0 {
			t.Fatalf("%d reconnects; want none\n%s", st.reconnects, out)
		}
		if st.ignoredErrors > dead {
			t.Fatalf("sysbench ignored %d errors but the server detected only %d deadlocks\n%s", st.ignoredErrors, dead, out)
		}
		if st.transactions < 20 {
			t.Fatalf("only %d transactions in 5s\n%s", st.transactions, out)
		}
		// Server-side prepared statements were really used: every
		// transaction executes 18 statements.
		prep1, exec1 := stmtCounters()
		if exec1-exec0 < st.queries/2 {
			t.Fatalf("server executed %d prepared statements for %d queries; sysbench did not use server-side prepares", exec1-exec0, st.queries)
		}
		t.Logf("server: %d COM_STMT_PREPARE, %d COM_STMT_EXECUTE", prep1-prep0, exec1-exec0)
	})
	t.Run("cleanup", func(t *testing.T) {
		sysbench(t, "cleanup")
		if got := queryString(t, direct, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME LIKE 'sbtest%'", nodetest.Database); got != "0" {
			t.Fatalf("%s sbtest tables left after cleanup", got)
		}
	})
}

// TestCachingSHA2 logs in to a proxy whose clients use
// caching_sha2_password: the first login of a user runs full
// authentication (the RSA key exchange without TLS, the password in clear
// over TLS), later ones the fast path. Without TLS a relay between the
// driver and the node records what the node sent, to tell the paths apart.
func TestCachingSHA2(t *testing.T) {
	s := mysqltest.StartT(t, mysqltest.Options{})
	nodetest.PrepareServer(t, s)
	login := loginAs
	wantDenied := func(t *testing.T, err error) {
		t.Helper()
		var me *mysql.MySQLError
		if !errors.As(err, &me) || me.Number != 1045 {
			t.Fatalf("want error 1045, got %v", err)
		}
		if strings.Contains(me.Message, nodetest.Password) {
			t.Fatalf("error message leaks the password: %q", me.Message)
		}
	}
	for _, tc := range []struct {
		name, params string
	}{
		{"rsa", ""},
		{"tls", "tls=skip-verify"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := nodetest.Config(s)
			cfg.Proxies[0].Auth[0].ClientPasswordAuthType = vocab.AuthCachingSHA2Password
			env := nodetest.Start(t, cfg, s) // a fresh node: nobody has logged in yet
			rec := newLoginRecorder(t, env.Addr)
			plain := tc.params == ""
			// checkPath looks at what the node sent on the last connection.
			checkPath := func(t *testing.T, full bool) {
				t.Helper()
				if !plain {
					return
				}
				var fastOK, fullAuth, key bool
				sent := rec.last(t)
				for b := sent; len(b) >= 4; {
					n := int(b[0]) | int(b[1])<<8 | int(b[2])<<16
					if len(b) < 4+n {
						break
					}
					p := b[4 : 4+n]
					b = b[4+n:]
					switch {
					case bytes.Equal(p, []byte{1, 3}):
						fastOK = true
					case bytes.Equal(p, []byte{1, 4}):
						fullAuth = true
					case bytes.HasPrefix(p, []byte("\x01-----BEGIN PUBLIC KEY-----")):
						key = true
					}
				}
				if full && (!fullAuth || !key || fastOK) || !full && (!fastOK || fullAuth || key) {
					t.Fatalf("node sent %q; want full authentication with the RSA key: %v", sent, full)
				}
			}
			wantDenied(t, login(t, rec.addr, nodetest.User, "wrong", tc.params))
			if err := login(t, rec.addr, nodetest.User, nodetest.Password, tc.params); err != nil {
				t.Fatalf("full authentication: %v", err)
			}
			checkPath(t, true)
			for i := range 3 {
				if err := login(t, rec.addr, nodetest.User, nodetest.Password, tc.params); err != nil {
					t.Fatalf("fast authentication %d: %v", i, err)
				}
				checkPath(t, false)
			}
			wantDenied(t, login(t, rec.addr, nodetest.User, "wrong", tc.params))
			wantDenied(t, login(t, rec.addr, nodetest.User, "", tc.params))
			wantDenied(t, login(t, rec.addr, "nobody", nodetest.Password, tc.params))
			// The node counts a failure after the client has its error.
			failures := env.Node.Metrics().ClientSetupFailures.WithLabelValues(env.Config.Proxies[0].Name, env.Config.Proxies[0].Endpoints[0].Name, "auth")
			testutil.Eventually(t, 5*time.Second, "4 auth setup failures", func() bool { return promValue(t, failures) == 4 })
		})
	}
}

// loginRecorder relays connections to a node and keeps the first bytes
// the node sent on each.
type loginRecorder struct {
	addr string
	mu   struct {
		sync.Mutex
		sent []*bytes.Buffer
	}
}

func newLoginRecorder(t *testing.T, target string) *loginRecorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &loginRecorder{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var conns sync.Map
	t.Cleanup(func() {
		ln.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			conns.Store(c, nil)
			conns.Store(n, nil)
			buf := &bytes.Buffer{}
			r.mu.Lock()
			r.mu.sent = append(r.mu.sent, buf)
			r.mu.Unlock()
			wg.Add(2)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(n, c)
				n.Close()
			}()
			go func() {
				defer wg.Done()
				_, _ = io.Copy(c, io.TeeReader(n, &lockedWriter{mu: &r.mu.Mutex, w: buf, max: 4096}))
				c.Close()
			}()
		}
	}()
	return r
}

// last returns what the node sent on the latest connection.
func (r *loginRecorder) last(t *testing.T) []byte {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.mu.sent) == 0 {
		t.Fatal("no connection recorded")
	}
	return bytes.Clone(r.mu.sent[len(r.mu.sent)-1].Bytes())
}

type lockedWriter struct {
	mu  *sync.Mutex
	w   *bytes.Buffer
	max int
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.max - l.w.Len(); room > 0 {
		l.w.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// TestLoadDataLocal runs LOAD DATA LOCAL INFILE through the node: it works
// when the client sends the file, and otherwise fails with a clean error
// that leaves the connection usable; it never hangs.
func TestLoadDataLocal(t *testing.T) {
	env := nodetest.StartSimple(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "rows.csv")
	var csv strings.Builder
	for i := 1; i <= 500; i++ {
		fmt.Fprintf(&csv, "%d,name %d,%s\n", i, i, strings.Repeat("x", i%50))
	}
	if err := os.WriteFile(file, []byte(csv.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	mysql.RegisterLocalFile(file)
	t.Cleanup(func() { mysql.DeregisterLocalFile(file) })
	// A reader of several MiB spans many packets.
	const bigRows = 100000
	mysql.RegisterReaderHandler("big", func() io.Reader {
		pr, pw := io.Pipe()
		go func() {
			w := bufio.NewWriter(pw)
			for i := 1; i <= bigRows; i++ {
				fmt.Fprintf(w, "%d,big %d,%s\n", i, i, strings.Repeat("y", 40))
			}
			pw.CloseWithError(w.Flush())
		}()
		return pr
	})
	t.Cleanup(func() { mysql.DeregisterReaderHandler("big") })
	direct := env.OpenDirect(t, 0, "")
	db := env.Open(t, "")
	mustExec(t, db, "CREATE TABLE ld (id INT PRIMARY KEY, name VARCHAR(32), pad VARCHAR(64))")
	ctx := func(t *testing.T) context.Context {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		t.Cleanup(cancel)
		return ctx
	}
	load := func(t *testing.T, conn *sql.Conn, name string) (sql.Result, error) {
		return conn.ExecContext(ctx(t), fmt.Sprintf("LOAD DATA LOCAL INFILE '%s' INTO TABLE ld FIELDS TERMINATED BY ','", name))
	}
	count := func(t *testing.T, conn *sql.Conn) string {
		return queryString(t, conn, "SELECT COUNT(*) FROM ld")
	}
	conn, err := db.Conn(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	t.Run("registered file", func(t *testing.T) {
		res, err := load(t, conn, file)
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := res.RowsAffected(); n != 500 {
			t.Fatalf("rows affected %d, want 500", n)
		}
		if got := queryString(t, direct, "SELECT CONCAT(COUNT(*), ':', SUM(LENGTH(pad)), ':', MAX(name)) FROM ld"); got != "500:12250:name 99" {
			t.Fatalf("loaded %s", got)
		}
		mustExec(t, conn, "DELETE FROM ld")
	})
	t.Run("reader of several MiB", func(t *testing.T) {
		res, err := load(t, conn, "Reader::big")
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := res.RowsAffected(); n != bigRows {
			t.Fatalf("rows affected %d, want %d", n, bigRows)
		}
		if got := count(t, conn); got != strconv.Itoa(bigRows) {
			t.Fatalf("count %s", got)
		}
		mustExec(t, conn, "DELETE FROM ld")
	})
	t.Run("in a transaction", func(t *testing.T) {
		tx, err := db.BeginTx(ctx(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx(t), fmt.Sprintf("LOAD DATA LOCAL INFILE '%s' INTO TABLE ld FIELDS TERMINATED BY ','", file)); err != nil {
			t.Fatal(err)
		}
		if got := queryString(t, tx, "SELECT COUNT(*) FROM ld"); got != "500" {
			t.Fatalf("count in transaction %s", got)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		if got := count(t, conn); got != "0" {
			t.Fatalf("count after rollback %s", got)
		}
	})
	t.Run("file the client refuses", func(t *testing.T) {
		// The driver refuses an unregistered file: it sends the server an
		// empty file and reports its own error; the connection goes on.
		_, err := load(t, conn, filepath.Join(dir, "unregistered.csv"))
		if err == nil || !strings.Contains(err.Error(), "not registered") {
			t.Fatalf("want the driver's refusal, got %v", err)
		}
		if got := count(t, conn); got != "0" {
			t.Fatalf("count %s", got)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		missing := filepath.Join(dir, "missing.csv")
		mysql.RegisterLocalFile(missing)
		defer mysql.DeregisterLocalFile(missing)
		if _, err := load(t, conn, missing); err == nil {
			t.Fatal("loading a missing file succeeded")
		}
		if got := count(t, conn); got != "0" {
			t.Fatalf("count %s", got)
		}
	})
	t.Run("server refuses", func(t *testing.T) {
		mustExec(t, direct, "SET GLOBAL local_infile = OFF")
		defer mustExec(t, direct, "SET GLOBAL local_infile = ON")
		_, err := load(t, conn, file)
		var me *mysql.MySQLError
		if !errors.As(err, &me) || (me.Number != 1148 && me.Number != 4166) {
			t.Fatalf("want error 1148 or 4166, got %v", err)
		}
		if got := count(t, conn); got != "0" {
			t.Fatalf("count %s", got)
		}
	})
	t.Run("cli without local-infile", func(t *testing.T) {
		// The mariadb client without --local-infile does not offer the
		// capability: the node refuses on its behalf.
		res := nodeCLI(env).run(t, "", "--local-infile=0", "-e",
			fmt.Sprintf("LOAD DATA LOCAL INFILE '%s' INTO TABLE ld FIELDS TERMINATED BY ','; SELECT 'unreachable'", file))
		if res.exit != 1 || !strings.Contains(res.stderr, "ERROR 4166") || res.stdout != "" {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", res.exit, res.stdout, res.stderr)
		}
		if got := count(t, conn); got != "0" {
			t.Fatalf("count %s", got)
		}
	})
	t.Run("cli with local-infile", func(t *testing.T) {
		out := nodeCLI(env).mustRun(t, "", "--local-infile=1", "--batch", "--skip-column-names", "-e",
			fmt.Sprintf("LOAD DATA LOCAL INFILE '%s' INTO TABLE ld FIELDS TERMINATED BY ','; SELECT COUNT(*) FROM ld", file))
		if out != "500\n" {
			t.Fatalf("output %q", out)
		}
	})
}

// loginAs logs in through addr as user with password (which may be a
// connect token) and the DSN parameters params, and checks that
// CURRENT_USER() is that user.
func loginAs(t *testing.T, addr, user, password, params string) error {
	t.Helper()
	cfg, err := mysql.ParseDSN(fmt.Sprintf("%s@tcp(%s)/%s?%s", user, addr, nodetest.Database, params))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Passwd = password
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var who string
	if err := db.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&who); err != nil {
		return err
	}
	if !strings.HasPrefix(who, user+"@") {
		return fmt.Errorf("logged in as %s, not %s", who, user)
	}
	return nil
}
