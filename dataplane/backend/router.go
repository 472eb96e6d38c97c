package backend

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dbproxy/dbproxy/dataplane/metrics"
	"github.com/dbproxy/dbproxy/dataplane/mysql"
	"github.com/dbproxy/dbproxy/internal/vocab"
)

// ErrNoTarget is returned when no healthy target serves a role before the
// context ends.
var ErrNoTarget = errors.New("no healthy database target available")

// ConflictReasonPrefix starts the health reason of a target fenced because
// another target of its proxy accepts writes too.
const ConflictReasonPrefix = "WRITER_CONFLICT"

// RouterOptions configure a Router.
type RouterOptions struct {
	// Proxy names the proxy in logs, metrics and client errors.
	Proxy string
	// Zone is the node's zone: READ_ONLY endpoints prefer readers there.
	Zone    string
	Targets []*Target
	Logger  hclog.Logger
	Metrics *metrics.Metrics
}

// Router picks the target for an endpoint's role: the writer for
// READ_WRITE; for READ_ONLY a healthy reader in the node's zone, then in
// other zones, then the writer.
//
// It also watches the writer. While the proxy has no usable writer it has
// every target checked at the fast discovery interval, so that a promoted
// replica takes writes within about that interval; once there is exactly
// one writer the targets go back to their normal interval. When more than
// one target accepts writes (a replica promoted while the old writer still
// runs, or an old writer back from the dead with read_only=0 after another
// was promoted) nobody knows which one the application's data lives on:
// every one of them is fenced, so writes are refused with an error naming
// them all and none reaches either server. Reads go on on readers; a
// READ_ONLY endpoint without a reader is refused too rather than read from
// a writer that may be the stale one. The fence lifts by itself when all
// but one writer are read_only=1 again.
type Router struct {
	opts    RouterOptions
	log     hclog.Logger
	targets []*Target

	mu struct {
		sync.Mutex
		changed chan struct{}
		rr      int
		// conflict names the targets that accepted writes together at the
		// last review; nil when at most one did.
		conflict []string
		// discovering is set while the proxy has no usable writer.
		discovering    bool
		discoveryStart time.Time
		// hadWriter is set once a writer was seen: losing one is worth a
		// warning, not having found one yet at start is not.
		hadWriter bool
	}
}

// NewRouter returns a router over opts.Targets; it starts writer discovery
// at once, since no target has been checked yet.
func NewRouter(opts RouterOptions) *Router {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	r := &Router{opts: opts, log: opts.Logger, targets: opts.Targets}
	r.mu.changed = make(chan struct{})
	r.mu.Lock()
	r.reviewLocked()
	r.mu.Unlock()
	return r
}

// Notify re-evaluates the writer and wakes borrowers waiting for a target
// (health or role changed).
func (r *Router) Notify() {
	r.mu.Lock()
	r.reviewLocked()
	close(r.mu.changed)
	r.mu.changed = make(chan struct{})
	r.mu.Unlock()
}

// Wait blocks until the routing changes, d passes (true) or ctx ends
// (false).
func (r *Router) Wait(ctx context.Context, d time.Duration) bool {
	r.mu.Lock()
	ch := r.mu.changed
	r.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return ctx.Err() == nil
	case <-ctx.Done():
		return false
	}
}

// Targets returns the router's targets.
func (r *Router) Targets() []*Target { return r.targets }

// Discovering reports whether the proxy has no usable writer and its
// targets are checked at the discovery interval.
func (r *Router) Discovering() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mu.discovering
}

// Conflict returns the names of the targets that accept writes together,
// or nil when at most one does.
func (r *Router) Conflict() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.mu.conflict)
}

// TryPick returns a target for role without waiting; nil also when the
// pick is a fenced writer (Pick returns it, and its Get says why).
func (r *Router) TryPick(role string) *Target {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, fenced := r.pickLocked(role)
	if fenced {
		return nil
	}
	return t
}

// Pick returns a target for role, waiting until one is healthy or ctx ends.
// In a writer conflict it returns one of the fenced writers at once: its
// Get fails with the error that names them all, which is what the client
// should see rather than a borrow timeout.
func (r *Router) Pick(ctx context.Context, role string) (*Target, error) {
	for {
		r.mu.Lock()
		ch := r.mu.changed
		t, _ := r.pickLocked(role)
		r.mu.Unlock()
		if t != nil {
			return t, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ErrNoTarget
		}
	}
}

