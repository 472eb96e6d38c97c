package xdsclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// Connect opens a connection to the control plane at target for one
// stream, and a stream context carrying a fresh node token (tlsCfg nil:
// insecure, for tests). A connection per stream makes the caller's backoff,
// not gRPC's own connection backoff, the reconnect pace. Call cancel, then
// close the connection, when the stream is done.
func Connect(ctx context.Context, target string, tlsCfg *tls.Config, token func(context.Context) (string, error)) (*grpc.ClientConn, context.Context, context.CancelFunc, error) {
	tok, err := token(ctx)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("make node token: %w", err)
	}
	creds := insecure.NewCredentials()
	if tlsCfg != nil {
		creds = credentials.NewTLS(tlsCfg)
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("connect to %s: %w", target, err)
	}
	sctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, xdsapi.TokenMetadataKey, tok))
	return conn, sctx, cancel, nil
}

// adsStream is the client side of one ADS stream.
type adsStream = grpc.BidiStreamingClient[discovery.DiscoveryRequest, discovery.DiscoveryResponse]

// session runs one stream until it fails or ctx ends. got reports whether
// the control plane answered at least once (the backoff then restarts).
func (c *Client) session(ctx context.Context) (got bool, err error) {
	conn, sctx, cancel, err := Connect(ctx, c.opts.Target, c.opts.TLS, c.opts.Token)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	defer cancel()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
	if err != nil {
		return false, fmt.Errorf("open ADS stream to %s: %w", c.opts.Target, err)
	}
	s := &session{c: c, stream: stream, node: c.opts.Node.Proto(), pending: make(map[string]*discovery.DiscoveryResponse)}
	if err := s.subscribe(); err != nil {
		return false, err
	}
	age := c.opts.MaxStreamAge
	if age <= 0 {
		age = DefaultMaxStreamAge
	}
	var rotated atomic.Bool
	timer := time.AfterFunc(age, func() { rotated.Store(true); cancel() })
	defer timer.Stop()
	for {
		resp, err := stream.Recv()
		if err != nil {
			if rotated.Load() {
				return got, ErrStreamRenewal
			}
			return got, err
		}
		if !got {
			got = true
			c.setStatus(func(st *Status) { st.Connected = true })
			c.log.Info("connected to the control plane", "target", c.opts.Target, "node", c.opts.Node.ID, "zone", c.opts.Node.Zone)
		}
		if err := s.handle(ctx, resp); err != nil {
			if rotated.Load() {
				return got, ErrStreamRenewal
			}
			return got, err
		}
	}
}

// session is the protocol state of one stream.
type session struct {
	c      *Client
	stream adsStream
	node   *core.Node
	// pending holds the latest unanswered response per type.
	pending map[string]*discovery.DiscoveryResponse
	// rejected is the version this stream NACKed and why, so that a
	// server resending it is answered without applying it again.
	rejected, rejectedMsg string
}

// subscribe sends the four wildcard requests; the first carries the node.
// Their version is empty so that the server answers every type, also when
// the node already runs its version (from the cache or an earlier stream):
// every type is then acked on this stream.
func (s *session) subscribe() error {
	for i, t := range xdsapi.ResourceTypes() {
		req := &discovery.DiscoveryRequest{TypeUrl: t}
		if i == 0 {
			req.Node = s.node
		}
		if err := s.send(req); err != nil {
			return err
		}
	}
	return nil
}

// send sends req; when the stream has already ended it returns the
// stream's status instead of io.EOF.
func (s *session) send(req *discovery.DiscoveryRequest) error {
	err := s.stream.Send(req)
	if errors.Is(err, io.EOF) {
		for {
			if _, rerr := s.stream.Recv(); rerr != nil {
				return rerr
			}
		}
	}
	return err
}

// handle processes one response. Responses are kept per type until all
// four types are at one version; that set is applied once and every
// pending response is then ACKed (or NACKed). A pending response at an
// older version than the newest one received is re-requested (its nonce
// echoed with the running version, neither ACK nor NACK), so that the
// server sends that type at the newest version too.
func (s *session) handle(ctx context.Context, resp *discovery.DiscoveryResponse) error {
	t, v := resp.GetTypeUrl(), resp.GetVersionInfo()
	if !xdsapi.IsResourceType(t) {
		s.c.log.Warn("ignoring a response of an unexpected type", "type", t)
		return nil
	}
	s.c.log.Debug("received", "type", t, "version", v, "resources", len(resp.GetResources()))
	s.pending[t] = resp
	for _, u := range xdsapi.ResourceTypes() {
		p, ok := s.pending[u]
		if !ok || p.GetVersionInfo() == v {
			continue
		}
		delete(s.pending, u)
		if err := s.send(&discovery.DiscoveryRequest{TypeUrl: u, VersionInfo: s.c.applied, ResponseNonce: p.GetNonce()}); err != nil {
			return err
		}
	}

	complete := len(s.pending) == xdsapi.NumResourceTypes
	// The running version is ACKed type by type, except after a rejection:
	// then it is applied again, as a whole (see Client.rejectedSince).
	if !complete && !(s.c.hasApplied && v == s.c.applied && !s.c.rejectedSince) {
		return nil
	}
	if !s.c.hasApplied || v != s.c.applied || (complete && s.c.rejectedSince) {
		if v == s.rejected {
			return s.nackAll(v, s.rejectedMsg)
		}
		res := make(map[string][]*anypb.Any, len(s.pending))
		for u, p := range s.pending {
			res[u] = p.GetResources()
		}
		if err := s.c.apply(ctx, v, res); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			s.c.log.Error("rejecting configuration", "version", v, "error", err)
			s.c.setStatus(func(st *Status) { st.LastError = fmt.Sprintf("version %s rejected: %v", v, err) })
			s.rejected, s.rejectedMsg = v, err.Error()
			return s.nackAll(v, err.Error())
		}
		s.c.log.Info("configuration applied", "version", v)
		s.c.writeCache(v, res)
	}
	s.rejected, s.rejectedMsg = "", ""
	s.c.setStatus(func(st *Status) { st.LastError = "" })
	return s.ackAll(v)
}

// ackAll ACKs every pending response.
func (s *session) ackAll(v string) error {
	for _, t := range xdsapi.ResourceTypes() {
		p, ok := s.pending[t]
		if !ok {
			continue
		}
		delete(s.pending, t)
		if err := s.send(&discovery.DiscoveryRequest{TypeUrl: t, VersionInfo: v, ResponseNonce: p.GetNonce()}); err != nil {
			return err
		}
	}
	return nil
}

// nackAll NACKs every pending response: the running version plus the
// reason.
func (s *session) nackAll(v, msg string) error {
	for _, t := range xdsapi.ResourceTypes() {
		p, ok := s.pending[t]
		if !ok {
			continue
		}
		delete(s.pending, t)
		req := &discovery.DiscoveryRequest{
			TypeUrl:       t,
			VersionInfo:   s.c.applied,
			ResponseNonce: p.GetNonce(),
			ErrorDetail:   &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: msg},
		}
		if err := s.send(req); err != nil {
			return err
		}
	}
	s.c.log.Debug("NACKed", "version", v)
	return nil
}
