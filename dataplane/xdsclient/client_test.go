package xdsclient

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/dbproxy/dbproxy/controlplane/xds"
	"github.com/dbproxy/dbproxy/internal/testing/testutil"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
	"github.com/dbproxy/dbproxy/internal/xdstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestNewValidates(t *testing.T) {
	rec := &applyRecorder{}
	base := testOptions("127.0.0.1:1", rec, &testutil.SyncBuffer{})
	tests := []struct {
		name    string
		mutate  func(*Options)
		wantErr bool
	}{
		{"ok", func(*Options) {}, false},
		{"no target", func(o *Options) { o.Target = "" }, true},
		{"no node id", func(o *Options) { o.Node.ID = "" }, true},
		{"no token", func(o *Options) { o.Token = nil }, true},
		{"no apply", func(o *Options) { o.Apply = nil }, true},
		{"cache without key", func(o *Options) { o.CacheFile = "x" }, true},
		{"cache with short key", func(o *Options) { o.CacheFile, o.CacheKey = "x", []byte("short") }, true},
		{"cache with key", func(o *Options) { o.CacheFile, o.CacheKey = "x", testKey(1) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base
			tt.mutate(&o)
			_, err := New(o)
			if (err != nil) != tt.wantErr {
				t.Fatalf("New error = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestBackoffDelay(t *testing.T) {
	maxRand := func(n int64) int64 { return n - 1 }
	zero := func(int64) int64 { return 0 }
	tests := []struct {
		name    string
		b       Backoff
		attempt int
		want    time.Duration
	}{
		{"first, defaults", Backoff{Rand: maxRand}, 0, 250 * time.Millisecond},
		{"doubles", Backoff{Rand: maxRand}, 2, time.Second},
		{"capped", Backoff{Rand: maxRand}, 10, 30 * time.Second},
		{"no overflow", Backoff{Rand: maxRand}, 200, 30 * time.Second},
		{"full jitter reaches zero", Backoff{Rand: zero}, 5, 0},
		{"custom bounds", Backoff{Initial: time.Second, Max: 3 * time.Second, Rand: maxRand}, 1, 2 * time.Second},
		{"max below initial", Backoff{Initial: time.Second, Max: time.Millisecond, Rand: maxRand}, 3, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.b.Delay(tt.attempt); got != tt.want {
				t.Fatalf("Delay(%d) = %v, want %v", tt.attempt, got, tt.want)
			}
		})
	}
	// The real random source stays within the cap.
	for i := range 100 {
		if d := (Backoff{}).Delay(i % 8); d < 0 || d > 30*time.Second {
			t.Fatalf("Delay out of range: %v", d)
		}
	}
}

func TestBackoffUsesInjectedClock(t *testing.T) {
	fire := make(chan time.Time)
	var asked []time.Duration
	b := Backoff{After: func(d time.Duration) <-chan time.Time { asked = append(asked, d); return fire }}
	done := make(chan error, 1)
	go func() { done <- b.Wait(context.Background(), 42*time.Millisecond) }()
	fire <- time.Time{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Wait(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait with done ctx = %v", err)
	}
	if len(asked) != 2 || asked[0] != 42*time.Millisecond {
		t.Fatalf("After asked for %v", asked)
	}
}

func TestInitialSyncAppliesOnce(t *testing.T) {
	cp := startControlPlane(t, "", nil, nil)
	rec := &applyRecorder{}
	c, err := New(testOptions(cp.addr, rec, &testutil.SyncBuffer{}))
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c)

	want := versionOf(t, "a", "g0")
	if got := rec.waitCalls(t, 1); got[0] != want {
		t.Fatalf("applied %v, want %s", got, want)
	}
	call := rec.call(0)
	if len(call.res) != 4 {
		t.Fatalf("apply got %d types, want 4", len(call.res))
	}
	for _, typ := range xdsapi.ResourceTypes() {
		if len(call.res[typ]) != 1 || call.res[typ][0].GetTypeUrl() != typ {
			t.Fatalf("%s: %v", typ, call.res[typ])
		}
	}
	st, err := cp.waitRollout(1)
	if err != nil {
		t.Fatalf("WaitRollout: %v", err)
	}
	if len(st) != 1 || st[0].AckedVersion != want || st[0].Address != "127.0.0.1" {
		t.Fatalf("server status = %+v", st)
	}
	if got := rec.versions(); len(got) != 1 {
		t.Fatalf("applied %d times: %v", len(got), got)
	}
	testutil.Eventually(t, waitFor, "status", func() bool { s := c.Status(); return s.Connected && s.Version == want && !s.LastApplied.IsZero() })
	if s := c.Status(); s.LastError != "" {
		t.Fatalf("LastError = %q", s.LastError)
	}
}

func TestNewVersionAppliedAndAcked(t *testing.T) {
	cp := startControlPlane(t, "", nil, nil)
	rec := &applyRecorder{}
	c, err := New(testOptions(cp.addr, rec, &testutil.SyncBuffer{}))
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c)
	rec.waitCalls(t, 1)
	if _, err := cp.waitRollout(1); err != nil {
		t.Fatal(err)
	}

	rev, v1 := cp.build.set("a", "g1")
	cp.refresh()
	if _, err := cp.waitRollout(rev); err != nil {
		t.Fatalf("WaitRollout: %v", err)
	}
	if got := rec.versions(); len(got) != 2 || got[1] != v1 {
		t.Fatalf("applied %v, want second %s", got, v1)
	}
	if s := c.Status(); s.Version != v1 {
		t.Fatalf("status version %s, want %s", s.Version, v1)
	}
}

func TestRejectedVersionIsNacked(t *testing.T) {
	cp := startControlPlane(t, "", nil, nil)
	rec := &applyRecorder{}
	logs := &testutil.SyncBuffer{}
	c, err := New(testOptions(cp.addr, rec, logs))
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c)
	good := rec.waitCalls(t, 1)[0]
	if _, err := cp.waitRollout(1); err != nil {
		t.Fatal(err)
	}

	bad := versionOf(t, "a", "bad")
	rec.failVersion(bad, "listener p1/default: port 6033 in use")
	rev, _ := cp.build.set("a", "bad")
	cp.refresh()
	st, err := cp.waitRollout(rev)
	if !errors.Is(err, xds.ErrRolloutRejected) {
		t.Fatalf("WaitRollout = %v, want ErrRolloutRejected", err)
	}
	mustContain(t, err.Error(), "port 6033 in use")
	n := st[0]
	if n.LastNack == nil || n.LastNack.Version != bad || n.LastNack.Message != "listener p1/default: port 6033 in use" {
		t.Fatalf("LastNack = %+v", n.LastNack)
	}
	if n.AckedVersion != good {
		t.Fatalf("acked %s, want the previous %s", n.AckedVersion, good)
	}
	s := c.Status()
	if s.Version != good {
		t.Fatalf("status version %s, want the previous %s", s.Version, good)
	}
	mustContain(t, s.LastError, "port 6033 in use")
	mustContain(t, logs.String(), "rejecting configuration")

	// Same content at a new revision changes nothing; a fixed version is
	// applied; the rejected one is never applied again.
	cp.build.bump()
	cp.refresh()
	rev, fixed := cp.build.set("a", "fixed")
	cp.refresh()
	if _, err := cp.waitRollout(rev); err != nil {
		t.Fatalf("WaitRollout fixed: %v", err)
	}
	if got, want := rec.versions(), []string{good, bad, fixed}; !slices.Equal(got, want) {
		t.Fatalf("applied %v, want %v", got, want)
	}
	if s := c.Status(); s.Version != fixed || s.LastError != "" {
		t.Fatalf("status = %+v", s)
	}
}

func TestReconnectAfterServerRestart(t *testing.T) {
	cp := startControlPlane(t, "", nil, nil)
	rec := &applyRecorder{}
	c, err := New(testOptions(cp.addr, rec, &testutil.SyncBuffer{}))
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c)
	rec.waitCalls(t, 1)
	testutil.Eventually(t, waitFor, "connected", func() bool { return c.Status().Connected })

	cp.stop()
	testutil.Eventually(t, waitFor, "disconnected", func() bool { return !c.Status().Connected })

	build := cp.build
	rev, v2 := build.set("a", "after-restart")
	cp2 := startControlPlane(t, cp.addr, build, cp.auth)
	if got := rec.waitCalls(t, 2); got[1] != v2 {
		t.Fatalf("applied %v, want %s after the restart", got, v2)
	}
	if _, err := cp2.waitRollout(rev); err != nil {
		t.Fatalf("WaitRollout on the new server: %v", err)
	}
	testutil.Eventually(t, waitFor, "connected again", func() bool { return c.Status().Connected })
}

