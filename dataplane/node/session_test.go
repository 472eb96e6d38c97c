package node_test

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dbproxy/dbproxy/dataplane/backend"
	"github.com/dbproxy/dbproxy/dataplane/mysql"
	"github.com/dbproxy/dbproxy/internal/mysqltest"
	"github.com/dbproxy/dbproxy/internal/nodetest"
	"github.com/dbproxy/dbproxy/internal/vocab"
)

// rawClient logs in to addr with the node's own protocol code, for
// commands database/sql cannot send.
func rawClient(t *testing.T, addr, db string) *backend.Conn {
	t.Helper()
	mc, info := rawDial(t, addr, db, true)
	return &backend.Conn{Conn: mc, Info: info, Vars: map[string]string{}, Stmts: map[string][]*backend.Stmt{}}
}

// rawDial logs in to addr with the node's own protocol code, asking for
// CLIENT_DEPRECATE_EOF or the classic EOF packets.
func rawDial(t *testing.T, addr, db string, deprecateEOF bool) (*mysql.Conn, mysql.ServerInfo) {
	t.Helper()
	caps := backend.BaseCaps
	if !deprecateEOF {
		caps &^= mysql.ClientDeprecateEOF
	}
	mc, info, err := mysql.Dial(t.Context(), addr, mysql.DialConfig{
		User: nodetest.User, Password: nodetest.Password, DB: db,
		Caps: caps, Collation: backend.DefaultCollation,
	}, mysql.NewBufferPool(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mc.Close() })
	return mc, info
}

