package node_test

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/dbproxy/dbproxy/dataplane/backend"
	"github.com/dbproxy/dbproxy/dataplane/mysql"
	"github.com/dbproxy/dbproxy/internal/mysqltest"
	"github.com/dbproxy/dbproxy/internal/nodetest"
)

// model is what one client expects its session to look like, as it would
// on its own direct connection.
type model struct {
	userVar      string // "NULL" when unset
	sqlMode      string
	timeZone     string
	charset      string
	collation    string
	db           string
	autocommit   string
	tempTable    bool
	lock         bool
	textPrepared bool
}

func (m model) String() string {
	return fmt.Sprintf("@v=%s sql_mode=%s time_zone=%s charset=%s collation=%s db=%s autocommit=%s",
		m.userVar, m.sqlMode, m.timeZone, m.charset, m.collation, m.db, m.autocommit)
}

// observe reads the session as the client sees it.
func observe(ctx context.Context, c *sql.Conn) (model, error) {
	var m model
	var v, db sql.NullString
	err := c.QueryRowContext(ctx, "SELECT @v, @@session.sql_mode, @@session.time_zone, @@character_set_client, @@collation_connection, DATABASE(), @@autocommit").
		Scan(&v, &m.sqlMode, &m.timeZone, &m.charset, &m.collation, &db, &m.autocommit)
	m.userVar, m.db = "NULL", "NULL"
	if v.Valid {
		m.userVar = v.String
	}
	if db.Valid {
		m.db = db.String
	}
	return m, err
}

