// Package health is the control plane's Health Discovery Service (Envoy
// HDS, envoy.service.health.v3): data-plane nodes stream the health of the
// database targets they monitor, and the control plane aggregates what the
// nodes of every zone see into each target's health and discovered role.
//
// Nodes check their own targets (connect + @@read_only); the control plane
// does not assign checks. Its HealthCheckSpecifier therefore carries only
// the interval at which nodes should report, and no cluster_health_checks.
//
// # Wire format
//
// A stream starts with a HealthCheckRequest whose node is the node's
// identity as in ADS (xdsapi.NodeInfo.Proto). The stream's gRPC metadata
// carries the node token (xdsapi.TokenMetadataKey) and is checked with the
// same Authorizer as ADS, for the first message and for every later one.
// Each later EndpointHealthResponse replaces the node's whole report and
// is encoded as follows (the deprecated flat endpoints_health list is
// ignored):
//
//   - one ClusterEndpointsHealth per proxy, cluster_name = the proxy name
//     (the name of the proxy's ADS Cluster);
//   - in it one LocalityEndpointsHealth per (target zone, discovered role):
//     locality.zone = the target's zone, locality.sub_zone = "WRITER" or
//     "READER" (empty while the role is not known yet);
//   - in it one EndpointHealth per target: endpoint.hostname = the target
//     name, endpoint.address = the target's host:port as a socket address,
//     health_status = HEALTHY or UNHEALTHY (UNKNOWN while the node has not
//     checked the target yet; such entries are not counted), and, for an
//     unhealthy target, health_metadata[ReasonMetadataKey] = a short
//     reason (the monitor's last error). health_metadata is HDS's field
//     for "metadata about the health check result"; it is the only place
//     a reason can travel.
//
// # Aggregation and memory
//
// A report counts while it is fresh (received less than StaleAfter ago).
// The service keeps one record per node id: a record goes when the node's
// stream has been closed for StaleAfter, and a new report replaces the old
// one. Records are swept on the service's own calls; there is no goroutine
// per node besides the gRPC stream handler.
package health

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"

	"github.com/dbproxy/dbproxy/controlplane/identity"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// Aggregated health values of a target, as the API shows them.
const (
	// HealthAvailable means every fresh report says the target is healthy.
	HealthAvailable = "AVAILABLE"
	// HealthUnavailable means every fresh report says it is unhealthy.
	HealthUnavailable = "UNAVAILABLE"
	// HealthDegraded means the reports disagree: some nodes cannot reach
	// the target.
	HealthDegraded = "DEGRADED"
	// HealthUnknown means no node reported the target recently.
	HealthUnknown = "UNKNOWN"
)

// Discovered roles, as nodes send them in locality.sub_zone.
const (
	RoleWriter = "WRITER"
	RoleReader = "READER"
)

// ReasonMetadataKey is the key of EndpointHealth.health_metadata that
// carries why a target is unhealthy (a string).
const ReasonMetadataKey = xdsapi.HealthReasonMetadataKey

// Defaults of Options.
const (
	DefaultInterval = 5 * time.Second
	// staleFactor times Interval is the default of StaleAfter.
	staleFactor = 3
)

// Options configure a Service. Authorizer is required.
type Options struct {
	// Authorizer checks the node's credentials on every message, as for
	// ADS (token in metadata x-dbproxy-token, node id and zone bound).
	Authorizer identity.Authorizer
	// Logger receives the service's logs; nil discards them.
	Logger hclog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Interval is the report interval asked of nodes
	// (HealthCheckSpecifier.interval); 0 means DefaultInterval.
	Interval time.Duration
	// StaleAfter is the age after which a node's report no longer counts;
	// 0 means three times Interval. It must be longer than Interval.
	StaleAfter time.Duration
}

