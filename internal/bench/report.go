package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

// checkTargets compares the results with "What to beat" in DESIGN.md.
func (b *bench) checkTargets() {
	add := func(name, target, measured string, pass, skipped bool) {
		b.res.Targets = append(b.res.Targets, targetCheck{Name: name, Target: target, Measured: measured, Pass: pass && !skipped, Skipped: skipped})
	}
	var ps *sbPair
	for i := range b.res.Sysbench {
		if p := &b.res.Sysbench[i]; p.Test == "oltp_point_select" && p.Threads == 16 {
			ps = p
		}
	}
	if ps != nil {
		add("sysbench point-select, 16 threads", "≥ 0.85× direct", fmt.Sprintf("%.2f× (%.0f vs %.0f tps)", ps.Ratio, ps.NodeTPS, ps.DirectTPS), ps.Ratio >= 0.85 && ps.NodeErrs == 0, false)
	} else {
		add("sysbench point-select, 16 threads", "≥ 0.85× direct", "not run", false, true)
	}
	if s := b.res.Storm; s != nil {
		add(fmt.Sprintf("connect→query→close storm, %d workers", s.Workers), "≥ 1.5× direct",
			fmt.Sprintf("%.2f× (%.0f vs %.0f conn/s)", s.Ratio, s.NodePerSecond, s.DirectPerSecond), s.Ratio >= 1.5, false)
		add("storm: backend connections", fmt.Sprintf("≤ pool limit %d", s.PoolLimit),
			fmt.Sprintf("peak %d in the pool, %d server sessions incl. the health check", s.PeakPoolConns, s.PeakServerSessions),
			s.PeakPoolConns <= s.PoolLimit && s.PeakServerSessions <= s.PoolLimit+1, false)
	} else {
		add("connect→query→close storm", "≥ 1.5× direct", "not run", false, true)
	}
	if ir := b.res.Idle; ir != nil {
		add(fmt.Sprintf("RSS per idle client, %d held", ir.Opened), "≤ 8 KiB", fmt.Sprintf("%.3f KiB", ir.PerClientKiB), ir.PerClientKiB <= 8 && ir.Opened == ir.Clients, false)
		add("RSS per idle client after one query each", "≤ 8 KiB", fmt.Sprintf("%.3f KiB", ir.PerClientAfterQuery), ir.PerClientAfterQuery <= 8 && ir.Opened == ir.Clients, false)
		add(fmt.Sprintf("one query on each of %d held clients", ir.Opened), "< 1 s", fmt.Sprintf("%.3f s (%d errors)", ir.QuerySeconds, ir.QueryErrors),
			ir.QuerySeconds < 1 && ir.QueryErrors == 0 && ir.QueryOK == int64(ir.Clients), false)
		add("idle clients: backend connections", "≤ 32", fmt.Sprintf("peak %d in the pool, %d server sessions incl. the health check (pool limit %d)", ir.PeakPoolConns, ir.PeakServerSessions, ir.PoolLimit),
			ir.PeakPoolConns <= 32 && ir.PeakServerSessions <= 33, false)
	} else {
		add("idle clients", "≤ 8 KiB, < 1 s, ≤ 32 backend", "not run", false, true)
	}
	b.checkPropagation(add)
	if rw := b.res.ReadWrite; rw != nil {
		add("server-side prepared statements (oltp_read_write via node)", "0 errors",
			fmt.Sprintf("%d errors%s, %.0f tps (%.2f× direct)", rw.Node.errors(), rw.Node.errorCodes(), rw.Node.TPS, rw.Ratio),
			rw.Node.unexpectedErrors() == 0 && !rw.Node.Failed && rw.Node.Transactions > 0, false)
	} else {
		add("server-side prepared statements (oltp_read_write via node)", "0 errors", "not run", false, true)
	}
}