// pickLocked returns the target for role and whether it is a writer fenced
// by a conflict.
func (r *Router) pickLocked(role string) (*Target, bool) {
	var writer *Target
	writers := 0
	var local, remote []*Target
	for _, t := range r.targets {
		if !t.Health().Healthy {
			continue
		}
		if t.Role() == vocab.RoleWriter {
			writers++
			if writer == nil {
				writer = t
			}
			continue
		}
		if t.opts.Target.Zone == r.opts.Zone {
			local = append(local, t)
		} else {
			remote = append(remote, t)
		}
	}
	if (writers > 1) != (r.mu.conflict != nil) {
		// A monitor recorded a health change whose Notify has not run
		// yet: fence (or lift the fence) before handing out a writer, so
		// that no write slips to a second writer in between.
		r.reviewLocked()
	}
	if role == vocab.TargetRoleReadOnly {
		for _, set := range [][]*Target{local, remote} {
			if len(set) > 0 {
				r.mu.rr++
				return set[r.mu.rr%len(set)], false
			}
		}
	}
	return writer, writer != nil && writer.fence.Load() != nil
}

// reviewLocked fences or unfences writers and switches writer discovery
// from the targets' current health. It acts on changes only, so calling it
// again is cheap and logs nothing.
func (r *Router) reviewLocked() {
	var writers []*Target
	canHaveWriter := false
	for _, t := range r.targets {
		if t.opts.Target.Role != vocab.RoleReader {
			canHaveWriter = true
		}
		if t.Health().Healthy && t.Role() == vocab.RoleWriter {
			writers = append(writers, t)
		}
	}
	var names []string
	if len(writers) > 1 {
		for _, t := range writers {
			names = append(names, t.Name())
		}
	}
	if !slices.Equal(names, r.mu.conflict) {
		r.fenceLocked(writers, names)
	}
	if len(writers) > 0 {
		r.mu.hadWriter = true
	}
	// A proxy whose targets are all READER never gets a writer: polling
	// them fast would only add load.
	discovering := canHaveWriter && len(writers) != 1
	if discovering == r.mu.discovering {
		return
	}
	r.mu.discovering = discovering
	if m := r.opts.Metrics; m != nil {
		v := 0.0
		if discovering {
			v = 1
		}
		m.WriterDiscovery.WithLabelValues(r.opts.Proxy).Set(v)
	}
	for _, t := range r.targets {
		t.setDiscovering(discovering)
	}
	switch {
	case discovering && len(writers) > 1:
		r.mu.discoveryStart = time.Now()
	case discovering:
		r.mu.discoveryStart = time.Now()
		log := r.log.Debug
		if r.mu.hadWriter {
			log = r.log.Warn
		}
		log("no healthy writer; checking every target at the discovery interval until one appears")
	case len(writers) == 1:
		r.log.Info("writer found", "target", writers[0].Name(), "after", time.Since(r.mu.discoveryStart).Round(time.Millisecond))
	}
}

// fenceLocked records a new set of conflicting writers (names, empty when
// the conflict is over) and fences exactly those.
func (r *Router) fenceLocked(writers []*Target, names []string) {
	var f *fence
	if len(names) > 0 {
		list, all := joinNames(names), "all"
		if len(names) == 2 {
			all = "both"
		}
		f = &fence{
			reason: fmt.Sprintf("%s: targets %s %s accept writes (read_only=0); writes are refused until only one does", ConflictReasonPrefix, list, all),
			err: fmt.Errorf("%w: %w", ErrWriterConflict, mysql.NewSQLError(mysql.ERWriterConflict,
				"refusing writes: targets %s of proxy %s %s accept writes (read_only=0); set read_only=1 on every one but the writer", list, r.opts.Proxy, all)),
		}
	}
	for _, t := range r.targets {
		if f != nil && slices.Contains(writers, t) {
			t.setFence(f)
		} else {
			t.setFence(nil)
		}
	}
	switch {
	case len(names) > 0 && r.mu.conflict == nil:
		r.log.Error("more than one target accepts writes; refusing writes until only one does", "targets", names)
		if m := r.opts.Metrics; m != nil {
			m.WriterConflicts.WithLabelValues(r.opts.Proxy).Inc()
		}
	case len(names) > 0:
		r.log.Error("targets accepting writes changed; still refusing writes", "targets", names)
	default:
		writer := ""
		if len(writers) == 1 {
			writer = writers[0].Name()
		}
		r.log.Info("writer conflict over; writes resume", "targets", r.mu.conflict, "writer", writer)
	}
	r.mu.conflict = names
	if m := r.opts.Metrics; m != nil {
		m.WriterConflict.WithLabelValues(r.opts.Proxy).Set(float64(len(names)))
	}
}

// joinNames lists names for a message: "a and b", "a, b and c".
func joinNames(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}
