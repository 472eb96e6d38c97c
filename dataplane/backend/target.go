package backend

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dbproxy/dbproxy/dataplane/config"
	"github.com/dbproxy/dbproxy/dataplane/metrics"
	"github.com/dbproxy/dbproxy/dataplane/mysql"
	"github.com/dbproxy/dbproxy/dataplane/pool"
	"github.com/dbproxy/dbproxy/internal/vocab"
)

// DefaultCollation is the collation backend connections log in with
// (utf8mb4_general_ci); clients' own character sets are applied per session.
const DefaultCollation = 45

// TargetOptions configure a Target.
type TargetOptions struct {
	Proxy  string
	Target config.Target
	Pool   config.PoolConfig
	// Password returns the database password of a user (from the proxy's
	// secrets).
	Password func(user string) (string, bool)
	// MonitorUser logs in for health checks.
	MonitorUser string
	// MonitorInterval is the health check period (default 1s).
	MonitorInterval time.Duration
	// DiscoveryInterval is the health check period while the proxy has
	// no usable writer (see Router): a promoted replica is then found
	// within about this long instead of within MonitorInterval (default
	// DefaultDiscoveryInterval).
	DiscoveryInterval time.Duration
	// DialTimeout bounds one connection attempt (default 5s).
	DialTimeout time.Duration
	Logger      hclog.Logger
	Metrics     *metrics.Metrics
	Buffers     *mysql.BufferPool
	// Dialer opens TCP connections (tests inject one); nil uses net.Dialer.
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)
	// OnChange is called after the target's health or role changed.
	OnChange func()
}

// DefaultDiscoveryInterval is the default of TargetOptions.DiscoveryInterval:
// short enough that writes resume well within 100 ms of a promotion, long
// enough that a dead target is not dialled in a tight loop.
const DefaultDiscoveryInterval = 50 * time.Millisecond

// ErrWriterConflict marks the error a target fenced by a writer conflict
// returns from Get and TryGet: more than one target of the proxy accepts
// writes, so none of them gets any (see Router).
var ErrWriterConflict = errors.New("writer conflict")

// Health is the monitor's view of a target.
type Health struct {
	Healthy        bool
	ReadOnly       bool
	MaxConnections int
	Version        string
	LastError      string
	CheckedAt      time.Time
}

// Target is one database server behind a proxy: its connection pool and
// its health monitor.
type Target struct {
	opts TargetOptions
	log  hclog.Logger
	// Pool holds the target's database connections.
	Pool *pool.Pool[Key, *Conn]
	// Pinned counts borrowed connections pinned to one client session.
	Pinned atomic.Int64

	recheck chan struct{}
	stop    chan struct{}
	done    chan struct{}

	// checks counts finished health checks (for metrics and tests).
	checks atomic.Uint64
	// discovering switches the monitor to DiscoveryInterval; the router
	// sets it while the proxy has no usable writer.
	discovering atomic.Bool
	// fence is set while this target is one of several writers; Get and
	// TryGet then refuse with its error. An atomic, not t.mu: TryGet is
	// on every statement's path.
	fence atomic.Pointer[fence]

	mu struct {
		sync.Mutex
		health     Health
		baseline   map[string]string
		collations map[byte][2]string
	}
}

// NewTarget returns a target; Start begins monitoring.
func NewTarget(opts TargetOptions) *Target {
	if opts.MonitorInterval == 0 {
		opts.MonitorInterval = time.Second
	}
	if opts.DiscoveryInterval == 0 {
		opts.DiscoveryInterval = DefaultDiscoveryInterval
	}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	t := &Target{
		opts:    opts,
		log:     opts.Logger.With("target", opts.Target.Name),
		recheck: make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	t.Pool = pool.New(pool.Options[Key, *Conn]{
		Dial:     t.dial,
		Validate: func(ctx context.Context, c *Conn) error { return c.Ping(ctx) },
		Alive:    (*Conn).Alive,
		// A connection handed back moments ago is alive; the monitor
		// clears the pool when a server goes away.
		AliveCheckAfter: time.Millisecond,
		Max:             10,
		MaxIdle:         5,
		MaxLifetime:     opts.Pool.MaxLifetime.D(),
		IdleCheckAfter:  opts.Pool.IdleCheckAfter.D(),
	})
	return t
}

// Name is the target's name.
func (t *Target) Name() string { return t.opts.Target.Name }

// Config is the target's configuration.
func (t *Target) Config() config.Target { return t.opts.Target }

// Health returns the last health check result.
func (t *Target) Health() Health {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mu.health
}

// Role is the target's effective role: WRITER or READER.
func (t *Target) Role() string {
	switch t.opts.Target.Role {
	case vocab.RoleWriter, vocab.RoleReader:
		return t.opts.Target.Role
	}
	if t.Health().ReadOnly {
		return vocab.RoleReader
	}
	return vocab.RoleWriter
}

// Baseline returns the session variables every new connection starts with
// (after init_query), or nil before the first connection.
func (t *Target) Baseline() map[string]string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mu.baseline
}

