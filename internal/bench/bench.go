package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/dbproxy/dbproxy/internal/mysqltest"
)

// bench holds the state of one run.
type bench struct {
	o       *options
	start   time.Time
	tmp     string
	outDir  string
	nodeBin string
	server  *mysqltest.Server
	rootDB  *sql.DB
	node    *nodeProc   // the main node (sysbench, storm)
	nodes   []*nodeProc // every node started, for cleanup
	res     results
}

// results is what -out receives.
type results struct {
	Started         string         `json:"started"`
	DurationSeconds float64        `json:"duration_seconds"`
	Env             envInfo        `json:"env"`
	Sysbench        []sbPair       `json:"sysbench,omitempty"`
	SysbenchPins    map[string]int `json:"sysbench_node_pins_by_reason,omitempty"`
	ReadWrite       *rwResult      `json:"read_write,omitempty"`
	Storm           *stormSummary  `json:"storm,omitempty"`
	MainNode        *nodeMemory    `json:"main_node_memory,omitempty"`
	Idle            *idleResult    `json:"idle,omitempty"`
	Profile         *profileResult `json:"profile,omitempty"`
	Propagation     *propResult    `json:"propagation,omitempty"`
	Targets         []targetCheck  `json:"targets"`
	Failures        []string       `json:"failures,omitempty"`
}

type envInfo struct {
	GoVersion       string            `json:"go_version"`
	CPUs            int               `json:"cpus"`
	Commit          string            `json:"commit,omitempty"`
	DirtyFiles      int               `json:"dirty_files"`
	MariaDBVersion  string            `json:"mariadb_version"`
	SysbenchVersion string            `json:"sysbench_version"`
	MaxConnections  int               `json:"max_connections"`
	ThreadCacheSize int               `json:"thread_cache_size"`
	PoolLimit       int               `json:"pool_limit"`
	IdlePoolLimit   int               `json:"idle_pool_limit,omitempty"`
	LoadAvgStart    string            `json:"loadavg_start"`
	LoadAvgEnd      string            `json:"loadavg_end,omitempty"`
	NoFileSoft      uint64            `json:"nofile_soft"`
	NoFileHard      uint64            `json:"nofile_hard"`
	Options         map[string]string `json:"options"`
}

type rwResult struct {
	Direct sbResult       `json:"direct"`
	Node   sbResult       `json:"node"`
	Ratio  float64        `json:"ratio"`
	Pins   map[string]int `json:"node_pins_by_reason,omitempty"`
}

type stormSummary struct {
	Workers            int           `json:"workers"`
	DirectPerSecond    float64       `json:"direct_connections_per_second"`
	NodePerSecond      float64       `json:"node_connections_per_second"`
	Ratio              float64       `json:"ratio"`
	PoolLimit          int           `json:"pool_limit"`
	PeakPoolConns      int           `json:"peak_pool_connections"`
	PeakServerSessions int           `json:"peak_server_sessions_node_runs"`
	PeakServerDirect   int           `json:"peak_server_sessions_direct_runs"`
	Runs               []stormResult `json:"runs"`
}

type nodeMemory struct {
	RSSKiB int64 `json:"rss_kib"`
	HWMKiB int64 `json:"hwm_kib"`
}

