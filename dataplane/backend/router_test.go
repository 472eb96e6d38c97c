package backend

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/dbproxy/dbproxy/dataplane/config"
	"github.com/dbproxy/dbproxy/dataplane/metrics"
	"github.com/dbproxy/dbproxy/dataplane/mysql"
	"github.com/dbproxy/dbproxy/internal/vocab"
)

// value reads a gauge or counter.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetGauge().GetValue() + d.GetCounter().GetValue()
}

// routerFixture is a router over targets whose monitors never run: the
// tests set each target's health as a monitor would and call Notify, as
// the node's OnChange does.
type routerFixture struct {
	router  *Router
	targets map[string]*Target
	metrics *metrics.Metrics
}

// newRouterFixture builds targets named after roles: "w" and "w2" are
// AUTO targets, "r" a READER in the node's zone.
func newRouterFixture(t *testing.T, targets ...config.Target) *routerFixture {
	t.Helper()
	f := &routerFixture{targets: map[string]*Target{}, metrics: metrics.New()}
	var list []*Target
	for _, tc := range targets {
		tg := NewTarget(TargetOptions{Proxy: "p", Target: tc, MonitorInterval: time.Hour, DiscoveryInterval: 10 * time.Millisecond, Metrics: f.metrics})
		t.Cleanup(tg.Pool.Close)
		f.targets[tc.Name] = tg
		list = append(list, tg)
	}
	f.router = NewRouter(RouterOptions{Proxy: "p", Zone: "a", Targets: list, Metrics: f.metrics})
	return f
}

// set records a health check result on target name and notifies the
// router unless quiet (a monitor between its update and OnChange).
func (f *routerFixture) set(name string, healthy, readOnly bool, quiet bool) {
	tg := f.targets[name]
	tg.mu.Lock()
	tg.mu.health = Health{Healthy: healthy, ReadOnly: readOnly, CheckedAt: time.Now(), Version: "test"}
	tg.mu.Unlock()
	if !quiet {
		f.router.Notify()
	}
}

func (f *routerFixture) discovering(t *testing.T, want bool) {
	t.Helper()
	if got := f.router.Discovering(); got != want {
		t.Fatalf("router discovering = %v, want %v", got, want)
	}
	for name, tg := range f.targets {
		if got := tg.Discovering(); got != want {
			t.Fatalf("target %s discovering = %v, want %v", name, got, want)
		}
		wantInterval := time.Hour
		if want {
			wantInterval = 10 * time.Millisecond
		}
		if got := tg.interval(); got != wantInterval {
			t.Fatalf("target %s checks every %s, want %s", name, got, wantInterval)
		}
	}
	v := value(t, f.metrics.WriterDiscovery.WithLabelValues("p"))
	if (v == 1) != want {
		t.Fatalf("dbproxy_writer_discovery = %v, want %v", v, want)
	}
}

func TestRouterWriterDiscovery(t *testing.T) {
	f := newRouterFixture(t,
		config.Target{Name: "w", Zone: "a", Role: vocab.RoleAuto},
		config.Target{Name: "r", Zone: "a", Role: vocab.RoleAuto})
	// Nothing checked yet: no writer known, so every target is checked
	// fast from the start.
	f.discovering(t, true)
	f.set("r", true, true, false)
	f.discovering(t, true)
	f.set("w", true, false, false)
	f.discovering(t, false)
	if got := f.router.TryPick(vocab.TargetRoleReadWrite); got != f.targets["w"] {
		t.Fatalf("writer pick = %v", got)
	}
	// The writer goes: fast checks until the replica is promoted.
	f.set("w", false, false, false)
	f.discovering(t, true)
	f.set("r", true, false, false)
	f.discovering(t, false)
	if got := f.router.TryPick(vocab.TargetRoleReadWrite); got != f.targets["r"] {
		t.Fatalf("writer pick after promotion = %v", got)
	}
}

// TestRouterWriterDiscoveryNeedsAWriterRole: a proxy of READER targets
// never gets a writer, so its targets are never checked fast.
func TestRouterWriterDiscoveryNeedsAWriterRole(t *testing.T) {
	f := newRouterFixture(t, config.Target{Name: "r", Zone: "a", Role: vocab.RoleReader})
	f.discovering(t, false)
	f.set("r", false, true, false)
	f.discovering(t, false)
}

