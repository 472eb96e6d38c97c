// Package pool keeps the database connections of one target: a bounded set
// shared by several keys (database user and wire flavour), with an idle
// limit, a borrow timeout that ends in an error instead of a hang, a maximum
// lifetime and validation of connections that sat idle too long.
package pool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrBorrowTimeout is returned by Get when no connection could be had
// before the context's deadline.
var ErrBorrowTimeout = errors.New("timed out waiting for a database connection")

// ErrClosed is returned by Get on a closed pool.
var ErrClosed = errors.New("pool is closed")

// Resource is a pooled connection.
type Resource interface {
	Close() error
}

// Options configure a Pool.
type Options[K comparable, C Resource] struct {
	// Dial opens a new connection for key.
	Dial func(ctx context.Context, key K) (C, error)
	// Validate checks a connection that sat idle longer than IdleCheckAfter
	// (a ping); nil skips validation.
	Validate func(ctx context.Context, c C) error
	// Alive is a cheap check run on an idle connection before it is lent
	// when it sat idle longer than AliveCheckAfter (nil: none).
	Alive           func(c C) bool
	AliveCheckAfter time.Duration
	// Max and MaxIdle bound open and idle connections (SetLimits changes
	// them later).
	Max, MaxIdle int
	// MaxLifetime closes connections older than this when they come back or
	// are found idle (0 = no limit).
	MaxLifetime time.Duration
	// IdleCheckAfter validates connections idle longer than this.
	IdleCheckAfter time.Duration
	// Now is the clock (time.Now by default).
	Now func() time.Time
}

type entry[C Resource] struct {
	c       C
	created time.Time
	idleAt  time.Time
}

type grant[C Resource] struct {
	e    entry[C]
	conn bool // e holds a connection; otherwise a slot to dial one
	// closed tells the waiter the pool closed: no connection, no slot.
	closed bool
}

type waiter[K comparable, C Resource] struct {
	key K
	ch  chan grant[C]
}

// Pool is a bounded pool of connections to one database target.
type Pool[K comparable, C Resource] struct {
	opts Options[K, C]
	mu   struct {
		sync.Mutex
		max, maxIdle int
		open         int
		borrowed     int
		idle         map[K][]entry[C]
		idleCount    int
		waiters      []*waiter[K, C]
		created      map[any]time.Time
		closed       bool
	}
}

// New returns a pool.
func New[K comparable, C Resource](opts Options[K, C]) *Pool[K, C] {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	p := &Pool[K, C]{opts: opts}
	p.mu.max, p.mu.maxIdle = max(opts.Max, 1), opts.MaxIdle
	p.mu.idle = map[K][]entry[C]{}
	p.mu.created = map[any]time.Time{}
	return p
}

// SetLimits changes the bounds. Excess idle connections are closed; excess
// borrowed ones are closed when they come back.
func (p *Pool[K, C]) SetLimits(maxOpen, maxIdle int) {
	p.mu.Lock()
	p.mu.max, p.mu.maxIdle = max(maxOpen, 1), max(maxIdle, 0)
	var victims []C
	for p.mu.idleCount > p.mu.maxIdle || (p.mu.open > p.mu.max && p.mu.idleCount > 0) {
		victims = append(victims, p.evictOneLocked())
	}
	grants := p.grantSlotsLocked()
	p.mu.Unlock()
	for _, c := range victims {
		_ = c.Close()
	}
	grants()
}

// Stats is a snapshot of the pool.
type Stats struct {
	Open, Idle, Borrowed, Waiting, Max, MaxIdle int
}

// Stats returns current counts.
func (p *Pool[K, C]) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{Open: p.mu.open, Idle: p.mu.idleCount, Borrowed: p.mu.borrowed,
		Waiting: len(p.mu.waiters), Max: p.mu.max, MaxIdle: p.mu.maxIdle}
}

// Get borrows a connection for key, dialing one when allowed, or waits
// until ctx ends (ErrBorrowTimeout).
func (p *Pool[K, C]) Get(ctx context.Context, key K) (C, error) {
	var zero C
	for {
		p.mu.Lock()
		if p.mu.closed {
			p.mu.Unlock()
			return zero, ErrClosed
		}
		if e, ok := p.popIdleLocked(key); ok {
			p.mu.Unlock()
			if c, ok := p.checkIdle(ctx, e); ok {
				return c, nil
			}
			continue
		}
		var victim *C
		switch {
		case p.mu.open < p.mu.max:
			p.mu.open++
		case p.mu.idleCount > 0:
			v := p.evictOneLocked()
			victim = &v
			p.mu.open++
		default:
			w := &waiter[K, C]{key: key, ch: make(chan grant[C], 1)}
			p.mu.waiters = append(p.mu.waiters, w)
			p.mu.Unlock()
			g, err := p.wait(ctx, w)
			if err != nil {
				return zero, err
			}
			if g.closed {
				return zero, ErrClosed
			}
			if g.conn {
				if c, ok := p.checkIdle(ctx, g.e); ok {
					return c, nil
				}
				continue
			}
			return p.dial(ctx, key)
		}
		p.mu.borrowed++
		p.mu.Unlock()
		if victim != nil {
			_ = (*victim).Close()
		}
		return p.dial(ctx, key)
	}
}

