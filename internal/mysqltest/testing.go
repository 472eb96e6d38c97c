package mysqltest

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// tStartTimeout bounds a start from the testing wrappers.
const tStartTimeout = 2 * time.Minute

// StartT starts a server for a test and closes it when the test ends. It
// fails the test (never skips it) when the server cannot start, including
// when MariaDB is not installed. Without opts.Logger, events go to t.Log.
func StartT(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = TestLogger(t)
	}
	ctx, cancel := context.WithTimeout(t.Context(), tStartTimeout)
	defer cancel()
	s, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close mariadbd: %v", err)
		}
	})
	return s
}

// StartReplicatedT is StartReplicated for tests: it fails the test on error
// and closes every server when the test ends.
func StartReplicatedT(t testing.TB, replicas int, opts Options) (*Server, []*Server) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = TestLogger(t)
	}
	ctx, cancel := context.WithTimeout(t.Context(), tStartTimeout)
	defer cancel()
	primary, reps, err := StartReplicated(ctx, replicas, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, s := range append(reps, primary) {
			if err := s.Close(); err != nil {
				t.Errorf("close mariadbd: %v", err)
			}
		}
	})
	return primary, reps
}

// TestLogger returns an hclog.Logger that writes to t.Log until the test's
// cleanups have run, and drops lines after that (t.Log panics once a test
// has finished).
func TestLogger(t testing.TB) hclog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.finish) // registered first, so it runs after the servers' Close
	return hclog.New(&hclog.LoggerOptions{
		Name:        "mysqltest",
		Output:      w,
		Level:       hclog.LevelFromString(os.Getenv("DBPROXY_TEST_LOG")),
		DisableTime: true,
	})
}

type testWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) finish() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
}