func TestRouterWriterConflict(t *testing.T) {
	for _, quiet := range []bool{false, true} {
		name := "notified"
		if quiet {
			name = "before the monitor notifies"
		}
		t.Run(name, func(t *testing.T) {
			f := newRouterFixture(t,
				config.Target{Name: "w", Zone: "a", Role: vocab.RoleAuto},
				config.Target{Name: "w2", Zone: "b", Role: vocab.RoleAuto},
				config.Target{Name: "r", Zone: "a", Role: vocab.RoleAuto})
			f.set("w", true, false, false)
			f.set("r", true, true, false)
			f.set("w2", true, false, quiet)

			if got := f.router.TryPick(vocab.TargetRoleReadWrite); got != nil {
				t.Fatalf("TryPick in a conflict = %s, want none", got.Name())
			}
			picked, err := f.router.Pick(t.Context(), vocab.TargetRoleReadWrite)
			if err != nil {
				t.Fatal(err)
			}
			_, err = picked.Get(t.Context(), Key{User: "u"})
			var se *mysql.SQLError
			if !errors.Is(err, ErrWriterConflict) || !errors.As(err, &se) || se.Num != mysql.ERWriterConflict {
				t.Fatalf("Get of a fenced writer: %v, want a %d error", err, mysql.ERWriterConflict)
			}
			if !strings.Contains(se.Message, "w and w2") || !strings.Contains(se.Message, "proxy p") {
				t.Fatalf("error does not name both writers and the proxy: %s", se.Message)
			}
			if _, ok := f.targets["w2"].TryGet(Key{User: "u"}); ok {
				t.Fatal("TryGet of a fenced writer succeeded")
			}
			for _, n := range []string{"w", "w2"} {
				if got := f.targets[n].Conflict(); !strings.HasPrefix(got, ConflictReasonPrefix+": targets w and w2") {
					t.Fatalf("reason of %s = %q", n, got)
				}
			}
			if got := f.targets["r"].Conflict(); got != "" {
				t.Fatalf("reader fenced: %s", got)
			}
			// Reads go on on the reader.
			if got := f.router.TryPick(vocab.TargetRoleReadOnly); got != f.targets["r"] {
				t.Fatalf("read pick in a conflict = %v, want the reader", got)
			}
			if got := value(t, f.metrics.WriterConflict.WithLabelValues("p")); got != 2 {
				t.Fatalf("dbproxy_writer_conflict_targets = %v, want 2", got)
			}
			if got := value(t, f.metrics.WriterConflicts.WithLabelValues("p")); got != 1 {
				t.Fatalf("dbproxy_writer_conflicts_total = %v, want 1", got)
			}
			// No usable writer: checked fast, so the end of the conflict
			// is seen soon.
			f.discovering(t, true)

			// Without a reader, a read would go to a writer: refused too.
			f.set("r", false, true, false)
			if got := f.router.TryPick(vocab.TargetRoleReadOnly); got != nil {
				t.Fatalf("read pick without a reader in a conflict = %s", got.Name())
			}

			// w is demoted: w2 is the writer and takes writes again.
			f.set("w", true, true, quiet)
			if got := f.router.TryPick(vocab.TargetRoleReadWrite); got != f.targets["w2"] {
				t.Fatalf("writer pick after the conflict = %v, want w2", got)
			}
			for n, tg := range f.targets {
				if tg.Conflict() != "" {
					t.Fatalf("%s still fenced", n)
				}
			}
			if got := value(t, f.metrics.WriterConflict.WithLabelValues("p")); got != 0 {
				t.Fatalf("dbproxy_writer_conflict_targets after = %v, want 0", got)
			}
			f.router.Notify()
			f.discovering(t, false)
		})
	}
}

// TestRouterPickWaits: a writer pick waits for a writer, and a conflict
// does not make it wait (the fenced writer's Get says why at once).
func TestRouterPickWaits(t *testing.T) {
	f := newRouterFixture(t,
		config.Target{Name: "w", Zone: "a", Role: vocab.RoleAuto},
		config.Target{Name: "w2", Zone: "a", Role: vocab.RoleAuto})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := f.router.Pick(ctx, vocab.TargetRoleReadWrite); !errors.Is(err, ErrNoTarget) {
		t.Fatalf("Pick without a writer: %v", err)
	}
	f.set("w", true, false, false)
	f.set("w2", true, false, false)
	got, err := f.router.Pick(t.Context(), vocab.TargetRoleReadWrite)
	if err != nil || got.Conflict() == "" {
		t.Fatalf("Pick in a conflict = %v, %v; want a fenced writer", got, err)
	}
}

func TestJoinNames(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want string
	}{{nil, ""}, {[]string{"a"}, "a"}, {[]string{"a", "b"}, "a and b"}, {[]string{"a", "b", "c"}, "a, b and c"}} {
		if got := joinNames(c.in); got != c.want {
			t.Errorf("joinNames(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestRouterWriterConflictChanges: a third writer joins a conflict and one
// leaves it; the fence follows, and it stays one conflict.
func TestRouterWriterConflictChanges(t *testing.T) {
	f := newRouterFixture(t,
		config.Target{Name: "a", Zone: "a", Role: vocab.RoleAuto},
		config.Target{Name: "b", Zone: "a", Role: vocab.RoleAuto},
		config.Target{Name: "c", Zone: "a", Role: vocab.RoleAuto})
	f.set("a", true, false, false)
	f.set("b", true, false, false)
	f.set("c", true, false, false)
	if got := f.targets["c"].Conflict(); !strings.Contains(got, "targets a, b and c all accept writes") {
		t.Fatalf("reason with three writers = %q", got)
	}
	if got := value(t, f.metrics.WriterConflict.WithLabelValues("p")); got != 3 {
		t.Fatalf("dbproxy_writer_conflict_targets = %v, want 3", got)
	}
	f.set("a", true, true, false)
	if got := f.targets["a"].Conflict(); got != "" {
		t.Fatalf("demoted a still fenced: %q", got)
	}
	if got := f.targets["b"].Conflict(); !strings.Contains(got, "targets b and c both accept writes") {
		t.Fatalf("reason with two writers left = %q", got)
	}
	if got := f.router.Conflict(); !slices.Equal(got, []string{"b", "c"}) {
		t.Fatalf("Conflict() = %v", got)
	}
	if got := value(t, f.metrics.WriterConflicts.WithLabelValues("p")); got != 1 {
		t.Fatalf("dbproxy_writer_conflicts_total = %v, want 1", got)
	}
}
