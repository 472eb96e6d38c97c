// Package mysqltest starts real MariaDB servers (mariadbd) in temporary
// directories on loopback addresses. The proxy's tests use it to run against
// the database it fronts rather than against a fake, and `dbproxy dev` uses it
// to give the quickstart a database to point at; the core therefore does not
// depend on package testing, and StartT and StartReplicatedT are thin
// wrappers.
//
// Starting a server copies a data directory template that
// mariadb-install-db creates once (cached on disk across test binaries, see
// templateCache) and then runs mariadbd on a free port, so that a test can
// afford many servers. Every server has binary logging and GTIDs on, so any
// of them can become a primary; StartReplicated, Promote, ReplicateFrom and
// WaitCaughtUp build writer/reader topologies and fail them over.
//
// Servers run in their own process group and, on Linux, die with the process
// that started them, so a crashed test binary leaves no mariadbd behind.
package mysqltest

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/hashicorp/go-hclog"
)

const (
	// RootUser is the administrative account of every server. It can log in
	// over TCP from any address (root@'%') and over the Unix socket.
	RootUser = "root"
	// RootPassword is RootUser's password. It is deliberately public: these
	// servers exist only for tests and local development.
	RootPassword = "root"

	defaultHost = "127.0.0.1"
	// startTimeout bounds a start when the caller's context has no deadline.
	startTimeout = 60 * time.Second
	// stopTimeout bounds a graceful shutdown before the server is killed.
	stopTimeout = 60 * time.Second
	// killTimeout bounds the wait for a SIGKILLed process to be reaped.
	killTimeout = 10 * time.Second
	// bindAttempts is how many ports Start tries when the port it picked is
	// taken before mariadbd binds it.
	bindAttempts = 5
	// maxSocketPath is the Unix socket path limit (sun_path) minus the NUL.
	maxSocketPath = 107
)

// errPortInUse marks a start that failed because the TCP port was taken.
var errPortInUse = errors.New("port already in use")

// errExited marks a start that failed because mariadbd exited.
var errExited = errors.New("mariadbd exited")

// Options configure a server. The zero value starts a server on 127.0.0.1 on
// a free port in a new temporary directory.
type Options struct {
	// Host is the address mariadbd binds to; "" means 127.0.0.1. Tests that
	// simulate zones use 127.0.x.1, which Linux routes to loopback without
	// configuration.
	Host string
	// Port is the TCP port; 0 picks a free one.
	Port int
	// Dir holds the data directory, socket, pid file and logs. "" creates a
	// temporary directory that Close removes. A Dir that already holds a data
	// directory is reused as is (its data survives), and Close leaves it.
	Dir string
	// ServerID is mariadbd's server_id, which must differ between servers
	// that replicate from each other; 0 uses the port number.
	ServerID int
	// ExtraArgs are appended to mariadbd's command line and so override the
	// defaults, for example "--max-connections=200".
	ExtraArgs []string
	// Logger receives start and stop events; nil discards them.
	Logger hclog.Logger
	// TLS makes the server accept TLS with a certificate for Host signed by
	// a throwaway CA (see Server.TLSConfig). Clients may still connect
	// without TLS unless their account requires it (CREATE USER ... REQUIRE
	// SSL).
	TLS bool
}

// Server is a running (or stopped) mariadbd. Its methods are safe for
// concurrent use.
type Server struct {
	// Host and Port are where the server listens for TCP connections. Port
	// stays the same across Stop/Kill and Restart.
	Host string
	Port int
	// Dir holds data/, error.log, mysqld.sock and mysqld.pid.
	Dir string
	// ServerID is the server's server_id.
	ServerID int

	log       hclog.Logger
	bins      binaries
	extraArgs []string
	ownsDir   bool
	caPEM     []byte // nil without Options.TLS

	mu struct {
		sync.Mutex
		proc     *process // nil when stopped
		starting bool     // a start is in progress
		readOnly bool     // started with --read-only (replicas)
		closed   bool
	}
}

