package pool

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dbproxy/dbproxy/internal/testing/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeConn is a pooled connection that knows whether it was closed.
type fakeConn struct {
	id     int
	key    string
	closed atomic.Int32
	d      *fakeDialer
}

func (c *fakeConn) Close() error {
	if c.closed.Add(1) != 1 {
		c.d.t.Errorf("conn %d closed twice", c.id)
		return nil
	}
	c.d.live.Add(-1)
	return nil
}

func (c *fakeConn) isClosed() bool { return c.closed.Load() > 0 }

func (c *fakeConn) String() string { return fmt.Sprintf("conn%d(%s)", c.id, c.key) }

// fakeDialer opens fakeConns, tracks how many are live and the peak, and can
// be told to fail.
type fakeDialer struct {
	t     testing.TB
	mu    sync.Mutex
	conns []*fakeConn
	live  atomic.Int64
	peak  atomic.Int64
	fail  atomic.Bool
	calls atomic.Int64
}

var errDial = errors.New("dial refused")

func (d *fakeDialer) dial(ctx context.Context, key string) (*fakeConn, error) {
	d.calls.Add(1)
	if d.fail.Load() {
		return nil, errDial
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n := d.live.Add(1)
	for {
		p := d.peak.Load()
		if n <= p || d.peak.CompareAndSwap(p, n) {
			break
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	c := &fakeConn{id: len(d.conns) + 1, key: key, d: d}
	d.conns = append(d.conns, c)
	return c, nil
}

// fakeClock is an injected clock moved by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type testPool = Pool[string, *fakeConn]

func newTestPool(t *testing.T, opts Options[string, *fakeConn]) (*testPool, *fakeDialer, *fakeClock) {
	t.Helper()
	d := &fakeDialer{t: t}
	clk := newClock()
	if opts.Dial == nil {
		opts.Dial = d.dial
	}
	if opts.Now == nil {
		opts.Now = clk.Now
	}
	p := New(opts)
	t.Cleanup(func() {
		p.Close()
		checkInvariants(t, p)
	})
	return p, d, clk
}

// checkInvariants verifies the pool's bookkeeping: counts never negative,
// every open connection either idle or borrowed, the idle lists matching
// the idle count, and creation times kept for no more than open
// connections.
func checkInvariants(t testing.TB, p *testPool) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	m := &p.mu
	if m.open < 0 || m.idleCount < 0 || m.borrowed < 0 {
		t.Fatalf("negative count: open %d idle %d borrowed %d", m.open, m.idleCount, m.borrowed)
	}
	if m.open != m.idleCount+m.borrowed {
		t.Fatalf("open %d != idle %d + borrowed %d", m.open, m.idleCount, m.borrowed)
	}
	n := 0
	for k, list := range m.idle {
		for _, e := range list {
			n++
			if e.c.isClosed() {
				t.Fatalf("closed conn %v in the idle list of %q", e.c, k)
			}
		}
	}
	if n != m.idleCount {
		t.Fatalf("idle lists hold %d, idleCount %d", n, m.idleCount)
	}
	if len(m.created) > m.open {
		t.Fatalf("%d creation times for %d open connections", len(m.created), m.open)
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func mustGet(t *testing.T, p *testPool, key string) *fakeConn {
	t.Helper()
	c, err := p.Get(ctxTimeout(t, 10*time.Second), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	if c.isClosed() {
		t.Fatalf("Get(%q) returned closed %v", key, c)
	}
	return c
}

func waiting(p *testPool, n int) func() bool {
	return func() bool { return p.Stats().Waiting == n }
}

type getResult struct {
	c   *fakeConn
	err error
}

func goGet(ctx context.Context, p *testPool, key string) <-chan getResult {
	ch := make(chan getResult, 1)
	go func() {
		c, err := p.Get(ctx, key)
		ch <- getResult{c, err}
	}()
	return ch
}

func wantStats(t *testing.T, p *testPool, open, idle, borrowed, waiting int) {
	t.Helper()
	checkInvariants(t, p)
	s := p.Stats()
	if s.Open != open || s.Idle != idle || s.Borrowed != borrowed || s.Waiting != waiting {
		t.Fatalf("stats %+v, want open %d idle %d borrowed %d waiting %d", s, open, idle, borrowed, waiting)
	}
}

func TestGetPutReuses(t *testing.T) {
	p, d, _ := newTestPool(t, Options[string, *fakeConn]{Max: 2, MaxIdle: 2})
	c := mustGet(t, p, "app")
	wantStats(t, p, 1, 0, 1, 0)
	p.Put("app", c, true)
	wantStats(t, p, 1, 1, 0, 0)
	if again := mustGet(t, p, "app"); again != c {
		t.Fatalf("got %v, want the idle %v", again, c)
	}
	if d.calls.Load() != 1 {
		t.Fatalf("%d dials, want 1", d.calls.Load())
	}
	p.Put("app", c, false)
	if !c.isClosed() {
		t.Fatal("connection put back as not reusable stays open")
	}
	wantStats(t, p, 0, 0, 0, 0)
}

func TestMaxOpenUnderConcurrency(t *testing.T) {
	const (
		maxOpen  = 5
		workers  = 40
		rounds   = 200
		keyCount = 3
	)
	var p *testPool
	var overDial atomic.Int64
	d := &fakeDialer{t: t}
	p, _, _ = newTestPool(t, Options[string, *fakeConn]{Max: maxOpen, MaxIdle: 3,
		Dial: func(ctx context.Context, key string) (*fakeConn, error) {
			// The slot this dial fills is already counted.
			if s := p.Stats(); s.Open > maxOpen {
				overDial.Add(1)
			}
			return d.dial(ctx, key)
		}})
	var wg sync.WaitGroup
	var inUse atomic.Int64
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for range rounds {
				key := fmt.Sprintf("user%d", r.IntN(keyCount))
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				c, err := p.Get(ctx, key)
				cancel()
				if err != nil {
					errs <- err
					return
				}
				if n := inUse.Add(1); n > maxOpen {
					errs <- fmt.Errorf("%d connections borrowed at once, max %d", n, maxOpen)
				}
				if c.key != key {
					errs <- fmt.Errorf("asked for %q, got %v", key, c)
				}
				inUse.Add(-1)
				p.Put(key, c, r.IntN(10) != 0)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := overDial.Load(); n > 0 {
		t.Errorf("%d dials with more than %d connections open", n, maxOpen)
	}
	// A connection given up is closed just after its slot is freed, so the
	// live count may pass the limit by the closes in flight, never by more.
	if peak := d.peak.Load(); peak > maxOpen+workers {
		t.Errorf("peak of %d live connections, max %d", peak, maxOpen)
	}
	t.Logf("peak of %d live connections for a limit of %d", d.peak.Load(), maxOpen)
	s := p.Stats()
	if s.Borrowed != 0 || s.Waiting != 0 || s.Idle > 3 {
		t.Errorf("after the run: %+v", s)
	}
	if int64(s.Open) != d.live.Load() {
		t.Errorf("pool counts %d open, %d live", s.Open, d.live.Load())
	}
	checkInvariants(t, p)
}

func TestBorrowTimeout(t *testing.T) {
	p, _, _ := newTestPool(t, Options[string, *fakeConn]{Max: 1, MaxIdle: 1})
	held := mustGet(t, p, "app")

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	_, err := p.Get(ctx, "app")
	if !errors.Is(err, ErrBorrowTimeout) {
		t.Fatalf("Get on a full pool: %v, want ErrBorrowTimeout", err)
	}
	wantStats(t, p, 1, 0, 1, 0)

	// An already ended context fails at once.
	done, cancel2 := context.WithCancel(t.Context())
	cancel2()
	if _, err := p.Get(done, "other"); !errors.Is(err, ErrBorrowTimeout) {
		t.Fatalf("Get with a cancelled context: %v", err)
	}
	wantStats(t, p, 1, 0, 1, 0)
	p.Put("app", held, true)
	wantStats(t, p, 1, 1, 0, 0)
}

func TestWaiterHandoffSameKey(t *testing.T) {
	p, d, _ := newTestPool(t, Options[string, *fakeConn]{Max: 1, MaxIdle: 1})
	c := mustGet(t, p, "app")
	res := goGet(ctxTimeout(t, 10*time.Second), p, "app")
	testutil.Eventually(t, 10*time.Second, "a waiter", waiting(p, 1))
	p.Put("app", c, true)
	r := <-res
	if r.err != nil || r.c != c {
		t.Fatalf("waiter got %v, %v; want %v", r.c, r.err, c)
	}
	if d.calls.Load() != 1 {
		t.Fatalf("%d dials, want 1", d.calls.Load())
	}
	wantStats(t, p, 1, 0, 1, 0)
	p.Put("app", c, true)
	wantStats(t, p, 1, 1, 0, 0)
}

func TestWaiterOtherKeyGetsSlot(t *testing.T) {
	p, d, _ := newTestPool(t, Options[string, *fakeConn]{Max: 1, MaxIdle: 1})
	c := mustGet(t, p, "alice")
	res := goGet(ctxTimeout(t, 10*time.Second), p, "bob")
	testutil.Eventually(t, 10*time.Second, "a waiter", waiting(p, 1))
	p.Put("alice", c, true)
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.c == c || r.c.key != "bob" || !c.isClosed() {
		t.Fatalf("waiter for bob got %v; alice's %v closed: %v", r.c, c, c.isClosed())
	}
	if d.calls.Load() != 2 || d.live.Load() != 1 {
		t.Fatalf("%d dials, %d live", d.calls.Load(), d.live.Load())
	}
	wantStats(t, p, 1, 0, 1, 0)
	p.Put("bob", r.c, true)
	wantStats(t, p, 1, 1, 0, 0)
}

func TestWaiterGetsSlotOfClosedConn(t *testing.T) {
	p, _, _ := newTestPool(t, Options[string, *fakeConn]{Max: 1, MaxIdle: 1})
	c := mustGet(t, p, "alice")
	res := goGet(ctxTimeout(t, 10*time.Second), p, "alice")
	testutil.Eventually(t, 10*time.Second, "a waiter", waiting(p, 1))
	p.Put("alice", c, false)
	r := <-res
	if r.err != nil || r.c == c {
		t.Fatalf("waiter got %v, %v", r.c, r.err)
	}
	wantStats(t, p, 1, 0, 1, 0)
	p.Put("alice", r.c, true)
}

func TestDialErrorReleasesSlot(t *testing.T) {
	p, d, _ := newTestPool(t, Options[string, *fakeConn]{Max: 1, MaxIdle: 1})
	d.fail.Store(true)
	if _, err := p.Get(ctxTimeout(t, time.Second), "app"); !errors.Is(err, errDial) {
		t.Fatalf("Get: %v, want the dial error", err)
	}
	wantStats(t, p, 0, 0, 0, 0)
	d.fail.Store(false)
	c := mustGet(t, p, "app")
	p.Put("app", c, true)
}

func TestIdleLimit(t *testing.T) {
	p, _, _ := newTestPool(t, Options[string, *fakeConn]{Max: 5, MaxIdle: 2})
	var cs []*fakeConn
	for range 4 {
		cs = append(cs, mustGet(t, p, "app"))
	}
	wantStats(t, p, 4, 0, 4, 0)
	for _, c := range cs {
		p.Put("app", c, true)
	}
	wantStats(t, p, 2, 2, 0, 0)
	closed := 0
	for _, c := range cs {
		if c.isClosed() {
			closed++
		}
	}
	if closed != 2 {
		t.Fatalf("%d connections closed, want 2", closed)
	}
}

func TestFullPoolEvictsIdleOfOtherKey(t *testing.T) {
	p, _, _ := newTestPool(t, Options[string, *fakeConn]{Max: 2, MaxIdle: 2})
	a := mustGet(t, p, "alice")
	b := mustGet(t, p, "bob")
	p.Put("alice", a, true)
	// Full, but an idle connection of another key can make room.
	c := mustGet(t, p, "carol")
	if !a.isClosed() || c.key != "carol" {
		t.Fatalf("alice's idle %v closed %v; got %v", a, a.isClosed(), c)
	}
	wantStats(t, p, 2, 0, 2, 0)
	p.Put("bob", b, true)
	p.Put("carol", c, true)
}

func TestSetLimits(t *testing.T) {
	t.Run("shrinking closes idle now and borrowed on return", func(t *testing.T) {
		p, d, _ := newTestPool(t, Options[string, *fakeConn]{Max: 4, MaxIdle: 4})
		var cs []*fakeConn
		for range 4 {
			cs = append(cs, mustGet(t, p, "app"))
		}
		p.Put("app", cs[0], true)
		p.Put("app", cs[1], true)
		wantStats(t, p, 4, 2, 2, 0)

		p.SetLimits(1, 1)
		s := p.Stats()
		if s.Max != 1 || s.MaxIdle != 1 {
			t.Fatalf("limits %+v", s)
		}
		wantStats(t, p, 2, 0, 2, 0)
		p.Put("app", cs[2], true)
		if !cs[2].isClosed() {
			t.Fatal("connection over the new limit kept")
		}
		wantStats(t, p, 1, 0, 1, 0)
		p.Put("app", cs[3], true)
		wantStats(t, p, 1, 1, 0, 0)
		if d.live.Load() != 1 {
			t.Fatalf("%d live connections, want 1", d.live.Load())
		}
	})

	t.Run("growing wakes waiters", func(t *testing.T) {
		p, _, _ := newTestPool(t, Options[string, *fakeConn]{Max: 1, MaxIdle: 1})
		held := mustGet(t, p, "app")
		ctx := ctxTimeout(t, 10*time.Second)
		r1, r2 := goGet(ctx, p, "app"), goGet(ctx, p, "other")
		testutil.Eventually(t, 10*time.Second, "two waiters", waiting(p, 2))
		p.SetLimits(3, 3)
		a, b := <-r1, <-r2
		if a.err != nil || b.err != nil {
			t.Fatalf("waiters: %v, %v", a.err, b.err)
		}
		wantStats(t, p, 3, 0, 3, 0)
		p.Put("app", held, true)
		p.Put("app", a.c, true)
		p.Put("other", b.c, true)
		wantStats(t, p, 3, 3, 0, 0)
	})

	t.Run("zero and negative limits are clamped", func(t *testing.T) {
		p, _, _ := newTestPool(t, Options[string, *fakeConn]{Max: 0, MaxIdle: -1})
		c := mustGet(t, p, "app")
		p.SetLimits(-5, -5)
		if s := p.Stats(); s.Max != 1 || s.MaxIdle != 0 {
			t.Fatalf("limits %+v", s)
		}
		p.Put("app", c, true)
		wantStats(t, p, 0, 0, 0, 0)
	})
}

func TestMaxLifetime(t *testing.T) {
	p, d, clk := newTestPool(t, Options[string, *fakeConn]{Max: 2, MaxIdle: 2, MaxLifetime: time.Hour})

	old := mustGet(t, p, "app")
	p.Put("app", old, true)
	clk.Advance(59 * time.Minute)
	if c := mustGet(t, p, "app"); c != old {
		t.Fatalf("connection younger than MaxLifetime replaced")
	}
	clk.Advance(2 * time.Minute)
	// Put closes a connection past its lifetime...
	p.Put("app", old, true)
	if !old.isClosed() {
		t.Fatal("connection past MaxLifetime kept on Put")
	}
	wantStats(t, p, 0, 0, 0, 0)

	// ...and Get replaces an idle one that aged while idle.
	c := mustGet(t, p, "app")
	p.Put("app", c, true)
	clk.Advance(61 * time.Minute)
	fresh := mustGet(t, p, "app")
	if fresh == c || !c.isClosed() {
		t.Fatalf("aged idle connection reused")
	}
	if d.calls.Load() != 3 {
		t.Fatalf("%d dials, want 3", d.calls.Load())
	}
	wantStats(t, p, 1, 0, 1, 0)
	p.Put("app", fresh, true)
}

func TestValidateAfterIdleCheck(t *testing.T) {
	var validated []*fakeConn
	var bad atomic.Bool
	var mu sync.Mutex
	opts := Options[string, *fakeConn]{Max: 2, MaxIdle: 2, IdleCheckAfter: time.Minute,
		Validate: func(ctx context.Context, c *fakeConn) error {
			mu.Lock()
			defer mu.Unlock()
			validated = append(validated, c)
			if bad.Load() {
				return errors.New("server has gone away")
			}
			return nil
		}}
	p, _, clk := newTestPool(t, opts)
	calls := func() int { mu.Lock(); defer mu.Unlock(); return len(validated) }

	c := mustGet(t, p, "app")
	p.Put("app", c, true)
	clk.Advance(30 * time.Second)
	if got := mustGet(t, p, "app"); got != c || calls() != 0 {
		t.Fatalf("recently idle connection: got %v, %d validations", got, calls())
	}
	p.Put("app", c, true)
	clk.Advance(2 * time.Minute)
	if got := mustGet(t, p, "app"); got != c || calls() != 1 {
		t.Fatalf("stale idle connection: got %v, %d validations", got, calls())
	}
	p.Put("app", c, true)
	clk.Advance(2 * time.Minute)
	bad.Store(true)
	got := mustGet(t, p, "app")
	if got == c || !c.isClosed() || calls() != 2 {
		t.Fatalf("failed validation: got %v, old closed %v, %d validations", got, c.isClosed(), calls())
	}
	wantStats(t, p, 1, 0, 1, 0)
	p.Put("app", got, true)
}

func TestTakeIdle(t *testing.T) {
	p, _, _ := newTestPool(t, Options[string, *fakeConn]{Max: 3, MaxIdle: 3})
	a, b := mustGet(t, p, "app"), mustGet(t, p, "app")
	p.Put("app", a, true)
	p.Put("app", b, true)

	if p.TakeIdle("app", a, func(*fakeConn) bool { return false }) {
		t.Fatal("TakeIdle ignored ok() == false")
	}
	wantStats(t, p, 2, 2, 0, 0)
	if p.TakeIdle("other", a, func(*fakeConn) bool { return true }) {
		t.Fatal("TakeIdle took a connection under the wrong key")
	}
	if !p.TakeIdle("app", a, func(c *fakeConn) bool { return c == a }) {
		t.Fatal("TakeIdle refused an idle connection")
	}
	wantStats(t, p, 2, 1, 1, 0)
	if p.TakeIdle("app", a, func(*fakeConn) bool { return true }) {
		t.Fatal("TakeIdle took a borrowed connection")
	}
	// The one left idle is still served by Get.
	if c := mustGet(t, p, "app"); c != b {
		t.Fatalf("Get = %v, want %v", c, b)
	}
	p.Put("app", a, true)
	p.Put("app", b, true)
}

func TestTryGet(t *testing.T) {
	p, d, _ := newTestPool(t, Options[string, *fakeConn]{Max: 1, MaxIdle: 1})
	if _, ok := p.TryGet(t.Context(), "app"); ok {
		t.Fatal("TryGet on an empty pool")
	}
	if d.calls.Load() != 0 {
		t.Fatal("TryGet dialed")
	}
	c := mustGet(t, p, "app")
	p.Put("app", c, true)
	if got, ok := p.TryGet(t.Context(), "app"); !ok || got != c {
		t.Fatalf("TryGet = %v, %v", got, ok)
	}
	wantStats(t, p, 1, 0, 1, 0)
	p.Put("app", c, true)
}

func TestReap(t *testing.T) {
	p, _, clk := newTestPool(t, Options[string, *fakeConn]{Max: 4, MaxIdle: 4, MaxLifetime: time.Hour})
	a, b, c := mustGet(t, p, "app"), mustGet(t, p, "app"), mustGet(t, p, "other")
	p.Put("app", a, true)
	clk.Advance(10 * time.Minute)
	p.Put("app", b, true)
	p.Put("other", c, true)

	if n := p.Reap(15 * time.Minute); n != 0 {
		t.Fatalf("Reap closed %d fresh connections", n)
	}
	clk.Advance(6 * time.Minute)
	if n := p.Reap(15 * time.Minute); n != 1 || !a.isClosed() {
		t.Fatalf("Reap closed %d; the one idle 16 minutes closed: %v", n, a.isClosed())
	}
	wantStats(t, p, 2, 2, 0, 0)
	if n := p.Reap(0); n != 0 {
		t.Fatalf("Reap(0) closed %d connections within lifetime", n)
	}
	clk.Advance(time.Hour)
	if n := p.Reap(0); n != 2 {
		t.Fatalf("Reap(0) closed %d aged connections, want 2", n)
	}
	wantStats(t, p, 0, 0, 0, 0)
}

func TestReapWakesWaiter(t *testing.T) {
	p, _, clk := newTestPool(t, Options[string, *fakeConn]{Max: 2, MaxIdle: 2})
	a, b := mustGet(t, p, "app"), mustGet(t, p, "app")
	p.Put("app", a, true)
	// The pool is full with one idle: a waiter for another key evicts it
	// without waiting, so make the waiter wait on a pool with no idle.
	c := mustGet(t, p, "other")
	if !a.isClosed() {
		t.Fatal("idle connection not evicted for another key")
	}
	res := goGet(ctxTimeout(t, 10*time.Second), p, "third")
	testutil.Eventually(t, 10*time.Second, "a waiter", waiting(p, 1))
	p.Put("app", b, true) // traded for the waiter's slot
	r := <-res
	if r.err != nil || r.c.key != "third" {
		t.Fatalf("waiter: %v, %v", r.c, r.err)
	}
	clk.Advance(time.Hour)
	p.Put("other", c, true)
	p.Put("third", r.c, true)
	if n := p.Reap(time.Minute); n != 0 {
		t.Fatalf("Reap closed %d connections put back just now", n)
	}
	wantStats(t, p, 2, 2, 0, 0)
}

func TestCloseIdle(t *testing.T) {
	p, _, _ := newTestPool(t, Options[string, *fakeConn]{Max: 3, MaxIdle: 3})
	a, b, c := mustGet(t, p, "app"), mustGet(t, p, "app"), mustGet(t, p, "other")
	p.Put("app", a, true)
	p.Put("other", c, true)
	p.CloseIdle()
	if !a.isClosed() || !c.isClosed() || b.isClosed() {
		t.Fatalf("closed: a %v b %v c %v", a.isClosed(), b.isClosed(), c.isClosed())
	}
	wantStats(t, p, 1, 0, 1, 0)
	p.Put("app", b, true)
	wantStats(t, p, 1, 1, 0, 0)
}

func TestClose(t *testing.T) {
	p, d, _ := newTestPool(t, Options[string, *fakeConn]{Max: 2, MaxIdle: 2})
	idle, borrowed := mustGet(t, p, "app"), mustGet(t, p, "app")
	p.Put("app", idle, true)
	// Fill the pool so that the next Gets wait.
	filler := mustGet(t, p, "app")
	ctx := ctxTimeout(t, 10*time.Second)
	w1, w2 := goGet(ctx, p, "app"), goGet(ctx, p, "other")
	testutil.Eventually(t, 10*time.Second, "two waiters", waiting(p, 2))
	dials := d.calls.Load()

	p.Close()
	for _, w := range []<-chan getResult{w1, w2} {
		if r := <-w; !errors.Is(r.err, ErrClosed) {
			t.Errorf("waiter on a closed pool: %v, %v; want ErrClosed", r.c, r.err)
		}
	}
	if d.calls.Load() != dials {
		t.Errorf("%d dials after Close", d.calls.Load()-dials)
	}
	if _, err := p.Get(ctx, "app"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
	if _, ok := p.TryGet(ctx, "app"); ok {
		t.Fatal("TryGet after Close")
	}
	wantStats(t, p, 2, 0, 2, 0)
	p.Put("app", borrowed, true)
	p.Put("app", filler, true)
	if !borrowed.isClosed() || !filler.isClosed() {
		t.Fatal("connections returned to a closed pool stay open")
	}
	wantStats(t, p, 0, 0, 0, 0)
	if d.live.Load() != 0 {
		t.Fatalf("%d connections left open", d.live.Load())
	}
	p.Close() // twice is harmless
}

func TestWaiterTimeoutRacesHandoff(t *testing.T) {
	// Waiters whose deadline falls while connections are being handed over
	// must neither lose a connection nor leave it counted as borrowed.
	p, d, _ := newTestPool(t, Options[string, *fakeConn]{Max: 2, MaxIdle: 2})
	var wg sync.WaitGroup
	for w := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				key := []string{"a", "b"}[(w+i)%2]
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%3)*100*time.Microsecond)
				c, err := p.Get(ctx, key)
				cancel()
				if err != nil {
					if !errors.Is(err, ErrBorrowTimeout) && !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("Get: %v", err)
					}
					continue
				}
				p.Put(key, c, true)
			}
		}()
	}
	wg.Wait()
	s := p.Stats()
	if s.Borrowed != 0 || s.Waiting != 0 || int64(s.Open) != d.live.Load() {
		t.Fatalf("after the run: %+v, %d live", s, d.live.Load())
	}
	checkInvariants(t, p)
}

func TestAliveCheckedOnEveryLend(t *testing.T) {
	var dead sync.Map
	p, _, _ := newTestPool(t, Options[string, *fakeConn]{Max: 2, MaxIdle: 2,
		Alive: func(c *fakeConn) bool { _, gone := dead.Load(c); return !gone }})
	a := mustGet(t, p, "app")
	p.Put("app", a, true)
	if got := mustGet(t, p, "app"); got != a {
		t.Fatalf("live idle connection not reused")
	}
	p.Put("app", a, true)
	dead.Store(a, true)
	got := mustGet(t, p, "app")
	if got == a || !a.isClosed() {
		t.Fatalf("dead idle connection lent: got %v, closed %v", got, a.isClosed())
	}
	wantStats(t, p, 1, 0, 1, 0)
	p.Put("app", got, true)
	dead.Store(got, true)
	if _, ok := p.TryGet(t.Context(), "app"); ok {
		t.Fatal("TryGet lent a dead connection")
	}
	wantStats(t, p, 0, 0, 0, 0)
}
