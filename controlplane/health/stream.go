package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hds "github.com/envoyproxy/go-control-plane/envoy/service/health/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/dbproxy/dbproxy/controlplane/identity"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// hdsStream is the server side of one HDS stream.
type hdsStream = grpc.BidiStreamingServer[hds.HealthCheckRequestOrEndpointHealthResponse, hds.HealthCheckSpecifier]

// hdsService is the gRPC HealthDiscoveryService of a Service; a separate
// type so that the handlers do not become exported methods of Service.
type hdsService struct {
	s *Service
}

var _ hds.HealthDiscoveryServiceServer = hdsService{}

func registerHDS(g *grpc.Server, s *Service) {
	hds.RegisterHealthDiscoveryServiceServer(g, hdsService{s: s})
}

// StreamHealthCheck serves one node's stream.
func (h hdsService) StreamHealthCheck(st hdsStream) error {
	return h.s.serve(st)
}

// FetchHealthCheck refuses unary fetches: a node reports over a stream.
func (h hdsService) FetchHealthCheck(context.Context, *hds.HealthCheckRequestOrEndpointHealthResponse) (*hds.HealthCheckSpecifier, error) {
	return nil, status.Error(codes.Unimplemented, "only health check streams are served")
}

// errReplaced ends a stream superseded by a newer stream of the same node.
var errReplaced = status.Error(codes.Aborted, "replaced by a newer stream of the same node")

// errShuttingDown ends streams once the service is closed.
var errShuttingDown = status.Error(codes.Unavailable, "control plane is shutting down")

// serve runs one stream: the first message must be a HealthCheckRequest
// naming the node; every message is authorized; reports replace the
// node's record.
func (s *Service) serve(st hdsStream) error {
	ctx := st.Context()
	md, _ := metadata.FromIncomingContext(ctx)
	id, ok := s.openStream()
	if !ok {
		return errShuttingDown
	}

	// Every message, the first included, is read in receive's goroutine,
	// so that closing the service ends the stream at once.
	msgs, stop := receive(st)
	defer stop()
	var first received
	select {
	case first = <-msgs:
	case <-s.done:
		return errShuttingDown
	}
	if first.err != nil {
		return recvErr(first.err)
	}
	req := first.msg.GetHealthCheckRequest()
	if req == nil {
		return status.Error(codes.InvalidArgument, "the first message of a health stream must be a HealthCheckRequest naming the node")
	}
	info := xdsapi.NodeInfoFrom(req.GetNode())
	if info.ID == "" {
		return status.Error(codes.InvalidArgument, "the health check request names no node (node.id is required)")
	}
	if err := s.authorize(ctx, md, info, 0); err != nil {
		return err
	}
	if err := s.bind(id, info); err != nil {
		return err
	}
	defer s.closeStream(id, info)
	if err := s.sendSpecifier(st); err != nil {
		return err
	}

	for {
		var r received
		select {
		case r = <-msgs:
		case <-s.done:
			return errShuttingDown
		}
		msg, err := r.msg, r.err
		if err != nil {
			return recvErr(err)
		}
		if err := s.authorize(ctx, md, info, id); err != nil {
			return err
		}
		switch {
		case msg.GetHealthCheckRequest() != nil:
			next := xdsapi.NodeInfoFrom(msg.GetHealthCheckRequest().GetNode())
			if next.ID != info.ID || next.Zone != info.Zone {
				s.log.Warn("refusing node: identity changed mid-stream", "node", info.ID, "zone", info.Zone, "new_node", next.ID, "new_zone", next.Zone)
				s.drop(id, info)
				return status.Errorf(codes.PermissionDenied, "node identity changed mid-stream (from %q in zone %q to %q in zone %q)", info.ID, info.Zone, next.ID, next.Zone)
			}
			if err := s.current(id, info); err != nil {
				return err
			}
			if err := s.sendSpecifier(st); err != nil {
				return err
			}
		case msg.GetEndpointHealthResponse() != nil:
			if err := s.record(id, info, msg.GetEndpointHealthResponse()); err != nil {
				return err
			}
		default:
			return status.Error(codes.InvalidArgument, "the message carries neither a HealthCheckRequest nor an EndpointHealthResponse")
		}
	}
}

// received is one Recv of a stream.
type received struct {
	msg *hds.HealthCheckRequestOrEndpointHealthResponse
	err error
}