// Collation returns the character set and collation names of a collation
// id, as the target knows them.
func (t *Target) Collation(id byte) (charset, collation string, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	v, ok := t.mu.collations[id]
	return v[0], v[1], ok
}

// Start runs the health monitor until Close.
func (t *Target) Start() {
	go t.monitor()
}

// Recheck asks the monitor for an immediate health check (after a
// connection error, say).
func (t *Target) Recheck() {
	select {
	case t.recheck <- struct{}{}:
	default:
	}
}

// StatementFailed is told the error code of every statement that failed on
// the target. A writer that refuses a statement because of read_only was
// demoted: checking it at once, rather than at the next regular check,
// starts writer discovery while the promotion of another target may
// already be under way. Other errors say nothing about the role.
func (t *Target) StatementFailed(code uint16) {
	if code == mysql.EROptionPreventsStatement && t.Role() == vocab.RoleWriter {
		t.Recheck()
	}
}

// Checks returns how many health checks have finished.
func (t *Target) Checks() uint64 { return t.checks.Load() }

// Discovering reports whether the monitor checks at DiscoveryInterval
// because the proxy has no usable writer.
func (t *Target) Discovering() bool { return t.discovering.Load() }

// setDiscovering switches writer discovery on or off. Switching it on
// checks at once: the old cadence may be a second away.
func (t *Target) setDiscovering(on bool) {
	if t.discovering.Swap(on) != on && on {
		t.Recheck()
	}
}

// fence is why a target gets no writes.
type fence struct {
	reason string
	err    error
}

// Conflict returns why the target is fenced as one of several writers, or
// "" when it is not.
func (t *Target) Conflict() string {
	if f := t.fence.Load(); f != nil {
		return f.reason
	}
	return ""
}

// setFence fences the target (nil lifts the fence). Idle connections go at
// once: a session could otherwise take its previous connection back
// without asking the router.
func (t *Target) setFence(f *fence) {
	if old := t.fence.Swap(f); old == nil && f != nil {
		t.Pool.CloseIdle()
	}
}

// interval is the time until the monitor's next check.
func (t *Target) interval() time.Duration {
	if t.discovering.Load() {
		return min(t.opts.DiscoveryInterval, t.opts.MonitorInterval)
	}
	return t.opts.MonitorInterval
}

// Close stops the monitor and closes the pool.
func (t *Target) Close() {
	close(t.stop)
	<-t.done
	t.Pool.Close()
}

func (t *Target) monitor() {
	defer close(t.done)
	var mc *Conn
	defer func() {
		if mc != nil {
			mc.Close()
		}
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-timer.C:
		case <-t.recheck:
		}
		var err error
		mc, err = t.check(mc)
		if err != nil && mc != nil {
			mc.Close()
			mc = nil
		}
		// Idle connections past their lifetime go now, not at next borrow.
		t.Pool.Reap(0)
		timer.Reset(t.interval())
	}
}

