package node_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	gomysql "github.com/go-sql-driver/mysql"
	"github.com/hashicorp/go-hclog"

	"github.com/dbproxy/dbproxy/dataplane/backend"
	"github.com/dbproxy/dbproxy/dataplane/config"
	"github.com/dbproxy/dbproxy/dataplane/healthreport"
	"github.com/dbproxy/dbproxy/dataplane/mysql"
	"github.com/dbproxy/dbproxy/dataplane/node"
	"github.com/dbproxy/dbproxy/internal/mysqltest"
	"github.com/dbproxy/dbproxy/internal/nodetest"
	"github.com/dbproxy/dbproxy/internal/testing/testutil"
	"github.com/dbproxy/dbproxy/internal/vocab"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// TestWriterDiscoveryAfterPromotion kills the writer and promotes a
// replica, three times over. The node checks its targets only once an
// hour, so the promoted replica can be found only by writer discovery:
// while there is no writer, every target is checked again and again (the
// replica's check count climbs), a client's COM_PING is answered, and a
// write waiting in the node goes through once read_only=0; then the fast
// checks stop. The log shows how long each write waited after the
// promotion (make bench is where that is held to a target).
func TestWriterDiscoveryAfterPromotion(t *testing.T) {
	const rounds = 3
	primary, reps := mysqltest.StartReplicatedT(t, rounds, mysqltest.Options{})
	servers := append([]*mysqltest.Server{primary}, reps...)
	nodetest.PrepareServer(t, primary)
	if err := primary.Exec(t.Context(), "CREATE TABLE app.d (round INT)"); err != nil {
		t.Fatal(err)
	}
	for _, r := range reps {
		if err := r.WaitCaughtUp(t.Context(), primary); err != nil {
			t.Fatal(err)
		}
	}
	cfg := nodetest.Config(servers...)
	cfg.Proxies[0].Pool.ConnectionBorrowTimeout = config.Duration(30 * time.Second)
	env := nodetest.StartWith(t, node.Options{MonitorInterval: time.Hour}, cfg, servers...)
	router, targets := env.Node.Router("main"), env.Node.Targets("main")
	db := env.Open(t, "")
	idle, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	mustExec(t, db, "INSERT INTO d VALUES (0)")
	if router.Discovering() {
		t.Fatal("writer discovery runs while there is a writer")
	}

	var waited []time.Duration
	for round := 1; round <= rounds; round++ {
		old, next, nextT := servers[round-1], servers[round], targets[round]
		if err := old.Kill(); err != nil {
			t.Fatal(err)
		}
		// The write meets the dead writer (the connection error makes
		// the monitor check it at once) and then waits in the node.
		wrote := make(chan error, 1)
		var at time.Time
		go func() { wrote <- writeUntilDone(t.Context(), db, &at, round) }()
		testutil.Eventually(t, 20*time.Second, "the node to see the writer go", func() bool {
			return !targets[round-1].Health().Healthy && router.Discovering()
		})
		for _, tg := range targets {
			if !tg.Discovering() {
				t.Fatalf("round %d: target %s is not checked fast without a writer", round, tg.Name())
			}
		}
		base := nextT.Checks()
		testutil.Eventually(t, 10*time.Second, "writer discovery to check the replica again and again", func() bool {
			return nextT.Checks() >= base+3
		})
		if err := idle.PingContext(t.Context()); err != nil {
			t.Fatalf("round %d: COM_PING with no writer up: %v", round, err)
		}
		promoted := promoteTimed(t, next)
		select {
		case err := <-wrote:
			if err != nil {
				t.Fatalf("round %d: write after the promotion: %v", round, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: the write did not go through within 30s of the promotion", round)
		}
		waited = append(waited, at.Sub(promoted))
		t.Logf("round %d: promotion (read_only=0 sent) to the first write through the node: %s", round, at.Sub(promoted).Round(100*time.Microsecond))
		if got, err := next.QueryValue(t.Context(), "SELECT COUNT(*) FROM app.d WHERE round = ?", round); err != nil || got != "1" {
			t.Fatalf("round %d: rows on the new writer: %q, %v", round, got, err)
		}

		// Found: back to the regular interval, no extra checks.
		if router.Discovering() {
			t.Fatalf("round %d: writer discovery still runs with writer %s", round, nextT.Name())
		}
		checks := make([]uint64, len(targets))
		for i, tg := range targets {
			if tg.Discovering() {
				t.Fatalf("round %d: target %s still checked fast", round, tg.Name())
			}
			checks[i] = tg.Checks()
		}
		// The other replicas keep pointing at the dead writer: they hold
		// table d already, which is all the next round needs.
		for range 20 {
			mustExec(t, db, "INSERT INTO d VALUES (?)", -round)
		}
		for i, tg := range targets {
			// One check may have been under way or due when discovery
			// ended; an hour passes before the next.
			if d := tg.Checks() - checks[i]; d > 2 {
				t.Fatalf("round %d: target %s checked %d more times after the writer was found", round, tg.Name(), d)
			}
		}
	}
	slices.Sort(waited)
	t.Logf("promotion to first write over %d rounds: min %s, median %s, max %s", rounds,
		waited[0].Round(100*time.Microsecond), waited[len(waited)/2].Round(100*time.Microsecond), waited[len(waited)-1].Round(100*time.Microsecond))
}

// writeUntilDone inserts round into d until it succeeds, through the
// failover: a statement that was in flight on the dead writer fails with
// 2013 and is sent again, as an application would. at is when it
// succeeded.
func writeUntilDone(ctx context.Context, db *sql.DB, at *time.Time, round int) error {
	for {
		_, err := db.ExecContext(ctx, "INSERT INTO d VALUES (?)", round)
		if err == nil {
			*at = time.Now()
			return nil
		}
		var me *gomysql.MySQLError
		if !errors.As(err, &me) || me.Number != mysql.ERLostConnectionToBackend {
			return err
		}
	}
}

// promoteTimed promotes a replica and returns when read_only=0 was sent:
// replication is stopped first, on a connection opened beforehand, so that
// only the switch itself is timed.
func promoteTimed(t *testing.T, s *mysqltest.Server) time.Time {
	t.Helper()
	db, err := s.OpenDB()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mustExec(t, c, "STOP SLAVE")
	mustExec(t, c, "RESET SLAVE ALL")
	at := time.Now()
	mustExec(t, c, "SET GLOBAL read_only=OFF")
	return at
}

// conflictEnv is a node whose logs the test reads.
type conflictEnv struct {
	*nodetest.Env
	logs *testutil.SyncBuffer
	rw   *sql.DB
}

func startConflictEnv(t *testing.T, cfg *config.Config, servers ...*mysqltest.Server) *conflictEnv {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	log := hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Info})
	t.Cleanup(func() {
		if t.Failed() {
			t.Log("node log:\n" + logs.String())
		}
	})
	env := nodetest.StartWith(t, node.Options{Logger: log, MonitorInterval: 100 * time.Millisecond}, cfg, servers...)
	return &conflictEnv{Env: env, logs: logs, rw: env.Open(t, "")}
}

