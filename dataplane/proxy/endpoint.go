// Package proxy serves client connections on a proxy endpoint: it logs
// clients in, then relays their commands to pooled database connections,
// multiplexing at transaction boundaries, restoring tracked session state on
// whichever connection it borrows and pinning clients whose state cannot
// move.
package proxy

import (
	"context"
	"errors"
	"hash/maphash"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dbproxy/dbproxy/dataplane/backend"
	"github.com/dbproxy/dbproxy/dataplane/config"
	"github.com/dbproxy/dbproxy/dataplane/metrics"
	"github.com/dbproxy/dbproxy/dataplane/mysql"
)

// ClientCaps are the capabilities offered to clients. Compression is not
// offered. CLIENT_LONG_PASSWORD (CLIENT_MYSQL) set tells MariaDB clients not
// to use MariaDB extended capabilities.
const ClientCaps = mysql.ClientLongPassword | mysql.ClientFoundRows | mysql.ClientLongFlag |
	mysql.ClientConnectWithDB | mysql.ClientNoSchema | mysql.ClientODBC | mysql.ClientLocalFiles |
	mysql.ClientIgnoreSpace | mysql.ClientProtocol41 | mysql.ClientInteractive | mysql.ClientIgnoreSigpipe |
	mysql.ClientTransactions | mysql.ClientSecureConnection | mysql.ClientMultiStatements |
	mysql.ClientMultiResults | mysql.ClientPSMultiResults | mysql.ClientPluginAuth | mysql.ClientConnectAttrs |
	mysql.ClientPluginAuthLenencClientData | mysql.ClientSessionTrack | mysql.ClientDeprecateEOF |
	mysql.ClientCanHandleExpiredPasswords

// Limits is shared by every endpoint of one proxy.
type Limits struct {
	// MaxClients bounds the proxy's client connections.
	MaxClients int64
	clients    atomic.Int64
}

// Options configure an Endpoint.
type Options struct {
	Proxy    config.Proxy
	Endpoint config.Endpoint
	Router   *backend.Router
	Limits   *Limits
	// Server drives the client handshake (TLS, credentials).
	Server *mysql.ServerConfig
	// Version returns the server version announced to clients.
	Version          func() string
	HandshakeTimeout time.Duration
	MaxPacket        int
	Logger           hclog.Logger
	Metrics          *metrics.Metrics
	Buffers          *mysql.BufferPool
	// IDs numbers client connections node-wide.
	IDs *atomic.Uint64
}

// Endpoint accepts and serves the clients of one proxy endpoint.
type Endpoint struct {
	opts Options
	log  hclog.Logger

	wg sync.WaitGroup
	// closing ends when the endpoint closes: sessions waiting for a
	// database connection stop waiting then instead of at the borrow
	// timeout, so that Close does not hang.
	closing     context.Context
	cancelWaits context.CancelFunc
	m           *endpointMetrics
	seed        maphash.Seed
	stopSweep   chan struct{}
	stopOnce    sync.Once
	// readOnly holds variables the server refused to set (read-only ones
	// that session tracking still reports); they are not restored.
	readOnly sync.Map
	mu       struct {
		sync.Mutex
		ln       net.Listener
		sessions map[*clientConn]struct{}
		closed   bool
		// draining is set by Drain: a Serve that starts later does not
		// accept.
		draining bool
	}
}

// NewEndpoint returns an endpoint; call Serve.
func NewEndpoint(opts Options) *Endpoint {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.HandshakeTimeout == 0 {
		opts.HandshakeTimeout = config.DefaultHandshakeTimeout
	}
	if opts.MaxPacket == 0 {
		opts.MaxPacket = config.DefaultMaxPacketSize
	}
	e := &Endpoint{opts: opts, log: opts.Logger.With("proxy", opts.Proxy.Name, "endpoint", opts.Endpoint.Name),
		stopSweep: make(chan struct{}), seed: maphash.MakeSeed()}
	e.closing, e.cancelWaits = context.WithCancel(context.Background())
	e.mu.sessions = map[*clientConn]struct{}{}
	if m := opts.Metrics; m != nil {
		pn, en := opts.Proxy.Name, opts.Endpoint.Name
		e.m = &endpointMetrics{
			queries: m.Queries.WithLabelValues(pn, en),
			errs:    m.QueryErrors.WithLabelValues(pn, en),
			latency: m.QueryDuration.WithLabelValues(pn, en),
		}
		for i, tls := range []string{"false", "true"} {
			e.m.open[i] = m.ClientConnections.WithLabelValues(pn, en, tls)
			e.m.total[i] = m.ClientConnectionsTotal.WithLabelValues(pn, en, tls)
		}
	}
	return e
}

