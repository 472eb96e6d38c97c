package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// sbResult is one sysbench run.
type sbResult struct {
	Test         string  `json:"test"`
	Target       string  `json:"target"` // direct or node
	Threads      int     `json:"threads"`
	Round        int     `json:"round"`
	Seconds      float64 `json:"seconds"`
	Transactions int64   `json:"transactions"`
	TPS          float64 `json:"tps"`
	QPS          float64 `json:"qps"`
	Queries      int64   `json:"queries"`
	// Node-side cost per query (node runs only): CPU time of the node
	// process and its read/write system calls, from /proc.
	NodeCPUMicrosPerQuery float64 `json:"node_cpu_us_per_query,omitempty"`
	NodeReadsPerQuery     float64 `json:"node_read_syscalls_per_query,omitempty"`
	NodeWritesPerQuery    float64 `json:"node_write_syscalls_per_query,omitempty"`
	IgnoredErrors         int64   `json:"ignored_errors"`
	// IgnoredByCode counts the ignored errors by MySQL error code.
	IgnoredByCode map[string]int64 `json:"ignored_by_code,omitempty"`
	Reconnects    int64            `json:"reconnects"`
	LatencyAvgMs  float64          `json:"latency_avg_ms"`
	LatencyP95Ms  float64          `json:"latency_p95_ms"`
	Failed        bool             `json:"failed,omitempty"`
	Error         string           `json:"error,omitempty"`
	Output        string           `json:"output_file,omitempty"`
}

// errors is everything that went wrong in the run.
func (r sbResult) errors() int64 {
	n := r.IgnoredErrors + r.Reconnects
	if r.Failed {
		n++
	}
	return n
}

// conflictCodes are errors a database gives under concurrent writes
// without any proxy: deadlock (1213) and lock wait timeout (1205).
var conflictCodes = map[string]bool{"1213": true, "1205": true}

// unexpectedErrors is errors() without ignored deadlocks and lock wait
// timeouts. sysbench's "ignored errors" counter can exceed the errors it
// logs (it has been seen counting 2 for one logged deadlock), so when every
// logged code is a conflict, all ignored errors are taken as conflicts.
func (r sbResult) unexpectedErrors() int64 {
	n := r.errors()
	var logged, conflicts int64
	for code, c := range r.IgnoredByCode {
		logged += c
		if conflictCodes[code] {
			conflicts += c
		}
	}
	if logged > 0 && conflicts == logged {
		return n - r.IgnoredErrors
	}
	return n - conflicts
}

// errorCodes formats IgnoredByCode.
func (r sbResult) errorCodes() string {
	if len(r.IgnoredByCode) == 0 {
		return ""
	}
	var parts []string
	for code, c := range r.IgnoredByCode {
		parts = append(parts, fmt.Sprintf("%s×%d", code, c))
	}
	sort.Strings(parts)
	return " (" + strings.Join(parts, " ") + ")"
}

var (
	reTx      = regexp.MustCompile(`transactions:\s+(\d+)\s+\(([\d.]+) per sec`)
	reQ       = regexp.MustCompile(`queries:\s+(\d+)\s+\(([\d.]+) per sec`)
	reIgn     = regexp.MustCompile(`ignored errors:\s+(\d+)`)
	reRecon   = regexp.MustCompile(`reconnects:\s+(\d+)`)
	reTime    = regexp.MustCompile(`total time:\s+([\d.]+)s`)
	reLatAvg  = regexp.MustCompile(`(?m)^\s+avg:\s+([\d.]+)`)
	reLatP95  = regexp.MustCompile(`95th percentile:\s+([\d.]+)`)
	reIgnored = regexp.MustCompile(`Ignoring error (\d+)`)
	reFatal   = regexp.MustCompile(`(?m)^.*(FATAL|ALERT).*$`)
	sbCounter int
)

// sysbenchArgs is the common command line for test against host:port.
func (b *bench) sysbenchArgs(test, host string, port, threads int, dur time.Duration, command string) []string {
	args := []string{
		test,
		"--db-driver=mysql",
		"--mysql-host=" + host,
		"--mysql-port=" + strconv.Itoa(port),
		"--mysql-user=" + benchUser,
		"--mysql-password=" + benchPassword,
		"--mysql-db=" + benchDB,
		"--tables=" + strconv.Itoa(b.o.tables),
		"--table-size=" + strconv.Itoa(b.o.tableSize),
		"--threads=" + strconv.Itoa(threads),
		"--db-ps-mode=auto", // server-side prepared statements (the default, made explicit)
	}
	if command == "run" {
		// Debug verbosity makes sysbench name the errors it ignores
		// (deadlocks, lock wait timeouts) and adds only a few lines
		// otherwise.
		args = append(args, "--verbosity=5")
		args = append(args, "--time="+strconv.Itoa(int(dur.Round(time.Second)/time.Second)), "--events=0", "--report-interval=0")
	}
	return append(args, command)
}

// sysbenchRaw runs sysbench and returns its combined output.
func (b *bench) sysbenchRaw(ctx context.Context, test, host string, port, threads int, dur time.Duration, command string) (string, error) {
	args := b.sysbenchArgs(test, host, port, threads, dur, command)
	if b.o.verbose {
		b.logf("$ sysbench %s", strings.Join(args, " "))
	}
	limit := 2*dur + 60*time.Second
	if command == "prepare" {
		limit = 10 * time.Minute
	}
	cctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(cctx, "sysbench", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if cctx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
		err = fmt.Errorf("sysbench did not finish within %s (hang?): %w", limit, err)
	}
	return out.String(), err
}

