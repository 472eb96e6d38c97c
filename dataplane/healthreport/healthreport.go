// Package healthreport sends a data-plane node's view of its database
// targets to the control plane over Envoy's Health Discovery Service
// (envoy.service.health.v3, see controlplane/health for the wire format):
// one stream, authenticated with the node token like the ADS stream,
// reporting every target's health and discovered role at the interval the
// control plane asks for and at once when the view changes. It reconnects
// with jittered backoff and renews its stream, with a fresh token, before
// the token expires.
package healthreport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	hds "github.com/envoyproxy/go-control-plane/envoy/service/health/v3"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/dbproxy/dbproxy/dataplane/xdsclient"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// ReasonMetadataKey is the key of EndpointHealth.health_metadata that
// carries why a target is unhealthy.
const ReasonMetadataKey = xdsapi.HealthReasonMetadataKey

// Defaults of Options.
const (
	// DefaultMaxStreamAge is the default of Options.MaxStreamAge, the
	// ADS client's.
	DefaultMaxStreamAge = xdsclient.DefaultMaxStreamAge
	// DefaultPollInterval is the default of Options.PollInterval.
	DefaultPollInterval = time.Second
	// defaultInterval is HDS's default report interval, used when the
	// control plane names none.
	defaultInterval = time.Second
	// minInterval bounds how often a control plane can make a node report.
	minInterval = 10 * time.Millisecond
)

// Options configure a Reporter. Target, Node.ID, Token and Snapshot are
// required.
type Options struct {
	// Target is host:port of the control plane's gRPC server.
	Target string
	// TLS secures the connection; nil means insecure (tests only).
	TLS *tls.Config
	// Node is this node's identity, sent first on every stream.
	Node xdsapi.NodeInfo
	// Token returns a fresh node token; it is called once per stream.
	Token func(ctx context.Context) (string, error)
	// Snapshot returns the node's current target health, grouped by proxy.
	Snapshot func() []ProxyHealth
	// Logger receives the reporter's logs; nil discards them.
	Logger hclog.Logger
	// Backoff paces reconnects.
	Backoff xdsclient.Backoff
	// MaxStreamAge ends a stream and opens a new one, with a fresh token,
	// before the token the stream was opened with expires (default 10m).
	MaxStreamAge time.Duration
	// PollInterval is how often Snapshot is compared with the last report
	// between reports; a change is reported at once (default 1s).
	PollInterval time.Duration
	// Now is the clock for Status; nil means time.Now.
	Now func() time.Time
}

// ProxyHealth is the health of one proxy's targets.
type ProxyHealth struct {
	Proxy   string
	Targets []TargetHealth
}

// TargetHealth is the node's view of one target.
type TargetHealth struct {
	Name string
	Host string
	Port int
	// Zone is the target's zone.
	Zone string
	// Role is the discovered role, WRITER or READER; "" while unknown.
	Role    string
	Healthy bool
	// Unchecked means no health check has finished yet; the target is
	// then sent as UNKNOWN and the control plane does not count it.
	Unchecked bool
	// Reason says why the target is unhealthy (the monitor's last error).
	Reason string
}

// Status is a snapshot of the reporter's state.
type Status struct {
	// Connected reports whether a stream is open and the control plane
	// has answered on it.
	Connected bool
	// LastError is why the last stream ended; cleared when a stream is
	// answered.
	LastError string
	// LastReport is when a report was last sent.
	LastReport time.Time
}

// ErrRunning means Run was called while another Run of the same reporter
// was active.
var ErrRunning = errors.New("healthreport: already running")

// Reporter streams the node's target health to the control plane. Create
// it with New and call Run once.
type Reporter struct {
	opts    Options
	log     hclog.Logger
	running atomic.Bool

	mu struct {
		sync.Mutex
		status Status
	}
}