func TestReconnectSameVersionIsNotReapplied(t *testing.T) {
	cp := startControlPlane(t, "", nil, nil)
	rec := &applyRecorder{}
	c, err := New(testOptions(cp.addr, rec, &testutil.SyncBuffer{}))
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c)
	rec.waitCalls(t, 1)
	cp.stop()
	testutil.Eventually(t, waitFor, "disconnected", func() bool { return !c.Status().Connected })

	// The restarted server knows nothing about the node, yet it gets an
	// ACK of every type (the client asks with an empty version).
	cp2 := startControlPlane(t, cp.addr, cp.build, cp.auth)
	testutil.Eventually(t, waitFor, "reconnect", func() bool { return cp2.node("n1").Connected })
	st, err := cp2.waitRollout(1)
	if err != nil || len(st) != 1 {
		t.Fatalf("WaitRollout = %+v, %v", st, err)
	}
	if got := rec.versions(); len(got) != 1 {
		t.Fatalf("applied %v, want one apply", got)
	}
}

func TestCacheRoundTrip(t *testing.T) {
	cp := startControlPlane(t, "", nil, nil)
	file := filepath.Join(t.TempDir(), "config.bin")
	rec := &applyRecorder{}
	opts := testOptions(cp.addr, rec, &testutil.SyncBuffer{})
	opts.CacheFile, opts.CacheKey = file, testKey(7)
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	stop := runClient(t, c)
	rec.waitCalls(t, 1)
	if _, err := cp.waitRollout(1); err != nil {
		t.Fatal(err)
	}
	stop()
	cp.stop()

	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache mode %v, want 0600", fi.Mode().Perm())
	}
	raw, _ := os.ReadFile(file)
	for _, plain := range []string{"pw-g0", "p1/default", "db/s1"} {
		if bytesContains(raw, plain) {
			t.Fatalf("cache file holds %q in the clear", plain)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(file), ".*tmp*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}

	// Restart with the control plane down: the cache is applied.
	rec2 := &applyRecorder{}
	opts2 := opts
	opts2.Apply = rec2.apply
	c2, err := New(opts2)
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c2)
	got := rec2.waitCalls(t, 1)
	want := rec.call(0)
	if got[0] != want.version {
		t.Fatalf("applied %s from cache, want %s", got[0], want.version)
	}
	cached := rec2.call(0)
	for _, typ := range xdsapi.ResourceTypes() {
		if len(cached.res[typ]) != len(want.res[typ]) {
			t.Fatalf("%s: %d resources from cache, want %d", typ, len(cached.res[typ]), len(want.res[typ]))
		}
		for i := range want.res[typ] {
			if !proto.Equal(cached.res[typ][i], want.res[typ][i]) {
				t.Fatalf("%s[%d] differs after the cache round trip", typ, i)
			}
		}
	}
	if s := c2.Status(); s.Version != want.version || s.Connected {
		t.Fatalf("status = %+v", s)
	}
}

