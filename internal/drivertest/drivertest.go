// Package drivertest runs client-driver compatibility scenarios against a
// MySQL-protocol endpoint: the drivers that users bring from other ecosystems
// (PyMySQL, mysqlclient, PDO_mysql, mysqli, mysql2, MariaDB Connector/J) must
// work unchanged through a dbproxy node, so tests point these scenarios at a
// node (or, to check the scenarios themselves, at MariaDB directly).
//
// Every driver runs the same scenario, kept as a script in testdata/ and
// embedded in this package: create a table, insert a row holding NULL, a
// utf8mb4 string, a 5 MiB blob, a DATETIME(6) and a DECIMAL(20,6) (with a
// server-side prepared statement wherever the driver has one) and read it back
// exactly, check the driver's last insert id, roll back a transaction, get
// error 1146 for a missing table and keep using the same connection, and drop
// the table. A script prints "OK <driver>" and exits 0 on success.
//
// The runtimes come from Debian packages and mysql2 from npm; install.sh in
// this directory installs all of them. mysql2 is installed on demand, from the
// pinned package-lock.json, into a cache directory outside the source tree
// ($DRIVERTEST_CACHE_DIR, else dbproxy/drivertest under the user's cache
// directory), which install.sh fills ahead of time.
package drivertest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

//go:embed testdata/pymysql_scenario.py testdata/mysqlclient_scenario.py
//go:embed testdata/pdo_scenario.php testdata/mysqli_scenario.php
//go:embed testdata/mysql2_scenario.js testdata/package.json testdata/package-lock.json
//go:embed testdata/Scenario.java
var testdata embed.FS

const (
	// debianPython is the interpreter that sees Debian's python3-* packages;
	// the first python3 on PATH may be another installation (pyenv).
	debianPython = "/usr/bin/python3"
	// connectorJJar is where Debian's libmariadb-java puts Connector/J.
	connectorJJar = "/usr/share/java/mariadb-java-client.jar"

	// runTimeout bounds one scenario when the caller's context has no deadline.
	runTimeout = 5 * time.Minute
	// npmTimeout bounds the on-demand install of mysql2.
	npmTimeout = 5 * time.Minute
)

// Target is the endpoint a scenario connects to. User needs CREATE, DROP,
// INSERT and SELECT on Database; each driver uses its own table, t_<name>.
type Target struct {
	Host     string
	Port     int
	User     string
	Password string
	Database string
	// TLS makes the driver use TLS without verifying the server certificate;
	// every scenario fails rather than fall back to a plain connection.
	TLS bool
}

// Driver is one client driver and the scenario script that exercises it.
// Only the values returned by Drivers are usable.
type Driver struct {
	// Name identifies the driver ("pymysql", "mysqlclient", "pdo", "mysqli",
	// "mysql2", "connectorj"); the scenario's table is t_<Name>.
	Name string
	// ServerSidePrepare reports whether the scenario uses server-side
	// prepared statements (COM_STMT_PREPARE / COM_STMT_EXECUTE). PyMySQL and
	// mysqlclient have none: they interpolate parameters on the client.
	ServerSidePrepare bool
	// LongData reports whether the scenario always sends its blob with
	// COM_STMT_SEND_LONG_DATA.
	LongData bool

	script string
	// check returns nil when the runtime and the driver library are
	// installed, and otherwise an error that says how to install them.
	check func(ctx context.Context) error
	// command builds the command that runs the script, which has been
	// written to dir.
	command func(ctx context.Context, dir string) (*exec.Cmd, error)
}