// check runs one health check on the monitor connection (dialing it when
// needed) and records the result.
func (t *Target) check(mc *Conn) (*Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), t.opts.DialTimeout)
	defer cancel()
	var err error
	if mc == nil {
		mc, err = t.login(ctx, Key{User: t.opts.MonitorUser})
	}
	var rows [][]*string
	if err == nil {
		_ = mc.NetConn().SetDeadline(time.Now().Add(t.opts.DialTimeout))
		rows, err = mc.Query("SELECT @@global.read_only, @@global.max_connections, @@version")
		_ = mc.NetConn().SetDeadline(time.Time{})
		if err == nil && (len(rows) != 1 || len(rows[0]) != 3 || rows[0][0] == nil || rows[0][1] == nil || rows[0][2] == nil) {
			err = errors.New("health query returned an unexpected result")
		}
	}
	now := time.Now()
	t.mu.Lock()
	prev := t.mu.health
	h := Health{CheckedAt: now}
	if err != nil {
		h.LastError = err.Error()
		h.MaxConnections = prev.MaxConnections
		h.ReadOnly = prev.ReadOnly
		h.Version = prev.Version
	} else {
		h.Healthy = true
		h.ReadOnly = *rows[0][0] == "1" || *rows[0][0] == "ON"
		h.MaxConnections, _ = strconv.Atoi(*rows[0][1])
		h.Version = *rows[0][2]
	}
	t.mu.health = h
	t.mu.Unlock()
	t.checks.Add(1)
	if t.opts.Metrics != nil {
		t.opts.Metrics.HealthChecks.WithLabelValues(t.opts.Proxy, t.Name()).Inc()
	}
	if h.MaxConnections > 0 && h.MaxConnections != prev.MaxConnections {
		maxOpen := max(1, h.MaxConnections*t.opts.Pool.MaxConnectionsPercent/100)
		maxIdle := h.MaxConnections * t.opts.Pool.MaxIdleConnectionsPercent / 100
		t.Pool.SetLimits(maxOpen, maxIdle)
	}
	if t.opts.Metrics != nil {
		for _, role := range []string{vocab.RoleWriter, vocab.RoleReader} {
			v := 0.0
			if h.Healthy && t.Role() == role {
				v = 1
			}
			t.opts.Metrics.TargetHealthy.WithLabelValues(t.opts.Proxy, t.Name(), role).Set(v)
		}
	}
	if h.Healthy != prev.Healthy || h.ReadOnly != prev.ReadOnly {
		if h.Healthy {
			t.log.Info("target healthy", "read_only", h.ReadOnly, "max_connections", h.MaxConnections)
		} else {
			t.log.Warn("target unhealthy", "error", h.LastError)
		}
		if t.opts.OnChange != nil {
			t.opts.OnChange()
		}
	}
	if !h.Healthy {
		t.Pool.CloseIdle()
	}
	return mc, err
}

// login opens and authenticates a connection without session setup.
func (t *Target) login(ctx context.Context, key Key) (*Conn, error) {
	pw, ok := t.opts.Password(key.User)
	if !ok {
		return nil, fmt.Errorf("no credentials for database user %q", key.User)
	}
	caps := BaseCaps | key.Flavor
	if t.opts.Pool.DisableSessionTracking {
		caps &^= mysql.ClientSessionTrack
	}
	mc, info, err := mysql.Dial(ctx, t.opts.Target.Addr(), mysql.DialConfig{
		User: key.User, Password: pw, Caps: caps, Collation: DefaultCollation,
		Dialer: t.opts.Dialer,
	}, t.opts.Buffers)
	if err != nil {
		return nil, err
	}
	return &Conn{Conn: mc, Info: info, Key: key, Target: t, Vars: map[string]string{},
		Stmts: map[string][]*Stmt{}, MultiStatements: true, Status: info.Status}, nil
}

// dial opens a pooled connection: log in, turn on session tracking, run
// init_query, and record the session variables it starts with.
func (t *Target) dial(ctx context.Context, key Key) (*Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, t.opts.DialTimeout)
	defer cancel()
	c, err := t.login(ctx, key)
	if err == nil {
		if dl, ok := ctx.Deadline(); ok {
			_ = c.NetConn().SetDeadline(dl)
		}
		err = t.initSession(c)
		_ = c.NetConn().SetDeadline(time.Time{})
		if err != nil {
			c.Close()
		}
	}
	if t.opts.Metrics != nil {
		if err != nil {
			t.opts.Metrics.DatabaseSetupFailures.WithLabelValues(t.opts.Proxy, t.Name()).Inc()
		} else {
			t.opts.Metrics.DatabaseConnectionsTotal.WithLabelValues(t.opts.Proxy, t.Name()).Inc()
		}
	}
	if err != nil {
		t.Recheck()
		return nil, fmt.Errorf("target %s: %w", t.Name(), err)
	}
	return c, nil
}

