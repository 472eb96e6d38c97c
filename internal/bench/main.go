// Command bench is dbproxy's benchmark (`make bench`, or
// `go run ./internal/bench [flags]` from the repository root).
//
// In one run it starts a MariaDB server (internal/mysqltest), builds the
// dbproxy binary and runs a data-plane node as a separate process in front
// of that server, then measures, with the direct connection to the server as
// the baseline in the same run:
//
//  1. sysbench oltp_point_select and oltp_read_only at 1, 16 and 64 threads,
//     direct and through the node, interleaved (direct, node, direct, node,
//     ...), with server-side prepared statements (--db-ps-mode=auto);
//  2. a short sysbench oltp_read_write, direct and through the node, which
//     must end without errors through the node;
//  3. a connect→query→close storm with 64 workers (go-sql-driver/mysql, a new
//     connection per iteration), direct and through the node, interleaved,
//     with the peak backend connection count during the node runs;
//  4. 10,000 idle client connections held on a fresh node whose pool limit
//     is 32: RSS per idle client, backend connections, and the wall time of
//     one query on each of them;
//  5. config propagation: a control plane and three managed nodes (zones a,
//     b and c) as separate processes, then 100 more in-process ADS clients
//     against the same control plane; each time, 50 target-group changes
//     (PUT through the API), timed from just before the PUT until the
//     rollout API reports that every node acked it (p50/p95/p99/max);
//     between the two, 10 `terraform apply` runs of a changed init_query
//     through the provider (the same binary, by dev_overrides) on the
//     three-process fleet, timed from the command's start until every node
//     acked, and applies with nothing to change, for Terraform's own cost.
//
// It prints a table and a summary against the targets of "What to beat" in
// DESIGN.md and writes everything as JSON (-out). Targets are reported, not
// asserted: the exit status is non-zero only when something failed (a
// process would not start, sysbench or a client got errors).
//
// Pool sizing: the server runs with --max-connections=1600 (-max-connections).
// The node's pool limit is max_connections_percent of that, so the main
// proxy uses 4% = 64 connections (-pool-percent) and the node started for
// the idle-client phase uses 2% = 32 (-idle-pool-percent).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	quick           bool
	duration        time.Duration
	rounds          int
	warmup          time.Duration
	tests           []string
	threads         []int
	rwDuration      time.Duration
	rwThreads       int
	stormDuration   time.Duration
	stormRounds     int
	stormWorkers    int
	idleClients     int
	idleWorkers     int
	maxConnections  int
	poolPercent     int
	idlePoolPercent int
	propChanges     int
	propClients     int
	tfChanges       int
	tables          int
	tableSize       int
	out             string
	pprof           bool
	nodeBin         string
	srcAddrs        int
	skip            map[string]bool
	keep            bool
	verbose         bool
}

func main() {
	// Child processes (the node, sysbench) are started from the main
	// goroutine with Pdeathsig; pinning it to the main thread ties their
	// lifetime to this process rather than to an arbitrary OS thread.
	runtime.LockOSThread()
	os.Exit(run())
}

