package backend

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/dbproxy/dbproxy/internal/vocab"
)

// ErrNoTarget is returned when no healthy target serves a role before the
// context ends.
var ErrNoTarget = errors.New("no healthy database target available")

// Router picks the target for an endpoint's role: the writer for
// READ_WRITE; for READ_ONLY a healthy reader in the node's zone, then in
// other zones, then the writer.
type Router struct {
	zone    string
	targets []*Target

	mu struct {
		sync.Mutex
		changed chan struct{}
		rr      int
	}
}

// NewRouter returns a router over targets for a node in zone.
func NewRouter(zone string, targets []*Target) *Router {
	r := &Router{zone: zone, targets: targets}
	r.mu.changed = make(chan struct{})
	return r
}

// Notify wakes borrowers waiting for a target (health or role changed).
func (r *Router) Notify() {
	r.mu.Lock()
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

// TryPick returns a target for role without waiting.
func (r *Router) TryPick(role string) *Target {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pickLocked(role)
}

// Pick returns a target for role, waiting until one is healthy or ctx ends.
func (r *Router) Pick(ctx context.Context, role string) (*Target, error) {
	for {
		r.mu.Lock()
		ch := r.mu.changed
		t := r.pickLocked(role)
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

func (r *Router) pickLocked(role string) *Target {
	var writer *Target
	var local, remote []*Target
	for _, t := range r.targets {
		if !t.Health().Healthy {
			continue
		}
		if t.Role() == vocab.RoleWriter {
			if writer == nil {
				writer = t
			}
			continue
		}
		if t.opts.Target.Zone == r.zone {
			local = append(local, t)
		} else {
			remote = append(remote, t)
		}
	}
	if role != vocab.TargetRoleReadOnly {
		return writer
	}
	for _, set := range [][]*Target{local, remote} {
		if len(set) > 0 {
			r.mu.rr++
			return set[r.mu.rr%len(set)]
		}
	}
	return writer
}