// Start copies the data directory template into a new directory (or reuses
// opts.Dir), starts mariadbd and waits until it accepts connections from
// RootUser. If mariadbd is not installed the error wraps ErrNotInstalled. On
// failure the error includes the tail of the server's error log.
func Start(ctx context.Context, opts Options) (*Server, error) {
	return start(ctx, opts, false)
}

func start(ctx context.Context, opts Options, readOnly bool) (_ *Server, err error) {
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if opts.Host == "" {
		opts.Host = defaultHost
	}
	bins, err := findBinaries()
	if err != nil {
		return nil, fmt.Errorf("mysqltest: %w", err)
	}
	tmpl, err := templates.get(ctx, bins, log)
	if err != nil {
		return nil, fmt.Errorf("mysqltest: create data directory template: %w", err)
	}

	s := &Server{
		Host:      opts.Host,
		Port:      opts.Port,
		ServerID:  opts.ServerID,
		log:       log,
		bins:      bins,
		extraArgs: append([]string(nil), opts.ExtraArgs...),
	}
	s.mu.readOnly = readOnly
	if opts.Dir == "" {
		if s.Dir, err = os.MkdirTemp("", "mysqltest-"); err != nil {
			return nil, fmt.Errorf("mysqltest: create server dir: %w", err)
		}
		s.ownsDir = true
	} else {
		if s.Dir, err = filepath.Abs(opts.Dir); err != nil {
			return nil, fmt.Errorf("mysqltest: server dir: %w", err)
		}
		if err := os.MkdirAll(s.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("mysqltest: create server dir: %w", err)
		}
	}
	defer func() {
		if err != nil && s.ownsDir {
			os.RemoveAll(s.Dir)
		}
	}()
	if len(s.SocketPath()) > maxSocketPath {
		return nil, fmt.Errorf("mysqltest: socket path %s is longer than %d bytes; use a shorter Dir", s.SocketPath(), maxSocketPath)
	}

	begin := time.Now()
	if _, err := os.Stat(s.dataDir()); errors.Is(err, os.ErrNotExist) {
		if err := copyTree(tmpl, s.dataDir()); err != nil {
			return nil, fmt.Errorf("mysqltest: copy data directory template: %w", err)
		}
	}
	if err := os.MkdirAll(s.tmpDir(), 0o700); err != nil {
		return nil, fmt.Errorf("mysqltest: create tmpdir: %w", err)
	}
	if opts.TLS {
		if err := s.ensureTLS(); err != nil {
			return nil, fmt.Errorf("mysqltest: %w", err)
		}
	}
	prepared := time.Since(begin)

	s.mu.Lock()
	s.mu.starting = true
	s.mu.Unlock()
	if err := s.launch(ctx, opts.Port == 0, opts.ServerID == 0); err != nil {
		return nil, err
	}
	s.log.Info("started mariadbd", "addr", s.Addr(), "dir", s.Dir, "server_id", s.ServerID,
		"prepare", prepared.Round(time.Millisecond), "took", time.Since(begin).Round(time.Millisecond))
	return s, nil
}

// launch starts mariadbd and waits for it to accept connections. With
// pickPort it picks a new free port for every attempt and retries when
// another process took the port first. The caller has set mu.starting.
func (s *Server) launch(ctx context.Context, pickPort, autoID bool) error {
	defer func() {
		s.mu.Lock()
		s.mu.starting = false
		s.mu.Unlock()
	}()
	for attempt := 1; ; attempt++ {
		if pickPort {
			port, err := freePort(s.Host)
			if err != nil {
				return fmt.Errorf("mysqltest: %w", err)
			}
			s.Port = port
		}
		if autoID {
			s.ServerID = s.Port
		}
		err := s.startOnce(ctx)
		if err == nil {
			return nil
		}
		if !pickPort || !errors.Is(err, errPortInUse) || attempt == bindAttempts {
			return err
		}
		s.log.Debug("port taken before mariadbd bound it; retrying", "port", s.Port, "attempt", attempt)
	}
}