// receive reads st in its own goroutine, so that the handler can also wait
// for the service to close. Every Recv result, the final error included,
// is delivered while the handler listens; stop, which the handler defers,
// releases the goroutine once the handler has returned (gRPC then ends the
// stream, and Recv fails).
func receive(st hdsStream) (<-chan received, func()) {
	ch := make(chan received)
	quit := make(chan struct{})
	go func() {
		for {
			msg, err := st.Recv()
			select {
			case ch <- received{msg, err}:
			case <-quit:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return ch, func() { close(quit) }
}

// recvErr turns the end of a stream into the handler's result.
func recvErr(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

func (s *Service) sendSpecifier(st hdsStream) error {
	if err := st.Send(&hds.HealthCheckSpecifier{Interval: durationpb.New(s.interval)}); err != nil {
		return fmt.Errorf("send health check specifier: %w", err)
	}
	return nil
}

// authorize checks the node's credentials. stream is the bound stream id
// (0 before binding); a bound stream refused later loses its report at
// once, so that a node that is no longer allowed stops counting.
func (s *Service) authorize(ctx context.Context, md metadata.MD, info xdsapi.NodeInfo, stream uint64) error {
	if err := s.auth.Authorize(ctx, md, info); err != nil {
		err = identity.AuthStatus(err)
		s.log.Warn("refusing health reports of node", "node", info.ID, "zone", info.Zone, "reason", status.Convert(err).Message())
		if stream != 0 {
			s.drop(stream, info)
		}
		return err
	}
	return nil
}

// openStream numbers a new stream unless the service is closed.
func (s *Service) openStream() (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return 0, false
	}
	s.mu.lastStream++
	return s.mu.lastStream, true
}

// bind makes stream id the node's current stream. The record, and the
// report of the node's earlier stream, stay until the new stream reports;
// the earlier stream ends with codes.Aborted at its next message.
func (s *Service) bind(id uint64, info xdsapi.NodeInfo) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return errShuttingDown
	}
	n, ok := s.mu.nodes[info.Key()]
	if !ok || n.info != info {
		// A node id that comes back with another identity starts afresh.
		n = &nodeRecord{}
		s.mu.nodes[info.Key()] = n
	}
	if n.stream != 0 {
		s.log.Info("node opened a new health stream; the old one ends at its next message", "node", info.ID)
	}
	n.info = info
	n.stream = id
	s.log.Debug("node health stream opened", "node", info.ID, "zone", info.Zone)
	return nil
}

// current checks that stream id is still the node's current stream.
func (s *Service) current(id uint64, info xdsapi.NodeInfo) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.currentLocked(id, info)
	return err
}

func (s *Service) currentLocked(id uint64, info xdsapi.NodeInfo) (*nodeRecord, error) {
	if s.mu.closed {
		return nil, errShuttingDown
	}
	n, ok := s.mu.nodes[info.Key()]
	if !ok || n.stream != id {
		return nil, errReplaced
	}
	return n, nil
}

// closeStream marks the node disconnected if id is its current stream; the
// record then lasts StaleAfter.
func (s *Service) closeStream(id uint64, info xdsapi.NodeInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if n, ok := s.mu.nodes[info.Key()]; ok && n.stream == id {
		n.stream = 0
		n.disconnectedAt = now
		s.log.Debug("node health stream closed", "node", info.ID, "zone", info.Zone)
	}
	s.sweepLocked(now)
}

// drop forgets the node's record if id is its current stream.
func (s *Service) drop(id uint64, info xdsapi.NodeInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n, ok := s.mu.nodes[info.Key()]; ok && n.stream == id {
		delete(s.mu.nodes, info.Key())
	}
}

// record replaces the node's report with resp.
func (s *Service) record(id uint64, info xdsapi.NodeInfo, resp *hds.EndpointHealthResponse) error {
	targets, skipped := decode(resp)
	if skipped > 0 {
		s.log.Warn("ignoring malformed entries of a health report", "node", info.ID, "entries", skipped)
	}
	if len(resp.GetEndpointsHealth()) > 0 { //nolint:staticcheck // read only to say it is ignored
		s.log.Warn("ignoring the deprecated flat endpoints_health list of a health report", "node", info.ID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.currentLocked(id, info)
	if err != nil {
		return err
	}
	now := s.now()
	for k, e := range targets {
		if old, ok := n.targets[k]; ok && old.healthy != e.healthy {
			if e.healthy {
				s.log.Info("node reports target healthy", "node", info.ID, "zone", info.Zone, "proxy", k.proxy, "target", k.target)
			} else {
				s.log.Info("node reports target unhealthy", "node", info.ID, "zone", info.Zone, "proxy", k.proxy, "target", k.target, "reason", e.reason)
			}
		}
	}
	n.targets = targets
	n.at = now
	s.sweepLocked(now)
	return nil
}

// decode reads a report per the package's wire format. Entries without a
// cluster name or hostname are skipped and counted; entries whose status
// is UNKNOWN are left out.
func decode(resp *hds.EndpointHealthResponse) (map[targetKey]entry, int) {
	out := make(map[targetKey]entry)
	skipped := 0
	for _, c := range resp.GetClusterEndpointsHealth() {
		proxy := c.GetClusterName()
		for _, l := range c.GetLocalityEndpointsHealth() {
			role := l.GetLocality().GetSubZone()
			if role != RoleWriter && role != RoleReader {
				role = ""
			}
			for _, eh := range l.GetEndpointsHealth() {
				name := eh.GetEndpoint().GetHostname()
				if proxy == "" || name == "" {
					skipped++
					continue
				}
				var e entry
				switch eh.GetHealthStatus() {
				case core.HealthStatus_HEALTHY:
					e.healthy = true
				case core.HealthStatus_UNHEALTHY, core.HealthStatus_TIMEOUT, core.HealthStatus_DRAINING:
					e.reason = xdsapi.TruncateHealthReason(eh.GetHealthMetadata().GetFields()[ReasonMetadataKey].GetStringValue())
				default:
					continue
				}
				e.role = role
				e.address = endpointAddr(eh)
				out[targetKey{proxy: proxy, target: name}] = e
			}
		}
	}
	return out, skipped
}

// endpointAddr returns an endpoint's host:port ("" when absent).
func endpointAddr(eh *hds.EndpointHealth) string {
	sa := eh.GetEndpoint().GetAddress().GetSocketAddress()
	if sa == nil {
		return ""
	}
	return net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))
}