// Drivers returns all six drivers, in a fixed order.
func Drivers() []Driver {
	return []Driver{
		{
			Name:    "pymysql",
			script:  "pymysql_scenario.py",
			check:   pythonCheck("pymysql", "python3-pymysql"),
			command: pythonCommand("pymysql_scenario.py"),
		},
		{
			Name:    "mysqlclient",
			script:  "mysqlclient_scenario.py",
			check:   pythonCheck("MySQLdb", "python3-mysqldb"),
			command: pythonCommand("mysqlclient_scenario.py"),
		},
		{
			Name:              "pdo",
			ServerSidePrepare: true,
			script:            "pdo_scenario.php",
			check:             phpCheck("pdo_mysql"),
			command:           phpCommand("pdo_scenario.php"),
		},
		{
			Name:              "mysqli",
			ServerSidePrepare: true,
			LongData:          true,
			script:            "mysqli_scenario.php",
			check:             phpCheck("mysqli"),
			command:           phpCommand("mysqli_scenario.php"),
		},
		{
			Name:              "mysql2",
			ServerSidePrepare: true,
			script:            "mysql2_scenario.js",
			check: func(ctx context.Context) error {
				_, err := mysql2Modules(ctx)
				return err
			},
			command: mysql2Command,
		},
		{
			Name:              "connectorj",
			ServerSidePrepare: true,
			script:            "Scenario.java",
			check:             javaCheck,
			command:           javaCommand,
		},
	}
}

// Available returns nil when the driver's runtime and library are installed,
// and otherwise an error with the command that installs them. For mysql2 it
// installs the pinned mysql2 into the cache directory if it is not there yet.
func (d Driver) Available() error {
	ctx, cancel := context.WithTimeout(context.Background(), npmTimeout)
	defer cancel()
	return d.check(ctx)
}

// Run runs the driver's scenario against tgt and returns the script's
// combined stdout and stderr. The error, if any, includes that output. The
// password reaches the script through its environment, never its arguments.
func (d Driver) Run(ctx context.Context, tgt Target) (string, error) {
	if tgt.Port <= 0 {
		return "", fmt.Errorf("%s scenario: target port %d is not set", d.Name, tgt.Port)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, runTimeout)
		defer cancel()
	}
	if err := d.check(ctx); err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "drivertest-"+d.Name+"-")
	if err != nil {
		return "", fmt.Errorf("%s scenario: %w", d.Name, err)
	}
	defer os.RemoveAll(dir)
	src, err := testdata.ReadFile("testdata/" + d.script)
	if err != nil {
		return "", fmt.Errorf("%s scenario: %w", d.Name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, d.script), src, 0o644); err != nil {
		return "", fmt.Errorf("%s scenario: %w", d.Name, err)
	}

	cmd, err := d.command(ctx, dir)
	if err != nil {
		return "", fmt.Errorf("%s scenario: %w", d.Name, err)
	}
	cmd.Dir = dir
	cmd.Env = append(cmd.Env, targetEnv(tgt)...)
	// A script that leaves a child holding its output must not hang Run.
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	runErr := cmd.Run()
	output := out.String()
	if runErr != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			runErr = fmt.Errorf("%w (%w)", runErr, ctxErr)
		}
		return output, fmt.Errorf("%s scenario failed: %w\n%s", d.Name, runErr, indent(output))
	}
	if !hasLine(output, "OK "+d.Name) {
		return output, fmt.Errorf("%s scenario exited 0 without printing %q\n%s", d.Name, "OK "+d.Name, indent(output))
	}
	return output, nil
}

// RunAll runs every driver's scenario against tgt, one subtest per driver,
// one after the other (they share tgt's database). A driver whose runtime or
// library is missing fails its subtest with the command that installs it:
// it is never skipped.
func RunAll(t *testing.T, tgt Target) {
	t.Helper()
	runAll(t, tgt, nil)
}

// runHook lets this package's own tests look at the server around each run.
type runHook struct {
	before func(t *testing.T, d Driver)
	after  func(t *testing.T, d Driver)
}