// dial opens a connection in a slot already counted in open and borrowed.
func (p *Pool[K, C]) dial(ctx context.Context, key K) (C, error) {
	c, err := p.opts.Dial(ctx, key)
	if err != nil {
		p.release()
		var zero C
		return zero, err
	}
	p.mu.Lock()
	p.mu.created[any(c)] = p.opts.Now()
	p.mu.Unlock()
	return c, nil
}

// release gives up one borrowed slot without a connection.
func (p *Pool[K, C]) release() {
	p.mu.Lock()
	p.mu.open--
	p.mu.borrowed--
	grants := p.grantSlotsLocked()
	p.mu.Unlock()
	grants()
}

// checkIdle applies lifetime and validation to a connection taken from the
// idle list (already counted as borrowed). On failure the slot is released.
func (p *Pool[K, C]) checkIdle(ctx context.Context, e entry[C]) (C, bool) {
	now := p.opts.Now()
	bad := p.opts.MaxLifetime > 0 && now.Sub(e.created) > p.opts.MaxLifetime
	bad = bad || p.opts.Alive != nil && now.Sub(e.idleAt) >= p.opts.AliveCheckAfter && !p.opts.Alive(e.c)
	if !bad && p.opts.Validate != nil && p.opts.IdleCheckAfter > 0 && now.Sub(e.idleAt) > p.opts.IdleCheckAfter {
		bad = p.opts.Validate(ctx, e.c) != nil
	}
	if !bad {
		return e.c, true
	}
	p.forget(e.c)
	_ = e.c.Close()
	p.release()
	var zero C
	return zero, false
}

func (p *Pool[K, C]) forget(c C) {
	p.mu.Lock()
	delete(p.mu.created, any(c))
	p.mu.Unlock()
}

func (p *Pool[K, C]) wait(ctx context.Context, w *waiter[K, C]) (grant[C], error) {
	select {
	case g := <-w.ch:
		return g, nil
	case <-ctx.Done():
	}
	p.mu.Lock()
	for i, x := range p.mu.waiters {
		if x == w {
			p.mu.waiters = append(p.mu.waiters[:i], p.mu.waiters[i+1:]...)
			err := fmt.Errorf("%w (%d of %d connections in use)", ErrBorrowTimeout, p.Stats0(), p.mu.max)
			p.mu.Unlock()
			return grant[C]{}, err
		}
	}
	p.mu.Unlock()
	// Granted while timing out: use it.
	return <-w.ch, nil
}

// Stats0 is the open count; it exists only for error text and must be
// called with mu held.
func (p *Pool[K, C]) Stats0() int { return p.mu.open }

// Put returns a borrowed connection. reusable=false closes it (broken, or
// carrying state that could not be reset).
func (p *Pool[K, C]) Put(key K, c C, reusable bool) {
	now := p.opts.Now()
	p.mu.Lock()
	p.mu.borrowed--
	created := p.mu.created[any(c)]
	if p.opts.MaxLifetime > 0 && now.Sub(created) > p.opts.MaxLifetime {
		reusable = false
	}
	if !reusable || p.mu.closed || p.mu.open > p.mu.max {
		delete(p.mu.created, any(c))
		p.mu.open--
		grants := p.grantSlotsLocked()
		p.mu.Unlock()
		_ = c.Close()
		grants()
		return
	}
	e := entry[C]{c: c, created: created, idleAt: now}
	for i, w := range p.mu.waiters {
		if w.key == key {
			p.mu.waiters = append(p.mu.waiters[:i], p.mu.waiters[i+1:]...)
			p.mu.borrowed++
			p.mu.Unlock()
			w.ch <- grant[C]{e: e, conn: true}
			return
		}
	}
	if len(p.mu.waiters) > 0 {
		// Someone waits for another key: trade this connection for a slot,
		// which stays open and becomes the waiter's borrowed one.
		delete(p.mu.created, any(c))
		w := p.mu.waiters[0]
		p.mu.waiters = p.mu.waiters[1:]
		p.mu.borrowed++
		p.mu.Unlock()
		_ = c.Close()
		w.ch <- grant[C]{}
		return
	}
	if p.mu.idleCount >= p.mu.maxIdle {
		delete(p.mu.created, any(c))
		p.mu.open--
		p.mu.Unlock()
		_ = c.Close()
		return
	}
	p.mu.idle[key] = append(p.mu.idle[key], e)
	p.mu.idleCount++
	p.mu.Unlock()
}