// TestNoStateLeaks interleaves many clients that change session state on a
// small pool and checks after every step that each client sees exactly what
// it would see on its own connection.
func TestNoStateLeaks(t *testing.T) {
	s := mysqltest.StartT(t, mysqltest.Options{})
	nodetest.PrepareServer(t, s)
	ctx := t.Context()
	if err := s.Exec(ctx, "CREATE DATABASE IF NOT EXISTS other", "CREATE TABLE app.rows_t (id INT AUTO_INCREMENT PRIMARY KEY, who VARCHAR(32)) ENGINE=InnoDB"); err != nil {
		t.Fatal(err)
	}
	createSchemaTables(t, s)
	if err := s.Exec(ctx, "GRANT ALL ON other.* TO 'app'@'%'"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		params string
		pins   bool
	}{{"", true}, {"interpolateParams=true", true}, {"", false}, {"interpolateParams=true", false}} {
		params := tc.params
		t.Run(fmt.Sprintf("params=%s/pinning=%v", params, tc.pins), func(t *testing.T) {
			cfg := nodetest.Config(s)
			cfg.Proxies[0].Pool.MaxConnectionsPercent = 2 // 3 database connections for 12 clients
			env := nodetest.Start(t, cfg, s)
			db := env.Open(t, params)
			db.SetMaxOpenConns(100)
			direct := env.OpenDirect(t, 0, "")
			base := func() model {
				c, err := direct.Conn(ctx)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				m, err := observe(ctx, c)
				if err != nil {
					t.Fatal(err)
				}
				return m
			}()
			var wg sync.WaitGroup
			errs := make(chan error, 64)
			for i := range 12 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := leakClient(ctx, db, i, base, i%4 == 0, tc.pins); err != nil {
						errs <- fmt.Errorf("client %d: %w", i, err)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			pins := metricSum(t, env, "dbproxy_session_pins_total")
			if !tc.pins && pins != 0 {
				t.Errorf("restorable state pinned %v sessions", pins)
			}
			if tc.pins && pins == 0 {
				t.Error("no session was pinned")
			}
		})
	}
}

func leakClient(ctx context.Context, db *sql.DB, id int, base model, passive, pins bool) error {
	c, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	rng := rand.New(rand.NewPCG(uint64(id), 42))
	want := base
	exec := func(q string, args ...any) error {
		if _, err := c.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
		return nil
	}
	check := func(step string) error {
		got, err := observe(ctx, c)
		if err != nil {
			return fmt.Errorf("after %s: observe: %w", step, err)
		}
		if got.String() != want.String() {
			return fmt.Errorf("after %s:\n got  %v\n want %v", step, got, want)
		}
		return nil
	}
	tag := fmt.Sprintf("c%d", id)
	for step := range 60 {
		if passive {
			// A client that changes nothing must always see the defaults.
			if err := check(fmt.Sprintf("passive step %d", step)); err != nil {
				return err
			}
			if _, err := c.ExecContext(ctx, "SELECT SLEEP(0)"); err != nil {
				return err
			}
			continue
		}
		var name string
		op := rng.IntN(14)
		if !pins {
			op = []int{1, 2, 3, 4, 5, 8, 9, 10, 12, 13}[rng.IntN(10)]
		}
		switch op {
		case 0:
			v := fmt.Sprint(rng.IntN(1000000))
			name = "SET @v=" + v
			if err := exec("SET @v = " + v); err != nil {
				return err
			}
			want.userVar = v
		case 1:
			modes := []string{"ANSI_QUOTES", "STRICT_ALL_TABLES,NO_ZERO_DATE", "", "TRADITIONAL"}
			m := modes[rng.IntN(len(modes))]
			name = "SET sql_mode=" + m
			if err := exec("SET SESSION sql_mode = ?", m); err != nil {
				return err
			}
			var got string
			if err := c.QueryRowContext(ctx, "SELECT @@session.sql_mode").Scan(&got); err != nil {
				return err
			}
			want.sqlMode = got
		case 2:
			zones := []string{"+01:00", "SYSTEM", "-05:30", "+00:00"}
			z := zones[rng.IntN(len(zones))]
			name = "SET time_zone=" + z
			if err := exec("SET time_zone = '" + z + "'"); err != nil {
				return err
			}
			want.timeZone = z
		case 3:
			// Session tracking reports no collation for SET NAMES, nor
			// the character set that a collation implies.
			sets := [][3]string{{"NAMES utf8mb3", "utf8mb3", "utf8mb3_general_ci"}, {"NAMES latin1", "latin1", "latin1_swedish_ci"},
				{"NAMES utf8mb4", "utf8mb4", "utf8mb4_general_ci"}, {"NAMES utf8mb4 COLLATE utf8mb4_bin", "utf8mb4", "utf8mb4_bin"},
				{"NAMES latin1 COLLATE latin1_bin", "latin1", "latin1_bin"}, {"collation_connection = utf8mb4_unicode_ci", "", "utf8mb4_unicode_ci"}}
			cs := sets[rng.IntN(len(sets))]
			name = "SET " + cs[0]
			if err := exec("SET " + cs[0]); err != nil {
				return err
			}
			if cs[1] != "" {
				want.charset = cs[1]
			}
			want.collation = cs[2]
		case 4:
			dbs := []string{"app", "other"}
			d := dbs[rng.IntN(len(dbs))]
			name = "USE " + d
			if err := exec("USE " + d); err != nil {
				return err
			}
			want.db = d
		case 5:
			// The peers' classic bug: autocommit=0 lost, so a rolled-back
			// insert persisted.
			name = "autocommit=0 insert rollback"
			if err := exec("SET autocommit = 0"); err != nil {
				return err
			}
			want.autocommit = "0"
			if err := exec("INSERT INTO app.rows_t (who) VALUES (?)", tag+"-rolledback"); err != nil {
				return err
			}
			if err := exec("ROLLBACK"); err != nil {
				return err
			}
			var n int
			if err := c.QueryRowContext(ctx, "SELECT COUNT(*) FROM app.rows_t WHERE who = ?", tag+"-rolledback").Scan(&n); err != nil {
				return err
			}
			if n != 0 {
				return fmt.Errorf("rolled-back insert is visible (%d rows)", n)
			}
			if err := exec("COMMIT"); err != nil {
				return err
			}
			if rng.IntN(2) == 0 {
				if err := exec("SET autocommit = 1"); err != nil {
					return err
				}
				want.autocommit = "1"
			}
		case 6:
			name = "temporary table"
			if !want.tempTable {
				if err := exec("CREATE TEMPORARY TABLE app.tmp_" + tag + " (a INT)"); err != nil {
					return err
				}
				want.tempTable = true
			}
			if err := exec("INSERT INTO app.tmp_" + tag + " VALUES (1)"); err != nil {
				return err
			}
			var n int
			if err := c.QueryRowContext(ctx, "SELECT COUNT(*) FROM app.tmp_"+tag).Scan(&n); err != nil {
				return fmt.Errorf("temporary table lost: %w", err)
			}
		case 7:
			name = "GET_LOCK"
			if !want.lock {
				var got int
				if err := c.QueryRowContext(ctx, "SELECT GET_LOCK(?, 5)", "lock_"+tag).Scan(&got); err != nil || got != 1 {
					return fmt.Errorf("GET_LOCK = %d, %v", got, err)
				}
				want.lock = true
			}
			var owner sql.NullInt64
			var me int64
			if err := c.QueryRowContext(ctx, "SELECT IS_USED_LOCK(?), CONNECTION_ID()", "lock_"+tag).Scan(&owner, &me); err != nil {
				return err
			}
			if !owner.Valid || owner.Int64 != me {
				return fmt.Errorf("named lock owned by %v, session is %d", owner, me)
			}
		case 8:
			name = "transaction"
			tx := []string{"START TRANSACTION", "INSERT INTO app.rows_t (who) VALUES ('" + tag + "')"}
			for _, q := range tx {
				if err := exec(q); err != nil {
					return err
				}
			}
			var id1, id2 int64
			if err := c.QueryRowContext(ctx, "SELECT LAST_INSERT_ID()").Scan(&id1); err != nil {
				return err
			}
			if err := c.QueryRowContext(ctx, "SELECT MAX(id) FROM app.rows_t WHERE who = ?", tag).Scan(&id2); err != nil {
				return err
			}
			if id1 != id2 {
				return fmt.Errorf("LAST_INSERT_ID() = %d, own row is %d", id1, id2)
			}
			if err := exec("COMMIT"); err != nil {
				return err
			}
		case 9:
			name = "prepared statement"
			st, err := c.PrepareContext(ctx, "SELECT CONCAT(?, '-', ?)")
			if err != nil {
				return err
			}
			for k := range 3 {
				var got string
				if err := st.QueryRowContext(ctx, tag, k).Scan(&got); err != nil {
					st.Close()
					return err
				}
				if got != fmt.Sprintf("%s-%d", tag, k) {
					st.Close()
					return fmt.Errorf("prepared result %q", got)
				}
			}
			st.Close()
		case 11:
			// A text prepared statement lives in the server session: it
			// must still be there however the node multiplexes.
			name = "PREPARE/EXECUTE"
			if !want.textPrepared {
				if err := exec("PREPARE own_" + tag + " FROM 'SELECT CONNECTION_ID()'"); err != nil {
					return err
				}
				want.textPrepared = true
			}
			var id1, id2 int64
			if err := c.QueryRowContext(ctx, "EXECUTE own_"+tag).Scan(&id1); err != nil {
				return fmt.Errorf("EXECUTE of a statement prepared earlier: %w", err)
			}
			if err := c.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id2); err != nil {
				return err
			}
			if id1 != id2 {
				return fmt.Errorf("EXECUTE ran on connection %d, the session is on %d", id1, id2)
			}
		case 12:
			// A server keeps a prepared statement in the database it was
			// prepared in: after a USE it still reads and writes there,
			// and DATABASE() in it names that database.
			to := "other"
			if want.db == "other" {
				to = "app"
			}
			name = "prepared statements across USE " + to
			if err := stmtsAcrossUSE(ctx, c, want.db, to, fmt.Sprintf("%s-%d", tag, step)); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			want.db = to
			if want.autocommit == "0" {
				if err := exec("COMMIT"); err != nil {
					return err
				}
			}
		case 13:
			// A server parses a prepared statement under the sql_mode and
			// character set of its prepare, and keeps it so after they
			// change back.
			name = "prepared statements across sql_mode and SET NAMES"
			if err := stmtsAcrossModes(ctx, c, want, fmt.Sprintf("%s-%d", tag, step)); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if want.autocommit == "0" {
				if err := exec("COMMIT"); err != nil {
					return err
				}
			}
		case 10:
			name = "insert + LAST_INSERT_ID()"
			res, err := c.ExecContext(ctx, "INSERT INTO app.rows_t (who) VALUES (?)", tag)
			if err != nil {
				return err
			}
			id1, _ := res.LastInsertId()
			if want.autocommit == "0" {
				if err := exec("COMMIT"); err != nil {
					return err
				}
			}
			// Run something else first so the node may switch connections.
			if _, err := c.ExecContext(ctx, "SELECT 1"); err != nil {
				return err
			}
			var id2 int64
			if err := c.QueryRowContext(ctx, "SELECT LAST_INSERT_ID()").Scan(&id2); err != nil {
				return err
			}
			if id1 != id2 {
				return fmt.Errorf("LAST_INSERT_ID() = %d after an insert that generated %d", id2, id1)
			}
		}
		if err := check(name); err != nil {
			return fmt.Errorf("step %d: %w", step, err)
		}
	}
	if want.tempTable {
		// Other sessions must not see this client's temporary table.
		var n int
		err := c.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.PROCESSLIST").Scan(&n)
		if err != nil {
			return err
		}
	}
	return nil
}