// runSysbench runs one measured sysbench run against direct or node and
// parses it. A failing run is returned with Failed set, not as an error.
func (b *bench) runSysbench(ctx context.Context, test, target string, threads, round int, dur time.Duration) (r sbResult) {
	host, port := b.server.Host, b.server.Port
	if target == "node" {
		h, p := splitHostPort(b.node.addr)
		host, port = h, p
	}
	r = sbResult{Test: test, Target: target, Threads: threads, Round: round}
	var before procCounters
	var cerr error
	if target == "node" {
		before, cerr = readCounters(b.node.cmd.Process.Pid)
	}
	out, err := b.sysbenchRaw(ctx, test, host, port, threads, dur, "run")
	if target == "node" && cerr == nil {
		after, cerr := readCounters(b.node.cmd.Process.Pid)
		defer func() {
			if cerr == nil && r.Queries > 0 {
				q := float64(r.Queries)
				r.NodeCPUMicrosPerQuery = float64(after.cpuTicks-before.cpuTicks) * 1e4 / q
				r.NodeReadsPerQuery = float64(after.syscr-before.syscr) / q
				r.NodeWritesPerQuery = float64(after.syscw-before.syscw) / q
			}
		}()
	}
	sbCounter++
	file := filepath.Join(b.tmp, fmt.Sprintf("sysbench-%03d-%s-%s-%d.txt", sbCounter, test, target, threads))
	_ = os.WriteFile(file, []byte(out), 0o644)
	r.Output = file
	parseSysbench(out, &r)
	if err != nil {
		r.Failed = true
		msgs := reFatal.FindAllString(out, 6)
		r.Error = fmt.Sprintf("%v: %s", err, strings.Join(msgs, " | "))
		if len(msgs) == 0 {
			r.Error = fmt.Sprintf("%v: %s", err, tail(out, 8))
		}
	}
	return r
}

func parseSysbench(out string, r *sbResult) {
	if m := reTx.FindStringSubmatch(out); m != nil {
		r.Transactions, _ = strconv.ParseInt(m[1], 10, 64)
		r.TPS, _ = strconv.ParseFloat(m[2], 64)
	}
	if m := reQ.FindStringSubmatch(out); m != nil {
		r.Queries, _ = strconv.ParseInt(m[1], 10, 64)
		r.QPS, _ = strconv.ParseFloat(m[2], 64)
	}
	if m := reIgn.FindStringSubmatch(out); m != nil {
		r.IgnoredErrors, _ = strconv.ParseInt(m[1], 10, 64)
	}
	for _, m := range reIgnored.FindAllStringSubmatch(out, -1) {
		if r.IgnoredByCode == nil {
			r.IgnoredByCode = map[string]int64{}
		}
		r.IgnoredByCode[m[1]]++
	}
	if m := reRecon.FindStringSubmatch(out); m != nil {
		r.Reconnects, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := reTime.FindStringSubmatch(out); m != nil {
		r.Seconds, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := reLatAvg.FindStringSubmatch(out); m != nil {
		r.LatencyAvgMs, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := reLatP95.FindStringSubmatch(out); m != nil {
		r.LatencyP95Ms, _ = strconv.ParseFloat(m[1], 64)
	}
}

// sbPair aggregates the interleaved rounds of one configuration.
type sbPair struct {
	Test        string  `json:"test"`
	Threads     int     `json:"threads"`
	DirectTPS   float64 `json:"direct_tps"`
	NodeTPS     float64 `json:"node_tps"`
	Ratio       float64 `json:"ratio"`
	DirectP95Ms float64 `json:"direct_p95_ms"`
	NodeP95Ms   float64 `json:"node_p95_ms"`
	DirectErrs  int64   `json:"direct_errors"`
	NodeErrs    int64   `json:"node_errors"`
	// Node cost per query, averaged over the node runs.
	NodeCPUMicrosPerQuery float64    `json:"node_cpu_us_per_query"`
	NodeSyscallsPerQuery  float64    `json:"node_syscalls_per_query"`
	Runs                  []sbResult `json:"runs"`
}

// aggregate averages TPS and p95 over rounds (a failed run counts as 0 TPS).
func aggregate(test string, threads int, runs []sbResult) sbPair {
	p := sbPair{Test: test, Threads: threads, Runs: runs}
	var nd, nn float64
	for _, r := range runs {
		if r.Target == "direct" {
			p.DirectTPS += r.TPS
			p.DirectP95Ms += r.LatencyP95Ms
			p.DirectErrs += r.errors()
			nd++
		} else {
			p.NodeTPS += r.TPS
			p.NodeP95Ms += r.LatencyP95Ms
			p.NodeErrs += r.errors()
			p.NodeCPUMicrosPerQuery += r.NodeCPUMicrosPerQuery
			p.NodeSyscallsPerQuery += r.NodeReadsPerQuery + r.NodeWritesPerQuery
			nn++
		}
	}
	if nd > 0 {
		p.DirectTPS /= nd
		p.DirectP95Ms /= nd
	}
	if nn > 0 {
		p.NodeTPS /= nn
		p.NodeP95Ms /= nn
		p.NodeCPUMicrosPerQuery /= nn
		p.NodeSyscallsPerQuery /= nn
	}
	if p.DirectTPS > 0 {
		p.Ratio = p.NodeTPS / p.DirectTPS
	}
	return p
}

func splitHostPort(addr string) (string, int) {
	i := strings.LastIndexByte(addr, ':')
	p, _ := strconv.Atoi(addr[i+1:])
	return addr[:i], p
}