func parseFlags() (*options, error) {
	o := &options{}
	var tests, threads, skip string
	flag.BoolVar(&o.quick, "quick", false, "a ~2 minute run: shorter runs, one round (explicit flags still win)")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of one sysbench run (each of direct and node)")
	flag.IntVar(&o.rounds, "rounds", 2, "interleaved direct/node rounds per sysbench configuration")
	flag.DurationVar(&o.warmup, "warmup", 3*time.Second, "unmeasured point-select warm-up run, direct and through the node (0 disables)")
	flag.StringVar(&tests, "tests", "oltp_point_select,oltp_read_only", "sysbench tests to compare")
	flag.StringVar(&threads, "threads", "1,16,64", "sysbench thread counts")
	flag.DurationVar(&o.rwDuration, "rw-duration", 10*time.Second, "length of the oltp_read_write check (direct and node)")
	flag.IntVar(&o.rwThreads, "rw-threads", 16, "threads of the oltp_read_write check")
	flag.DurationVar(&o.stormDuration, "storm-duration", 10*time.Second, "length of one connect→query→close storm run")
	flag.IntVar(&o.stormRounds, "storm-rounds", 2, "interleaved direct/node storm rounds")
	flag.IntVar(&o.stormWorkers, "storm-workers", 64, "concurrent storm workers")
	flag.IntVar(&o.idleClients, "idle-clients", 10000, "idle client connections held on the node")
	flag.IntVar(&o.idleWorkers, "idle-workers", 64, "workers opening the idle clients and running one query on each")
	flag.IntVar(&o.maxConnections, "max-connections", 1600, "the server's max_connections")
	flag.IntVar(&o.poolPercent, "pool-percent", 4, "max_connections_percent of the main proxy (4% of 1600 = 64)")
	flag.IntVar(&o.idlePoolPercent, "idle-pool-percent", 2, "max_connections_percent of the idle-client node (2% of 1600 = 32)")
	flag.IntVar(&o.propChanges, "propagation-changes", 50, "timed config changes per propagation stage")
	flag.IntVar(&o.propClients, "propagation-clients", 100, "in-process ADS clients added for the second propagation stage (0 skips the stage)")
	flag.IntVar(&o.tfChanges, "terraform-changes", 10, "timed terraform apply runs of a changed pool setting in the propagation phase (0 skips them; needs terraform on PATH)")
	flag.IntVar(&o.tables, "tables", 4, "sysbench tables")
	flag.IntVar(&o.tableSize, "table-size", 10000, "rows per sysbench table")
	flag.StringVar(&o.out, "out", ".bench/results.json", "write the results as JSON here (the profile and logs go next to it)")
	flag.BoolVar(&o.pprof, "pprof", false, "profile the node's CPU during the 16-thread point-select node run (/debug/pprof if the node serves it, else perf)")
	flag.StringVar(&o.nodeBin, "node-bin", "", "use this dbproxy binary instead of building one")
	flag.IntVar(&o.srcAddrs, "src-addrs", 1, "spread the bench's own client connections over this many loopback source addresses (127.0.0.1..N)")
	flag.StringVar(&skip, "skip", "", "phases to skip, comma-separated: sysbench,rw,storm,idle,propagation")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (binary, config, logs, sysbench output)")
	flag.BoolVar(&o.verbose, "v", false, "print sysbench commands and extra progress")
	flag.Parse()
	if flag.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if o.quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		def := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		def("duration", func() { o.duration = 5 * time.Second })
		def("rounds", func() { o.rounds = 1 })
		def("warmup", func() { o.warmup = 2 * time.Second })
		def("rw-duration", func() { o.rwDuration = 5 * time.Second })
		def("storm-duration", func() { o.stormDuration = 5 * time.Second })
		def("storm-rounds", func() { o.stormRounds = 1 })
		def("propagation-changes", func() { o.propChanges = 15 })
		def("terraform-changes", func() { o.tfChanges = 5 })
	}
	for _, t := range strings.Split(tests, ",") {
		if t = strings.TrimSpace(t); t != "" {
			o.tests = append(o.tests, t)
		}
	}
	for _, t := range strings.Split(threads, ",") {
		if t = strings.TrimSpace(t); t == "" {
			continue
		}
		n, err := strconv.Atoi(t)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-threads: bad thread count %q", t)
		}
		o.threads = append(o.threads, n)
	}
	o.skip = map[string]bool{}
	for _, s := range strings.Split(skip, ",") {
		switch s = strings.TrimSpace(s); s {
		case "":
		case "sysbench", "rw", "storm", "idle", "propagation":
			o.skip[s] = true
		default:
			return nil, fmt.Errorf("-skip: unknown phase %q", s)
		}
	}
	switch {
	case o.rounds < 1 || o.stormRounds < 1:
		return nil, errors.New("-rounds and -storm-rounds must be at least 1")
	case o.duration < time.Second || o.rwDuration < time.Second || o.stormDuration < time.Second:
		return nil, errors.New("durations must be at least 1s")
	case o.srcAddrs < 1 || o.srcAddrs > 250:
		return nil, errors.New("-src-addrs must be 1-250")
	case o.stormWorkers < 1 || o.idleWorkers < 1 || o.idleClients < 0:
		return nil, errors.New("worker and client counts must be positive")
	case o.propChanges < 1 || o.propClients < 0 || o.tfChanges < 0:
		return nil, errors.New("-propagation-changes must be at least 1, -propagation-clients and -terraform-changes not negative")
	}
	return o, nil
}

func run() int {
	o, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	b := &bench{o: o, start: time.Now()}
	b.res.Started = b.start.UTC().Format(time.RFC3339)
	err = b.run(ctx)
	if ctx.Err() != nil {
		b.cleanup()
		fmt.Fprintln(os.Stderr, "bench: interrupted; cleaned up")
		return 130
	}
	if err != nil {
		b.res.Failures = append(b.res.Failures, "aborted: "+err.Error())
		fmt.Fprintln(os.Stderr, "bench: ERROR:", err)
	}
	b.res.DurationSeconds = time.Since(b.start).Seconds()
	b.res.Env.LoadAvgEnd = loadAvg()
	if b.outDir != "" {
		b.checkTargets()
		b.report()
		if werr := b.writeJSON(); werr != nil {
			fmt.Fprintln(os.Stderr, "bench: write results:", werr)
			err = werr
		}
	}
	b.cleanup()
	if len(b.res.Failures) > 0 || err != nil {
		return 1
	}
	return 0
}