func rawValue(t *testing.T, c *backend.Conn, q string) string {
	t.Helper()
	rows, err := c.Query(q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	if len(rows) != 1 || len(rows[0]) != 1 {
		t.Fatalf("%s: %d rows", q, len(rows))
	}
	if rows[0][0] == nil {
		return "NULL"
	}
	return *rows[0][0]
}

func rawExec(t *testing.T, c *backend.Conn, q string) {
	t.Helper()
	if _, err := c.Exec(q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func TestResetConnectionAndChangeUser(t *testing.T) {
	env := nodetest.StartSimple(t)
	c := rawClient(t, env.Addr, nodetest.Database)
	rawExec(t, c, "SET @v = 7")
	rawExec(t, c, "SET time_zone = '+03:00'")
	rawExec(t, c, "CREATE TEMPORARY TABLE tmp_reset (a INT)")
	if err := c.ResetConnection(); err != nil {
		t.Fatal(err)
	}
	if got := rawValue(t, c, "SELECT @v"); got != "NULL" {
		t.Errorf("@v after COM_RESET_CONNECTION = %s", got)
	}
	if got := rawValue(t, c, "SELECT @@time_zone"); got != "SYSTEM" {
		t.Errorf("time_zone after COM_RESET_CONNECTION = %s", got)
	}
	if _, err := c.Query("SELECT * FROM tmp_reset"); err == nil {
		t.Error("temporary table survived COM_RESET_CONNECTION")
	}
	rawExec(t, c, "SET @v = 8")
	err := mysql.ClientChangeUser(c.Conn, c.Info.Caps, mysql.DialConfig{User: nodetest.User, Password: nodetest.Password, Collation: backend.DefaultCollation})
	if err != nil {
		t.Fatal(err)
	}
	if got := rawValue(t, c, "SELECT @v"); got != "NULL" {
		t.Errorf("@v after COM_CHANGE_USER = %s", got)
	}
	if got := rawValue(t, c, "SELECT DATABASE()"); got != "NULL" {
		t.Errorf("DATABASE() after COM_CHANGE_USER without a database = %s", got)
	}
	err = mysql.ClientChangeUser(c.Conn, c.Info.Caps, mysql.DialConfig{User: nodetest.User, Password: "wrong", Collation: backend.DefaultCollation})
	if se, ok := err.(*mysql.SQLError); !ok || se.Num != 1045 {
		t.Errorf("change user with a wrong password: %v", err)
	}
}

// TestNoSchemaClient checks that a client without a database never runs on
// a connection that has one selected.
func TestNoSchemaClient(t *testing.T) {
	env := nodetest.StartSimple(t)
	withDB := env.Open(t, "")
	mustExec(t, withDB, "CREATE TABLE IF NOT EXISTS noschema (a INT)")
	c := rawClient(t, env.Addr, "")
	for range 5 {
		queryString(t, withDB, "SELECT COUNT(*) FROM noschema")
		if got := rawValue(t, c, "SELECT DATABASE()"); got != "NULL" {
			t.Fatalf("DATABASE() = %s for a client that selected none", got)
		}
		if _, err := c.Query("SELECT * FROM noschema"); err == nil {
			t.Fatal("unqualified table resolved for a client without a database")
		} else if se, ok := err.(*mysql.SQLError); !ok || se.Num != 1046 {
			t.Fatalf("want error 1046 No database selected, got %v", err)
		}
	}
	rawExec(t, c, "USE "+nodetest.Database)
	if got := rawValue(t, c, "SELECT DATABASE()"); got != nodetest.Database {
		t.Fatalf("DATABASE() after USE = %s", got)
	}
}

// TestPreviousStatementFunctions checks FOUND_ROWS(), ROW_COUNT() and
// LAST_INSERT_ID() against a direct connection while other clients keep
// the pool busy.
func TestPreviousStatementFunctions(t *testing.T) {
	s := mysqltest.StartT(t, mysqltest.Options{})
	nodetest.PrepareServer(t, s)
	cfg := nodetest.Config(s)
	cfg.Proxies[0].Pool.MaxConnectionsPercent = 2
	env := nodetest.Start(t, cfg, s)
	db := env.Open(t, "interpolateParams=true")
	mustExec(t, db, "CREATE TABLE prev (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
	mustExec(t, db, "INSERT INTO prev (v) VALUES (1),(2),(3),(4),(5)")
	backgroundLoad(t, env, 4, "SELECT 1 FROM prev LIMIT 2")
	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for range 20 {
		mustExec(t, conn, "UPDATE prev SET v = v + 1 WHERE id <= 2")
		if got := queryString(t, conn, "SELECT ROW_COUNT()"); got != "2" {
			t.Fatalf("ROW_COUNT() = %s, want 2", got)
		}
		rows, err := conn.QueryContext(t.Context(), "SELECT id FROM prev WHERE id > 1")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
		}
		rows.Close()
		if got := queryString(t, conn, "SELECT FOUND_ROWS()"); got != "4" {
			t.Fatalf("FOUND_ROWS() = %s, want 4", got)
		}
	}
	_ = sql.ErrNoRows
	_ = vocab.RoleAuto
}

// TestCursorFetch opens a read-only cursor with COM_STMT_EXECUTE and reads
// it with COM_STMT_FETCH while other clients use the pool, with and without
// CLIENT_DEPRECATE_EOF.
func TestCursorFetch(t *testing.T) {
	s := mysqltest.StartT(t, mysqltest.Options{})
	nodetest.PrepareServer(t, s)
	cfg := nodetest.Config(s)
	cfg.Proxies[0].Pool.MaxConnectionsPercent = 2
	env := nodetest.Start(t, cfg, s)
	backgroundLoad(t, env, 1, "SELECT 1")
	for _, deprecateEOF := range []bool{true, false} {
		mc, info := rawDial(t, env.Addr, nodetest.Database, deprecateEOF)
		if err := mc.WriteCommand(append([]byte{mysql.ComStmtPrepare}, "SELECT seq FROM seq_1_to_10"...)); err != nil {
			t.Fatal(err)
		}
		p, err := mc.ReadPacket()
		if err != nil {
			t.Fatal(err)
		}
		pok, err := mysql.ParsePrepareOK(p)
		if err != nil {
			t.Fatalf("prepare: %v (%q)", err, p)
		}
		skip := int(pok.Columns)
		if !deprecateEOF {
			skip++
		}
		for range skip {
			if _, err := mc.ReadPacket(); err != nil {
				t.Fatal(err)
			}
		}
		exec := []byte{mysql.ComStmtExecute, 0, 0, 0, 0, mysql.CursorTypeReadOnly, 1, 0, 0, 0}
		binary.LittleEndian.PutUint32(exec[1:], pok.StmtID)
		if err := mc.WriteCommand(exec); err != nil {
			t.Fatal(err)
		}
		// column count, column definition, then the EOF/OK with CURSOR_EXISTS.
		var last []byte
		for range 3 {
			if last, err = mc.ReadPacket(); err != nil {
				t.Fatal(err)
			}
		}
		if last[0] != mysql.EOFPacket {
			t.Fatalf("after columns: %q", last)
		}
		var got []uint64
		for round := 0; round < 10; round++ {
			fetch := []byte{mysql.ComStmtFetch, 0, 0, 0, 0, 4, 0, 0, 0}
			binary.LittleEndian.PutUint32(fetch[1:], pok.StmtID)
			if err := mc.WriteCommand(fetch); err != nil {
				t.Fatal(err)
			}
			var status uint16
			for {
				p, err := mc.ReadPacket()
				if err != nil {
					t.Fatal(err)
				}
				if p[0] == mysql.ErrPacket {
					e, _ := mysql.ParseErr(p)
					t.Fatalf("fetch: %v", e)
				}
				if p[0] == mysql.EOFPacket {
					if deprecateEOF {
						ok, err := mysql.ParseOK(p, info.Caps)
						if err != nil {
							t.Fatal(err)
						}
						status = ok.Status
					} else {
						e, err := mysql.ParseEOF(p)
						if err != nil {
							t.Fatal(err)
						}
						status = e.Status
					}
					break
				}
				// Binary row: header, NULL bitmap (1 byte), BIGINT UNSIGNED.
				got = append(got, binary.LittleEndian.Uint64(p[2:]))
			}
			if status&mysql.StatusLastRowSent != 0 {
				break
			}
		}
		if fmt.Sprint(got) != "[1 2 3 4 5 6 7 8 9 10]" {
			t.Fatalf("deprecateEOF=%v: rows %v", deprecateEOF, got)
		}
	}
}

// TestPinReasons checks that each kind of unmovable state pins the session
// under its reason, and that EXCLUDE_VARIABLE_SETS leaves SET statements
// unpinned.
func TestPinReasons(t *testing.T) {
	s := mysqltest.StartT(t, mysqltest.Options{})
	nodetest.PrepareServer(t, s)
	cases := []struct {
		stmt, reason string
	}{
		{"SET @v = 1", "user_variable"},
		{"SELECT @w := 2", "user_variable"},
		{"CREATE TEMPORARY TABLE tp (a INT)", "temporary_table"},
		{"SELECT GET_LOCK('l', 1)", "named_lock"},
		{"LOCK TABLES pin_t READ", "table_lock"},
		{"SELECT SQL_CALC_FOUND_ROWS * FROM pin_t", "sql_calc_found_rows"},
		{"PREPARE ps FROM 'SELECT 1'", "text_prepared_statement"},
		{"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "next_transaction_characteristics"},
	}
	for _, filter := range []bool{false, true} {
		cfg := nodetest.Config(s)
		if filter {
			cfg.Proxies[0].Pool.SessionPinningFilters = []string{"EXCLUDE_VARIABLE_SETS"}
		}
		env := nodetest.Start(t, cfg, s)
		db := env.Open(t, "interpolateParams=true")
		db.SetMaxIdleConns(0) // every case on a new client connection
		mustExec(t, db, "CREATE TABLE IF NOT EXISTS pin_t (a INT)")
		for _, c := range cases {
			conn, err := db.Conn(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			before := metricLabel(t, env, "dbproxy_session_pins_total", "reason", c.reason)
			rows, err := conn.QueryContext(t.Context(), c.stmt)
			if err != nil {
				t.Fatalf("%s: %v", c.stmt, err)
			}
			rows.Close()
			// The node finishes a command before it reads the next one.
			queryString(t, conn, "SELECT 1")
			after := metricLabel(t, env, "dbproxy_session_pins_total", "reason", c.reason)
			wantPin := !(filter && c.stmt == "SET @v = 1")
			if (after > before) != wantPin {
				t.Errorf("filter=%v %q: pins{reason=%s} %v -> %v, want pinned=%v", filter, c.stmt, c.reason, before, after, wantPin)
			}
			conn.Close()
		}
	}
}

// metricLabel returns the value of the sample of name whose label k is v.
func metricLabel(t *testing.T, env *nodetest.Env, name, k, v string) float64 {
	t.Helper()
	mfs, err := env.Node.Metrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == v {
					return m.GetCounter().GetValue() + m.GetGauge().GetValue()
				}
			}
		}
	}
	return 0
}

// TestInitQuery checks that init_query sets the state every session starts
// from, also on connections another client changed.
func TestInitQuery(t *testing.T) {
	s := mysqltest.StartT(t, mysqltest.Options{})
	nodetest.PrepareServer(t, s)
	cfg := nodetest.Config(s)
	cfg.Proxies[0].Pool.InitQuery = "SET SESSION time_zone = '+05:00', sql_mode = 'ANSI_QUOTES'"
	cfg.Proxies[0].Pool.MaxConnectionsPercent = 1 // one database connection
	env := nodetest.Start(t, cfg, s)
	db := env.Open(t, "")
	a, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	mustExec(t, a, "SET time_zone = '-02:00'")
	b, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for range 3 {
		if got := queryString(t, b, "SELECT CONCAT(@@time_zone, ' ', @@sql_mode)"); got != "+05:00 ANSI_QUOTES" {
			t.Fatalf("fresh session sees %q, want init_query's state", got)
		}
		if got := queryString(t, a, "SELECT @@time_zone"); got != "-02:00" {
			t.Fatalf("changed session sees %q", got)
		}
	}
}

// TestFieldListStatisticsMetrics sends COM_FIELD_LIST and COM_STATISTICS
// and scrapes /metrics and /healthz.
func TestFieldListStatisticsMetrics(t *testing.T) {
	env := nodetest.StartSimple(t)
	db := env.Open(t, "")
	mustExec(t, db, "CREATE TABLE fl (a INT, b VARCHAR(10))")
	for _, deprecateEOF := range []bool{true, false} {
		mc, _ := rawDial(t, env.Addr, nodetest.Database, deprecateEOF)
		if err := mc.WriteCommand(append([]byte{mysql.ComFieldList}, "fl\x00"...)); err != nil {
			t.Fatal(err)
		}
		var names []string
		for {
			p, err := mc.ReadPacket()
			if err != nil {
				t.Fatal(err)
			}
			if p[0] == mysql.EOFPacket {
				break
			}
			cd, err := mysql.ParseColumnDef(p)
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, cd.Name)
		}
		if fmt.Sprint(names) != "[a b]" {
			t.Fatalf("COM_FIELD_LIST columns %v", names)
		}
		if err := mc.WriteCommand([]byte{mysql.ComStatistics}); err != nil {
			t.Fatal(err)
		}
		p, err := mc.ReadPacket()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(p), "Uptime: ") {
			t.Fatalf("COM_STATISTICS: %q", p)
		}
	}
	resp, err := http.Get("http://" + env.Node.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"dbproxy_client_connections_total", "dbproxy_queries_total", "dbproxy_query_duration_seconds_bucket",
		"dbproxy_database_connection_borrow_seconds", `dbproxy_database_connections{proxy="main",state="idle",target="db1"}`,
		`state="pinned"`, "dbproxy_target_healthy"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	resp, err = http.Get("http://" + env.Node.AdminAddr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/healthz: %s", resp.Status)
	}
}

// TestStateChangesInsideMultiStatementsAndProcedures checks that session
// changes made by one statement of a multi-statement, or inside a stored
// procedure, follow the session to other connections or pin it.
func TestStateChangesInsideMultiStatementsAndProcedures(t *testing.T) {
	s := mysqltest.StartT(t, mysqltest.Options{})
	nodetest.PrepareServer(t, s)
	if err := s.Exec(t.Context(),
		// A routine runs with its own sql_mode, restored when it returns;
		// time_zone set inside stays.
		"CREATE PROCEDURE app.set_mode() BEGIN SET SESSION sql_mode = 'ANSI_QUOTES'; SET SESSION time_zone = '+07:00'; END",
		"CREATE PROCEDURE app.set_var() BEGIN SET @from_proc = 42; END"); err != nil {
		t.Fatal(err)
	}
	cfg := nodetest.Config(s)
	cfg.Proxies[0].Pool.MaxConnectionsPercent = 2
	env := nodetest.Start(t, cfg, s)
	db := env.Open(t, "multiStatements=true&interpolateParams=true")
	backgroundLoad(t, env, 3, "SELECT 1")
	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	mustExec(t, conn, "SET time_zone = '+01:00'; SELECT 1; SET SESSION sql_mode = 'NO_ZERO_DATE'")
	for range 10 {
		if got := queryString(t, conn, "SELECT CONCAT(@@time_zone, ' ', @@sql_mode)"); got != "+01:00 NO_ZERO_DATE" {
			t.Fatalf("after a multi-statement: %q", got)
		}
	}
	mustExec(t, conn, "CALL set_mode()")
	for range 10 {
		if got := queryString(t, conn, "SELECT CONCAT(@@time_zone, ' ', @@sql_mode)"); got != "+07:00 NO_ZERO_DATE" {
			t.Fatalf("after a procedure that set time_zone and sql_mode: %q", got)
		}
	}
	mustExec(t, conn, "CALL set_var()")
	for range 10 {
		if got := queryString(t, conn, "SELECT @from_proc"); got != "42" {
			t.Fatalf("after a procedure that set a user variable: %q", got)
		}
	}
}

// TestPreparedStatementsPerSchema prepares the same text in two databases
// on a one-connection pool: each client must read its own table.
func TestPreparedStatementsPerSchema(t *testing.T) {
	s := mysqltest.StartT(t, mysqltest.Options{})
	nodetest.PrepareServer(t, s)
	if err := s.Exec(t.Context(), "CREATE DATABASE t1", "CREATE DATABASE t2",
		"CREATE TABLE t1.users (id INT, name VARCHAR(10))", "INSERT INTO t1.users VALUES (1, 'one')",
		"CREATE TABLE t2.users (id INT, name VARCHAR(10))", "INSERT INTO t2.users VALUES (1, 'two')",
		"GRANT ALL ON t1.* TO 'app'@'%'", "GRANT ALL ON t2.* TO 'app'@'%'"); err != nil {
		t.Fatal(err)
	}
	cfg := nodetest.Config(s)
	cfg.Proxies[0].Pool.MaxConnectionsPercent = 1 // one database connection
	env := nodetest.Start(t, cfg, s)
	open := func(db string) *sql.DB {
		h, err := sql.Open("mysql", fmt.Sprintf("%s:%s@tcp(%s)/%s", nodetest.User, nodetest.Password, env.Addr, db))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		return h
	}
	// Statements prepared once and executed many times, alternating.
	stA, err := open("t1").Prepare("SELECT name FROM users WHERE id = ?")
	if err != nil {
		t.Fatal(err)
	}
	defer stA.Close()
	stB, err := open("t2").Prepare("SELECT name FROM users WHERE id = ?")
	if err != nil {
		t.Fatal(err)
	}
	defer stB.Close()
	for range 3 {
		for st, want := range map[*sql.Stmt]string{stA: "one", stB: "two"} {
			var got string
			if err := st.QueryRow(1).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("prepared SELECT read %q, want %q", got, want)
			}
		}
	}
}

