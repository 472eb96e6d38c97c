package xds

import (
	"context"
	"errors"
	"sync"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// errReplaced is the cancel cause of a stream superseded by a newer stream
// of the same node.
var errReplaced = errors.New("replaced by a newer stream of the same node")

// errStreamClosed is what a guarded stream's Send returns once the RPC has
// been ended from outside.
var errStreamClosed = errors.New("stream closed")

// streamHandleKey is the context key under which a stream's handle travels
// from the gRPC handler to the OnStreamOpen callbacks.
type streamHandleKey struct{}

// streamHandle lets the server end one stream (to replace it).
type streamHandle struct {
	cancel context.CancelCauseFunc
}

// guardedStream wraps a gRPC stream so that the server can end the RPC
// while go-control-plane's handler is still running: once closed, Send no
// longer touches the gRPC stream, and Context carries the stream handle.
type guardedStream[Req, Resp any] struct {
	grpc.BidiStreamingServer[Req, Resp]
	ctx context.Context

	mu struct {
		sync.Mutex
		closed bool
	}
}

// Context returns the stream context carrying the stream handle.
func (g *guardedStream[Req, Resp]) Context() context.Context { return g.ctx }

// Send sends m unless the stream was closed from outside.
func (g *guardedStream[Req, Resp]) Send(m *Resp) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.mu.closed {
		return errStreamClosed
	}
	return g.BidiStreamingServer.Send(m)
}

func (g *guardedStream[Req, Resp]) close() {
	g.mu.Lock()
	g.mu.closed = true
	g.mu.Unlock()
}

// adsService is the gRPC AggregatedDiscoveryService: it runs
// go-control-plane's handlers under a guard that can end a stream.
type adsService struct {
	s *Server
}

var _ discovery.AggregatedDiscoveryServiceServer = adsService{}

// StreamAggregatedResources serves one state-of-the-world ADS stream.
func (a adsService) StreamAggregatedResources(st grpc.BidiStreamingServer[discovery.DiscoveryRequest, discovery.DiscoveryResponse]) error {
	return serveGuarded(a.s, st, a.s.xds.StreamAggregatedResources)
}

// DeltaAggregatedResources serves one delta ADS stream.
func (a adsService) DeltaAggregatedResources(st grpc.BidiStreamingServer[discovery.DeltaDiscoveryRequest, discovery.DeltaDiscoveryResponse]) error {
	return serveGuarded(a.s, st, a.s.xds.DeltaAggregatedResources)
}

// serveGuarded runs inner on a guarded copy of st and returns when inner
// returns, when the stream is replaced, or when the server closes. inner
// may outlive the call by the moment it takes its blocked Recv to fail
// once the RPC has ended; the server's wait group tracks it.
func serveGuarded[Req, Resp any](s *Server, st grpc.BidiStreamingServer[Req, Resp], inner func(grpc.BidiStreamingServer[Req, Resp]) error) error {
	ctx, cancel := context.WithCancelCause(st.Context())
	defer cancel(nil)
	g := &guardedStream[Req, Resp]{BidiStreamingServer: st}
	g.ctx = context.WithValue(ctx, streamHandleKey{}, &streamHandle{cancel: cancel})

	if !s.startStream() {
		return status.Error(codes.Unavailable, "control plane is shutting down")
	}
	done := make(chan error, 1)
	go func() {
		defer s.wg.Done()
		done <- inner(g)
	}()

	select {
	case err := <-done:
		if err == nil && s.ctx.Err() != nil {
			return status.Error(codes.Unavailable, "control plane is shutting down")
		}
		return err
	case <-s.ctx.Done():
		g.close()
		return status.Error(codes.Unavailable, "control plane is shutting down")
	case <-ctx.Done():
		g.close()
		cause := context.Cause(ctx)
		if errors.Is(cause, errReplaced) {
			return status.Error(codes.Aborted, errReplaced.Error())
		}
		if st, ok := status.FromError(cause); ok && st.Code() != codes.OK && st.Code() != codes.Unknown {
			// Ended by the server, e.g. credentials revoked.
			return cause
		}
		return status.FromContextError(ctx.Err()).Err()
	}
}