type idleResult struct {
	Clients              int      `json:"clients"`
	Opened               int      `json:"opened"`
	OpenSeconds          float64  `json:"open_seconds"`
	OpenErrors           int64    `json:"open_errors"`
	FirstOpenErrors      []string `json:"first_open_errors,omitempty"`
	ClientGauge          float64  `json:"node_client_connections_gauge"`
	RSSBeforeKiB         int64    `json:"rss_before_kib"`
	RSSHeldKiB           int64    `json:"rss_held_kib"`
	RSSAfterQueryKiB     int64    `json:"rss_after_query_kib"`
	PerClientKiB         float64  `json:"rss_per_idle_client_kib"`
	PerClientAfterQuery  float64  `json:"rss_per_idle_client_after_query_kib"`
	PoolLimit            int      `json:"pool_limit"`
	PeakPoolConns        int      `json:"peak_pool_connections"`
	PeakServerSessions   int      `json:"peak_server_sessions"`
	PeakWaiting          int      `json:"peak_waiting_clients"`
	QueryOK              int64    `json:"query_ok"`
	QueryErrors          int64    `json:"query_errors"`
	FirstQueryErrors     []string `json:"first_query_errors,omitempty"`
	QuerySeconds         float64  `json:"query_all_seconds"`
	QueryWorkers         int      `json:"query_workers"`
	BackendOpenedDuring  float64  `json:"backend_connections_opened"`
	NodeHWMKiB           int64    `json:"node_hwm_kib"`
	BenchProcessRSSKiB   int64    `json:"bench_process_rss_kib"`
	ClientConnectionsTLS string   `json:"client_connections_by_tls,omitempty"`
}

type targetCheck struct {
	Name     string `json:"name"`
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Pass     bool   `json:"pass"`
	Skipped  bool   `json:"skipped,omitempty"`
}

func (b *bench) logf(format string, a ...any) {
	fmt.Printf("[%4.0fs] %s\n", time.Since(b.start).Seconds(), fmt.Sprintf(format, a...))
}

func (b *bench) fail(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	b.res.Failures = append(b.res.Failures, msg)
	b.logf("FAILURE: %s", msg)
}

func (b *bench) run(ctx context.Context) error {
	var err error
	if b.tmp, err = os.MkdirTemp("", "dbproxy-bench-"); err != nil {
		return err
	}
	b.outDir = filepath.Dir(b.o.out)
	if err := os.MkdirAll(b.outDir, 0o755); err != nil {
		return err
	}
	b.collectEnv()
	soft, hard := raiseNoFile(uint64(b.o.idleClients) + 4096)
	b.res.Env.NoFileSoft, b.res.Env.NoFileHard = soft, hard
	if soft < uint64(b.o.idleClients)+256 {
		b.logf("WARNING: RLIMIT_NOFILE is %d (hard %d): too low for %d idle clients", soft, hard, b.o.idleClients)
	}

	// Build the node while the server starts.
	type built struct {
		bin string
		err error
	}
	bc := make(chan built, 1)
	go func() {
		bin, err := b.buildNode(ctx)
		bc <- built{bin, err}
	}()
	b.logf("starting MariaDB and building the node (temporary files in %s)", b.tmp)
	serr := b.startServer(ctx)
	bl := <-bc
	if serr != nil {
		return serr
	}
	if bl.err != nil {
		return bl.err
	}
	b.nodeBin = bl.bin
	if b.rootDB, err = b.server.OpenDB(); err != nil {
		return err
	}
	b.rootDB.SetMaxOpenConns(2)

	if !(b.o.skip["sysbench"] && b.o.skip["rw"] && b.o.skip["storm"]) {
		if b.node, err = b.startNode(ctx, "main", b.o.poolPercent); err != nil {
			return err
		}
		b.res.Env.PoolLimit = b.node.poolLimit
		if err := b.phaseSysbench(ctx); err != nil {
			return err
		}
		if err := b.phaseReadWrite(ctx); err != nil {
			return err
		}
		if err := b.phaseStorm(ctx); err != nil {
			return err
		}
		if rss, hwm, err := procStatus(b.node.cmd.Process.Pid); err == nil {
			b.res.MainNode = &nodeMemory{RSSKiB: rss, HWMKiB: hwm}
		}
		if err := b.node.alive(); err != nil {
			b.fail("%v", err)
		}
		b.node.stop()
	}
	if err := b.phaseIdle(ctx); err != nil {
		return err
	}
	return b.phasePropagation(ctx)
}

