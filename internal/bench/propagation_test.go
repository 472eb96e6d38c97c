package main

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func durations(msecs ...int) []time.Duration {
	out := make([]time.Duration, len(msecs))
	for i, m := range msecs {
		out[i] = time.Duration(m) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample is every percentile", durations(7), 99, 7 * time.Millisecond},
		{"median of an odd count", durations(1, 2, 3, 4, 5), 50, 3 * time.Millisecond},
		{"median of an even count is the lower middle", durations(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p95 of 1..100", durations(hundred...), 95, 95 * time.Millisecond},
		{"p99 of 1..100", durations(hundred...), 99, 99 * time.Millisecond},
		{"p100 is the maximum", durations(hundred...), 100, 100 * time.Millisecond},
		{"p99 of fewer than 100 samples is the maximum", durations(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 50), 99, 50 * time.Millisecond},
		{"p95 of 20 samples is the 19th", durations(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20), 95, 19 * time.Millisecond},
		{"a tiny p is the minimum", durations(4, 5, 6), 0.1, 4 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	tests := []struct {
		name string
		in   []time.Duration
		want latencyStats
	}{
		{"empty", nil, latencyStats{}},
		{"unsorted input", durations(30, 10, 20), latencyStats{N: 3, P50: 20, P95: 30, P99: 30, Max: 30, Mean: 20}},
		{"sub-millisecond precision", []time.Duration{1500 * time.Microsecond, 2500 * time.Microsecond},
			latencyStats{N: 2, P50: 1.5, P95: 2.5, P99: 2.5, Max: 2.5, Mean: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append([]time.Duration(nil), tt.in...)
			if got := summarize(tt.in); got != tt.want {
				t.Errorf("summarize(%v) = %+v, want %+v", tt.in, got, tt.want)
			}
			for i := range in {
				if in[i] != tt.in[i] {
					t.Fatalf("summarize reordered its input: %v", tt.in)
				}
			}
		})
	}
}

func TestPoolChangeDiffersEveryTime(t *testing.T) {
	seen := map[string]int{}
	for k := range 200 {
		cfg := poolChange(k)["connection_pool_config"].(map[string]any)
		q := cfg["init_query"].(string)
		if !strings.HasPrefix(q, "SET @@session.wait_timeout=") {
			t.Fatalf("change %d: init_query %q", k, q)
		}
		if prev, dup := seen[q]; dup {
			t.Fatalf("changes %d and %d are the same (%q): the second would not alter the config", prev, k, q)
		}
		seen[q] = k
	}
}

func TestPropStageOK(t *testing.T) {
	tests := []struct {
		name string
		st   *propStage
		want bool
	}{
		{"not run", nil, false},
		{"all complete on every node", &propStage{Nodes: 103, NodesMin: 103, Changes: 50, Completed: 50}, true},
		{"one rollout incomplete", &propStage{Nodes: 103, NodesMin: 103, Changes: 50, Completed: 49, Incomplete: []string{"x"}}, false},
		{"ended early", &propStage{Nodes: 103, NodesMin: 103, Changes: 3, Completed: 0, Incomplete: []string{"a", "b", "c"}}, false},
		{"a node was missing", &propStage{Nodes: 103, NodesMin: 102, Changes: 50, Completed: 50}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.st.ok(); got != tt.want {
				t.Errorf("ok() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestZoneHost(t *testing.T) {
	for i, want := range []string{"127.0.1.1", "127.0.2.1", "127.0.3.1"} {
		if got := zoneHost(i); got != want {
			t.Errorf("zoneHost(%d) = %s, want %s", i, got, want)
		}
	}
}

func TestCheckPropagation(t *testing.T) {
	stage := func(p99 float64, completed int) *propStage {
		return &propStage{Nodes: 103, NodesMin: 103, Changes: 50, Completed: completed, Total: latencyStats{N: completed, P50: 30, P99: p99, Max: p99}}
	}
	tests := []struct {
		name          string
		res           *propResult
		pass, skipped bool
	}{
		{"not run", nil, false, true},
		{"only the process stage ran", &propResult{Processes: stage(5, 50)}, false, true},
		{"under the target", &propResult{Processes: stage(5, 50), Clients: stage(46, 50)}, true, false},
		{"over the target", &propResult{Processes: stage(5, 50), Clients: stage(500, 50)}, false, false},
		{"fast but incomplete", &propResult{Processes: stage(5, 50), Clients: stage(46, 49)}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &bench{o: &options{propClients: 100}}
			b.res.Propagation = tt.res
			var got []targetCheck
			b.checkPropagation(func(name, target, measured string, pass, skipped bool) {
				got = append(got, targetCheck{Name: name, Target: target, Measured: measured, Pass: pass, Skipped: skipped})
			})
			if len(got) != 1 {
				t.Fatalf("%d target lines, want 1: %+v", len(got), got)
			}
			if got[0].Pass != tt.pass || got[0].Skipped != tt.skipped {
				t.Errorf("pass %v skipped %v, want %v %v (%+v)", got[0].Pass, got[0].Skipped, tt.pass, tt.skipped, got[0])
			}
			if !strings.Contains(got[0].Name, "103 nodes") || got[0].Target != "p99 < 500 ms" {
				t.Errorf("line %+v", got[0])
			}
		})
	}
}