// initSession prepares a fresh (or reset) connection.
func (t *Target) initSession(c *Conn) error {
	c.Tracking = c.Info.Caps&mysql.ClientSessionTrack != 0
	if !c.Tracking {
		// Nothing to turn on: the server reports no session state.
	} else if _, err := c.Exec("SET SESSION session_track_system_variables='*', session_track_schema=ON, session_track_state_change=ON"); err != nil {
		c.Tracking = false
		// A server without session tracking still works: every state
		// change then pins (see proxy).
		var se *mysql.SQLError
		if !errors.As(err, &se) {
			return fmt.Errorf("enable session tracking: %w", err)
		}
		t.log.Warn("session tracking unavailable; sessions that change state will pin", "error", se.Message)
	}
	if q := t.opts.Pool.InitQuery; q != "" {
		if _, err := c.Exec(q); err != nil {
			return fmt.Errorf("init_query: %w", err)
		}
	}
	// sql_mode too: a prepared statement is parsed under it and the
	// character set (see PrepareIn), so Vars must know them also when
	// session tracking reports nothing.
	rows, err := c.Query("SELECT @@character_set_client, @@character_set_connection, @@character_set_results, @@collation_connection, @@session.sql_mode, DATABASE()")
	if err != nil {
		return fmt.Errorf("read session character set: %w", err)
	}
	if len(rows) == 1 && len(rows[0]) == 6 {
		for i, name := range []string{"character_set_client", "character_set_connection", "character_set_results", "collation_connection", "sql_mode"} {
			if v := rows[0][i]; v != nil {
				c.Vars[name] = *v
			} else {
				c.Vars[name] = "NULL"
			}
		}
		// Whatever the SETs above reported, these are known now.
		c.ConnCharsetUnknown = false
		if rows[0][5] != nil {
			c.Schema = *rows[0][5]
		}
	}
	c.Status &^= mysql.StatusInTrans
	t.mu.Lock()
	needCollations := t.mu.collations == nil
	if t.mu.baseline == nil {
		t.mu.baseline = maps.Clone(c.Vars)
	}
	t.mu.Unlock()
	if needCollations {
		rows, err := c.Query("SELECT ID, CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLLATIONS WHERE ID < 256")
		if err != nil {
			return fmt.Errorf("read collations: %w", err)
		}
		m := map[byte][2]string{}
		for _, r := range rows {
			if len(r) == 3 && r[0] != nil && r[1] != nil && r[2] != nil {
				id, err := strconv.Atoi(*r[0])
				if err == nil && id > 0 && id < 256 {
					m[byte(id)] = [2]string{*r[1], *r[2]}
				}
			}
		}
		t.mu.Lock()
		t.mu.collations = m
		t.mu.Unlock()
	}
	return nil
}

// TryGet borrows an idle connection without waiting.
func (t *Target) TryGet(key Key) (*Conn, bool) {
	if t.fence.Load() != nil {
		return nil, false
	}
	return t.Pool.TryGet(context.Background(), key)
}

// Get borrows a connection, recording borrow metrics. A fenced target
// (see Router) refuses with an error that is both ErrWriterConflict and a
// *mysql.SQLError for the client.
func (t *Target) Get(ctx context.Context, key Key) (*Conn, error) {
	if f := t.fence.Load(); f != nil {
		return nil, f.err
	}
	start := time.Now()
	c, err := t.Pool.Get(ctx, key)
	if t.opts.Metrics != nil {
		t.opts.Metrics.BorrowWait.WithLabelValues(t.opts.Proxy, t.Name()).Observe(time.Since(start).Seconds())
		if errors.Is(err, pool.ErrBorrowTimeout) {
			t.opts.Metrics.BorrowTimeouts.WithLabelValues(t.opts.Proxy, t.Name()).Inc()
		}
	}
	return c, err
}

// Put returns a connection. A connection that carried unmovable state is
// reset and re-initialised first; a broken one, or one in an unexpected
// state, is closed.
func (t *Target) Put(c *Conn) {
	if c.Status&mysql.StatusInTrans != 0 {
		// An open transaction must not reach another client: the reset
		// below rolls it back.
		c.Dirty = true
	}
	reusable := !c.Broken
	if reusable && t.fence.Load() != nil {
		// A fenced writer keeps no idle connections: a session may take
		// its previous connection back without asking the router.
		reusable = false
	}
	if reusable && c.Dirty {
		_ = c.NetConn().SetDeadline(time.Now().Add(t.opts.DialTimeout))
		err := c.ResetConnection()
		if err == nil {
			c.Vars = map[string]string{}
			c.Schema = ""
			err = t.initSession(c)
		}
		_ = c.NetConn().SetDeadline(time.Time{})
		if t.opts.Metrics != nil {
			t.opts.Metrics.DatabaseResets.WithLabelValues(t.opts.Proxy, t.Name()).Inc()
		}
		if err != nil {
			t.log.Debug("reset of a database connection failed; closing it", "error", err)
			reusable = false
		}
	}
	if c.Broken {
		t.Recheck()
	}
	t.Pool.Put(c.Key, c, reusable)
}
