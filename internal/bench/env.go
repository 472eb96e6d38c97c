package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dbproxy/dbproxy/dataplane/config"
	"github.com/dbproxy/dbproxy/internal/mysqltest"
)

// Database account and schema the bench creates on the server.
const (
	benchUser     = "sbtest"
	benchPassword = "sbtest-secret"
	benchDB       = "sbtest"
	proxyName     = "bench"
)

// nodeProc is a child process of the bench: a data-plane node or, for the
// propagation phase, the control plane.
type nodeProc struct {
	name      string
	cmd       *exec.Cmd
	addr      string // client endpoint host:port
	admin     string // admin host:port
	logPath   string
	poolLimit int
	exited    chan struct{}
	waitErr   error
}

// findRepoRoot returns the directory of the module's go.mod.
func findRepoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the dbproxy module (run from the repository root)")
	}
	return filepath.Dir(gomod), nil
}

// buildNode builds the dbproxy binary into dir.
func (b *bench) buildNode(ctx context.Context) (string, error) {
	if b.o.nodeBin != "" {
		return filepath.Abs(b.o.nodeBin)
	}
	root, err := findRepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(b.tmp, "dbproxy")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = root
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build the node: %w\n%s", err, out.String())
	}
	return bin, nil
}

// raiseNoFile raises RLIMIT_NOFILE (soft and, as root, hard) to at least
// want; children (the node) inherit it. Go already raises the soft limit to
// the hard limit at start-up.
func raiseNoFile(want uint64) (soft, hard uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, 0
	}
	if lim.Cur < want || lim.Max < want {
		next := lim
		if next.Max < want {
			next.Max = want
		}
		next.Cur = next.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &next); err != nil {
			// Not root: at least use the whole hard limit.
			next = lim
			next.Cur = lim.Max
			_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &next)
		}
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	return lim.Cur, lim.Max
}

// freePort returns a currently free TCP port on 127.0.0.1.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// startServer starts MariaDB, creates the bench account and database and
// loads the sysbench tables.
func (b *bench) startServer(ctx context.Context) error {
	s, err := mysqltest.Start(ctx, mysqltest.Options{ExtraArgs: []string{
		"--max-connections=" + strconv.Itoa(b.o.maxConnections),
		"--innodb-buffer-pool-size=256M",
		"--max-prepared-stmt-count=1000000",
	}})
	if err != nil {
		return fmt.Errorf("start MariaDB: %w", err)
	}
	b.server = s
	if err := s.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+benchDB); err != nil {
		return err
	}
	if err := s.CreateUser(ctx, benchUser, benchPassword); err != nil {
		return err
	}
	b.res.Env.MariaDBVersion, _ = s.QueryValue(ctx, "SELECT @@version")
	mc, _ := s.QueryValue(ctx, "SELECT @@max_connections")
	b.res.Env.MaxConnections, _ = strconv.Atoi(mc)
	tc, _ := s.QueryValue(ctx, "SELECT @@thread_cache_size")
	b.res.Env.ThreadCacheSize, _ = strconv.Atoi(tc)
	b.logf("MariaDB %s on %s (max_connections=%s, thread_cache_size=%s)", b.res.Env.MariaDBVersion, s.Addr(), mc, tc)

	begin := time.Now()
	out, err := b.sysbenchRaw(ctx, "oltp_read_write", s.Host, s.Port, min(b.o.tables, 4), 0, "prepare")
	if err != nil {
		return fmt.Errorf("sysbench prepare: %w\n%s", err, tail(out, 20))
	}
	b.logf("sysbench prepare: %d tables x %d rows in %s", b.o.tables, b.o.tableSize, time.Since(begin).Round(time.Millisecond))
	return nil
}