// startOnce runs mariadbd once on s.Port.
func (s *Server) startOnce(ctx context.Context) error {
	errLog, stdioLog := s.ErrorLogPath(), filepath.Join(s.Dir, "stdio.log")
	offset, stdioOffset := fileSize(errLog), fileSize(stdioLog)
	p, err := startProcess(s.bins.mariadbd, s.args(), stdioLog)
	if err != nil {
		return fmt.Errorf("mysqltest: %w", err)
	}
	s.mu.Lock()
	s.mu.proc = p
	s.mu.Unlock()

	err = s.waitReady(ctx, p)
	if err == nil {
		return nil
	}
	exited := errors.Is(err, errExited)
	if !exited {
		_ = killGroup(p.pid)
		s.waitExit(p, killTimeout)
	}
	s.clearProc(p)
	logPath, logText := errLog, readFrom(errLog, offset, 16<<10)
	if strings.TrimSpace(logText) == "" {
		// mariadbd writes to stderr until it has opened the error log.
		logPath, logText = stdioLog, readFrom(stdioLog, stdioOffset, 16<<10)
	}
	if errors.Is(err, errPortInUse) || (exited && isBindFailure(logText)) {
		return fmt.Errorf("mysqltest: start mariadbd on %s: %w", s.Addr(), errPortInUse)
	}
	return fmt.Errorf("mysqltest: start mariadbd on %s: %w\n--- tail of %s ---\n%s", s.Addr(), err, logPath, tailLines([]byte(logText), 25))
}

