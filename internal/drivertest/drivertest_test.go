package drivertest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

// TestDrivers runs every scenario against MariaDB directly, plain and over
// TLS, and checks on the server's counters that each driver did what its
// Driver fields claim: TLS or not, server-side prepares or not, long data.
func TestDrivers(t *testing.T) {
	srv := startMariaDB(t, true)
	for _, tc := range []struct {
		name string
		tls  bool
	}{
		{"plain", false},
		{"tls", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tgt := srv.target
			tgt.TLS = tc.tls
			var before map[string]int64
			runAll(t, tgt, &runHook{
				before: func(t *testing.T, d Driver) { before = srv.status(t) },
				after: func(t *testing.T, d Driver) {
					after := srv.status(t)
					delta := func(name string) int64 { return after[name] - before[name] }
					t.Logf("%s: Ssl_accepts +%d, Com_stmt_prepare +%d, Com_stmt_execute +%d, Com_stmt_send_long_data +%d",
						d.Name, delta("Ssl_accepts"), delta("Com_stmt_prepare"), delta("Com_stmt_execute"), delta("Com_stmt_send_long_data"))
					if got := delta("Ssl_accepts") > 0; got != tc.tls {
						t.Errorf("%s: server accepted TLS: %v, want %v", d.Name, got, tc.tls)
					}
					if got := delta("Com_stmt_execute") > 0; got != d.ServerSidePrepare {
						t.Errorf("%s: server-side prepared statements executed: %v, want %v", d.Name, got, d.ServerSidePrepare)
					}
					if d.LongData && delta("Com_stmt_send_long_data") == 0 {
						t.Errorf("%s: no COM_STMT_SEND_LONG_DATA reached the server", d.Name)
					}
				},
			})
		})
	}
}

// TestDriversRefusePlainWhenTLSAsked checks that no scenario falls back to a
// plain connection when asked for TLS and the server offers none (PyMySQL and
// mysqlclient would, silently, without the scripts' own checks).
func TestDriversRefusePlainWhenTLSAsked(t *testing.T) {
	srv := startMariaDB(t, false)
	tgt := srv.target
	tgt.TLS = true
	for _, d := range Drivers() {
		t.Run(d.Name, func(t *testing.T) {
			if err := d.Available(); err != nil {
				t.Fatalf("driver %s is not installed: %v", d.Name, err)
			}
			out, err := d.Run(t.Context(), tgt)
			if err == nil {
				t.Fatalf("scenario passed over a plain connection although TLS was asked:\n%s", out)
			}
			t.Logf("failed as expected: %s", strings.TrimSpace(out))
		})
	}
}

func TestRunReportsFailure(t *testing.T) {
	d := Drivers()[0]
	if err := d.Available(); err != nil {
		t.Fatalf("driver %s is not installed: %v", d.Name, err)
	}
	// Nothing listens on a port that was just closed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	out, err := d.Run(t.Context(), Target{Host: "127.0.0.1", Port: port, User: "u", Password: "secret-pw", Database: "db"})
	if err == nil {
		t.Fatalf("Run succeeded against a closed port:\n%s", out)
	}
	if !strings.Contains(err.Error(), "FAIL "+d.Name) {
		t.Errorf("error does not include the script's output: %v", err)
	}
	if strings.Contains(err.Error(), "secret-pw") {
		t.Errorf("error reveals the password: %v", err)
	}
}

func TestDriversAreComplete(t *testing.T) {
	want := []string{"pymysql", "mysqlclient", "pdo", "mysqli", "mysql2", "connectorj"}
	ds := Drivers()
	if len(ds) != len(want) {
		t.Fatalf("Drivers() returned %d drivers, want %d", len(ds), len(want))
	}
	for i, d := range ds {
		if d.Name != want[i] {
			t.Errorf("Drivers()[%d].Name = %q, want %q", i, d.Name, want[i])
		}
		src, err := testdata.ReadFile("testdata/" + d.script)
		if err != nil {
			t.Errorf("%s: %v", d.Name, err)
			continue
		}
		if !strings.Contains(string(src), "t_"+d.Name) {
			t.Errorf("%s: script does not use table t_%s", d.Name, d.Name)
		}
	}
}

