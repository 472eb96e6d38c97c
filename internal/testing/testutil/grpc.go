package testutil

import (
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
)

// GRPCServer is a gRPC server a test serves on a loopback port.
type GRPCServer struct {
	// Addr is where it listens.
	Addr string
	once sync.Once
	stop func()
}

// ServeGRPC serves the services register adds on addr ("127.0.0.1:0"
// for a free port) until Stop or the end of the test. closeFirst, when
// set, runs before the server stops (a service's Close that ends its
// streams); Stop then waits for every handler, so that goroutine-leak
// checks see none left.
func ServeGRPC(t testing.TB, addr string, register func(*grpc.Server), closeFirst func()) *GRPCServer {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.WaitForHandlers(true))
	register(g)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = g.Serve(lis)
	}()
	s := &GRPCServer{Addr: lis.Addr().String(), stop: func() {
		if closeFirst != nil {
			closeFirst()
		}
		g.Stop()
		<-served
	}}
	t.Cleanup(s.Stop)
	return s
}

// Stop stops the server and waits for it; later calls do nothing.
func (s *GRPCServer) Stop() { s.once.Do(s.stop) }