// endpointMetrics are the endpoint's collectors with their labels bound,
// so that a connection looks nothing up. Index 0 is plain, 1 TLS.
type endpointMetrics struct {
	queries, errs prometheus.Counter
	latency       prometheus.Observer
	open          [2]prometheus.Gauge
	total         [2]prometheus.Counter
}

// Serve accepts connections on ln until Close or Drain; it then returns
// nil.
func (e *Endpoint) Serve(ln net.Listener) error {
	e.mu.Lock()
	if e.mu.closed || e.mu.draining {
		// Drained or closed before Serve started: the listener is
		// this endpoint's to close.
		e.mu.Unlock()
		ln.Close()
		return nil
	}
	e.mu.ln = ln
	e.mu.Unlock()
	if idle := e.opts.Proxy.IdleClientTimeout.D(); idle > 0 {
		go e.sweep(idle)
	}
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				e.log.Warn("accept failed; retrying", "error", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			e.log.Warn("accept failed; retrying", "error", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		delay = 0
		// Add under the lock that Close and Drain take before they
		// Wait, so that no Add races with a Wait that has begun.
		e.mu.Lock()
		if e.mu.closed || e.mu.draining {
			e.mu.Unlock()
			nc.Close()
			return nil
		}
		e.wg.Add(1)
		e.mu.Unlock()
		go e.handle(nc)
	}
}

// sweep disconnects clients that waited for a command longer than idle:
// it sets a past read deadline, and the connection's read reports the
// timeout to the client. It runs until the endpoint is closed.
func (e *Endpoint) sweep(idle time.Duration) {
	period := min(max(idle/4, 10*time.Millisecond), time.Second)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-e.stopSweep:
			return
		case now := <-t.C:
			cutoff := now.Add(-idle).UnixNano()
			e.mu.Lock()
			for s := range e.mu.sessions {
				if s.waiting.Load() && s.idleSince.Load() < cutoff {
					s.expire(now)
				}
			}
			e.mu.Unlock()
		}
	}
}

// Clients returns the number of open client connections.
func (e *Endpoint) Clients() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.mu.sessions)
}

// Close stops accepting and closes every client connection.
func (e *Endpoint) Close() {
	e.mu.Lock()
	e.mu.closed = true
	if e.mu.ln != nil {
		e.mu.ln.Close()
	}
	for s := range e.mu.sessions {
		s.raw.Close()
	}
	e.mu.Unlock()
	e.cancelWaits()
	e.wg.Wait()
	e.stopOnce.Do(func() { close(e.stopSweep) })
}

// Drain stops accepting, lets clients finish until ctx ends, then closes
// the rest.
func (e *Endpoint) Drain(ctx context.Context) {
	e.mu.Lock()
	e.mu.draining = true
	if e.mu.ln != nil {
		e.mu.ln.Close()
	}
	e.mu.Unlock()
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	select {
	case <-done:
		e.stopOnce.Do(func() { close(e.stopSweep) })
	case <-ctx.Done():
		e.Close()
	}
}

func (e *Endpoint) handle(nc net.Conn) {
	defer e.wg.Done()
	// Go turns on TCP_NODELAY for accepted connections already.
	lim := e.opts.Limits
	if lim != nil && lim.clients.Add(1) > lim.MaxClients {
		lim.clients.Add(-1)
		c := mysql.NewConn(nc, e.opts.Buffers)
		_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
		_ = c.WritePacket(mysql.AppendErr(nil, mysql.NewSQLError(mysql.ERConCountError, "Too many connections")))
		_ = c.Flush()
		c.Close()
		e.setupFailure("too_many_connections")
		return
	}
	if lim != nil {
		defer lim.clients.Add(-1)
	}
	s := newSession(e, nc)
	e.mu.Lock()
	if e.mu.closed {
		e.mu.Unlock()
		s.c.Close()
		return
	}
	e.mu.sessions[s] = struct{}{}
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.mu.sessions, s)
		e.mu.Unlock()
	}()
	s.serve()
}

func (e *Endpoint) setupFailure(reason string) {
	if e.opts.Metrics != nil {
		e.opts.Metrics.ClientSetupFailures.WithLabelValues(e.opts.Proxy.Name, e.opts.Endpoint.Name, reason).Inc()
	}
}

func (e *Endpoint) readOnlyVar(name string) bool {
	_, ok := e.readOnly.Load(name)
	return ok
}

func (e *Endpoint) addReadOnlyVar(name string) {
	e.log.Debug("not restoring read-only session variable", "name", name)
	e.readOnly.Store(name, true)
}