// stmtsAcrossUSE prepares a read and a write in database from, selects
// database to, and checks that both still work in from.
func stmtsAcrossUSE(ctx context.Context, c *sql.Conn, from, to, who string) error {
	sel, err := c.PrepareContext(ctx, "SELECT v, DATABASE() FROM whereami")
	if err != nil {
		return err
	}
	defer sel.Close()
	ins, err := c.PrepareContext(ctx, "INSERT INTO stmt_rows (who) VALUES (?)")
	if err != nil {
		return err
	}
	defer ins.Close()
	// The subtests share a server, so the same client may have written
	// who before: count the rows this call adds.
	count := func(d string) (int, error) {
		var n int
		err := c.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+d+".stmt_rows WHERE who = ?", who).Scan(&n)
		return n, err
	}
	before := map[string]int{}
	for _, d := range []string{from, to} {
		n, err := count(d)
		if err != nil {
			return err
		}
		before[d] = n
	}
	if _, err := c.ExecContext(ctx, "USE "+to); err != nil {
		return err
	}
	for k := range 3 {
		var v, db string
		if err := sel.QueryRowContext(ctx).Scan(&v, &db); err != nil {
			return fmt.Errorf("execute %d: %w", k, err)
		}
		if v != from || db != from {
			return fmt.Errorf("execute %d of a statement prepared in %s read %s.whereami with DATABASE() = %s", k, from, v, db)
		}
		if _, err := ins.ExecContext(ctx, who); err != nil {
			return fmt.Errorf("insert %d: %w", k, err)
		}
	}
	for _, d := range []string{from, to} {
		n, err := count(d)
		if err != nil {
			return err
		}
		want := 0
		if d == from {
			want = 3
		}
		if n-before[d] != want {
			return fmt.Errorf("%d rows added to %s.stmt_rows by inserts prepared in %s, want %d", n-before[d], d, from, want)
		}
	}
	return nil
}