// New checks opts and returns a Reporter; it does not connect.
func New(opts Options) (*Reporter, error) {
	switch {
	case opts.Target == "":
		return nil, errors.New("healthreport: Options.Target is required")
	case opts.Node.ID == "":
		return nil, errors.New("healthreport: Options.Node.ID is required")
	case opts.Token == nil:
		return nil, errors.New("healthreport: Options.Token is required")
	case opts.Snapshot == nil:
		return nil, errors.New("healthreport: Options.Snapshot is required")
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.MaxStreamAge <= 0 {
		opts.MaxStreamAge = DefaultMaxStreamAge
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Reporter{opts: opts, log: opts.Logger}, nil
}

// Status returns the reporter's current state.
func (r *Reporter) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mu.status
}

func (r *Reporter) setStatus(f func(*Status)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(&r.mu.status)
}

// Run reports until ctx ends, reconnecting with backoff; it returns
// ctx.Err(). Reports go out at the interval the control plane asks for,
// and at once when Snapshot changes (checked every PollInterval).
func (r *Reporter) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer r.running.Store(false)

	err := r.opts.Backoff.Reconnect(ctx, r.log, "health stream", r.session, func(err error) {
		r.setStatus(func(s *Status) { s.Connected = false })
		r.reportStreamError(err)
	})
	r.setStatus(func(s *Status) { s.Connected = false })
	return err
}

// reportStreamError logs why a stream ended and records it in Status.
func (r *Reporter) reportStreamError(err error) {
	msg := xdsclient.StreamEnd{Closed: "health stream closed by the control plane", Ended: "health stream ended",
		Refused: "control plane refused this node's health reports"}.Log(r.log, r.opts.Target, err)
	r.setStatus(func(s *Status) { s.LastError = msg })
}

// hdsClientStream is the client side of one HDS stream.
type hdsClientStream = grpc.BidiStreamingClient[hds.HealthCheckRequestOrEndpointHealthResponse, hds.HealthCheckSpecifier]

// session runs one stream until it fails, reaches its maximum age or ctx
// ends. got reports whether the control plane answered.
func (r *Reporter) session(ctx context.Context) (got bool, err error) {
	conn, sctx, cancel, err := xdsclient.Connect(ctx, r.opts.Target, r.opts.TLS, r.opts.Token)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	defer cancel()
	stream, err := hds.NewHealthDiscoveryServiceClient(conn).StreamHealthCheck(sctx)
	if err != nil {
		return false, fmt.Errorf("open health stream to %s: %w", r.opts.Target, err)
	}

	// The receiver hands over the latest specifier and the stream's end.
	specs := make(chan *hds.HealthCheckSpecifier, 1)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			m, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case <-specs:
			default:
			}
			specs <- m
		}
	}()
	defer wg.Wait()
	defer cancel()

	s := &session{r: r, stream: stream, errc: errc}
	if err := s.send(ctx, &hds.HealthCheckRequestOrEndpointHealthResponse{RequestType: &hds.HealthCheckRequestOrEndpointHealthResponse_HealthCheckRequest{
		HealthCheckRequest: &hds.HealthCheckRequest{Node: r.opts.Node.Proto()},
	}}); err != nil {
		return false, err
	}

	age := time.NewTimer(r.opts.MaxStreamAge)
	defer age.Stop()
	poll := time.NewTicker(r.opts.PollInterval)
	defer poll.Stop()
	report := time.NewTimer(time.Hour)
	report.Stop()
	defer report.Stop()
	interval := defaultInterval
	for {
		select {
		case <-ctx.Done():
			return got, ctx.Err()
		case <-age.C:
			return got, xdsclient.ErrStreamRenewal
		case err := <-errc:
			return got, err
		case spec := <-specs:
			interval = specInterval(spec)
			if !got {
				got = true
				// A renewed stream follows a connected one: no news.
				log := r.log.Debug
				if !r.Status().Connected {
					log = r.log.Info
				}
				r.setStatus(func(st *Status) { st.Connected, st.LastError = true, "" })
				log("reporting target health to the control plane", "target", r.opts.Target, "node", r.opts.Node.ID, "zone", r.opts.Node.Zone, "interval", interval)
			}
			if err := s.report(ctx); err != nil {
				return got, err
			}
			report.Reset(interval)
		case <-report.C:
			if err := s.report(ctx); err != nil {
				return got, err
			}
			report.Reset(interval)
		case <-poll.C:
			if !got {
				continue
			}
			sent, err := s.reportChanged(ctx)
			if err != nil {
				return got, err
			}
			if sent {
				report.Reset(interval)
			}
		}
	}
}

// specInterval reads the report interval a specifier asks for.
func specInterval(spec *hds.HealthCheckSpecifier) time.Duration {
	d := defaultInterval
	if iv := spec.GetInterval(); iv != nil && iv.AsDuration() > 0 {
		d = iv.AsDuration()
	}
	return max(d, minInterval)
}