// TestAvailableGivesInstallHint hides the runtimes found through PATH and
// checks that each affected driver says how to install what is missing.
func TestAvailableGivesInstallHint(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	for _, d := range Drivers() {
		if strings.HasSuffix(d.script, ".py") {
			continue // run by absolute path, /usr/bin/python3
		}
		err := d.Available()
		if err == nil {
			t.Errorf("%s: Available() = nil with an empty PATH", d.Name)
			continue
		}
		if !strings.Contains(err.Error(), "apt-get install -y ") {
			t.Errorf("%s: Available() error has no install hint: %v", d.Name, err)
		}
	}
}

// TestInstallScriptFillsTheSameCache checks that install.sh warms the very
// cache directory that mysql2Modules reads.
func TestInstallScriptFillsTheSameCache(t *testing.T) {
	for _, env := range [][]string{
		{"DRIVERTEST_CACHE_DIR=" + t.TempDir()},
		{"DRIVERTEST_CACHE_DIR=", "XDG_CACHE_HOME=" + t.TempDir()},
		{"DRIVERTEST_CACHE_DIR=", "XDG_CACHE_HOME=", "HOME=" + t.TempDir()},
	} {
		for _, kv := range env {
			name, value, _ := strings.Cut(kv, "=")
			t.Setenv(name, value)
		}
		pkg, lock, err := mysql2Package()
		if err != nil {
			t.Fatal(err)
		}
		_, want, err := mysql2Dir(pkg, lock)
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.CommandContext(t.Context(), "bash", "install.sh", "--mysql2-dir").CombinedOutput()
		if err != nil {
			t.Fatalf("install.sh --mysql2-dir: %v\n%s", err, out)
		}
		if got := strings.TrimSpace(string(out)); got != want {
			t.Errorf("with %v: install.sh uses %s, drivertest uses %s", env, got, want)
		}
	}
}

// mariaDB is a throwaway mariadbd for this package's tests.
type mariaDB struct {
	target Target
	admin  *sql.DB // root over the unix socket, without TLS
}