func (b *bench) report() {
	r := &b.res
	fmt.Println()
	fmt.Println(strings.Repeat("=", 100))
	fmt.Printf("dbproxy bench — %s, %d CPUs, %s, %s, commit %s (+%d dirty files)\n", r.Env.GoVersion, r.Env.CPUs,
		"MariaDB "+r.Env.MariaDBVersion, r.Env.SysbenchVersion, r.Env.Commit, r.Env.DirtyFiles)
	fmt.Printf("server max_connections %d; node pool limit %d (%d%%), idle-phase pool limit %d (%d%%); borrow timeout 60s\n",
		r.Env.MaxConnections, r.Env.PoolLimit, b.o.poolPercent, r.Env.IdlePoolLimit, b.o.idlePoolPercent)
	fmt.Printf("load average at start %s, at end %s (other work on the machine skews the figures)\n", r.Env.LoadAvgStart, r.Env.LoadAvgEnd)
	fmt.Println(strings.Repeat("=", 100))
	if len(r.Sysbench) > 0 {
		fmt.Printf("\nsysbench (--db-ps-mode=auto: server-side prepared statements), %d tables x %d rows, %s per run, %d interleaved round(s)\n",
			b.o.tables, b.o.tableSize, b.o.duration, b.o.rounds)
		fmt.Printf("%-18s %7s %12s %12s %8s %16s %11s %13s %10s\n", "test", "threads", "direct tps", "node tps", "node/dir", "p95 ms dir/node", "errors d/n", "node µs CPU/q", "syscalls/q")
		for _, p := range r.Sysbench {
			fmt.Printf("%-18s %7d %12.1f %12.1f %7.2fx %16s %11s %13.1f %10.1f\n", p.Test, p.Threads, p.DirectTPS, p.NodeTPS, p.Ratio,
				fmt.Sprintf("%.2f/%.2f", p.DirectP95Ms, p.NodeP95Ms), fmt.Sprintf("%d/%d", p.DirectErrs, p.NodeErrs),
				p.NodeCPUMicrosPerQuery, p.NodeSyscallsPerQuery)
		}
		if len(r.SysbenchPins) > 0 {
			fmt.Printf("session pins through the node during these runs: %s\n", fmtMap(r.SysbenchPins))
		} else {
			fmt.Println("session pins through the node during these runs: none")
		}
	}
	if rw := r.ReadWrite; rw != nil {
		fmt.Printf("\noltp_read_write %d threads, %s: direct %.1f tps (%d errors%s), node %.1f tps (%d errors%s%s), %.2fx; pins: %s\n",
			b.o.rwThreads, b.o.rwDuration, rw.Direct.TPS, rw.Direct.errors(), rw.Direct.errorCodes(), rw.Node.TPS, rw.Node.errors(), rw.Node.errorCodes(), failedNote(rw.Node), rw.Ratio, fmtMap(rw.Pins))
		fmt.Println("(1213 deadlock and 1205 lock wait timeout are the database's answers to concurrent writes and do not count as node errors)")
	}
	if s := r.Storm; s != nil {
		fmt.Printf("\nconnect→query→close storm, %d workers, %s per run, %d interleaved round(s)\n", s.Workers, b.o.stormDuration, b.o.stormRounds)
		fmt.Printf("%-8s %12s %10s\n", "", "conn/s", "errors")
		var de, ne int64
		for _, run := range s.Runs {
			if run.Target == "direct" {
				de += run.Errors
			} else {
				ne += run.Errors
			}
		}
		fmt.Printf("%-8s %12.0f %10d   peak server sessions %d\n", "direct", s.DirectPerSecond, de, s.PeakServerDirect)
		fmt.Printf("%-8s %12.0f %10d   peak backend: %d in the pool (limit %d), %d server sessions (incl. 1 health check)\n",
			"node", s.NodePerSecond, ne, s.PeakPoolConns, s.PoolLimit, s.PeakServerSessions)
		fmt.Printf("%-8s %11.2fx\n", "ratio", s.Ratio)
	}
	if m := r.MainNode; m != nil {
		fmt.Printf("\nmain node memory after sysbench and storm: RSS %.1f MiB, peak %.1f MiB\n", float64(m.RSSKiB)/1024, float64(m.HWMKiB)/1024)
	}
	if ir := r.Idle; ir != nil {
		fmt.Printf("\nidle clients on a fresh node (pool limit %d): %d opened in %.2fs (%d errors; node gauge %.0f; %s)\n",
			ir.PoolLimit, ir.Opened, ir.OpenSeconds, ir.OpenErrors, ir.ClientGauge, ir.ClientConnectionsTLS)
		fmt.Printf("  node RSS %.1f MiB before, %.1f MiB held → %.2f KiB per idle client; %.1f MiB after one query each → %.2f KiB per client\n",
			float64(ir.RSSBeforeKiB)/1024, float64(ir.RSSHeldKiB)/1024, ir.PerClientKiB, float64(ir.RSSAfterQueryKiB)/1024, ir.PerClientAfterQuery)
		fmt.Printf("  one SELECT 1 on each (%d workers): %.3f s, %d ok, %d errors\n", ir.QueryWorkers, ir.QuerySeconds, ir.QueryOK, ir.QueryErrors)
		fmt.Printf("  backend during the phase: peak %d in the pool, %d server sessions (incl. 1 health check), %.0f opened, peak %d clients waiting\n",
			ir.PeakPoolConns, ir.PeakServerSessions, ir.BackendOpenedDuring, ir.PeakWaiting)
	}
	b.reportPropagation()
	if p := r.Profile; p != nil {
		fmt.Printf("\nprofile: %s\n", p.Summary)
		if p.Top != "" {
			fmt.Println(p.Top)
		}
	} else if b.o.pprof {
		fmt.Println("\nprofile: not captured (the 16-thread point-select node run did not take place)")
	}
	fmt.Printf("\nsummary against DESIGN.md \"What to beat\"\n")
	fmt.Printf("%-58s %-16s %-6s %s\n", "", "target", "", "measured")
	for _, t := range r.Targets {
		st := "MISS"
		if t.Pass {
			st = "ok"
		}
		if t.Skipped {
			st = "-"
		}
		fmt.Printf("%-58s %-16s %-6s %s\n", t.Name, t.Target, st, t.Measured)
	}
	if len(r.Failures) > 0 {
		fmt.Printf("\n%d FAILURE(S):\n", len(r.Failures))
		for _, f := range r.Failures {
			fmt.Println("  -", f)
		}
	}
	fmt.Printf("\nresults written to %s (%.0fs in all)\n", b.o.out, r.DurationSeconds)
}