func runAll(t *testing.T, tgt Target, hook *runHook) {
	t.Helper()
	for _, d := range Drivers() {
		t.Run(d.Name, func(t *testing.T) {
			if err := d.Available(); err != nil {
				t.Fatalf("driver %s is not installed: %v", d.Name, err)
			}
			if hook != nil && hook.before != nil {
				hook.before(t, d)
			}
			start := time.Now()
			out, err := d.Run(t.Context(), tgt)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s (tls=%v) in %s: %s", d.Name, tgt.TLS, time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
			if hook != nil && hook.after != nil {
				hook.after(t, d)
			}
		})
	}
}

// targetEnv is the scenario's view of tgt, plus the process environment less
// variables that would change what the scripts load or where they connect.
func targetEnv(tgt Target) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "DB_"),
			name == "PYTHONPATH", name == "PYTHONHOME", name == "NODE_PATH",
			name == "CLASSPATH", name == "PHP_INI_SCAN_DIR":
			continue
		}
		env = append(env, kv)
	}
	host := tgt.Host
	if host == "" {
		host = "127.0.0.1"
	}
	env = append(env,
		"DB_HOST="+host,
		"DB_PORT="+strconv.Itoa(tgt.Port),
		"DB_USER="+tgt.User,
		"DB_PASS="+tgt.Password,
		"DB_NAME="+tgt.Database,
	)
	if tgt.TLS {
		env = append(env, "DB_TLS=1")
	}
	return env
}

func pythonCheck(module, pkg string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		hint := "apt-get install -y python3 " + pkg
		if _, err := os.Stat(debianPython); err != nil {
			return fmt.Errorf("%s not found (%s): %w", debianPython, hint, err)
		}
		out, err := exec.CommandContext(ctx, debianPython, "-I", "-c", "import "+module).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s cannot import %s (%s): %w: %s", debianPython, module, hint, err, strings.TrimSpace(string(out)))
		}
		return nil
	}
}

func pythonCommand(script string) func(ctx context.Context, dir string) (*exec.Cmd, error) {
	return func(ctx context.Context, dir string) (*exec.Cmd, error) {
		// -I: ignore user site-packages and PYTHON* variables.
		return exec.CommandContext(ctx, debianPython, "-I", filepath.Join(dir, script)), nil
	}
}

func phpCheck(ext string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		const hint = "apt-get install -y php-cli php-mysql"
		php, err := exec.LookPath("php")
		if err != nil {
			return fmt.Errorf("php not found (%s): %w", hint, err)
		}
		code := fmt.Sprintf("exit(extension_loaded(%q) ? 0 : 1);", ext)
		if out, err := exec.CommandContext(ctx, php, "-r", code).CombinedOutput(); err != nil {
			return fmt.Errorf("php extension %s is not loaded (%s): %w: %s", ext, hint, err, strings.TrimSpace(string(out)))
		}
		return nil
	}
}

func phpCommand(script string) func(ctx context.Context, dir string) (*exec.Cmd, error) {
	return func(ctx context.Context, dir string) (*exec.Cmd, error) {
		php, err := exec.LookPath("php")
		if err != nil {
			return nil, err
		}
		return exec.CommandContext(ctx, php, filepath.Join(dir, script)), nil
	}
}

func javaCheck(ctx context.Context) error {
	const hint = "apt-get install -y openjdk-17-jdk-headless libmariadb-java"
	java, err := exec.LookPath("java")
	if err != nil {
		return fmt.Errorf("java not found (%s): %w", hint, err)
	}
	// Launching a single source file needs the compiler, which only a JDK has.
	out, err := exec.CommandContext(ctx, java, "--list-modules").Output()
	if err != nil {
		return fmt.Errorf("java --list-modules (%s): %w", hint, err)
	}
	if !bytes.Contains(out, []byte("jdk.compiler@")) {
		return fmt.Errorf("java at %s is not a JDK: module jdk.compiler is missing (%s)", java, hint)
	}
	if _, err := os.Stat(connectorJJar); err != nil {
		return fmt.Errorf("MariaDB Connector/J not found (%s): %w", hint, err)
	}
	return nil
}