// TargetHealth is the aggregated view of one target of a proxy.
type TargetHealth struct {
	// Health is HealthAvailable, HealthUnavailable, HealthDegraded or
	// HealthUnknown.
	Health string
	// Role is the role most fresh reports agree on (RoleWriter or
	// RoleReader), counting the reports that find the target healthy when
	// there are any; "" when no report names a role or the count is tied.
	Role string
	// Reports are the fresh per-node views, ordered by node id.
	Reports []Report
}

// maxReason bounds TargetHealth.Reason: each node's reason is bounded
// already, but a target may be reported on by many nodes.
const maxReason = 1024

// Reason says why nodes find the target unhealthy: each distinct reason
// once, with the nodes that report it ("node-a, node-b: connect: ...").
// It is "" when every fresh report is healthy.
func (th TargetHealth) Reason() string {
	var order []string
	nodes := map[string][]string{}
	for _, r := range th.Reports {
		if r.Healthy {
			continue
		}
		reason := r.Reason
		if reason == "" {
			reason = "unhealthy"
		}
		if _, ok := nodes[reason]; !ok {
			order = append(order, reason)
		}
		nodes[reason] = append(nodes[reason], r.Node)
	}
	parts := make([]string, 0, len(order))
	for _, reason := range order {
		parts = append(parts, strings.Join(nodes[reason], ", ")+": "+reason)
	}
	out := strings.Join(parts, "; ")
	if n := maxReason; len(out) > n {
		// Cut on a character boundary.
		for n > 0 && out[n]&0xC0 == 0x80 {
			n--
		}
		out = out[:n]
	}
	return out
}

// Report is one node's view of a target.
type Report struct {
	// Node and Zone identify the reporting node.
	Node string
	Zone string
	// Healthy is the node's last check result.
	Healthy bool
	// Role is the role the node discovered; "" when not known yet.
	Role string
	// Reason says why the target is unhealthy; "" when healthy.
	Reason string
	// Address is the target's host:port as the node knows it.
	Address string
	// At is when the control plane received the report.
	At time.Time
}

// Service is the HDS server: nodes stream the health of the targets they
// monitor. Create it with New, attach it to a gRPC server with Register
// and Close it when done.
type Service struct {
	auth       identity.Authorizer
	log        hclog.Logger
	now        func() time.Time
	interval   time.Duration
	staleAfter time.Duration
	// done is closed by Close: open streams end then, without waiting
	// for their node's next message.
	done chan struct{}

	mu struct {
		sync.Mutex
		closed     bool
		lastStream uint64
		nodes      map[string]*nodeRecord
	}
}

// targetKey names a target of a proxy.
type targetKey struct{ proxy, target string }

// entry is what a node reported about one target.
type entry struct {
	healthy bool
	role    string
	reason  string
	address string
}

// nodeRecord is the service's record of one node id.
type nodeRecord struct {
	info xdsapi.NodeInfo
	// stream is the id of the node's current stream; 0 when disconnected.
	stream uint64
	// disconnectedAt is when the node's last stream ended.
	disconnectedAt time.Time
	// at is when the report was received; zero before the first.
	at      time.Time
	targets map[targetKey]entry
}

// New checks opts and returns a Service. It starts no goroutines.
func New(opts Options) (*Service, error) {
	if opts.Authorizer == nil {
		return nil, errors.New("health: Options.Authorizer is required")
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Interval < 0 || opts.StaleAfter < 0 {
		return nil, errors.New("health: Options.Interval and StaleAfter must not be negative")
	}
	if opts.Interval == 0 {
		opts.Interval = DefaultInterval
	}
	if opts.StaleAfter == 0 {
		opts.StaleAfter = staleFactor * opts.Interval
	}
	if opts.StaleAfter <= opts.Interval {
		return nil, fmt.Errorf("health: Options.StaleAfter (%s) must be longer than Interval (%s)", opts.StaleAfter, opts.Interval)
	}
	s := &Service{
		auth:       opts.Authorizer,
		log:        opts.Logger,
		now:        opts.Now,
		interval:   opts.Interval,
		staleAfter: opts.StaleAfter,
		done:       make(chan struct{}),
	}
	s.mu.nodes = make(map[string]*nodeRecord)
	return s, nil
}

// Register adds the health discovery service to g.
func (s *Service) Register(g *grpc.Server) {
	registerHDS(g, s)
}

// Close drops every report and refuses new streams. Open streams end at
// once with codes.Unavailable, so that a graceful gRPC stop does not wait
// for them; Close does not wait for them either. Close is idempotent.
func (s *Service) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.mu.closed {
		close(s.done)
	}
	s.mu.closed = true
	clear(s.mu.nodes)
}