// write inserts a row through the node's READ_WRITE endpoint.
func (e *conflictEnv) write(phase string) error {
	_, err := e.rw.Exec("INSERT INTO c VALUES (?)", phase)
	return err
}

// refused waits until writes are refused for a conflict between the named
// targets and checks every way the conflict is reported: the client's
// error, the metric, the health the node reports, the log.
func (e *conflictEnv) refused(t *testing.T, writers ...string) {
	t.Helper()
	var err error
	testutil.Eventually(t, 10*time.Second, "writes to be refused", func() bool {
		err = e.write("race")
		return err != nil
	})
	var me *gomysql.MySQLError
	if !errors.As(err, &me) || me.Number != mysql.ERWriterConflict {
		t.Fatalf("write in a conflict: %v, want error %d", err, mysql.ERWriterConflict)
	}
	both := writers[0] + " and " + writers[1]
	if !strings.Contains(me.Message, "targets "+both) || !strings.Contains(me.Message, "read_only") {
		t.Fatalf("the error does not name both writers: %s", me.Message)
	}
	// The node refused: the message is not dressed as a failure to
	// connect to one of them.
	if strings.Contains(me.Message, "cannot connect") {
		t.Fatalf("the conflict reads as a connection failure: %s", me.Message)
	}
	if got := metricLabel(t, e.Env, "dbproxy_writer_conflict_targets", "proxy", "main"); got != 2 {
		t.Fatalf("dbproxy_writer_conflict_targets = %v, want 2", got)
	}
	if got := metricLabel(t, e.Env, "dbproxy_writer_conflicts_total", "proxy", "main"); got != 1 {
		t.Fatalf("dbproxy_writer_conflicts_total = %v, want 1", got)
	}
	if !strings.Contains(e.logs.String(), "more than one target accepts writes") {
		t.Fatal("no log line about the conflict")
	}
	report := healthreport.FromNode(e.Node)()
	wire := healthreport.Encode(report)
	for _, th := range report[0].Targets {
		fenced := slices.Contains(writers, th.Name)
		if fenced != (!th.Healthy && strings.HasPrefix(th.Reason, backend.ConflictReasonPrefix+": targets "+both)) {
			t.Fatalf("reported health of %s: healthy %v, reason %q", th.Name, th.Healthy, th.Reason)
		}
		if fenced && th.Role != vocab.RoleWriter {
			t.Fatalf("reported role of %s: %q", th.Name, th.Role)
		}
	}
	// On the wire, as the control plane reads it.
	found := 0
	for _, l := range wire.GetClusterEndpointsHealth()[0].GetLocalityEndpointsHealth() {
		for _, eh := range l.GetEndpointsHealth() {
			if !slices.Contains(writers, eh.GetEndpoint().GetHostname()) {
				continue
			}
			found++
			reason := eh.GetHealthMetadata().GetFields()[xdsapi.HealthReasonMetadataKey].GetStringValue()
			if eh.GetHealthStatus() != core.HealthStatus_UNHEALTHY || !strings.HasPrefix(reason, backend.ConflictReasonPrefix) {
				t.Fatalf("health report of %s: %s, reason %q", eh.GetEndpoint().GetHostname(), eh.GetHealthStatus(), reason)
			}
		}
	}
	if found != 2 {
		t.Fatalf("health report names %d of the two writers", found)
	}
}