func javaCommand(ctx context.Context, dir string) (*exec.Cmd, error) {
	java, err := exec.LookPath("java")
	if err != nil {
		return nil, err
	}
	return exec.CommandContext(ctx, java, "-cp", connectorJJar, filepath.Join(dir, "Scenario.java")), nil
}

func mysql2Command(ctx context.Context, dir string) (*exec.Cmd, error) {
	modules, err := mysql2Modules(ctx)
	if err != nil {
		return nil, err
	}
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, node, filepath.Join(dir, "mysql2_scenario.js"))
	cmd.Env = []string{"NODE_PATH=" + modules}
	return cmd, nil
}

// mysql2Modules returns the node_modules directory that holds the pinned
// mysql2, running `npm ci` into the cache directory first if needed. The
// cache entry is named by the hash of package.json and package-lock.json, and
// appears only once complete (rename), so concurrent test processes are safe.
func mysql2Modules(ctx context.Context) (string, error) {
	const hint = "apt-get install -y nodejs npm; npm must reach its registry"
	if _, err := exec.LookPath("node"); err != nil {
		return "", fmt.Errorf("node not found (%s): %w", hint, err)
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return "", fmt.Errorf("npm not found (%s): %w", hint, err)
	}
	pkg, lock, err := mysql2Package()
	if err != nil {
		return "", err
	}
	root, dir, err := mysql2Dir(pkg, lock)
	if err != nil {
		return "", err
	}
	modules := filepath.Join(dir, "node_modules")
	if _, err := os.Stat(filepath.Join(modules, "mysql2", "package.json")); err == nil {
		return modules, nil
	}

	tmp, err := os.MkdirTemp(root, "tmp-mysql2-")
	if err != nil {
		return "", fmt.Errorf("mysql2 cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.WriteFile(filepath.Join(tmp, "package.json"), pkg, 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(tmp, "package-lock.json"), lock, 0o644); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, npmTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error")
	cmd.Dir = tmp
	cmd.WaitDelay = 10 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm ci for mysql2 in %s (%s): %w\n%s", tmp, hint, err, indent(string(out)))
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Another process may have finished the same install first.
		if _, statErr := os.Stat(filepath.Join(modules, "mysql2", "package.json")); statErr == nil {
			return modules, nil
		}
		return "", fmt.Errorf("mysql2 cache: %w", err)
	}
	return modules, nil
}

func mysql2Package() (pkg, lock []byte, err error) {
	if pkg, err = testdata.ReadFile("testdata/package.json"); err != nil {
		return nil, nil, err
	}
	if lock, err = testdata.ReadFile("testdata/package-lock.json"); err != nil {
		return nil, nil, err
	}
	return pkg, lock, nil
}

// mysql2Dir returns the cache root and the directory, named by the hash of
// package.json, a NUL byte and package-lock.json, that holds (or will hold)
// node_modules. install.sh computes the same name to fill the cache ahead.
func mysql2Dir(pkg, lock []byte) (root, dir string, err error) {
	sum := sha256.New()
	sum.Write(pkg)
	sum.Write([]byte{0})
	sum.Write(lock)
	root, err = cacheRoot()
	if err != nil {
		return "", "", err
	}
	return root, filepath.Join(root, "mysql2-"+hex.EncodeToString(sum.Sum(nil))[:16]), nil
}

// cacheRoot is where on-demand installs are kept between test runs:
// $DRIVERTEST_CACHE_DIR if set, else the user's cache directory.
func cacheRoot() (string, error) {
	root := os.Getenv("DRIVERTEST_CACHE_DIR")
	if root == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		root = filepath.Join(base, "dbproxy", "drivertest")
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("drivertest cache directory: %w", err)
	}
	return root, nil
}

func hasLine(out, want string) bool {
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == want {
			return true
		}
	}
	return false
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return "    (no output)"
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}
