package node_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

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
		op := rng.IntN(12)
		if !pins {
			op = []int{1, 2, 3, 4, 5, 8, 9, 10}[rng.IntN(8)]
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
			sets := [][3]string{{"utf8mb3", "utf8mb3", "utf8mb3_general_ci"}, {"latin1", "latin1", "latin1_swedish_ci"}, {"utf8mb4", "utf8mb4", "utf8mb4_general_ci"}}
			cs := sets[rng.IntN(len(sets))]
			name = "SET NAMES " + cs[0]
			if err := exec("SET NAMES " + cs[0]); err != nil {
				return err
			}
			want.charset, want.collation = cs[1], cs[2]
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