// noWritesDuring checks that writes refused in a conflict reached no
// server: the servers' rows are the same before and after more refused
// writes.
func (e *conflictEnv) noWritesDuring(t *testing.T, servers ...*mysqltest.Server) {
	t.Helper()
	count := func() []string {
		var out []string
		for _, s := range servers {
			n, err := s.QueryValue(t.Context(), "SELECT COUNT(*) FROM app.c")
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, n)
		}
		return out
	}
	before := count()
	for i := range 10 {
		if err := e.write("conflict"); err == nil {
			t.Fatalf("write %d in a conflict succeeded", i)
		}
	}
	// A read through the READ_WRITE endpoint cannot tell which writer
	// is the real one either.
	var one int
	if err := e.rw.QueryRow("SELECT 1").Scan(&one); err == nil {
		t.Fatal("a read through the READ_WRITE endpoint succeeded in a conflict")
	}
	if after := count(); !slices.Equal(before, after) {
		t.Fatalf("rows on %v changed during the conflict: %v -> %v", servers, before, after)
	}
}

// resumed demotes s and waits until writes go through again, to want.
func (e *conflictEnv) resumed(t *testing.T, demote, want *mysqltest.Server) {
	t.Helper()
	if err := demote.Exec(t.Context(), "SET GLOBAL read_only=ON"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "writes to resume after the demotion", func() bool {
		return e.write("after") == nil
	})
	if got, err := want.QueryValue(t.Context(), "SELECT COUNT(*) FROM app.c WHERE phase = 'after'"); err != nil || got != "1" {
		t.Fatalf("rows written after the conflict on %s: %q, %v", want.Addr(), got, err)
	}
	if got, err := demote.QueryValue(t.Context(), "SELECT COUNT(*) FROM app.c WHERE phase = 'after'"); err != nil || got != "0" {
		t.Fatalf("rows written after the conflict on the demoted %s: %q, %v", demote.Addr(), got, err)
	}
	if got := metricLabel(t, e.Env, "dbproxy_writer_conflict_targets", "proxy", "main"); got != 0 {
		t.Fatalf("dbproxy_writer_conflict_targets after the conflict = %v", got)
	}
	for _, th := range healthreport.FromNode(e.Node)()[0].Targets {
		if !th.Healthy || th.Reason != "" {
			t.Fatalf("reported health of %s after the conflict: healthy %v, reason %q", th.Name, th.Healthy, th.Reason)
		}
	}
	if !strings.Contains(e.logs.String(), "writer conflict over; writes resume") {
		t.Fatal("no log line about the end of the conflict")
	}
}