// waitReady polls until RootUser can connect to this server (not some other
// server on the same port), p exits, or ctx ends.
func (s *Server) waitReady(ctx context.Context, p *process) error {
	ctx, cancel := withDefaultTimeout(ctx, startTimeout)
	defer cancel()
	// Abandon an attempt as soon as mariadbd exits: the attempt may have
	// reached another process's listener, which need not ever answer.
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	exited := func() error { return fmt.Errorf("%w: %v", errExited, p.err) }

	connector, err := mysql.NewConnector(s.config(RootUser, RootPassword, ""))
	if err != nil {
		return fmt.Errorf("root connector: %w", err)
	}
	want := filepath.Clean(s.dataDir())
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		datadir, err := tryConnect(ctx, connector)
		if p.exited() {
			return exited()
		}
		if err == nil {
			if filepath.Clean(datadir) != want {
				return fmt.Errorf("%w: a server with datadir %s answers on %s", errPortInUse, datadir, s.Addr())
			}
			return nil
		}
		var myErr *mysql.MySQLError
		if errors.As(err, &myErr) {
			// Something answered and refused us. If it is another server
			// on our port, ours is about to exit with a bind error.
			if s.waitExit(p, time.Second) {
				return exited()
			}
			return fmt.Errorf("connect as %s: %w", RootUser, err)
		}
		select {
		case <-ctx.Done():
			if p.exited() {
				return exited()
			}
			return fmt.Errorf("not accepting connections: %w (last attempt: %v)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// tryConnect opens one connection and returns the server's datadir. A short
// timeout keeps a listener that accepts but never answers from eating the
// whole start deadline.
func tryConnect(ctx context.Context, connector driver.Connector) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := connector.Connect(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	q, ok := conn.(driver.QueryerContext)
	if !ok {
		return "", fmt.Errorf("driver connection %T cannot query", conn)
	}
	rows, err := q.QueryContext(ctx, "SELECT @@datadir", nil)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	dest := make([]driver.Value, 1)
	if err := rows.Next(dest); err != nil {
		return "", fmt.Errorf("read @@datadir: %w", err)
	}
	switch v := dest[0].(type) {
	case []byte:
		return string(v), nil
	case string:
		return v, nil
	default:
		return "", fmt.Errorf("read @@datadir: unexpected %T", dest[0])
	}
}

// withDefaultTimeout bounds ctx by d unless it already has a deadline.
func withDefaultTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// args is mariadbd's command line. The settings keep memory and disk small
// (many servers share a small CI machine) and trade durability for speed:
// a kill -9 loses nothing because the OS page cache survives, and nobody
// runs these servers through a power cut.
func (s *Server) args() []string {
	s.mu.Lock()
	readOnly := s.mu.readOnly
	s.mu.Unlock()
	args := []string{
		"--no-defaults", // must come first; ignores /etc/mysql
		"--datadir=" + s.dataDir(),
		"--tmpdir=" + s.tmpDir(),
		"--socket=" + s.SocketPath(),
		"--pid-file=" + filepath.Join(s.Dir, "mysqld.pid"),
		"--log-error=" + s.ErrorLogPath(),
		"--bind-address=" + s.Host,
		"--port=" + strconv.Itoa(s.Port),
		"--skip-name-resolve",
		"--character-set-server=utf8mb4",
		"--collation-server=utf8mb4_general_ci",
		"--max-allowed-packet=64M",
		// Replication: every server can be a primary or a replica.
		"--server-id=" + strconv.Itoa(s.ServerID),
		"--log-bin=mysql-bin",
		"--relay-log=relay-bin",
		"--log-slave-updates",
		"--binlog-format=ROW",
		// Small and fast.
		"--innodb-flush-log-at-trx-commit=2",
		"--sync-binlog=0",
		"--innodb-doublewrite=0",
		"--innodb-temp-data-file-path=ibtmp1:1M:autoextend",
		"--innodb-buffer-pool-load-at-startup=OFF",
		"--innodb-buffer-pool-dump-at-shutdown=OFF",
		"--performance-schema=OFF",
		"--key-buffer-size=1M",
		"--aria-pagecache-buffer-size=8M",
	}
	args = append(args, innodbArgs...)
	if os.Geteuid() == 0 {
		args = append(args, "--user=root") // mariadbd refuses to run as root otherwise
	}
	if readOnly {
		args = append(args, "--read-only")
	}
	if s.caPEM != nil {
		f := s.tlsFiles()
		args = append(args, "--ssl-ca="+f.ca, "--ssl-cert="+f.cert, "--ssl-key="+f.key)
	}
	return append(args, s.extraArgs...)
}

// Config returns a go-sql-driver/mysql configuration for user over TCP,
// like DSN. For a server started with Options.TLS it also verifies the
// server over TLS, which a DSN string cannot express without the driver's
// process-wide TLS registry; open it with mysql.NewConnector and
// sql.OpenDB.
func (s *Server) Config(user, pass, db string) *mysql.Config {
	cfg := s.config(user, pass, db)
	cfg.TLS = s.TLSConfig()
	return cfg
}

// config is the driver configuration behind DSN, without TLS: the harness's
// own connections do not need it.
func (s *Server) config(user, pass, db string) *mysql.Config {
	cfg := mysql.NewConfig()
	cfg.User = user
	cfg.Passwd = pass
	cfg.Net = "tcp"
	cfg.Addr = s.Addr()
	cfg.DBName = db
	cfg.Timeout = 5 * time.Second
	cfg.ReadTimeout = 30 * time.Second
	cfg.WriteTimeout = 30 * time.Second
	cfg.ParseTime = true
	cfg.Logger = driverLogger{s.log}
	return cfg
}

// driverLogger sends the driver's complaints (mostly about connections to a
// server that was just killed) to the server's logger instead of stderr.
type driverLogger struct{ log hclog.Logger }

func (l driverLogger) Print(v ...any) { l.log.Debug("mysql driver: " + fmt.Sprint(v...)) }

// Addr returns host:port of the server's TCP listener.
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// DSN returns a go-sql-driver/mysql data source name for user over TCP, with
// connect/read/write timeouts (5s/30s/30s) and parseTime=true. db may be "".
func (s *Server) DSN(user, pass, db string) string {
	return s.config(user, pass, db).FormatDSN()
}

// RootDSN returns the DSN of RootUser ("root") with RootPassword ("root")
// and no default database, for example
// "root:root@tcp(127.0.0.1:41234)/?parseTime=true&readTimeout=30s&timeout=5s&writeTimeout=30s".
// The account is root@'%', which has all privileges WITH GRANT OPTION.
func (s *Server) RootDSN() string { return s.DSN(RootUser, RootPassword, "") }

// SocketPath returns the path of the server's Unix socket.
func (s *Server) SocketPath() string { return filepath.Join(s.Dir, "mysqld.sock") }

// ErrorLogPath returns the path of the server's error log, which survives
// restarts (each start appends).
func (s *Server) ErrorLogPath() string { return filepath.Join(s.Dir, "error.log") }

func (s *Server) dataDir() string { return filepath.Join(s.Dir, "data") }
func (s *Server) tmpDir() string  { return filepath.Join(s.Dir, "tmp") }

// Running reports whether mariadbd is currently running.
func (s *Server) Running() bool {
	p := s.current()
	return p != nil && !p.exited()
}

// PID returns the process id of the running mariadbd, or 0.
func (s *Server) PID() int {
	if p := s.current(); p != nil && !p.exited() {
		return p.pid
	}
	return 0
}

func (s *Server) current() *process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.proc
}

// clearProc forgets p if it is still the current process.
func (s *Server) clearProc(p *process) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.proc == p {
		s.mu.proc = nil
	}
}

// waitExit waits up to d for p to be reaped and reports whether it was.
func (s *Server) waitExit(p *process, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		return false
	}
}