// TargetHealth aggregates what nodes reported for one target of a proxy:
// Health is HealthAvailable if every fresh report says healthy,
// HealthUnavailable if every fresh report says unhealthy, HealthDegraded
// if they disagree (some nodes cannot reach it) and HealthUnknown with no
// fresh report. Role is the role most fresh reports agree on (see
// TargetHealth.Role). Reports lists the per-node view.
func (s *Service) TargetHealth(proxy, target string) TargetHealth {
	return s.TargetHealthFrom(proxy, target, nil)
}

// TargetHealthFrom is TargetHealth counting only the fresh reports accept
// takes (all when accept is nil). A node may report anything about any
// proxy; the caller knows which nodes serve the proxy and where its
// target is, and so which reports to believe.
func (s *Service) TargetHealthFrom(proxy, target string, accept func(Report) bool) TargetHealth {
	key := targetKey{proxy: proxy, target: target}
	s.mu.Lock()
	now := s.now()
	s.sweepLocked(now)
	var reports []Report
	for _, n := range s.mu.nodes {
		if !s.freshLocked(n, now) {
			continue
		}
		e, ok := n.targets[key]
		if !ok {
			continue
		}
		r := Report{Node: n.info.ID, Zone: n.info.Zone, Healthy: e.healthy, Role: e.role, Reason: e.reason, Address: e.address, At: n.at}
		if accept != nil && !accept(r) {
			continue
		}
		reports = append(reports, r)
	}
	s.mu.Unlock()
	sort.Slice(reports, func(i, j int) bool { return reports[i].Node < reports[j].Node })
	return aggregate(reports)
}

// aggregate computes a target's health and role from fresh reports.
func aggregate(reports []Report) TargetHealth {
	th := TargetHealth{Health: HealthUnknown, Reports: reports}
	healthy := 0
	for _, r := range reports {
		if r.Healthy {
			healthy++
		}
	}
	switch {
	case len(reports) == 0:
		return th
	case healthy == len(reports):
		th.Health = HealthAvailable
	case healthy == 0:
		th.Health = HealthUnavailable
	default:
		th.Health = HealthDegraded
	}
	// A node that cannot reach the target only knows the role it last
	// saw; the nodes that reach it now know better.
	votes := map[string]int{}
	for _, r := range reports {
		if r.Role != "" && (healthy == 0 || r.Healthy) {
			votes[r.Role]++
		}
	}
	best, bestVotes, tied := "", 0, false
	for _, role := range []string{RoleWriter, RoleReader} {
		switch v := votes[role]; {
		case v > bestVotes:
			best, bestVotes, tied = role, v, false
		case v == bestVotes && v > 0:
			tied = true
		}
	}
	if !tied {
		th.Role = best
	}
	return th
}

// freshLocked reports whether n's report still counts at now.
func (s *Service) freshLocked(n *nodeRecord, now time.Time) bool {
	return !n.at.IsZero() && now.Sub(n.at) < s.staleAfter
}

// sweepLocked drops the records of nodes disconnected for StaleAfter.
func (s *Service) sweepLocked(now time.Time) {
	for id, n := range s.mu.nodes {
		if n.stream == 0 && now.Sub(n.disconnectedAt) >= s.staleAfter {
			delete(s.mu.nodes, id)
		}
	}
}

// recordCount returns how many node records the service holds (tests).
func (s *Service) recordCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.mu.nodes)
}