func (b *bench) collectEnv() {
	e := &b.res.Env
	e.GoVersion = runtime.Version()
	e.CPUs = runtime.NumCPU()
	e.LoadAvgStart = loadAvg()
	if out, err := exec.Command("sysbench", "--version").Output(); err == nil {
		e.SysbenchVersion = strings.TrimSpace(string(out))
	}
	if root, err := findRepoRoot(); err == nil {
		if out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output(); err == nil {
			e.Commit = strings.TrimSpace(string(out))
		}
		if out, err := exec.Command("git", "-C", root, "status", "--porcelain").Output(); err == nil {
			e.DirtyFiles = len(strings.Fields(strings.TrimSpace(string(out)))) / 2
		}
	}
	o := b.o
	e.Options = map[string]string{
		"quick": fmt.Sprint(o.quick), "duration": o.duration.String(), "rounds": fmt.Sprint(o.rounds),
		"warmup": o.warmup.String(), "tests": strings.Join(o.tests, ","), "threads": fmt.Sprint(o.threads),
		"rw_duration": o.rwDuration.String(), "rw_threads": fmt.Sprint(o.rwThreads),
		"storm_duration": o.stormDuration.String(), "storm_rounds": fmt.Sprint(o.stormRounds),
		"storm_workers": fmt.Sprint(o.stormWorkers), "idle_clients": fmt.Sprint(o.idleClients),
		"idle_workers": fmt.Sprint(o.idleWorkers), "pool_percent": fmt.Sprint(o.poolPercent),
		"idle_pool_percent": fmt.Sprint(o.idlePoolPercent), "tables": fmt.Sprint(o.tables),
		"table_size": fmt.Sprint(o.tableSize), "src_addrs": fmt.Sprint(o.srcAddrs),
		"propagation_changes": fmt.Sprint(o.propChanges), "propagation_clients": fmt.Sprint(o.propClients),
	}
}

// pins returns the node's dbproxy_session_pins_total by reason.
func (b *bench) pins(ctx context.Context, n *nodeProc) map[string]int {
	m, err := scrape(ctx, n.admin)
	if err != nil {
		return nil
	}
	out := map[string]int{}
	for k, v := range m.byLabel("dbproxy_session_pins_total", "reason") {
		out[k] = int(v)
	}
	return out
}