// Stop shuts the server down gracefully (SIGTERM) and waits for it to exit;
// after stopTimeout it kills it and reports an error. Stopping a stopped
// server does nothing.
func (s *Server) Stop() error {
	p := s.current()
	if p == nil {
		return nil
	}
	defer s.clearProc(p)
	if p.exited() {
		return nil
	}
	begin := time.Now()
	offset := fileSize(s.ErrorLogPath())
	if err := terminate(p.pid); err != nil {
		return fmt.Errorf("mysqltest %s: stop: %w", s.Addr(), err)
	}
	if !s.waitExit(p, stopTimeout) {
		_ = killGroup(p.pid)
		s.waitExit(p, killTimeout)
		return fmt.Errorf("mysqltest %s: stop: no clean shutdown within %s; killed", s.Addr(), stopTimeout)
	}
	if p.err != nil {
		return fmt.Errorf("mysqltest %s: stop: mariadbd exited with %v\n--- tail of %s ---\n%s",
			s.Addr(), p.err, s.ErrorLogPath(), tailLines([]byte(readFrom(s.ErrorLogPath(), offset, 16<<10)), 25))
	}
	s.log.Info("stopped mariadbd", "addr", s.Addr(), "took", time.Since(begin).Round(time.Millisecond))
	return nil
}

// Kill kills the server's process group with SIGKILL, like a crash, and
// waits for it to exit. Killing a stopped server does nothing.
func (s *Server) Kill() error {
	p := s.current()
	if p == nil {
		return nil
	}
	defer s.clearProc(p)
	if p.exited() {
		return nil
	}
	if err := killGroup(p.pid); err != nil {
		return fmt.Errorf("mysqltest %s: kill: %w", s.Addr(), err)
	}
	if !s.waitExit(p, killTimeout) {
		return fmt.Errorf("mysqltest %s: kill: process %d still running after %s", s.Addr(), p.pid, killTimeout)
	}
	s.log.Info("killed mariadbd", "addr", s.Addr())
	return nil
}

// Restart starts the server again, on the same host, port and data
// directory, after Stop or Kill (or a crash). A replica resumes replicating.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	switch {
	case s.mu.closed:
		s.mu.Unlock()
		return fmt.Errorf("mysqltest %s: restart: server is closed", s.Addr())
	case s.mu.starting || (s.mu.proc != nil && !s.mu.proc.exited()):
		s.mu.Unlock()
		return fmt.Errorf("mysqltest %s: restart: server is running", s.Addr())
	}
	s.mu.proc = nil
	s.mu.starting = true
	s.mu.Unlock()
	begin := time.Now()
	if err := s.launch(ctx, false, false); err != nil {
		return err
	}
	s.log.Info("restarted mariadbd", "addr", s.Addr(), "took", time.Since(begin).Round(time.Millisecond))
	return nil
}