// stmtsAcrossModes prepares a read and a write under ANSI_QUOTES,
// PIPES_AS_CONCAT and latin1, goes back to the session's sql_mode and
// character set (want), and checks that both still work as parsed.
func stmtsAcrossModes(ctx context.Context, c *sql.Conn, want model, who string) error {
	for _, q := range []string{"SET SESSION sql_mode = 'ANSI_QUOTES,PIPES_AS_CONCAT'", "SET NAMES latin1"} {
		if _, err := c.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	// "v" names whereami's column, || concatenates, the literal is latin1.
	sel, err := c.PrepareContext(ctx, `SELECT "v" || '-x', CHARSET('x') FROM whereami`)
	if err != nil {
		return err
	}
	defer sel.Close()
	ins, err := c.PrepareContext(ctx, `INSERT INTO stmt_rows (who) SELECT ? || '-' || "v" FROM whereami`)
	if err != nil {
		return err
	}
	defer ins.Close()
	if _, err := c.ExecContext(ctx, "SET SESSION sql_mode = ?", want.sqlMode); err != nil {
		return fmt.Errorf("restore sql_mode: %w", err)
	}
	// The collation last: it may be of another character set than the
	// client's (see leakClient).
	for _, q := range []string{"SET NAMES " + want.charset, "SET collation_connection = " + want.collation} {
		if _, err := c.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("restore the character set: %s: %w", q, err)
		}
	}
	// The subtests share a server: count the rows this call adds.
	count := func() (int, error) {
		var n int
		err := c.QueryRowContext(ctx, "SELECT COUNT(*) FROM stmt_rows WHERE who = ?", who+"-"+want.db).Scan(&n)
		return n, err
	}
	before, err := count()
	if err != nil {
		return err
	}
	for k := range 3 {
		var v, cs string
		if err := sel.QueryRowContext(ctx).Scan(&v, &cs); err != nil {
			return fmt.Errorf("execute %d: %w", k, err)
		}
		if v != want.db+"-x" || cs != "latin1" {
			return fmt.Errorf("execute %d of a statement prepared under ANSI_QUOTES,PIPES_AS_CONCAT and latin1 read %q, %q; want %q, latin1", k, v, cs, want.db+"-x")
		}
		if _, err := ins.ExecContext(ctx, who); err != nil {
			return fmt.Errorf("insert %d: %w", k, err)
		}
	}
	n, err := count()
	if err != nil {
		return err
	}
	if n-before != 3 {
		return fmt.Errorf("%d rows %s-%s added to %s.stmt_rows, want 3", n-before, who, want.db, want.db)
	}
	return nil
}

// createSchemaTables creates the tables of the leak suite's prepared
// statements across USE: whereami names its database in both.
func createSchemaTables(t *testing.T, s *mysqltest.Server) {
	t.Helper()
	var qs []string
	for _, d := range []string{"app", "other"} {
		qs = append(qs, "CREATE TABLE "+d+".whereami (v VARCHAR(32))", "INSERT INTO "+d+".whereami VALUES ('"+d+"')",
			"CREATE TABLE "+d+".stmt_rows (id INT AUTO_INCREMENT PRIMARY KEY, who VARCHAR(32)) ENGINE=InnoDB")
	}
	if err := s.Exec(t.Context(), qs...); err != nil {
		t.Fatal(err)
	}
}