// grantSlotsLocked hands free slots to waiters; the returned func delivers
// the grants and must be called after unlocking.
func (p *Pool[K, C]) grantSlotsLocked() func() {
	var ws []*waiter[K, C]
	for len(p.mu.waiters) > 0 && p.mu.open < p.mu.max {
		ws = append(ws, p.mu.waiters[0])
		p.mu.waiters = p.mu.waiters[1:]
		p.mu.open++
		p.mu.borrowed++
	}
	return func() {
		for _, w := range ws {
			w.ch <- grant[C]{}
		}
	}
}

// evictOneLocked removes the oldest idle connection of any key and returns
// it for closing; the caller adjusts open.
func (p *Pool[K, C]) evictOneLocked() C {
	var (
		bestKey K
		best    entry[C]
		found   bool
	)
	for k, list := range p.mu.idle {
		if len(list) > 0 && (!found || list[0].idleAt.Before(best.idleAt)) {
			bestKey, best, found = k, list[0], true
		}
	}
	list := p.mu.idle[bestKey]
	p.mu.idle[bestKey] = list[1:]
	if len(list) == 1 {
		delete(p.mu.idle, bestKey)
	}
	p.mu.idleCount--
	p.mu.open--
	delete(p.mu.created, any(best.c))
	return best.c
}

// Reap closes idle connections past their lifetime or idle longer than
// maxIdleTime (0 = keep). Call it periodically.
func (p *Pool[K, C]) Reap(maxIdleTime time.Duration) int {
	now := p.opts.Now()
	var victims []C
	p.mu.Lock()
	for k, list := range p.mu.idle {
		kept := list[:0]
		for _, e := range list {
			old := p.opts.MaxLifetime > 0 && now.Sub(e.created) > p.opts.MaxLifetime
			stale := maxIdleTime > 0 && now.Sub(e.idleAt) > maxIdleTime
			if old || stale {
				victims = append(victims, e.c)
				delete(p.mu.created, any(e.c))
				p.mu.idleCount--
				p.mu.open--
				continue
			}
			kept = append(kept, e)
		}
		if len(kept) == 0 {
			delete(p.mu.idle, k)
		} else {
			p.mu.idle[k] = kept
		}
	}
	grants := p.grantSlotsLocked()
	p.mu.Unlock()
	for _, c := range victims {
		_ = c.Close()
	}
	grants()
	return len(victims)
}

// CloseIdle closes every idle connection (after a failover, say).
func (p *Pool[K, C]) CloseIdle() {
	p.mu.Lock()
	var victims []C
	for _, list := range p.mu.idle {
		for _, e := range list {
			victims = append(victims, e.c)
			delete(p.mu.created, any(e.c))
		}
	}
	p.mu.open -= len(victims)
	p.mu.idleCount = 0
	p.mu.idle = map[K][]entry[C]{}
	grants := p.grantSlotsLocked()
	p.mu.Unlock()
	for _, c := range victims {
		_ = c.Close()
	}
	grants()
}

// Close closes idle connections and fails waiters; borrowed connections
// are closed when they come back.
func (p *Pool[K, C]) Close() {
	p.mu.Lock()
	p.mu.closed = true
	ws := p.mu.waiters
	p.mu.waiters = nil
	p.mu.Unlock()
	p.CloseIdle()
	for _, w := range ws {
		// Neither a connection nor a slot: a slot would make the waiter
		// dial a new connection on the closed pool.
		w.ch <- grant[C]{closed: true}
	}
}

// TakeIdle borrows the specific idle connection c of key when it is still
// idle and ok(c) holds; it reports whether it did.
func (p *Pool[K, C]) TakeIdle(key K, c C, ok func(C) bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.mu.idle[key]
	for i := len(list) - 1; i >= 0; i-- {
		if any(list[i].c) == any(c) {
			if !ok(c) {
				return false
			}
			p.mu.idle[key] = append(list[:i], list[i+1:]...)
			p.mu.idleCount--
			p.mu.borrowed++
			return true
		}
	}
	return false
}

// TryGet borrows an idle connection of key without waiting or dialing.
func (p *Pool[K, C]) TryGet(ctx context.Context, key K) (C, bool) {
	for {
		p.mu.Lock()
		var e entry[C]
		ok := !p.mu.closed
		if ok {
			e, ok = p.popIdleLocked(key)
		}
		p.mu.Unlock()
		if !ok {
			var zero C
			return zero, false
		}
		if c, ok := p.checkIdle(ctx, e); ok {
			return c, true
		}
	}
}

// popIdleLocked takes the most recently returned idle connection of key and
// counts it as borrowed.
func (p *Pool[K, C]) popIdleLocked(key K) (entry[C], bool) {
	list := p.mu.idle[key]
	if len(list) == 0 {
		return entry[C]{}, false
	}
	e := list[len(list)-1]
	p.mu.idle[key] = list[:len(list)-1]
	p.mu.idleCount--
	p.mu.borrowed++
	return e, true
}