// prepareConflict creates the test user and table c on primary and waits
// for reps to have them.
func prepareConflict(t *testing.T, primary *mysqltest.Server, reps ...*mysqltest.Server) {
	t.Helper()
	nodetest.PrepareServer(t, primary)
	if err := primary.Exec(t.Context(), "CREATE TABLE app.c (phase VARCHAR(16))", "INSERT INTO app.c VALUES ('before')"); err != nil {
		t.Fatal(err)
	}
	for _, r := range reps {
		if err := r.WaitCaughtUp(t.Context(), primary); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTwoWritersRefused promotes a replica while the writer still runs:
// writes are refused with an error naming both, reported in the metric, the
// targets' health and the log, and reach neither server; reads go on on the
// remaining replica; once the old writer is read_only=1 again, writes go
// to the promoted one.
func TestTwoWritersRefused(t *testing.T) {
	primary, reps := mysqltest.StartReplicatedT(t, 2, mysqltest.Options{})
	prepareConflict(t, primary, reps...)
	cfg := nodetest.Config(primary, reps[0], reps[1])
	cfg.Proxies[0].Endpoints = append(cfg.Proxies[0].Endpoints, config.Endpoint{Name: "ro", Address: "127.0.0.1:0", TargetRole: vocab.TargetRoleReadOnly})
	e := startConflictEnv(t, cfg, primary, reps[0], reps[1])
	roAddr, _ := e.Node.Addr("main", "ro")
	ro := nodetest.OpenAddr(t, roAddr, "")
	if err := e.write("before"); err != nil {
		t.Fatal(err)
	}
	tx, err := e.rw.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec("INSERT INTO c VALUES ('tx')"); err != nil {
		t.Fatal(err)
	}

	if err := reps[0].Promote(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.refused(t, "db1", "db2")
	// A transaction open before the conflict ends on its connection,
	// which then closes instead of waiting idle for a client to take it
	// back past the router.
	if err := tx.Commit(); err != nil {
		t.Fatalf("commit of a transaction open before the conflict: %v", err)
	}
	db1 := e.Node.Targets("main")[0]
	testutil.Eventually(t, 10*time.Second, "the fenced writer's connections to close", func() bool {
		st := db1.Pool.Stats()
		return st.Idle == 0 && st.Borrowed == 0
	})
	e.noWritesDuring(t, primary, reps[0])
	for range 5 {
		if got := queryString(t, ro, "SELECT @@port"); got != fmt.Sprint(reps[1].Port) {
			t.Fatalf("a read in the conflict reached port %s, want the replica %d", got, reps[1].Port)
		}
	}
	e.resumed(t, primary, reps[0])
}

// TestReturningWriterRefused: the writer dies, a replica is promoted and
// takes the writes, then the old writer comes back with read_only=0. Writes
// are refused (they reach neither) until it is read_only=1.
func TestReturningWriterRefused(t *testing.T) {
	primary, reps := mysqltest.StartReplicatedT(t, 1, mysqltest.Options{})
	prepareConflict(t, primary, reps...)
	cfg := nodetest.Config(primary, reps[0])
	cfg.Proxies[0].Pool.ConnectionBorrowTimeout = config.Duration(30 * time.Second)
	e := startConflictEnv(t, cfg, primary, reps[0])
	if err := primary.Kill(); err != nil {
		t.Fatal(err)
	}
	old := e.Node.Targets("main")[0]
	testutil.Eventually(t, 10*time.Second, "the node to see the writer go", func() bool { return !old.Health().Healthy })
	if err := reps[0].Promote(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := e.write("promoted"); err != nil {
		t.Fatal(err)
	}

	if err := primary.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	if ro, err := primary.QueryValue(t.Context(), "SELECT @@global.read_only"); err != nil || ro != "0" {
		t.Fatalf("the old writer came back with read_only=%q (%v); the test needs 0", ro, err)
	}
	e.refused(t, "db1", "db2")
	e.noWritesDuring(t, primary, reps[0])
	e.resumed(t, primary, reps[0])
}

// TestDemotedWriterFoundAtOnce is a planned switchover: the writer is set
// read_only=1, then a replica read_only=0. The node checks targets once an
// hour, yet the first write the old writer refuses makes the node check it
// at once, find no writer and look for the next one, so a write right after
// the promotion waits for it and goes through.
func TestDemotedWriterFoundAtOnce(t *testing.T) {
	primary, reps := mysqltest.StartReplicatedT(t, 1, mysqltest.Options{})
	prepareConflict(t, primary, reps...)
	// As an application's user should be: read_only applies to it.
	if err := primary.Exec(t.Context(), "REVOKE SUPER, READ_ONLY ADMIN ON *.* FROM "+nodetest.User); err != nil {
		t.Fatal(err)
	}
	cfg := nodetest.Config(primary, reps[0])
	cfg.Proxies[0].Pool.ConnectionBorrowTimeout = config.Duration(30 * time.Second)
	env := nodetest.StartWith(t, node.Options{MonitorInterval: time.Hour}, cfg, primary, reps[0])
	router, old := env.Node.Router("main"), env.Node.Targets("main")[0]
	db := env.Open(t, "")
	mustExec(t, db, "INSERT INTO c VALUES ('before')")

	if err := primary.Exec(t.Context(), "SET GLOBAL read_only=ON"); err != nil {
		t.Fatal(err)
	}
	_, err := db.Exec("INSERT INTO c VALUES ('demoted')")
	var me *gomysql.MySQLError
	if !errors.As(err, &me) || me.Number != mysql.EROptionPreventsStatement {
		t.Fatalf("write to the demoted writer: %v, want the server's %d", err, mysql.EROptionPreventsStatement)
	}
	testutil.Eventually(t, 10*time.Second, "the node to see the writer demoted", func() bool {
		return old.Role() == vocab.RoleReader && router.Discovering()
	})
	promoted := promoteTimed(t, reps[0])
	mustExec(t, db, "INSERT INTO c VALUES ('after')")
	t.Logf("promotion (read_only=0 sent) to the first write through the node: %s", time.Since(promoted).Round(100*time.Microsecond))
	if got, err := reps[0].QueryValue(t.Context(), "SELECT COUNT(*) FROM app.c WHERE phase = 'after'"); err != nil || got != "1" {
		t.Fatalf("rows on the promoted replica: %q, %v", got, err)
	}
}