// metricSum adds up every sample of a metric family on the node.
func metricSum(t *testing.T, env *nodetest.Env, name string) float64 {
	t.Helper()
	mfs, err := env.Node.Metrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// TestNoSessionTracking runs the leak suite against targets treated as
// servers without session tracking: more pinning, never wrong results.
func TestNoSessionTracking(t *testing.T) {
	s := mysqltest.StartT(t, mysqltest.Options{})
	nodetest.PrepareServer(t, s)
	ctx := t.Context()
	if err := s.Exec(ctx, "CREATE DATABASE IF NOT EXISTS other", "GRANT ALL ON other.* TO 'app'@'%'",
		"CREATE TABLE app.rows_t (id INT AUTO_INCREMENT PRIMARY KEY, who VARCHAR(32)) ENGINE=InnoDB"); err != nil {
		t.Fatal(err)
	}
	createSchemaTables(t, s)
	cfg := nodetest.Config(s)
	cfg.Proxies[0].Pool.DisableSessionTracking = true
	cfg.Proxies[0].Pool.MaxConnectionsPercent = 10
	env := nodetest.Start(t, cfg, s)
	db := env.Open(t, "")
	direct := env.OpenDirect(t, 0, "")
	c, err := direct.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	base, err := observe(ctx, c)
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := leakClient(ctx, db, 100+i, base, i%3 == 0, false); err != nil {
				errs <- fmt.Errorf("client %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := metricLabel(t, env, "dbproxy_session_pins_total", "reason", "no_session_tracking"); got == 0 {
		t.Error("no session pinned for lack of session tracking")
	}
}

// schemaCase is a binary prepared statement prepared in one database and
// executed after the client selected another (see
// TestPreparedStatementKeepsItsSchema).
type schemaCase struct {
	name string
	// prepDB is the client's database at the prepare; "" is none.
	prepDB string
	query  string
	// write marks an INSERT of one parameter; longData sends it with
	// COM_STMT_SEND_LONG_DATA.
	write, longData bool
	// initDB switches with COM_INIT_DB instead of a USE statement.
	initDB bool
	// drop drops prepDB after the switch, before the execute.
	drop bool
	// noAutocommit turns autocommit off before the execute, which then
	// opens a transaction.
	noAutocommit bool
	// before runs before the prepare; after, when set, runs between the
	// prepare and the execute instead of the switch to database pb.
	before, after []string
	// rows, when set, is a query on the server with the client's value
	// (a LIKE prefix) as its parameter, run after the execute: what the
	// statement wrote.
	rows string
}

// TestPreparedStatementKeepsItsSchema: a server binds a prepared statement
// to the database current at its prepare. Its tables resolve there and
// DATABASE() names it after the client selects another database, and
// after that database is dropped the statement fails; one prepared
// without a database runs without one. Through the node the statement is
// prepared again on another database connection (the choreography of
// holders below makes sure, and the server's prepare counter checks it),
// and every answer must be what a direct connection answers. Without
// session tracking the node is not told where a USE went, and must ask.
func TestPreparedStatementKeepsItsSchema(t *testing.T) {
	// 100 connections at 2%: a pool of two database connections.
	s := mysqltest.StartT(t, mysqltest.Options{ExtraArgs: []string{"--max-connections=100"}})
	nodetest.PrepareServer(t, s)
	ctx := t.Context()
	if err := s.Exec(ctx, "CREATE DATABASE pa", "CREATE DATABASE pb",
		"CREATE TABLE pa.r (v VARCHAR(32))", "INSERT INTO pa.r VALUES ('a')",
		"CREATE TABLE pb.r (v VARCHAR(32))", "INSERT INTO pb.r VALUES ('b')",
		"CREATE TABLE pa.w (v VARCHAR(100))", "CREATE TABLE pb.w (v VARCHAR(100))",
		// A routine runs in its own database: the server switches there
		// and back, and reports the database it went back to.
		"CREATE FUNCTION pa.f() RETURNS VARCHAR(64) NO SQL DETERMINISTIC RETURN DATABASE()",
		"GRANT ALL ON pa.* TO 'app'@'%'", "GRANT ALL ON pb.* TO 'app'@'%'", "GRANT ALL ON pgone.* TO 'app'@'%'"); err != nil {
		t.Fatal(err)
	}
	cases := []schemaCase{
		{name: "read after USE", prepDB: "pa", query: "SELECT /* read-use */ v, DATABASE() FROM r"},
		{name: "read after COM_INIT_DB", prepDB: "pa", query: "SELECT /* read-initdb */ v, DATABASE() FROM r", initDB: true},
		{name: "write after USE", prepDB: "pa", query: "INSERT /* write-use */ INTO w VALUES (?)", write: true},
		{name: "write after COM_INIT_DB", prepDB: "pa", query: "INSERT /* write-initdb */ INTO w VALUES (?)", write: true, initDB: true},
		{name: "long data write after USE", prepDB: "pa", query: "INSERT /* write-long */ INTO w VALUES (?)", write: true, longData: true},
		{name: "prepared without a database, USE", query: "SELECT /* null-use */ v, DATABASE() FROM pa.r"},
		{name: "prepared without a database, COM_INIT_DB", query: "SELECT /* null-initdb */ v, DATABASE() FROM pa.r", initDB: true},
		{name: "prepared without a database, opens a transaction", query: "SELECT /* null-tx */ v, DATABASE() FROM pa.r", noAutocommit: true},
		{name: "prepared without a database, calls a routine", query: "SELECT /* null-routine */ v, pa.f(), DATABASE() FROM pa.r"},
		{name: "routine after USE", prepDB: "pa", query: "SELECT /* routine */ v, f(), DATABASE() FROM r"},
		{name: "database dropped", prepDB: "pgone", query: "SELECT /* dropped */ v, DATABASE() FROM r", drop: true},
	}
	for _, tracking := range []bool{true, false} {
		t.Run(fmt.Sprintf("session tracking=%v", tracking), func(t *testing.T) {
			testStmtSchemas(t, s, cases, tracking)
		})
	}
}

// TestPreparedStatementKeepsItsParseState: a server parses a prepared
// statement once, at its prepare, under the sql_mode and character set of
// that moment: after the client changes them, "v" under ANSI_QUOTES still
// names a column, || under PIPES_AS_CONCAT still concatenates, a backslash
// under NO_BACKSLASH_ESCAPES is still itself, a literal is still in the
// character set and collation it was sent in. What happens at execute
// (strict mode refusing an out of range value, the character set of the
// results) follows the session as it is then. Through the node the
// statement is prepared again on another database connection (see
// TestPreparedStatementKeepsItsSchema), and every answer, and what every
// write stored, must be what a direct connection answers and stores.
func TestPreparedStatementKeepsItsParseState(t *testing.T) {
	// 100 connections at 2%: a pool of two database connections.
	s := mysqltest.StartT(t, mysqltest.Options{ExtraArgs: []string{"--max-connections=100"}})
	nodetest.PrepareServer(t, s)
	ctx := t.Context()
	if err := s.Exec(ctx, "CREATE DATABASE pa", "CREATE DATABASE pb",
		"CREATE TABLE pa.r (v VARCHAR(32))", "INSERT INTO pa.r VALUES ('a')",
		"CREATE TABLE pa.w (v VARCHAR(100)) CHARACTER SET utf8mb4", "CREATE TABLE pb.w (v VARCHAR(100))",
		"CREATE TABLE pa.n (who VARCHAR(100), v TINYINT)",
		"GRANT ALL ON pa.* TO 'app'@'%'", "GRANT ALL ON pb.* TO 'app'@'%'"); err != nil {
		t.Fatal(err)
	}
	const (
		written = "SELECT GROUP_CONCAT(v ORDER BY v) FROM pa.w WHERE v LIKE ?"
		numbers = "SELECT GROUP_CONCAT(IFNULL(v, 'NULL') ORDER BY v) FROM pa.n WHERE who LIKE ?"
	)
	cases := []schemaCase{
		{name: "ANSI_QUOTES read", prepDB: "pa", query: `SELECT /* ansi-read */ "v" FROM r`,
			before: []string{"SET sql_mode = 'ANSI_QUOTES'"}, after: []string{"SET sql_mode = ''"}},
		{name: "ANSI_QUOTES write", prepDB: "pa", query: `INSERT /* ansi-write */ INTO w SELECT CONCAT(?, '-', "v") FROM r`, write: true,
			before: []string{"SET sql_mode = 'ANSI_QUOTES'"}, after: []string{"SET sql_mode = ''"}, rows: written},
		{name: "default sql_mode read, then ANSI_QUOTES", prepDB: "pa", query: `SELECT /* default-read */ "v" FROM r`,
			after: []string{"SET sql_mode = 'ANSI_QUOTES'"}},
		{name: "PIPES_AS_CONCAT read", prepDB: "pa", query: "SELECT /* pipes-read */ v || '-tail' FROM r",
			before: []string{"SET sql_mode = 'PIPES_AS_CONCAT'"}, after: []string{"SET sql_mode = DEFAULT"}},
		{name: "PIPES_AS_CONCAT write", prepDB: "pa", query: "INSERT /* pipes-write */ INTO w VALUES (? || '-tail')", write: true,
			before: []string{"SET sql_mode = 'PIPES_AS_CONCAT'"}, after: []string{"SET sql_mode = DEFAULT"}, rows: written},
		{name: "NO_BACKSLASH_ESCAPES read", prepDB: "pa", query: `SELECT /* backslash-read */ CONCAT(LENGTH('a\nb')), 'a\nb'`,
			before: []string{"SET sql_mode = 'NO_BACKSLASH_ESCAPES'"}, after: []string{"SET sql_mode = ''"}},
		{name: "default sql_mode write, then NO_BACKSLASH_ESCAPES", prepDB: "pa", query: `INSERT /* backslash-write */ INTO w VALUES (CONCAT(?, ' a\tb'))`,
			write: true, after: []string{"SET sql_mode = 'NO_BACKSLASH_ESCAPES'"}, rows: written},
		{name: "latin1 read, then utf8mb4", prepDB: "pa", query: "SELECT /* latin1-read */ 'caf\xe9', CHARSET('x'), CONCAT(LENGTH('caf\xe9'))",
			before: []string{"SET NAMES latin1"}, after: []string{"SET NAMES utf8mb4"}},
		{name: "latin1 write, then utf8mb4", prepDB: "pa", query: "INSERT /* latin1-write */ INTO w VALUES (CONCAT(?, ' caf\xe9'))", write: true,
			before: []string{"SET NAMES latin1"}, after: []string{"SET NAMES utf8mb4"}, rows: written},
		{name: "default character set read, then latin1", prepDB: "pa", query: "SELECT /* utf8-read */ 'caf\xc3\xa9', CHARSET('x'), CONCAT(LENGTH('caf\xc3\xa9'))",
			after: []string{"SET NAMES latin1"}},
		{name: "collation read", prepDB: "pa", query: "SELECT /* collation-read */ CONCAT('a' = 'A'), COLLATION('a')",
			before: []string{"SET NAMES latin1 COLLATE latin1_bin"}, after: []string{"SET NAMES latin1"}},
		{name: "strict at prepare, not at execute", prepDB: "pa", query: "INSERT /* strict-off */ INTO n (who, v) VALUES (?, 1000)", write: true,
			before: []string{"SET sql_mode = 'STRICT_ALL_TABLES'"}, after: []string{"SET sql_mode = ''"}, rows: numbers},
		{name: "strict at execute, not at prepare", prepDB: "pa", query: "INSERT /* strict-on */ INTO n (who, v) VALUES (?, 1000)", write: true,
			before: []string{"SET sql_mode = ''"}, after: []string{"SET sql_mode = 'STRICT_ALL_TABLES'"}, rows: numbers},
		{name: "sql_mode and database", prepDB: "pa", query: `SELECT /* ansi-use */ "v", DATABASE() FROM r`,
			before: []string{"SET sql_mode = 'ANSI_QUOTES'"}, after: []string{"USE pb", "SET sql_mode = ''"}},
		{name: "ANSI_QUOTES, then a transaction", prepDB: "pa", query: `SELECT /* ansi-tx */ "v" FROM r`, noAutocommit: true,
			before: []string{"SET sql_mode = 'ANSI_QUOTES'"}, after: []string{"SET sql_mode = ''"}},
	}
	for _, tracking := range []bool{true, false} {
		t.Run(fmt.Sprintf("session tracking=%v", tracking), func(t *testing.T) {
			testStmtSchemas(t, s, cases, tracking)
		})
	}
}

func testStmtSchemas(t *testing.T, s *mysqltest.Server, cases []schemaCase, tracking bool) {
	ctx := t.Context()
	cfg := nodetest.Config(s)
	cfg.Proxies[0].Pool.MaxConnectionsPercent = 2
	cfg.Proxies[0].Pool.DisableSessionTracking = !tracking
	env := nodetest.Start(t, cfg, s)
	holders := env.Open(t, "")
	prepares := func() int {
		t.Helper()
		v, err := s.QueryValue(ctx, "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'COM_STMT_PREPARE'")
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !tracking && tc.prepDB == "" {
				// Without session tracking a USE pins the session to the
				// connection it ran on, which then has a database: like
				// any held connection (see the node's acquireStmt), it
				// prepares the statement in that database.
				t.Skip("a statement prepared without a database runs in the database of a held connection")
			}
			if !tracking && len(tc.before) > 0 {
				// Without session tracking the SET pins the session: the
				// statement is prepared and executed on that connection.
				t.Skip("a statement prepared after a SET is never prepared again without session tracking")
			}
			// Both runs write values of their own into the shared tables.
			want := runSchemaCase(t, s, s.Addr(), tc, fmt.Sprintf("direct, tracking=%v", tracking), schemaHooks{})
			var h1, h2 *sql.Conn
			var before int
			got := runSchemaCase(t, s, env.Addr, tc, fmt.Sprintf("node, tracking=%v", tracking), schemaHooks{
				// The first holder keeps one database connection, so that
				// the prepare runs on the other; the second then takes that
				// one (the only one left), and the first lets its go: the
				// execute can only run on a connection that never saw the
				// statement.
				beforePrepare: func() { h1 = holdConn(t, holders) },
				afterPrepare: func() {
					h2 = holdConn(t, holders)
					releaseConn(t, h1)
					before = prepares()
				},
				afterExecute: func() {
					releaseConn(t, h2)
					n := prepares() - before
					if tc.drop {
						return
					}
					if n != 1 {
						t.Errorf("the server saw %d prepares for the execute, want 1 (prepared again on another connection)", n)
					}
				},
			})
			if got != want {
				t.Errorf("through the node:\n%s\ndirectly:\n%s", got, want)
			}
			t.Logf("%s", got)
		})
	}
	// Without session tracking every USE pins; nothing else may.
	pins := metricSum(t, env, "dbproxy_session_pins_total") - metricLabel(t, env, "dbproxy_session_pins_total", "reason", "no_session_tracking")
	if pins != 0 {
		t.Errorf("binary prepared statements pinned %v sessions", pins)
	}
}