func TestCorruptCacheIgnored(t *testing.T) {
	cp := startControlPlane(t, "", nil, nil)
	serverVersion := versionOf(t, "a", "g0")
	cachedVersion := versionOf(t, "a", "cached")
	cachedRes := map[string][]*anypbAny{}
	for typ, list := range xdstest.Resources("a", "cached") {
		for _, r := range list {
			a, err := anypbNew(r)
			if err != nil {
				t.Fatal(err)
			}
			cachedRes[typ] = append(cachedRes[typ], a)
		}
	}
	tests := []struct {
		name    string
		corrupt func(t *testing.T, file string)
		valid   bool
	}{
		{"valid (control)", func(*testing.T, string) {}, true},
		{"garbage", func(t *testing.T, file string) { writeFile(t, file, []byte("not a sealed cache at all, just bytes")) }, false},
		{"truncated", func(t *testing.T, file string) {
			b, _ := os.ReadFile(file)
			writeFile(t, file, b[:len(b)/2])
		}, false},
		{"bit flip", func(t *testing.T, file string) {
			b, _ := os.ReadFile(file)
			b[len(b)-20] ^= 1
			writeFile(t, file, b)
		}, false},
		{"empty", func(t *testing.T, file string) { writeFile(t, file, nil) }, false},
		{"wrong key", func(t *testing.T, file string) { sealWith(t, file, testKey(9), "n1", cachedVersion, cachedRes) }, false},
		{"other node", func(t *testing.T, file string) { sealWith(t, file, testKey(7), "n2", cachedVersion, cachedRes) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "config.bin")
			sealWith(t, file, testKey(7), "n1", cachedVersion, cachedRes)
			tt.corrupt(t, file)

			rec := &applyRecorder{}
			logs := &testutil.SyncBuffer{}
			opts := testOptions(cp.addr, rec, logs)
			opts.CacheFile, opts.CacheKey = file, testKey(7)
			c, err := New(opts)
			if err != nil {
				t.Fatal(err)
			}
			stop := runClient(t, c)
			got := rec.waitCalls(t, 1)
			if tt.valid {
				if got[0] != cachedVersion {
					t.Fatalf("first apply %s, want the cached %s", got[0], cachedVersion)
				}
				rec.waitCalls(t, 2)
			} else {
				if got[0] != serverVersion {
					t.Fatalf("first apply %s, want the server's %s", got[0], serverVersion)
				}
				mustContain(t, logs.String(), "ignoring the cached configuration")
			}
			stop()
		})
	}
}

