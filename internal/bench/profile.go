package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// profileResult says how the node was profiled and where the time went.
type profileResult struct {
	Method  string `json:"method"` // pprof, perf or none
	File    string `json:"file,omitempty"`
	Summary string `json:"summary"`
	Top     string `json:"top,omitempty"`
}

// profiler captures a CPU profile of a node while a run goes on.
type profiler struct {
	b      *bench
	n      *nodeProc
	method string
	pprofC chan pprofOut
	perf   *exec.Cmd
	perfF  string
	perfO  *bytes.Buffer
	err    error
}

type pprofOut struct {
	data []byte
	err  error
}

// startProfile starts profiling n for about dur: through /debug/pprof when
// the node's admin listener serves it, else with perf(1) when it is
// installed and allowed.
func (b *bench) startProfile(ctx context.Context, n *nodeProc, dur time.Duration) *profiler {
	p := &profiler{b: b, n: n}
	secs := max(1, int((dur - time.Second).Seconds()))
	if code, _, err := fetch(ctx, "http://"+n.admin+"/debug/pprof/", 2*time.Second); err == nil && code == 200 {
		p.method = "pprof"
		p.pprofC = make(chan pprofOut, 1)
		go func() {
			code, data, err := fetch(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", n.admin, secs), dur+30*time.Second)
			if err == nil && code != 200 {
				err = fmt.Errorf("HTTP %d: %s", code, tail(string(data), 3))
			}
			p.pprofC <- pprofOut{data, err}
		}()
		b.logf("profiling the node through /debug/pprof for %ds", secs)
		return p
	}
	perf, err := exec.LookPath("perf")
	if err != nil {
		p.method, p.err = "none", fmt.Errorf("the node serves no /debug/pprof on its admin address and perf is not installed")
		return p
	}
	p.method = "perf"
	p.perfF = filepath.Join(b.tmp, "node-perf.data")
	p.perfO = &bytes.Buffer{}
	p.perf = exec.Command(perf, "record", "-F", "999", "-g", "-p", strconv.Itoa(n.cmd.Process.Pid), "-o", p.perfF, "--", "sleep", strconv.Itoa(secs))
	p.perf.Stdout, p.perf.Stderr = p.perfO, p.perfO
	p.perf.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.perf.Start(); err != nil {
		p.err = fmt.Errorf("start perf: %w", err)
		p.perf = nil
		return p
	}
	b.logf("the node serves no /debug/pprof: profiling it with perf record for %ds", secs)
	return p
}

// finish waits for the profile and summarises it.
func (p *profiler) finish() *profileResult {
	r := &profileResult{Method: p.method}
	if p.err != nil {
		r.Summary = "not captured: " + p.err.Error()
		return r
	}
	switch p.method {
	case "pprof":
		out := <-p.pprofC
		if out.err != nil {
			r.Summary = "pprof fetch failed: " + out.err.Error()
			return r
		}
		r.File = filepath.Join(p.b.outDir, "node-cpu.pprof")
		if err := os.WriteFile(r.File, out.data, 0o644); err != nil {
			r.Summary = "write profile: " + err.Error()
			return r
		}
		top, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=30", p.b.nodeBin, r.File).CombinedOutput()
		r.Top = tail(string(top), 36)
		r.Summary = fmt.Sprintf("CPU profile from the node's /debug/pprof in %s (go tool pprof %s %s)", r.File, p.b.nodeBin, r.File)
		if err != nil {
			r.Summary += "; go tool pprof -top failed: " + err.Error()
		}
	case "perf":
		if err := p.perf.Wait(); err != nil {
			r.Summary = fmt.Sprintf("perf record failed: %v: %s", err, tail(p.perfO.String(), 5))
			return r
		}
		report := func(extra ...string) (string, error) {
			args := append([]string{"report", "-i", p.perfF, "--stdio", "-g", "none", "--percent-limit", "0.7"}, extra...)
			out, err := exec.Command("perf", args...).CombinedOutput()
			var lines []string
			for _, l := range strings.Split(string(out), "\n") {
				if t := strings.TrimSpace(l); t == "" || strings.HasPrefix(t, "#") {
					continue
				}
				lines = append(lines, l)
			}
			return strings.Join(lines, "\n"), err
		}
		self, err1 := report("--no-children", "--sort", "dso,symbol")
		cum, err2 := report("--children", "--sort", "symbol")
		r.File = filepath.Join(p.b.outDir, "node-perf.txt")
		text := "# perf record -F 999 -g of the node during the 16-thread point-select node run\n\n## self time (dso, symbol)\n" + self +
			"\n\n## including children (symbol)\n" + cum + "\n"
		_ = os.WriteFile(r.File, []byte(text), 0o644)
		r.Top = "self time, top entries:\n" + headLines(self, 25) + "\n\nincluding callees, top entries:\n" + headLines(cum, 25)
		r.Summary = fmt.Sprintf("the node has no /debug/pprof; sampled with perf record during the 16-thread point-select node run (full report: %s)", r.File)
		if err1 != nil || err2 != nil {
			r.Summary += fmt.Sprintf("; perf report errors: %v %v", err1, err2)
		}
	}
	return r
}

func headLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}