// schemaHooks let the node's run of a schemaCase arrange which database
// connection runs what.
type schemaHooks struct {
	beforePrepare, afterPrepare, afterExecute func()
}

func (h schemaHooks) call(f func()) {
	if f != nil {
		f()
	}
}

// runSchemaCase runs tc as a client of addr and describes what it saw.
// Through the node the database dropped errs with the server's error for
// the vanished database (1049) where a direct connection names the
// missing table (1146): both are errors, and the description keeps only
// that much of that one case.
func runSchemaCase(t *testing.T, s *mysqltest.Server, addr string, tc schemaCase, who string, h schemaHooks) string {
	t.Helper()
	ctx := t.Context()
	if tc.drop {
		if err := s.Exec(ctx, "DROP DATABASE IF EXISTS pgone", "CREATE DATABASE pgone",
			"CREATE TABLE pgone.r (v VARCHAR(32))", "INSERT INTO pgone.r VALUES ('g')"); err != nil {
			t.Fatal(err)
		}
	}
	c := rawClient(t, addr, tc.prepDB)
	var out strings.Builder
	for _, q := range tc.before {
		rawExec(t, c, q)
	}
	h.call(h.beforePrepare)
	id, params := rawPrepare(t, c, tc.query)
	h.call(h.afterPrepare)
	for _, q := range tc.after {
		rawExec(t, c, q)
	}
	switch {
	case len(tc.after) > 0:
	case tc.initDB:
		if err := c.InitDB("pb"); err != nil {
			t.Fatalf("COM_INIT_DB pb: %v", err)
		}
	default:
		rawExec(t, c, "USE pb")
	}
	if tc.drop {
		if err := s.Exec(ctx, "DROP DATABASE pgone"); err != nil {
			t.Fatal(err)
		}
	}
	if tc.noAutocommit {
		rawExec(t, c, "SET autocommit = 0")
	}
	value := who + ": " + tc.name
	var args []string
	if tc.write {
		args = []string{value}
	}
	if tc.longData {
		rawLongData(t, c, id, 0, value)
		args = nil
	}
	res := rawStmtExecute(t, c, id, params, args)
	h.call(h.afterExecute)
	if tc.drop && strings.HasPrefix(res, "error ") {
		t.Logf("%s: the statement in the dropped database: %s", who, res)
		res = "error"
	}
	fmt.Fprintf(&out, "execute: %s\n", res)
	if tc.longData {
		// The statement stays usable after a reset, and is gone after a
		// close.
		fmt.Fprintf(&out, "reset: %s\n", rawStmtReset(t, c, id))
		fmt.Fprintf(&out, "execute again: %s\n", rawStmtExecute(t, c, id, params, []string{value + " again"}))
		rawStmtClose(t, c, id)
		fmt.Fprintf(&out, "execute after close: %s\n", rawStmtExecute(t, c, id, params, []string{value + " closed"}))
	}
	fmt.Fprintf(&out, "DATABASE() afterwards: %s\n", rawValue(t, c, "SELECT DATABASE()"))
	if tc.noAutocommit {
		rawExec(t, c, "COMMIT")
	}
	if tc.write && tc.rows == "" {
		for _, tbl := range []string{"pa.w", "pb.w"} {
			n, err := s.QueryValue(ctx, "SELECT COUNT(*) FROM "+tbl+" WHERE v LIKE ?", value+"%")
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&out, "rows written to %s: %s\n", tbl, n)
		}
	}
	if tc.rows != "" {
		v, err := s.QueryValue(ctx, tc.rows, value+"%")
		if err != nil {
			t.Fatal(err)
		}
		// The direct run and the node's write values of their own.
		fmt.Fprintf(&out, "rows: %q\n", strings.ReplaceAll(v, value, "<value>"))
	}
	return out.String()
}