// TestErrorUnderAutocommitOff: a failed statement with autocommit=0 may
// have opened a transaction; its locks must not travel to another client.
func TestErrorUnderAutocommitOff(t *testing.T) {
	s := mysqltest.StartT(t, mysqltest.Options{})
	nodetest.PrepareServer(t, s)
	cfg := nodetest.Config(s)
	cfg.Proxies[0].Pool.MaxConnectionsPercent = 2
	env := nodetest.Start(t, cfg, s)
	db := env.Open(t, "interpolateParams=true")
	mustExec(t, db, "CREATE TABLE ac (id INT PRIMARY KEY) ENGINE=InnoDB")
	mustExec(t, db, "INSERT INTO ac VALUES (1)")
	c, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mustExec(t, c, "SET autocommit = 0")
	// The first statement fails, yet it started a transaction (InnoDB keeps
	// the lock it took on the duplicate key).
	if _, err := c.ExecContext(t.Context(), "INSERT INTO ac VALUES (1)"); err == nil {
		t.Fatal("duplicate key accepted")
	}
	// The node must treat the session as inside a transaction and keep
	// its connection.
	// (The node records it just after sending the error: poll.)
	deadline := time.Now().Add(5 * time.Second)
	for metricSum(t, env, "dbproxy_client_connections_in_transaction") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the session is not held as in a transaction after the failed insert")
		}
		time.Sleep(5 * time.Millisecond)
	}
	id1 := queryString(t, c, "SELECT CONNECTION_ID()")
	for range 5 {
		if got := queryString(t, c, "SELECT CONNECTION_ID()"); got != id1 {
			t.Fatalf("session moved from connection %s to %s inside an open transaction", id1, got)
		}
	}
	mustExec(t, c, "ROLLBACK")
}