func failedNote(r sbResult) string {
	if r.Failed {
		return ", FAILED: " + r.Error
	}
	return ""
}

func fmtMap(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func (b *bench) writeJSON() error {
	data, err := json.MarshalIndent(b.res, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(b.o.out, append(data, '\n'), 0o644)
}

// checkPropagation adds the config-propagation target: p99 of API write →
// every node acked under propTarget with the in-process clients connected.
func (b *bench) checkPropagation(add func(name, target, measured string, pass, skipped bool)) {
	target := fmt.Sprintf("p99 < %d ms", propTarget.Milliseconds())
	pr := b.res.Propagation
	if pr == nil || pr.Clients == nil {
		add(fmt.Sprintf("config propagation, %d nodes: write → all acked", 3+b.o.propClients), target, "not run", false, true)
		return
	}
	st := pr.Clients
	measured := fmt.Sprintf("p99 %.1f ms (p50 %.1f, max %.1f; %d/%d changes complete)", st.Total.P99, st.Total.P50, st.Total.Max, st.Completed, st.Changes)
	add(fmt.Sprintf("config propagation, %d nodes: write → all acked", st.Nodes), target, measured,
		st.ok() && st.Total.P99 < ms(propTarget), false)
}

// reportPropagation prints the propagation phase's table.
func (b *bench) reportPropagation() {
	pr := b.res.Propagation
	if pr == nil || pr.Processes == nil {
		return
	}
	fmt.Printf("\nconfig propagation: API write (PUT target group) → GET /v1/rollout complete for zones a,b,c; %d changes per stage; control plane and 3 nodes are processes\n", pr.Changes)
	fmt.Printf("%-44s %6s %9s %9s %9s %9s %9s %11s %17s\n", "", "nodes", "complete", "p50 ms", "p95 ms", "p99 ms", "max ms", "PUT p50 ms", "CPU ms/chg cp/bench")
	row := func(name string, st *propStage) {
		fmt.Printf("%-44s %6d %9s %9.1f %9.1f %9.1f %9.1f %11.1f %17s\n", name, st.Nodes, fmt.Sprintf("%d/%d", st.Completed, st.Changes),
			st.Total.P50, st.Total.P95, st.Total.P99, st.Total.Max, st.Put.P50,
			fmt.Sprintf("%.1f/%.1f", st.ControlPlaneCPUMsPerChange, st.BenchCPUMsPerChange))
	}
	row("3 node processes", pr.Processes)
	if st := pr.Terraform; st != nil && st.Skipped != "" {
		fmt.Printf("terraform apply: not run (%s)\n", st.Skipped)
	} else if st != nil {
		fmt.Printf("%-44s %6d %9s %9.1f %9.1f %9.1f %9.1f %11s   (%s)\n", "terraform apply, 3 node processes", 3,
			fmt.Sprintf("%d/%d", st.Completed, st.Changes), st.Total.P50, st.Total.P95, st.Total.P99, st.Total.Max, "-", st.Terraform)
		fmt.Printf("  from the command's start until every node acked; the command alone p50 %.1f ms; an apply with nothing to change p50 %.1f ms (Terraform's and the provider's start, refresh, empty plan); API alone p50 %.1f ms\n",
			st.Apply.P50, st.NoChange.P50, pr.Processes.Total.P50)
	}
	if pr.Clients != nil {
		row(fmt.Sprintf("3 node processes + %d in-process ADS clients", pr.InProcessClients), pr.Clients)
		fmt.Printf("in-process clients connected in %.1fs; %d resource sets decoded, %d decode errors\n",
			pr.ClientsConnectSeconds, pr.ClientApplies, pr.ClientDecodeErrors)
	}
	var parts []string
	for _, q := range pr.NodeQueries {
		switch {
		case q.Error != "":
			parts = append(parts, q.Node+": ERROR "+q.Error)
		case q.Value != q.Want:
			parts = append(parts, fmt.Sprintf("%s: wait_timeout %s, want %s", q.Node, q.Value, q.Want))
		default:
			parts = append(parts, q.Node+": ok")
		}
	}
	fmt.Printf("start-up to first rollout %.1fs; control plane RSS %.1f MiB (peak %.1f MiB); a query through each node afterwards (last change's init_query served): %s\n",
		pr.StartSeconds, float64(pr.ControlPlaneRSSKiB)/1024, float64(pr.ControlPlaneHWMKiB)/1024, strings.Join(parts, ", "))
}