// session is the sending side of one stream.
type session struct {
	r      *Reporter
	stream hdsClientStream
	errc   <-chan error
	last   *hds.EndpointHealthResponse
}

// reportChanged sends a report if the snapshot differs from the last one.
func (s *session) reportChanged(ctx context.Context) (bool, error) {
	resp := Encode(s.r.opts.Snapshot())
	if s.last != nil && proto.Equal(resp, s.last) {
		return false, nil
	}
	return true, s.sendReport(ctx, resp)
}

// report sends the current snapshot.
func (s *session) report(ctx context.Context) error {
	return s.sendReport(ctx, Encode(s.r.opts.Snapshot()))
}

func (s *session) sendReport(ctx context.Context, resp *hds.EndpointHealthResponse) error {
	err := s.send(ctx, &hds.HealthCheckRequestOrEndpointHealthResponse{RequestType: &hds.HealthCheckRequestOrEndpointHealthResponse_EndpointHealthResponse{
		EndpointHealthResponse: resp,
	}})
	if err != nil {
		return err
	}
	s.last = resp
	now := s.r.opts.Now()
	s.r.setStatus(func(st *Status) { st.LastReport = now })
	return nil
}

// send sends m; when the stream has already ended it returns the stream's
// status instead of io.EOF.
func (s *session) send(ctx context.Context, m *hds.HealthCheckRequestOrEndpointHealthResponse) error {
	err := s.stream.Send(m)
	if errors.Is(err, io.EOF) {
		select {
		case rerr := <-s.errc:
			return rerr
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err != nil {
		return fmt.Errorf("send on the health stream: %w", err)
	}
	return nil
}

// Encode builds the EndpointHealthResponse of a snapshot in the wire
// format of controlplane/health: a ClusterEndpointsHealth per proxy, a
// LocalityEndpointsHealth per (target zone, role), an EndpointHealth per
// target. Proxies and localities are sorted so that equal snapshots encode
// equally.
func Encode(ps []ProxyHealth) *hds.EndpointHealthResponse {
	resp := &hds.EndpointHealthResponse{}
	ps = append([]ProxyHealth(nil), ps...)
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Proxy < ps[j].Proxy })
	for _, p := range ps {
		type loc struct{ zone, role string }
		byLoc := map[loc]*hds.LocalityEndpointsHealth{}
		var order []loc
		for _, t := range p.Targets {
			k := loc{zone: t.Zone, role: t.Role}
			l, ok := byLoc[k]
			if !ok {
				l = &hds.LocalityEndpointsHealth{Locality: &core.Locality{Zone: t.Zone, SubZone: t.Role}}
				byLoc[k] = l
				order = append(order, k)
			}
			l.EndpointsHealth = append(l.EndpointsHealth, endpointHealth(t))
		}
		sort.SliceStable(order, func(i, j int) bool {
			if order[i].zone != order[j].zone {
				return order[i].zone < order[j].zone
			}
			return order[i].role < order[j].role
		})
		c := &hds.ClusterEndpointsHealth{ClusterName: p.Proxy}
		for _, k := range order {
			c.LocalityEndpointsHealth = append(c.LocalityEndpointsHealth, byLoc[k])
		}
		resp.ClusterEndpointsHealth = append(resp.ClusterEndpointsHealth, c)
	}
	return resp
}

func endpointHealth(t TargetHealth) *hds.EndpointHealth {
	eh := &hds.EndpointHealth{
		Endpoint: &endpoint.Endpoint{
			Hostname: t.Name,
			Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
				Address: t.Host, PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(max(0, t.Port))},
			}}},
		},
	}
	switch {
	case t.Unchecked:
		eh.HealthStatus = core.HealthStatus_UNKNOWN
	case t.Healthy:
		eh.HealthStatus = core.HealthStatus_HEALTHY
	default:
		eh.HealthStatus = core.HealthStatus_UNHEALTHY
		if t.Reason != "" {
			eh.HealthMetadata = &structpb.Struct{Fields: map[string]*structpb.Value{
				ReasonMetadataKey: structpb.NewStringValue(xdsapi.TruncateHealthReason(t.Reason)),
			}}
		}
	}
	return eh
}
