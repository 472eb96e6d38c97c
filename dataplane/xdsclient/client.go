// Package xdsclient is a data-plane node's own ADS client: one
// state-of-the-world stream to the control plane that subscribes to the
// four dbproxy resource types, hands every complete resource set to the
// node in one call (atomic apply), ACKs or NACKs per the xDS protocol,
// reconnects with jittered backoff, and keeps the last good set on disk,
// encrypted, so that a node restarted while the control plane is away
// still serves its last configuration.
package xdsclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/dbproxy/dbproxy/internal/seal"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// ApplyFunc installs a complete resource set (keyed by type URL, all four
// types at version). An error makes the client NACK the set; the node must
// then keep its previous configuration running.
type ApplyFunc func(ctx context.Context, version string, res map[string][]*anypb.Any) error

// Options configure a Client. Target, Node.ID, Token and Apply are
// required; CacheKey is required when CacheFile is set.
type Options struct {
	// Target is host:port of the control plane's gRPC server.
	Target string
	// TLS secures the connection; nil means insecure (tests only).
	TLS *tls.Config
	// Node is this node's identity, sent on every stream.
	Node xdsapi.NodeInfo
	// Token returns a fresh node token; it is called once per stream.
	Token func(ctx context.Context) (string, error)
	// Apply installs a resource set.
	Apply ApplyFunc
	// CacheFile keeps the last good set; "" means no cache.
	CacheFile string
	// CacheKey is the 32-byte AES-256-GCM key the cache is sealed with.
	CacheKey []byte
	// Logger receives the client's logs; nil discards them.
	Logger hclog.Logger
	// Backoff paces reconnects.
	Backoff Backoff
	// MaxStreamAge ends a stream and opens a new one, with a fresh token,
	// before the token the stream was opened with expires (default 10m;
	// node tokens live 15m and the server checks them again at every
	// commit).
	MaxStreamAge time.Duration
	// Now is the clock for Status; nil means time.Now.
	Now func() time.Time
}

// Backoff is capped exponential backoff with full jitter: before attempt n
// (counting from 0 after the last stream that got a response) the client
// waits a random duration in [0, min(Max, Initial·2ⁿ)].
type Backoff struct {
	// Initial is the first cap; 0 means 250ms.
	Initial time.Duration
	// Max is the largest cap; 0 means 30s.
	Max time.Duration
	// Rand returns a uniform random number in [0, n); nil uses
	// math/rand/v2.
	Rand func(n int64) int64
	// After returns a channel that receives once d has passed; nil uses a
	// timer.
	After func(d time.Duration) <-chan time.Time
}

// Default backoff bounds.
const (
	DefaultBackoffInitial = 250 * time.Millisecond
	DefaultBackoffMax     = 30 * time.Second
)

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = DefaultBackoffInitial
	}
	if b.Max <= 0 {
		b.Max = DefaultBackoffMax
	}
	if b.Max < b.Initial {
		b.Max = b.Initial
	}
	if b.Rand == nil {
		b.Rand = rand.Int64N
	}
	return b
}

// Delay returns the wait before attempt n (0-based).
func (b Backoff) Delay(n int) time.Duration {
	b = b.withDefaults()
	limit := b.Max
	if n < 62 {
		if d := b.Initial << n; d > 0 && d < limit {
			limit = d
		}
	}
	return time.Duration(b.Rand(int64(limit) + 1))
}