// startNode writes a configuration for one proxy in front of the server
// with the given max_connections_percent, starts the node process and waits
// until its pool limit is known.
func (b *bench) startNode(ctx context.Context, name string, poolPercent int) (*nodeProc, error) {
	ep, err := freePort()
	if err != nil {
		return nil, err
	}
	ap, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg := config.Config{
		Version: "bench-" + name,
		Node:    config.Node{Zone: "a", AdminAddress: net.JoinHostPort("127.0.0.1", strconv.Itoa(ap))},
		Secrets: []config.Secret{{Name: "sbtest", Username: benchUser, Password: benchPassword}},
		Proxies: []config.Proxy{{
			Name:      proxyName,
			Auth:      []config.Auth{{Secret: "sbtest"}},
			Endpoints: []config.Endpoint{{Name: "rw", Address: net.JoinHostPort("127.0.0.1", strconv.Itoa(ep))}},
			Targets:   []config.Target{{Name: "db", Host: b.server.Host, Port: b.server.Port, Zone: "a"}},
			Pool: config.PoolConfig{
				MaxConnectionsPercent:   poolPercent,
				ConnectionBorrowTimeout: config.Duration(60 * time.Second),
			},
			MaxClientConnections: max(config.DefaultMaxClientConnections, b.o.idleClients+1000),
		}},
	}
	js, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(b.tmp, "node-"+name+".json")
	if err := os.WriteFile(cfgPath, js, 0o600); err != nil {
		return nil, err
	}
	n, err := b.startProc(name, "node-"+name+".log", "dataplane", "--config", cfgPath, "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	n.addr, n.admin = cfg.Proxies[0].Endpoints[0].Address, cfg.Node.AdminAddress
	cmd := n.cmd

	// The pool starts with a placeholder limit until the first health
	// check reads @@max_connections: wait for the expected limit.
	want := max(1, b.o.maxConnections*poolPercent/100)
	deadline := time.Now().Add(30 * time.Second)
	for n.poolLimit != want {
		select {
		case <-n.exited:
			return nil, fmt.Errorf("node %s exited during start-up (%v):\n%s", name, n.waitErr, tailFile(n.logPath, 20))
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		m, err := scrape(ctx, n.admin)
		if err == nil {
			n.poolLimit = int(m.sum("dbproxy_database_connections", "state", "max"))
		}
		if time.Now().After(deadline) {
			if n.poolLimit <= 0 {
				return nil, fmt.Errorf("node %s: pool limit not known after 30s (last scrape error: %v):\n%s", name, err, tailFile(n.logPath, 20))
			}
			b.logf("WARNING: node %s pool limit is %d after 30s, expected %d", name, n.poolLimit, want)
			break
		}
	}
	// A first login proves the endpoint serves.
	c, err := b.connector(n.addr)
	if err == nil {
		err = oneShot(ctx, c)
	}
	if err != nil {
		return nil, fmt.Errorf("node %s: first query through %s: %w\n%s", name, n.addr, err, tailFile(n.logPath, 20))
	}
	b.logf("node %q pid %d: endpoint %s, admin %s, pool limit %d (%d%% of max_connections %d)",
		name, cmd.Process.Pid, n.addr, n.admin, n.poolLimit, poolPercent, b.o.maxConnections)
	return n, nil
}

// startProc starts the dbproxy binary with args as a child process whose
// output goes to logName in the temporary directory, and registers it for
// cleanup. It must be called from the main goroutine (see main): the child
// gets Pdeathsig, which fires when the thread that started it exits.
func (b *bench) startProc(name, logName string, args ...string) (*nodeProc, error) {
	logPath := filepath.Join(b.tmp, logName)
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(b.nodeBin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: a Ctrl-C on the terminal reaches the bench, which
	// stops the child itself. Pdeathsig: the child dies with the bench.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	n := &nodeProc{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	b.nodes = append(b.nodes, n)
	go func() { n.waitErr = cmd.Wait(); close(n.exited) }()
	return n, nil
}

// stop ends the node: SIGTERM, then SIGKILL after 5s.
func (n *nodeProc) stop() {
	select {
	case <-n.exited:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		<-n.exited
	}
}

// alive reports an error when the node process has exited.
func (n *nodeProc) alive() error {
	select {
	case <-n.exited:
		return fmt.Errorf("node %s exited (%v):\n%s", n.name, n.waitErr, tailFile(n.logPath, 30))
	default:
		return nil
	}
}

// procStatus reads VmRSS and VmHWM (KiB) of pid.
func procStatus(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			rss, _ = strconv.ParseInt(f[1], 10, 64)
		case "VmHWM:":
			hwm, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	return rss, hwm, nil
}

// rssKiB is procStatus's VmRSS of the node.
func (n *nodeProc) rssKiB() int64 {
	rss, _, _ := procStatus(n.cmd.Process.Pid)
	return rss
}

// fetch GETs an admin URL.
func fetch(ctx context.Context, url string, timeout time.Duration) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return tail(string(b), n)
}

// procCounters are cumulative per-process counters from /proc.
type procCounters struct {
	cpuTicks int64 // utime+stime, clock ticks (USER_HZ = 100)
	syscr    int64 // read-like syscalls
	syscw    int64 // write-like syscalls
}

// readCounters reads /proc/<pid>/stat and /proc/<pid>/io.
func readCounters(pid int) (procCounters, error) {
	var c procCounters
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return c, err
	}
	// Fields after the command name, which is in parentheses.
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return c, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64) // field 14
	st, _ := strconv.ParseInt(f[12], 10, 64) // field 15
	c.cpuTicks = ut + st
	io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return c, err
	}
	for _, line := range strings.Split(string(io), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch k {
		case "syscr":
			c.syscr = n
		case "syscw":
			c.syscw = n
		}
	}
	return c, nil
}