// Close kills the server if it runs and removes its directory if Start
// created it. With a caller-supplied Dir it stops the server gracefully
// instead and keeps the directory. Close is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return nil
	}
	s.mu.closed = true
	s.mu.Unlock()
	if !s.ownsDir {
		return s.Stop()
	}
	err := s.Kill() // the data is about to be deleted: no point in a clean shutdown
	if rerr := os.RemoveAll(s.Dir); rerr != nil {
		err = errors.Join(err, fmt.Errorf("mysqltest %s: remove %s: %w", s.Addr(), s.Dir, rerr))
	}
	return err
}

// Exec runs queries in order as RootUser on one connection, so session
// settings carry over from one query to the next. It stops at the first
// error, which quotes the failing query: create accounts with CreateUser,
// whose errors never contain the password.
func (s *Server) Exec(ctx context.Context, queries ...string) error {
	return s.withConn(ctx, func(conn *sql.Conn) error {
		for _, q := range queries {
			if _, err := conn.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("mysqltest %s: exec %q: %w", s.Addr(), q, err)
			}
		}
		return nil
	})
}

// execQuiet is Exec for statements that carry passwords: errors name what
// failed, never the statement.
func (s *Server) execQuiet(ctx context.Context, what string, stmts ...string) error {
	return s.withConn(ctx, func(conn *sql.Conn) error {
		for _, q := range stmts {
			if _, err := conn.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("mysqltest %s: %s: %w", s.Addr(), what, err)
			}
		}
		return nil
	})
}

// QueryValue runs a query that returns one value as RootUser and returns it
// as a string; SQL NULL and an empty result are "".
func (s *Server) QueryValue(ctx context.Context, query string, args ...any) (string, error) {
	var v sql.NullString
	err := s.withConn(ctx, func(conn *sql.Conn) error {
		return conn.QueryRowContext(ctx, query, args...).Scan(&v)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("mysqltest %s: query %q: %w", s.Addr(), query, err)
	}
	return v.String, nil
}

// OpenDB opens a database handle as RootUser. The caller closes it.
func (s *Server) OpenDB() (*sql.DB, error) {
	connector, err := mysql.NewConnector(s.config(RootUser, RootPassword, ""))
	if err != nil {
		return nil, fmt.Errorf("mysqltest %s: root connector: %w", s.Addr(), err)
	}
	return sql.OpenDB(connector), nil
}

// withConn runs fn on a fresh root connection. A fresh handle per call keeps
// no pool alive across Kill and Restart, where it would hold dead
// connections.
func (s *Server) withConn(ctx context.Context, fn func(*sql.Conn) error) error {
	db, err := s.OpenDB()
	if err != nil {
		return err
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("mysqltest %s: connect as %s: %w", s.Addr(), RootUser, err)
	}
	defer conn.Close()
	return fn(conn)
}

// CreateUser creates user@'%' identified by pass and grants it each of
// grants, written as in GRANT without the TO clause ("SELECT ON app.*").
// Without grants it grants ALL PRIVILEGES ON *.*.
func (s *Server) CreateUser(ctx context.Context, user, pass string, grants ...string) error {
	if len(grants) == 0 {
		grants = []string{"ALL PRIVILEGES ON *.*"}
	}
	account := quote(user) + "@'%'"
	stmts := []string{"CREATE USER " + account + " IDENTIFIED BY " + quote(pass)}
	for _, g := range grants {
		stmts = append(stmts, "GRANT "+g+" TO "+account)
	}
	return s.execQuiet(ctx, fmt.Sprintf("create user %q", user), stmts...)
}

// quote returns s as a single-quoted SQL string literal (the server runs
// without NO_BACKSLASH_ESCAPES).
func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\x00", `\0`).Replace(s) + "'"
}