// holdConn opens a transaction through the node, which holds a database
// connection for it until releaseConn.
func holdConn(t *testing.T, db *sql.DB) *sql.Conn {
	t.Helper()
	c, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, c, "BEGIN")
	return c
}

func releaseConn(t *testing.T, c *sql.Conn) {
	t.Helper()
	mustExec(t, c, "COMMIT")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// rawPrepare sends COM_STMT_PREPARE and returns the statement id and its
// parameter count.
func rawPrepare(t *testing.T, c *backend.Conn, q string) (uint32, uint16) {
	t.Helper()
	if err := c.WriteCommand(append([]byte{mysql.ComStmtPrepare}, q...)); err != nil {
		t.Fatal(err)
	}
	p, err := c.ReadPacket()
	if err != nil {
		t.Fatal(err)
	}
	if p[0] == mysql.ErrPacket {
		e, _ := mysql.ParseErr(p)
		t.Fatalf("prepare %s: %v", q, e)
	}
	pok, err := mysql.ParsePrepareOK(p)
	if err != nil {
		t.Fatalf("prepare %s: %v", q, err)
	}
	for range int(pok.Params) + int(pok.Columns) {
		if _, err := c.ReadPacket(); err != nil {
			t.Fatal(err)
		}
	}
	return pok.StmtID, pok.Params
}

// rawStmtExecute executes statement id with string parameters (none sent
// when args is nil: long data supplies them) and describes the answer:
// the rows of a result of string columns, "ok", or the error code.
func rawStmtExecute(t *testing.T, c *backend.Conn, id uint32, params uint16, args []string) string {
	t.Helper()
	pkt := []byte{mysql.ComStmtExecute, 0, 0, 0, 0, 0, 1, 0, 0, 0}
	binary.LittleEndian.PutUint32(pkt[1:], id)
	if params > 0 {
		pkt = append(pkt, make([]byte, (int(params)+7)/8)...) // no NULLs
		pkt = append(pkt, 1)                                  // types follow
		for range params {
			pkt = append(pkt, 0xfd, 0) // VAR_STRING
		}
		for _, a := range args {
			pkt = mysql.AppendLenEncString(pkt, []byte(a))
		}
	}
	if err := c.WriteCommand(pkt); err != nil {
		t.Fatal(err)
	}
	p, err := c.ReadPacket()
	if err != nil {
		t.Fatal(err)
	}
	switch p[0] {
	case mysql.OKPacket:
		return "ok"
	case mysql.ErrPacket:
		e, _ := mysql.ParseErr(p)
		return fmt.Sprintf("error %d", e.Num)
	}
	n, _, _, err := mysql.ReadLenEncInt(p)
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		if _, err := c.ReadPacket(); err != nil {
			t.Fatal(err)
		}
	}
	var rows []string
	for {
		p, err := c.ReadPacket()
		if err != nil {
			t.Fatal(err)
		}
		if p[0] == mysql.EOFPacket {
			return fmt.Sprintf("rows %v", rows)
		}
		if p[0] == mysql.ErrPacket {
			e, _ := mysql.ParseErr(p)
			return fmt.Sprintf("rows %v then error %d", rows, e.Num)
		}
		// Binary row: header, NULL bitmap (offset 2), then the values.
		nullMap := p[1 : 1+(int(n)+9)/8]
		pos := 1 + len(nullMap)
		var cols []string
		for i := range int(n) {
			if nullMap[(i+2)/8]&(1<<((i+2)%8)) != 0 {
				cols = append(cols, "NULL")
				continue
			}
			v, m, err := mysql.ReadLenEncString(p[pos:])
			if err != nil {
				t.Fatal(err)
			}
			cols = append(cols, string(v))
			pos += m
		}
		rows = append(rows, strings.Join(cols, "|"))
	}
}