// Wait blocks for d (through After when set) or until ctx ends, and
// returns ctx.Err() when ctx ends first.
func (b Backoff) Wait(ctx context.Context, d time.Duration) error {
	if b.After != nil {
		select {
		case <-b.After(d):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Status is a snapshot of the client's state.
type Status struct {
	// Connected reports whether a stream is open and has received a
	// response.
	Connected bool
	// Version is the version of the configuration applied (from the
	// control plane or the cache); "" before any.
	Version string
	// LastError is the latest stream or apply error; it is cleared when a
	// set is accepted.
	LastError string
	// LastApplied is when a set was last applied.
	LastApplied time.Time
}

// ErrRunning means Run was called while another Run of the same client was
// active.
var ErrRunning = errors.New("xdsclient: already running")

// Client is the node's ADS client. Create it with New and call Run once.
type Client struct {
	opts    Options
	log     hclog.Logger
	backoff Backoff
	sealer  *seal.Sealer
	running atomic.Bool

	// Owned by the Run goroutine.
	applied    string
	hasApplied bool
	// rejectedSince is set when Apply refused a set after the running
	// one was applied. Apply may have acted on part of a refused set
	// (the node drops the connect keys it revokes), so the running
	// version is applied again when the control plane sends it back.
	rejectedSince bool

	mu struct {
		sync.Mutex
		status Status
	}
}

// New checks opts and returns a Client; it does not connect.
func New(opts Options) (*Client, error) {
	switch {
	case opts.Target == "":
		return nil, errors.New("xdsclient: Options.Target is required")
	case opts.Node.ID == "":
		return nil, errors.New("xdsclient: Options.Node.ID is required")
	case opts.Token == nil:
		return nil, errors.New("xdsclient: Options.Token is required")
	case opts.Apply == nil:
		return nil, errors.New("xdsclient: Options.Apply is required")
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &Client{opts: opts, log: opts.Logger, backoff: opts.Backoff.withDefaults()}
	if opts.CacheFile != "" {
		s, err := seal.New(opts.CacheKey)
		if err != nil {
			return nil, fmt.Errorf("xdsclient: cache key: %w", err)
		}
		c.sealer = s
	}
	return c, nil
}

// Status returns the client's current state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.status
}

func (c *Client) setStatus(f func(*Status)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f(&c.mu.status)
}

// Run applies the cached config first (when present and decryptable; a
// corrupt cache is logged and ignored), then connects, reconnecting with
// backoff until ctx ends. It returns ctx.Err().
func (c *Client) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer c.running.Store(false)

	c.applyCache(ctx)
	err := c.backoff.Reconnect(ctx, c.log, "control plane stream", c.session, func(err error) {
		c.setStatus(func(s *Status) { s.Connected = false })
		c.reportStreamError(err)
	})
	c.setStatus(func(s *Status) { s.Connected = false })
	return err
}

// ErrStreamRenewal ends a stream that reached its maximum age, so that the
// next one starts with a fresh token.
var ErrStreamRenewal = errors.New("stream reached its maximum age")

// DefaultMaxStreamAge is the default of Options.MaxStreamAge, and of the
// health reporter's.
const DefaultMaxStreamAge = 10 * time.Minute

// Reconnect runs session until ctx ends and returns ctx.Err(). A session
// that ends with ErrStreamRenewal is a planned reconnect: the next starts
// at once, and nothing is reported. After any other end, ended gets the
// session's error and the next session waits its backoff delay, which
// starts over after a session that received something (got).
func (b Backoff) Reconnect(ctx context.Context, log hclog.Logger, what string, session func(context.Context) (got bool, err error), ended func(error)) error {
	attempt := 0
	for {
		got, err := session(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrStreamRenewal) {
			log.Debug("renewing the " + what + " before its token expires")
			attempt = 0
			continue
		}
		ended(err)
		if got {
			attempt = 0
		}
		d := b.Delay(attempt)
		attempt++
		log.Debug("reconnecting the "+what, "in", d, "attempt", attempt)
		if err := b.Wait(ctx, d); err != nil {
			return err
		}
	}
}

// reportStreamError logs why a stream ended and records it in Status.
func (c *Client) reportStreamError(err error) {
	msg := StreamEnd{Closed: "stream closed by the control plane", Ended: "control plane stream ended",
		Refused: "control plane refused this node"}.Log(c.log, c.opts.Target, err)
	c.setStatus(func(s *Status) { s.LastError = msg })
}

// StreamEnd words the end of a stream to the control plane, for the ADS
// and the HDS clients.
type StreamEnd struct {
	// Closed is the error of a stream the control plane closed without
	// one; Ended the log message of any other end; Refused the prefix of
	// the message when the control plane refused the node's credentials.
	Closed, Ended, Refused string
}

// Log logs why a stream ended, a refusal at Error and anything else at
// Warn, and returns the message to record as the last error.
func (e StreamEnd) Log(log hclog.Logger, target string, err error) string {
	if err == nil {
		err = errors.New(e.Closed)
	}
	msg := err.Error()
	st, ok := status.FromError(err)
	switch {
	case !ok:
		log.Warn(e.Ended, "error", msg, "target", target)
	case st.Code() == codes.Unauthenticated || st.Code() == codes.PermissionDenied:
		msg = e.Refused + ": " + st.Message()
		log.Error(msg, "code", st.Code().String(), "target", target)
	default:
		log.Warn(e.Ended, "code", st.Code().String(), "error", st.Message(), "target", target)
	}
	return msg
}

// apply calls Apply and, on success, records the set as the running one.
func (c *Client) apply(ctx context.Context, version string, res map[string][]*anypb.Any) error {
	if err := c.opts.Apply(ctx, version, res); err != nil {
		c.rejectedSince = true
		return err
	}
	c.applied, c.hasApplied, c.rejectedSince = version, true, false
	now := c.opts.Now()
	c.setStatus(func(s *Status) {
		s.Version = version
		s.LastApplied = now
	})
	return nil
}