// status returns the server's global status counters that the tests compare.
func (m *mariaDB) status(t *testing.T) map[string]int64 {
	t.Helper()
	rows, err := m.admin.QueryContext(t.Context(), "SHOW GLOBAL STATUS WHERE Variable_name IN "+
		"('Ssl_accepts', 'Com_stmt_prepare', 'Com_stmt_execute', 'Com_stmt_send_long_data')")
	if err != nil {
		t.Fatalf("show global status: %v", err)
	}
	defer rows.Close()
	st := map[string]int64{}
	for rows.Next() {
		var name, value string
		if err := rows.Scan(&name, &value); err != nil {
			t.Fatal(err)
		}
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil {
			t.Fatalf("status %s = %q: %v", name, value, err)
		}
		st[name] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return st
}

// startMariaDB initialises a data directory and starts mariadbd on a free
// loopback port, offering TLS with a fresh self-signed certificate when tls
// is set, with a database and a user for the scenarios. The server is
// stopped at cleanup.
func startMariaDB(t *testing.T, tls bool) *mariaDB {
	t.Helper()
	mariadbd := lookTool(t, "mariadbd")
	installDB := lookTool(t, "mariadb-install-db")

	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	// A unix socket path must stay under ~100 bytes; t.TempDir can be long.
	sockDir, err := os.MkdirTemp("", "dt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "mysqld.sock")

	var userArg []string
	if os.Geteuid() == 0 {
		userArg = []string{"--user=root"}
	}
	args := append([]string{"--no-defaults", "--datadir=" + dataDir, "--auth-root-authentication-method=normal", "--skip-test-db"}, userArg...)
	if out, err := exec.CommandContext(t.Context(), installDB, args...).CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}

	serverArgs := append([]string{
		"--no-defaults",
		"--datadir=" + dataDir,
		"--socket=" + sock,
		"--bind-address=127.0.0.1",
		"--skip-name-resolve",
		"--pid-file=" + filepath.Join(dir, "mariadbd.pid"),
		"--log-error=" + filepath.Join(dir, "error.log"),
		"--innodb-buffer-pool-size=64M",
		"--innodb-log-file-size=48M",
		"--max-allowed-packet=64M",
	}, userArg...)
	if tls {
		cert, key := writeSelfSignedCert(t, dir)
		serverArgs = append(serverArgs, "--ssl-cert="+cert, "--ssl-key="+key)
	} else {
		serverArgs = append(serverArgs, "--skip-ssl")
	}

	// The free port may be taken between Listen/Close and mariadbd's bind:
	// try a few times.
	var admin *sql.DB
	var port int
	for attempt := 1; ; attempt++ {
		port = freePort(t)
		var err error
		admin, err = runMariaDB(t, mariadbd, append(serverArgs, "--port="+strconv.Itoa(port)), sock, filepath.Join(dir, "error.log"))
		if err == nil {
			break
		}
		if attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("starting mariadbd (attempt %d): %v", attempt, err)
	}

	password := randomHex(t, 12)
	for _, q := range []string{
		// Anonymous accounts would shadow the test user for local connections.
		"DELETE FROM mysql.global_priv WHERE User = ''",
		"FLUSH PRIVILEGES",
		"CREATE DATABASE drivertest",
		"CREATE USER 'drivertest'@'%' IDENTIFIED BY '" + password + "'",
		"GRANT ALL ON drivertest.* TO 'drivertest'@'%'",
	} {
		if _, err := admin.ExecContext(t.Context(), q); err != nil {
			t.Fatalf("setting up mariadbd: %s: %v", strings.SplitN(q, " IDENTIFIED", 2)[0], err)
		}
	}
	if tls {
		var haveSSL string
		if err := admin.QueryRowContext(t.Context(), "SELECT @@have_ssl").Scan(&haveSSL); err != nil {
			t.Fatal(err)
		}
		if haveSSL != "YES" {
			t.Fatalf("mariadbd does not offer TLS: have_ssl = %s", haveSSL)
		}
	}
	return &mariaDB{
		target: Target{Host: "127.0.0.1", Port: port, User: "drivertest", Password: password, Database: "drivertest"},
		admin:  admin,
	}
}

// runMariaDB starts mariadbd and waits until root can connect over the
// socket. On success the server is stopped at cleanup.
func runMariaDB(t *testing.T, mariadbd string, args []string, sock, errLog string) (*sql.DB, error) {
	t.Helper()
	cmd := exec.Command(mariadbd, args...)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start mariadbd: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited: //nolint:errcheck // the exit status does not matter when stopping
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited //nolint:errcheck
		}
	}

	cfg := mysql.NewConfig()
	cfg.User = "root"
	cfg.Net = "unix"
	cfg.Addr = sock
	cfg.Timeout = 2 * time.Second
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		stop()
		return nil, err
	}
	db := sql.OpenDB(connector)
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		err = db.PingContext(ctx)
		cancel()
		if err == nil {
			break
		}
		select {
		case exitErr := <-exited:
			db.Close()
			return nil, fmt.Errorf("mariadbd exited (%v) before accepting connections:\n%s", exitErr, tail(errLog))
		case <-deadline.C:
			db.Close()
			stop()
			return nil, fmt.Errorf("mariadbd did not accept connections within 60s: %v\n%s", err, tail(errLog))
		case <-tick.C:
		}
	}
	t.Cleanup(func() {
		db.Close()
		stop()
	})
	return db, nil
}

func lookTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("%s not found: apt-get install -y mariadb-server mariadb-client", name)
	return ""
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// writeSelfSignedCert writes a fresh self-signed certificate and its key for
// 127.0.0.1/localhost; the scenarios do not verify it.
func writeSelfSignedCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "drivertest"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = filepath.Join(dir, "server-cert.pem")
	keyFile = filepath.Join(dir, "server-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// tail returns the end of a log file for failure messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "(no " + path + ")"
		}
		return err.Error()
	}
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}