// backgroundLoad keeps n clients running query through the node until the
// test ends, so that the pool's connections change hands.
func backgroundLoad(t *testing.T, env *nodetest.Env, n int, query string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	db := env.Open(t, "")
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				_, _ = db.ExecContext(ctx, query) // load only; errors do not matter
			}
		}()
	}
}

// TestClientFoundRows: CLIENT_FOUND_ROWS changes what UPDATE reports for
// the whole life of a connection, so clients with and without it must
// never share database connections.
func TestClientFoundRows(t *testing.T) {
	s := mysqltest.StartT(t, mysqltest.Options{})
	nodetest.PrepareServer(t, s)
	cfg := nodetest.Config(s)
	cfg.Proxies[0].Pool.MaxConnectionsPercent = 2
	env := nodetest.Start(t, cfg, s)
	plain := env.Open(t, "interpolateParams=true")
	found := env.Open(t, "interpolateParams=true&clientFoundRows=true")
	mustExec(t, plain, "CREATE TABLE fr (id INT PRIMARY KEY, v INT)")
	mustExec(t, plain, "INSERT INTO fr VALUES (1, 1)")
	for range 5 {
		for db, want := range map[*sql.DB]int64{plain: 0, found: 1} {
			// The row already holds v = 1: changed 0, matched 1.
			n, err := mustExec(t, db, "UPDATE fr SET v = 1 WHERE id = 1").RowsAffected()
			if err != nil {
				t.Fatal(err)
			}
			if n != want {
				t.Fatalf("UPDATE reported %d rows, want %d", n, want)
			}
		}
	}
}