func diffPins(before, after map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

func (b *bench) phaseSysbench(ctx context.Context) error {
	if b.o.skip["sysbench"] {
		return nil
	}
	if b.o.warmup > 0 {
		b.logf("warm-up: oltp_point_select 16 threads, %s direct and %s through the node", b.o.warmup, b.o.warmup)
		for _, target := range []string{"direct", "node"} {
			if r := b.runSysbench(ctx, "oltp_point_select", target, 16, 0, b.o.warmup); r.Failed && ctx.Err() == nil {
				b.fail("warm-up %s: %s", target, r.Error)
			}
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	before := b.pins(ctx, b.node)
	for _, test := range b.o.tests {
		for _, threads := range b.o.threads {
			var runs []sbResult
			for round := 1; round <= b.o.rounds; round++ {
				for _, target := range []string{"direct", "node"} {
					var prof *profiler
					if b.o.pprof && target == "node" && round == 1 && threads == 16 && test == "oltp_point_select" {
						prof = b.startProfile(ctx, b.node, b.o.duration)
					}
					r := b.runSysbench(ctx, test, target, threads, round, b.o.duration)
					if prof != nil {
						b.res.Profile = prof.finish()
					}
					if ctx.Err() != nil {
						return ctx.Err()
					}
					cost := ""
					if target == "node" && r.Queries > 0 {
						cost = fmt.Sprintf("  node: %.1f µs CPU, %.1f+%.1f read+write syscalls per query", r.NodeCPUMicrosPerQuery, r.NodeReadsPerQuery, r.NodeWritesPerQuery)
					}
					b.logf("%-18s %2d threads round %d %-6s: %9.1f tps  p95 %6.2f ms  errors %d%s%s%s",
						test, threads, round, target, r.TPS, r.LatencyP95Ms, r.errors(), r.errorCodes(), cost, failNote(r))
					if r.Failed || (target == "node" && r.errors() > 0) {
						b.fail("sysbench %s %d threads round %d %s: %d errors%s %s (output: %s)", test, threads, round, target, r.errors(), r.errorCodes(), r.Error, b.keepFile(r.Output))
					}
					runs = append(runs, r)
					if target == "node" {
						if err := b.node.alive(); err != nil {
							return err
						}
					}
				}
			}
			b.res.Sysbench = append(b.res.Sysbench, aggregate(test, threads, runs))
		}
	}
	b.res.SysbenchPins = diffPins(before, b.pins(ctx, b.node))
	return nil
}

func failNote(r sbResult) string {
	if r.Failed {
		return "  FAILED: " + r.Error
	}
	return ""
}

// keepFile copies a temporary file next to -out and returns its new path.
func (b *bench) keepFile(path string) string {
	if path == "" {
		return ""
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return path
	}
	dst := filepath.Join(b.outDir, filepath.Base(path))
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		return path
	}
	return dst
}

func (b *bench) phaseReadWrite(ctx context.Context) error {
	if b.o.skip["rw"] {
		return nil
	}
	rw := &rwResult{}
	before := b.pins(ctx, b.node)
	for _, target := range []string{"direct", "node"} {
		r := b.runSysbench(ctx, "oltp_read_write", target, b.o.rwThreads, 1, b.o.rwDuration)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		b.logf("%-18s %2d threads         %-6s: %9.1f tps  p95 %6.2f ms  errors %d%s%s",
			"oltp_read_write", b.o.rwThreads, target, r.TPS, r.LatencyP95Ms, r.errors(), r.errorCodes(), failNote(r))
		// Deadlocks and lock wait timeouts are the database's own answers
		// to concurrent writes (they happen directly too); anything else
		// through the node is a failure.
		if r.Failed || (target == "node" && r.unexpectedErrors() > 0) {
			b.fail("sysbench oltp_read_write %s: %d errors%s %s (output: %s)", target, r.errors(), r.errorCodes(), r.Error, b.keepFile(r.Output))
		}
		if target == "direct" {
			rw.Direct = r
		} else {
			rw.Node = r
		}
	}
	if rw.Direct.TPS > 0 {
		rw.Ratio = rw.Node.TPS / rw.Direct.TPS
	}
	rw.Pins = diffPins(before, b.pins(ctx, b.node))
	b.res.ReadWrite = rw
	return b.node.alive()
}

func (b *bench) phaseStorm(ctx context.Context) error {
	if b.o.skip["storm"] {
		return nil
	}
	if m, err := scrape(ctx, b.node.admin); err == nil {
		b.node.poolLimit = int(m.sum("dbproxy_database_connections", "state", "max"))
	}
	s := &stormSummary{Workers: b.o.stormWorkers, PoolLimit: b.node.poolLimit}
	var dSum, nSum float64
	var dN, nN int
	for round := 1; round <= b.o.stormRounds; round++ {
		for _, target := range []string{"direct", "node"} {
			addr, admin := b.server.Addr(), ""
			if target == "node" {
				addr, admin = b.node.addr, b.node.admin
			}
			c, err := b.connector(addr)
			if err != nil {
				return err
			}
			var openedBefore float64
			if admin != "" {
				if m, err := scrape(ctx, admin); err == nil {
					openedBefore = m.sum("dbproxy_database_connections_opened_total")
				}
			}
			w := startWatch(ctx, admin, b.rootDB)
			ok, errs, elapsed := storm(ctx, c, b.o.stormWorkers, b.o.stormDuration)
			pool, server, waiting := w.result()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r := stormResult{Target: target, Round: round, Workers: b.o.stormWorkers, Seconds: elapsed.Seconds(),
				Connections: ok, PerSecond: float64(ok) / elapsed.Seconds(), Errors: errs.count, FirstErrors: errs.first,
				PeakServer: server}
			if admin != "" {
				r.PeakPoolConns, r.PeakWaiting = pool, waiting
				if m, err := scrape(ctx, admin); err == nil {
					r.OpenedDelta = m.sum("dbproxy_database_connections_opened_total") - openedBefore
				}
				s.PeakPoolConns = max(s.PeakPoolConns, pool)
				s.PeakServerSessions = max(s.PeakServerSessions, server)
				nSum += r.PerSecond
				nN++
			} else {
				s.PeakServerDirect = max(s.PeakServerDirect, server)
				dSum += r.PerSecond
				dN++
			}
			extra := ""
			if admin != "" {
				extra = fmt.Sprintf("  peak backend: pool %d / server sessions %d (limit %d), backend conns opened %.0f",
					pool, server, b.node.poolLimit, r.OpenedDelta)
			} else {
				extra = fmt.Sprintf("  peak server sessions %d", server)
			}
			b.logf("storm round %d %-6s: %8.0f conn/s  errors %d%s", round, target, r.PerSecond, errs.count, extra)
			if errs.count > 0 {
				b.fail("storm round %d %s: %d errors, first: %s", round, target, errs.count, strings.Join(errs.first, " | "))
			}
			s.Runs = append(s.Runs, r)
			if target == "node" {
				if err := b.node.alive(); err != nil {
					return err
				}
			}
		}
	}
	s.DirectPerSecond = dSum / float64(max(dN, 1))
	s.NodePerSecond = nSum / float64(max(nN, 1))
	if s.DirectPerSecond > 0 {
		s.Ratio = s.NodePerSecond / s.DirectPerSecond
	}
	b.res.Storm = s
	return nil
}

func (b *bench) phaseIdle(ctx context.Context) error {
	if b.o.skip["idle"] || b.o.idleClients == 0 {
		return nil
	}
	n, err := b.startNode(ctx, "idle", b.o.idlePoolPercent)
	if err != nil {
		return err
	}
	defer n.stop()
	b.res.Env.IdlePoolLimit = n.poolLimit
	ir := &idleResult{Clients: b.o.idleClients, PoolLimit: n.poolLimit, QueryWorkers: b.o.idleWorkers}
	b.res.Idle = ir
	c, err := b.connector(n.addr)
	if err != nil {
		return err
	}
	// Let start-up settle so that the baseline is not taken mid-allocation.
	time.Sleep(time.Second)
	var openedBefore float64
	if m, err := scrape(ctx, n.admin); err == nil {
		openedBefore = m.sum("dbproxy_database_connections_opened_total")
	}
	ir.RSSBeforeKiB = n.rssKiB()
	w := startWatch(ctx, n.admin, b.rootDB)
	b.logf("idle: opening %d client connections to the node (%d workers), RSS before %d KiB", b.o.idleClients, b.o.idleWorkers, ir.RSSBeforeKiB)
	conns, oerrs, openTime := openMany(ctx, c, b.o.idleClients, b.o.idleWorkers)
	defer closeAll(conns, b.o.idleWorkers)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	for _, cn := range conns {
		if cn != nil {
			ir.Opened++
		}
	}
	ir.OpenSeconds, ir.OpenErrors, ir.FirstOpenErrors = openTime.Seconds(), oerrs.count, oerrs.first
	b.logf("idle: %d opened in %.2fs (%.0f/s), %d errors", ir.Opened, openTime.Seconds(), float64(ir.Opened)/openTime.Seconds(), oerrs.count)
	if oerrs.count > 0 {
		b.fail("idle: %d connections failed to open, first: %s", oerrs.count, strings.Join(oerrs.first, " | "))
	}
	time.Sleep(2 * time.Second)
	ir.RSSHeldKiB = n.rssKiB()
	if m, err := scrape(ctx, n.admin); err == nil {
		ir.ClientGauge = m.sum("dbproxy_client_connections")
		var parts []string
		byTLS := m.byLabel("dbproxy_client_connections", "tls")
		keys := make([]string, 0, len(byTLS))
		for k := range byTLS {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("tls=%s:%.0f", k, byTLS[k]))
		}
		ir.ClientConnectionsTLS = strings.Join(parts, " ")
	}
	if ir.Opened > 0 {
		ir.PerClientKiB = float64(ir.RSSHeldKiB-ir.RSSBeforeKiB) / float64(ir.Opened)
	}
	b.logf("idle: holding %d (node gauge %.0f): RSS %d KiB → %.2f KiB per idle client", ir.Opened, ir.ClientGauge, ir.RSSHeldKiB, ir.PerClientKiB)
	b.logGoMemory(ctx, n.admin, "idle: held")

	ok, qerrs, qtime := queryEach(ctx, conns, b.o.idleWorkers)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	ir.QueryOK, ir.QueryErrors, ir.FirstQueryErrors, ir.QuerySeconds = ok, qerrs.count, qerrs.first, qtime.Seconds()
	b.logf("idle: one SELECT 1 on each of %d connections (%d workers): %.3fs, %d errors", ir.Opened, b.o.idleWorkers, qtime.Seconds(), qerrs.count)
	if qerrs.count > 0 {
		b.fail("idle: %d queries failed, first: %s", qerrs.count, strings.Join(qerrs.first, " | "))
	}
	time.Sleep(time.Second)
	ir.RSSAfterQueryKiB = n.rssKiB()
	if ir.Opened > 0 {
		ir.PerClientAfterQuery = float64(ir.RSSAfterQueryKiB-ir.RSSBeforeKiB) / float64(ir.Opened)
	}
	_, ir.NodeHWMKiB, _ = procStatus(n.cmd.Process.Pid)
	ir.BenchProcessRSSKiB, _, _ = procStatus(os.Getpid())
	ir.PeakPoolConns, ir.PeakServerSessions, ir.PeakWaiting = w.result()
	if m, err := scrape(ctx, n.admin); err == nil {
		ir.BackendOpenedDuring = m.sum("dbproxy_database_connections_opened_total") - openedBefore
	}
	b.logf("idle: RSS after the queries %d KiB (%.2f KiB per client); peak backend: pool %d / server sessions %d (limit %d)",
		ir.RSSAfterQueryKiB, ir.PerClientAfterQuery, ir.PeakPoolConns, ir.PeakServerSessions, n.poolLimit)
	b.logGoMemory(ctx, n.admin, "idle: after the queries")
	if err := n.alive(); err != nil {
		return err
	}
	closeAll(conns, b.o.idleWorkers)
	return nil
}

// cleanup stops everything this run started and removes temporary files.
func (b *bench) cleanup() {
	for _, n := range b.nodes {
		n.stop()
		if data, err := os.ReadFile(n.logPath); err == nil && b.outDir != "" {
			_ = os.WriteFile(filepath.Join(b.outDir, filepath.Base(n.logPath)), data, 0o644)
		}
	}
	if b.rootDB != nil {
		b.rootDB.Close()
	}
	if b.server != nil {
		if err := b.server.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "bench: stop MariaDB:", err)
		}
	}
	if b.tmp != "" {
		if b.o.keep {
			fmt.Println("temporary files kept in", b.tmp)
		} else {
			_ = os.RemoveAll(b.tmp)
		}
	}
}

// loadAvg is the first three fields of /proc/loadavg: other work on the
// machine skews the figures, so the results record it.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// logGoMemory logs the node's goroutine stacks and heap in use (from its
// Go collector metrics), to tell where idle-client memory goes.
func (b *bench) logGoMemory(ctx context.Context, admin, what string) {
	m, err := scrape(ctx, admin)
	if err != nil {
		return
	}
	b.logf("%s: Go stacks in use %.1f MiB, heap in use %.1f MiB, goroutines %.0f", what,
		m.sum("go_memstats_stack_inuse_bytes")/(1<<20), m.sum("go_memstats_heap_inuse_bytes")/(1<<20), m.sum("go_goroutines"))
}
