package xds

import (
	"context"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/dbproxy/dbproxy/controlplane/identity"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// streamState is what the server tracks per open stream.
type streamState struct {
	id     int64
	delta  bool
	ctx    context.Context
	md     metadata.MD
	handle *streamHandle

	// node is the identity the stream's first request named; bound says
	// it has been accepted.
	node  xdsapi.NodeInfo
	bound bool

	// sent is the latest response per type URL (its nonce and version).
	sent map[string]sentResponse
}

type sentResponse struct {
	nonce, version string
}

// callbacks implements go-control-plane's server callbacks for a Server.
// It is a separate type so that the callbacks do not become exported
// methods of Server.
type callbacks struct {
	s *Server
}

var _ serverv3.Callbacks = callbacks{}

// OnStreamOpen records the stream and its metadata.
func (c callbacks) OnStreamOpen(ctx context.Context, id int64, typeURL string) error {
	return c.s.openStream(ctx, id, typeURL, false)
}

// OnStreamClosed forgets the stream.
func (c callbacks) OnStreamClosed(id int64, _ *core.Node) { c.s.closeStream(id) }

// OnDeltaStreamOpen records the stream and its metadata.
func (c callbacks) OnDeltaStreamOpen(ctx context.Context, id int64, typeURL string) error {
	return c.s.openStream(ctx, id, typeURL, true)
}

// OnDeltaStreamClosed forgets the stream.
func (c callbacks) OnDeltaStreamClosed(id int64, _ *core.Node) { c.s.closeStream(id) }

// OnStreamRequest authorizes the request, tracks ACK/NACK and, on a NACK,
// sets the request's version to the rejected one: the same request goes on
// to the cache's CreateWatch, which then waits for a newer version instead
// of resending the rejected one.
func (c callbacks) OnStreamRequest(id int64, req *discovery.DiscoveryRequest) error {
	rejected, err := c.s.onRequest(id, request{
		node:        req.GetNode(),
		typeURL:     req.GetTypeUrl(),
		nonce:       req.GetResponseNonce(),
		version:     req.GetVersionInfo(),
		errorDetail: req.GetErrorDetail(),
	})
	if err != nil {
		return err
	}
	if rejected != "" {
		req.VersionInfo = rejected
	}
	return nil
}

// OnStreamResponse remembers the nonce and version sent.
func (c callbacks) OnStreamResponse(_ context.Context, id int64, _ *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
	c.s.onResponse(id, resp.GetTypeUrl(), resp.GetNonce(), resp.GetVersionInfo())
}

// OnStreamDeltaRequest authorizes the request and tracks ACK/NACK. A delta
// NACK needs no version rewrite: the cache compares per-resource versions
// it already returned and does not resend them.
func (c callbacks) OnStreamDeltaRequest(id int64, req *discovery.DeltaDiscoveryRequest) error {
	_, err := c.s.onRequest(id, request{
		node:        req.GetNode(),
		typeURL:     req.GetTypeUrl(),
		nonce:       req.GetResponseNonce(),
		errorDetail: req.GetErrorDetail(),
		delta:       true,
	})
	return err
}

// OnStreamDeltaResponse remembers the nonce and system version sent.
func (c callbacks) OnStreamDeltaResponse(id int64, _ *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
	c.s.onResponse(id, resp.GetTypeUrl(), resp.GetNonce(), resp.GetSystemVersionInfo())
}

// OnFetchRequest refuses REST fetches: they carry no stream credentials.
// Register does not expose them; this is a second guard.
func (c callbacks) OnFetchRequest(context.Context, *discovery.DiscoveryRequest) error {
	return status.Error(codes.Unimplemented, "only ADS streams are served")
}

// OnFetchResponse does nothing.
func (c callbacks) OnFetchResponse(*discovery.DiscoveryRequest, *discovery.DiscoveryResponse) {}

// request is the part of a SotW or delta request the server looks at.
type request struct {
	node                    *core.Node
	typeURL, nonce, version string
	errorDetail             *rpcstatus.Status
	delta                   bool
}

func (s *Server) openStream(ctx context.Context, id int64, typeURL string, delta bool) error {
	if typeURL != resource.AnyType {
		return status.Error(codes.Unimplemented, "only aggregated discovery (ADS) is served")
	}
	md, _ := metadata.FromIncomingContext(ctx)
	h, _ := ctx.Value(streamHandleKey{}).(*streamHandle)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.streams[id] = &streamState{
		id:     id,
		delta:  delta,
		ctx:    ctx,
		md:     md.Copy(),
		handle: h,
		sent:   make(map[string]sentResponse),
	}
	return nil
}

func (s *Server) closeStream(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.mu.streams[id]
	if !ok {
		return
	}
	delete(s.mu.streams, id)
	if !st.bound {
		return
	}
	if n, ok := s.mu.nodes[st.node.Key()]; ok && n.stream == id {
		n.stream = 0
		n.lastSeen = s.now()
		s.log.Info("node disconnected", "node", n.info.ID, "zone", n.info.Zone)
		s.notifyLocked()
	}
}

func (s *Server) onResponse(id int64, typeURL, nonce, version string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.mu.streams[id]; ok {
		st.sent[typeURL] = sentResponse{nonce: nonce, version: version}
	}
}

// onRequest handles one request of stream id: identity checks,
// authorization, node registration (and the first build) and ACK/NACK
// bookkeeping. It returns the version the request rejected, if any.
func (s *Server) onRequest(id int64, r request) (rejected string, err error) {
	s.mu.Lock()
	st, ok := s.mu.streams[id]
	if !ok {
		s.mu.Unlock()
		return "", status.Error(codes.Internal, "unknown stream")
	}
	info := st.node
	if r.node != nil {
		info = xdsapi.NodeInfoFrom(r.node)
	}
	bound, boundNode := st.bound, st.node
	ctx, md := st.ctx, st.md
	s.mu.Unlock()

	if info.ID == "" {
		return "", status.Error(codes.InvalidArgument, "the request names no node (node.id is required)")
	}
	if bound && (info.ID != boundNode.ID || info.Zone != boundNode.Zone) {
		s.log.Warn("refusing node: identity changed mid-stream", "node", boundNode.ID, "zone", boundNode.Zone, "new_node", info.ID, "new_zone", info.Zone)
		return "", status.Errorf(codes.PermissionDenied, "node identity changed mid-stream (from %q in zone %q to %q in zone %q)", boundNode.ID, boundNode.Zone, info.ID, info.Zone)
	}
	if err := s.auth.Authorize(ctx, md, info); err != nil {
		err = identity.AuthStatus(err)
		s.log.Warn("refusing node", "node", info.ID, "zone", info.Zone, "reason", status.Convert(err).Message())
		return "", err
	}

	s.mu.Lock()
	now := s.now()
	n, replaced, err := s.bindLocked(st, info, now)
	if err != nil {
		s.mu.Unlock()
		return "", err
	}
	n.lastSeen = now
	if sent, ok := st.sent[r.typeURL]; ok && r.nonce != "" && r.nonce == sent.nonce {
		switch {
		case r.errorDetail != nil:
			n.lastNack = &Nack{Version: sent.version, TypeURL: r.typeURL, Message: r.errorDetail.GetMessage(), At: now}
			rejected = sent.version
			s.log.Warn("node rejected configuration", "node", info.ID, "zone", info.Zone, "type", r.typeURL, "version", sent.version, "error", r.errorDetail.GetMessage())
		case r.delta || r.version == sent.version:
			n.ackLocked(r.typeURL, sent.version)
		}
		s.notifyLocked()
	}
	s.mu.Unlock()

	if replaced != nil && replaced.handle != nil {
		s.log.Info("node opened a new stream; closing the old one", "node", info.ID)
		replaced.handle.cancel(errReplaced)
	}
	if !bound {
		if err := s.buildAndPublish(ctx, info); err != nil {
			s.log.Error("cannot serve node", "node", info.ID, "zone", info.Zone, "error", err)
			return "", status.Error(codes.Unavailable, "the control plane could not build this node's configuration")
		}
	}
	return rejected, nil
}

// bindLocked ties the stream to its node on the first request and checks on
// later ones that the stream is still the node's current one. It returns
// the node record and the stream it replaced, if any.
func (s *Server) bindLocked(st *streamState, info xdsapi.NodeInfo, now time.Time) (*nodeState, *streamState, error) {
	if st.bound {
		n := s.mu.nodes[info.Key()]
		if n == nil || n.stream != st.id {
			return nil, nil, status.Error(codes.Aborted, errReplaced.Error())
		}
		return n, nil, nil
	}
	n, ok := s.mu.nodes[info.Key()]
	if !ok {
		n = &nodeState{}
		s.mu.nodes[info.Key()] = n
	}
	var replaced *streamState
	if n.stream != 0 && n.stream != st.id {
		replaced = s.mu.streams[n.stream]
	}
	st.node, st.bound = info, true
	n.info = info
	n.expected = false
	n.stream = st.id
	n.connectedAt = now
	s.log.Info("node connected", "node", info.ID, "zone", info.Zone, "address", info.Address, "delta", st.delta)
	s.notifyLocked()
	return n, replaced, nil
}
