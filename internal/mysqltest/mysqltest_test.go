package mysqltest

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	osexec "os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// queryValue fails the test on error.
func queryValue(t *testing.T, s *Server, query string, args ...any) string {
	t.Helper()
	v, err := s.QueryValue(testContext(t), query, args...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mustExec(t *testing.T, s *Server, queries ...string) {
	t.Helper()
	if err := s.Exec(testContext(t), queries...); err != nil {
		t.Fatal(err)
	}
}

func TestStart_query(t *testing.T) {
	t.Parallel()
	begin := time.Now()
	s := StartT(t, Options{})
	t.Logf("Start took %s", time.Since(begin))

	if v := queryValue(t, s, "SELECT VERSION()"); !strings.Contains(v, "MariaDB") {
		t.Errorf("VERSION() = %q, want a MariaDB version", v)
	}
	// The proxy relies on session state tracking to detect pinning.
	if v := queryValue(t, s, "SELECT @@session_track_schema"); v != "1" {
		t.Errorf("session_track_schema = %q, want 1", v)
	}
	if v := queryValue(t, s, "SELECT @@session_track_system_variables"); !strings.Contains(v, "autocommit") {
		t.Errorf("session_track_system_variables = %q, want it to include autocommit", v)
	}
	if v := queryValue(t, s, "SELECT @@read_only"); v != "0" {
		t.Errorf("read_only = %q, want 0", v)
	}

	ctx := testContext(t)
	mustExec(t, s, "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY)")
	if err := s.CreateUser(ctx, "app", "s3cr'et", "SELECT, INSERT ON app.*"); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("mysql", s.DSN("app", "s3cr'et", "app"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "INSERT INTO t VALUES (1)"); err != nil {
		t.Fatalf("insert as app: %v", err)
	}
	if _, err := db.ExecContext(ctx, "DROP TABLE t"); err == nil {
		t.Error("DROP TABLE as app succeeded; want the grant to limit app to SELECT, INSERT")
	}
}

func TestStart_zoneAddress(t *testing.T) {
	t.Parallel()
	s := StartT(t, Options{Host: "127.0.2.1"})
	if !strings.HasPrefix(s.Addr(), "127.0.2.1:") {
		t.Errorf("Addr() = %q, want 127.0.2.1:port", s.Addr())
	}
	if v := queryValue(t, s, "SELECT @@bind_address"); v != "127.0.2.1" {
		t.Errorf("bind_address = %q, want 127.0.2.1", v)
	}
}

func TestStart_tls(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := StartT(t, Options{Host: "127.0.3.1", TLS: true})
	mustExec(t, s, "CREATE USER 'secure'@'%' IDENTIFIED BY 'pw' REQUIRE SSL")

	connector, err := mysql.NewConnector(s.Config("secure", "pw", ""))
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	var name, version string
	if err := db.QueryRowContext(ctx, "SHOW SESSION STATUS LIKE 'Ssl_version'").Scan(&name, &version); err != nil {
		t.Fatalf("query over verified TLS: %v", err)
	}
	if !strings.HasPrefix(version, "TLS") {
		t.Errorf("Ssl_version = %q, want a TLS version", version)
	}

	plain, err := sql.Open("mysql", s.DSN("secure", "pw", ""))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if err := plain.PingContext(ctx); err == nil {
		t.Error("plaintext login of a REQUIRE SSL account succeeded")
	}
}

func TestStart_extraArgsOverrideDefaults(t *testing.T) {
	t.Parallel()
	s := StartT(t, Options{ExtraArgs: []string{"--max-connections=200"}, ServerID: 42})
	if v := queryValue(t, s, "SELECT @@max_connections"); v != "200" {
		t.Errorf("max_connections = %q, want 200", v)
	}
	if v := queryValue(t, s, "SELECT @@server_id"); v != "42" {
		t.Errorf("server_id = %q, want 42", v)
	}
}

func TestStart_failureIncludesErrorLog(t *testing.T) {
	t.Parallel()
	_, err := Start(testContext(t), Options{ExtraArgs: []string{"--no-such-option"}})
	if err == nil {
		t.Fatal("Start with an unknown option succeeded")
	}
	if !strings.Contains(err.Error(), "no-such-option") {
		t.Errorf("error does not quote the error log: %v", err)
	}
}

func TestStart_portTaken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		holder func(t *testing.T) int // occupies a port and returns it
	}{
		{"silent listener", func(t *testing.T) int {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			return l.Addr().(*net.TCPAddr).Port
		}},
		// Another server answers as root too; Start must not mistake it for
		// its own.
		{"another mariadbd", func(t *testing.T) int {
			return StartT(t, Options{}).Port
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			port := tt.holder(t)
			s, err := Start(testContext(t), Options{Port: port})
			if err == nil {
				s.Close()
			}
			if !errors.Is(err, errPortInUse) {
				t.Fatalf("Start on taken port %d = %v, want errPortInUse", port, err)
			}
		})
	}
}

func TestStart_reusesCallerDir(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dir := t.TempDir()
	s, err := Start(ctx, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, s, "CREATE DATABASE kept")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Start(ctx, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v := queryValue(t, s, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'kept'"); v != "kept" {
		t.Errorf("database created before Close is gone after Start on the same Dir")
	}
}

func TestLookPath_missingBinaryHasInstallHint(t *testing.T) {
	_, err := lookPath([]string{"/nonexistent/mariadbd", "no-such-mariadbd"})
	if !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("lookPath = %v, want ErrNotInstalled", err)
	}
	if !strings.Contains(err.Error(), "apt-get install -y mariadb-server mariadb-client") {
		t.Errorf("error lacks the install hint: %v", err)
	}
}

func TestStopRestart_keepsData(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	s := StartT(t, Options{})
	mustExec(t, s, "CREATE DATABASE app", "CREATE TABLE app.t (v INT)", "INSERT INTO app.t VALUES (1)")
	port := s.Port

	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if s.Running() {
		t.Fatal("Running() after Stop")
	}
	if _, err := s.QueryValue(ctx, "SELECT 1"); err == nil {
		t.Fatal("query succeeded on a stopped server")
	}
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Port != port {
		t.Errorf("port changed across restart: %d -> %d", port, s.Port)
	}
	mustExec(t, s, "INSERT INTO app.t VALUES (2)")

	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(ctx); err == nil {
		t.Error("Restart of a running server succeeded")
	}
	if v := queryValue(t, s, "SELECT GROUP_CONCAT(v ORDER BY v) FROM app.t"); v != "1,2" {
		t.Errorf("rows after stop and kill = %q, want 1,2", v)
	}
}

func TestClose_leavesNothing(t *testing.T) {
	t.Parallel()
	s, err := Start(testContext(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	pid := s.PID()
	if pid == 0 {
		t.Fatal("PID() = 0 for a running server")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d still exists after Close (kill -0: %v)", pid, err)
	}
	if _, err := os.Stat(s.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dir %s still exists after Close (stat: %v)", s.Dir, err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestStartReplicated_failover(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	begin := time.Now()
	primary, reps := StartReplicatedT(t, 2, Options{})
	t.Logf("StartReplicated(2) took %s", time.Since(begin))
	if len(reps) != 2 {
		t.Fatalf("got %d replicas, want 2", len(reps))
	}
	for _, r := range reps {
		if v := queryValue(t, r, "SELECT @@read_only"); v != "1" {
			t.Errorf("replica %s read_only = %q, want 1", r.Addr(), v)
		}
	}

	mustExec(t, primary, "CREATE DATABASE app", "CREATE TABLE app.t (v INT PRIMARY KEY)", "INSERT INTO app.t VALUES (1)")
	for _, r := range reps {
		if err := r.WaitCaughtUp(ctx, primary); err != nil {
			t.Fatal(err)
		}
		if v := queryValue(t, r, "SELECT GROUP_CONCAT(v) FROM app.t"); v != "1" {
			t.Errorf("replica %s has %q, want 1", r.Addr(), v)
		}
	}

	// Fail over: the primary crashes, replica 1 becomes the writer and
	// replica 2 follows it.
	if err := primary.Kill(); err != nil {
		t.Fatal(err)
	}
	newPrimary, follower := reps[0], reps[1]
	if err := newPrimary.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if v := queryValue(t, newPrimary, "SELECT @@read_only"); v != "0" {
		t.Errorf("promoted read_only = %q, want 0", v)
	}
	if err := follower.ReplicateFrom(ctx, newPrimary); err != nil {
		t.Fatal(err)
	}
	mustExec(t, newPrimary, "INSERT INTO app.t VALUES (2)")
	if err := follower.WaitCaughtUp(ctx, newPrimary); err != nil {
		t.Fatal(err)
	}
	if v := queryValue(t, follower, "SELECT GROUP_CONCAT(v ORDER BY v) FROM app.t"); v != "1,2" {
		t.Errorf("follower has %q, want 1,2", v)
	}

	// A replica keeps its role across a restart.
	if err := follower.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := follower.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if v := queryValue(t, follower, "SELECT @@read_only"); v != "1" {
		t.Errorf("restarted replica read_only = %q, want 1", v)
	}
	mustExec(t, newPrimary, "INSERT INTO app.t VALUES (3)")
	if err := follower.WaitCaughtUp(ctx, newPrimary); err != nil {
		t.Fatal(err)
	}
	if v := queryValue(t, follower, "SELECT COUNT(*) FROM app.t"); v != "3" {
		t.Errorf("restarted follower has %q rows, want 3", v)
	}
}

// TestProcessDiesWithParent kills a test binary that runs a server and
// checks that mariadbd goes with it (Pdeathsig), so that a crashed test run
// leaves nothing behind.
func TestProcessDiesWithParent(t *testing.T) {
	if os.Getenv("MYSQLTEST_ORPHAN_CHILD") == "1" {
		s, err := Start(context.Background(), Options{})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Printf("server %d %s\n", s.PID(), s.Dir)
		select {} // wait to be killed
	}
	t.Parallel()
	cmd := osexec.Command(os.Args[0], "-test.run=^TestProcessDiesWithParent$")
	cmd.Env = append(os.Environ(), "MYSQLTEST_ORPHAN_CHILD=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	var dir string
	line, err := bufio.NewReader(out).ReadString('\n')
	if _, serr := fmt.Sscanf(line, "server %d %s", &pid, &dir); serr != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("child did not start a server: %q (%v)", line, err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait() // "signal: killed" is expected

	deadline := time.Now().Add(10 * time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("mariadbd %d outlived the process that started it", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// processAlive reports whether pid exists and is not a zombie (an orphan is
// reaped by init, which in a container may never happen).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesized command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