// rawLongData sends one COM_STMT_SEND_LONG_DATA chunk (no response).
func rawLongData(t *testing.T, c *backend.Conn, id uint32, param uint16, data string) {
	t.Helper()
	pkt := []byte{mysql.ComStmtSendLongData, 0, 0, 0, 0, byte(param), byte(param >> 8)}
	binary.LittleEndian.PutUint32(pkt[1:], id)
	if err := c.WriteCommand(append(pkt, data...)); err != nil {
		t.Fatal(err)
	}
}

// rawStmtReset sends COM_STMT_RESET and describes the answer.
func rawStmtReset(t *testing.T, c *backend.Conn, id uint32) string {
	t.Helper()
	pkt := []byte{mysql.ComStmtReset, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(pkt[1:], id)
	if err := c.WriteCommand(pkt); err != nil {
		t.Fatal(err)
	}
	p, err := c.ReadPacket()
	if err != nil {
		t.Fatal(err)
	}
	if p[0] == mysql.ErrPacket {
		e, _ := mysql.ParseErr(p)
		return fmt.Sprintf("error %d", e.Num)
	}
	return "ok"
}

// rawStmtClose sends COM_STMT_CLOSE (no response).
func rawStmtClose(t *testing.T, c *backend.Conn, id uint32) {
	t.Helper()
	pkt := []byte{mysql.ComStmtClose, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(pkt[1:], id)
	if err := c.WriteCommand(pkt); err != nil {
		t.Fatal(err)
	}
}