func TestRefusedNodeIsLoggedAndRetried(t *testing.T) {
	cp := startControlPlane(t, "", nil, nil)
	rec := &applyRecorder{}
	logs := &testutil.SyncBuffer{}
	opts := testOptions(cp.addr, rec, logs)
	opts.Node.Zone = "b" // n1 belongs to zone a
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c)
	testutil.Eventually(t, waitFor, "refusal logged", func() bool {
		return bytesContains([]byte(logs.String()), "control plane refused this node: node n1 may not receive configuration for zone b")
	})
	testutil.Eventually(t, waitFor, "retries", func() bool { return cp.auth.callCount() >= 3 })
	s := c.Status()
	mustContain(t, s.LastError, "refused")
	if s.Connected || s.Version != "" {
		t.Fatalf("status = %+v", s)
	}
	if v := rec.versions(); len(v) != 0 {
		t.Fatalf("refused node applied %v", v)
	}
	if n := cp.srv.Nodes(); len(n) != 0 {
		t.Fatalf("refused node recorded: %+v", n)
	}
}

func TestRunTwice(t *testing.T) {
	rec := &applyRecorder{}
	c, err := New(testOptions("127.0.0.1:1", rec, &testutil.SyncBuffer{}))
	if err != nil {
		t.Fatal(err)
	}
	stop := runClient(t, c)
	testutil.Eventually(t, waitFor, "first Run to start", func() bool { return c.running.Load() })
	if err := c.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Fatalf("second Run = %v, want ErrRunning", err)
	}
	stop()
}

func TestStreamRenewedBeforeTokenExpires(t *testing.T) {
	cp := startControlPlane(t, "", nil, nil)
	rec := &applyRecorder{}
	logs := &testutil.SyncBuffer{}
	opts := testOptions(cp.addr, rec, logs)
	tokens := 0
	var mu sync.Mutex
	inner := opts.Token
	opts.Token = func(ctx context.Context) (string, error) {
		mu.Lock()
		tokens++
		mu.Unlock()
		return inner(ctx)
	}
	opts.MaxStreamAge = 50 * time.Millisecond
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c)
	rec.waitCalls(t, 1)
	testutil.Eventually(t, waitFor, "three streams with fresh tokens", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return tokens >= 3
	})
	// The renewals are not failures, and the same version is not applied
	// again.
	if s := c.Status(); s.LastError != "" {
		t.Fatalf("status after renewals: %+v", s)
	}
	if got := rec.versions(); len(got) != 1 {
		t.Fatalf("applied %v after stream renewals; want one apply", got)
	}
	rev, v1 := cp.build.set("a", "g1")
	cp.refresh()
	if _, err := cp.waitRollout(rev); err != nil {
		t.Fatalf("rollout across renewed streams: %v", err)
	}
	testutil.Eventually(t, waitFor, "the new version applied", func() bool { return c.Status().Version == v1 })
}

// TestRunningVersionAppliedAgainAfterARejection: a node may act on part of
// a set it rejects (it drops the connect keys the set revokes), so when the
// control plane goes back to the running version, the client applies it
// again rather than only ACKing it.
func TestRunningVersionAppliedAgainAfterARejection(t *testing.T) {
	cp := startControlPlane(t, "", nil, nil)
	rec := &applyRecorder{}
	logs := &testutil.SyncBuffer{}
	c, err := New(testOptions(cp.addr, rec, logs))
	if err != nil {
		t.Fatal(err)
	}
	runClient(t, c)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	})
	good := rec.waitCalls(t, 1)[0]
	if _, err := cp.waitRollout(1); err != nil {
		t.Fatal(err)
	}
	bad := versionOf(t, "a", "bad")
	rec.failVersion(bad, "port in use")
	rev, _ := cp.build.set("a", "bad")
	cp.refresh()
	if _, err := cp.waitRollout(rev); !errors.Is(err, xds.ErrRolloutRejected) {
		t.Fatalf("WaitRollout = %v, want ErrRolloutRejected", err)
	}
	rev, back := cp.build.set("a", "g0")
	if back != good {
		t.Fatalf("the reverted content hashes to %s, want the running %s", back, good)
	}
	cp.refresh()
	if _, err := cp.waitRollout(rev); err != nil {
		t.Fatalf("WaitRollout back: %v", err)
	}
	// The node acked the running version long ago, so the rollout may
	// be complete before the client has it again: wait for the apply.
	rec.waitCalls(t, 3)
	if got, want := rec.versions(), []string{good, bad, good}; !slices.Equal(got, want) {
		t.Fatalf("applied %v, want %v", got, want)
	}
	// Once applied again, the same version is only ACKed.
	cp.build.bump()
	cp.refresh()
	if got := rec.versions(); len(got) != 3 {
		t.Fatalf("applied %v after a revision with the same content", got)
	}
}
