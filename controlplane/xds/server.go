// Package xds is the control plane's ADS server: it serves per-node
// snapshots over go-control-plane's aggregated discovery service (state of
// the world with ordered ADS, and delta), authorizes every request of every
// stream, tracks which version each node acked or rejected, and lets
// callers wait until a store revision has rolled out.
//
// Snapshots come from an injected BuildFunc (the translator); credentials
// are checked by an injected Authorizer.
package xds

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/dbproxy/dbproxy/controlplane/identity"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// BuildFunc builds the snapshot a node should have now and the store
// revision it was built from. The server never writes a snapshot it is
// given except for its lazily built version map (publishing reads it), so
// a snapshot returned for several nodes must have had ConstructVersionMap
// called before it is shared.
type BuildFunc func(ctx context.Context, node xdsapi.NodeInfo) (snap *cache.Snapshot, revision uint64, err error)

// Options configure a Server. Authorizer and Build are required.
type Options struct {
	// Logger receives the server's logs; nil discards them.
	Logger hclog.Logger
	// Authorizer checks every request.
	Authorizer identity.Authorizer
	// Build makes a node's snapshot.
	Build BuildFunc
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// ForgetAfter drops the record of a node disconnected this long
	// (default 1h), so that churning node ids do not pile up.
	ForgetAfter time.Duration
	// Expected are the nodes that were connected when the previous
	// control-plane process stopped (see ConnectedNodes). For
	// ReconnectGrace after New, a rollout waits for them too, so that a
	// change made right after a restart is not reported complete before
	// the fleet is back.
	Expected []xdsapi.NodeInfo
	// ReconnectGrace is how long Expected nodes are waited for (default
	// 45s: nodes retry within 30s).
	ReconnectGrace time.Duration
}

// DefaultReconnectGrace is the default of Options.ReconnectGrace.
const DefaultReconnectGrace = 45 * time.Second

// DefaultForgetAfter is the default of Options.ForgetAfter.
const DefaultForgetAfter = time.Hour

// Errors the server returns; test them with errors.Is.
var (
	// ErrRolloutRejected means a node NACKed the version a rollout waits for.
	ErrRolloutRejected = errors.New("rollout rejected by a node")
	// ErrClosed means the server was closed.
	ErrClosed = errors.New("xds server closed")
)

// versionHistory bounds how many (version → revision) pairs a node record
// remembers for resolving the revision of a late ACK.
const versionHistory = 16

// Server is the ADS server. Create it with New, attach it to a gRPC server
// with Register, call Refresh after every store commit, and Close it when
// done.
type Server struct {
	log   hclog.Logger
	auth  identity.Authorizer
	build BuildFunc
	now   func() time.Time
	// forgetAfter is Options.ForgetAfter.
	forgetAfter time.Duration
	// expectUntil ends the wait for Options.Expected nodes.
	expectUntil time.Time

	cache cache.SnapshotCache
	xds   serverv3.Server

	// ctx ends with Close; go-control-plane's handlers stop with it.
	ctx    context.Context
	cancel context.CancelFunc
	// wg counts go-control-plane handler goroutines (see serveGuarded).
	wg sync.WaitGroup
	// refreshSem serialises Refresh calls.
	refreshSem chan struct{}

	mu struct {
		sync.Mutex
		closed  bool
		nodes   map[string]*nodeState
		streams map[int64]*streamState
		// changed is closed and replaced whenever a node's status
		// changes; WaitRollout waits on it.
		changed chan struct{}
	}
}

// zoneIDHash keys go-control-plane's snapshot cache by nodeKey.
type zoneIDHash struct{}

// ID returns the cache key of n.
func (zoneIDHash) ID(n *core.Node) string { return xdsapi.NodeInfoFrom(n).Key() }

// nodeState is the record of one node (zone and id). Records survive
// disconnects.
type nodeState struct {
	// pub orders Build results per node: the publisher holds it while it
	// checks revisions and calls SetSnapshot. Never held with Server.mu
	// by a callback; lock order is pub, then Server.mu.
	pub sync.Mutex

	// The rest is guarded by Server.mu.
	info            xdsapi.NodeInfo
	stream          int64 // current stream id; 0 when disconnected
	connectedAt     time.Time
	lastSeen        time.Time
	currentVersion  string
	currentRevision uint64
	published       bool
	versions        map[string]versionInfo // recent versions published
	acked           map[string]string      // type URL → acked version
	ackedVersion    string
	ackedRevision   uint64
	lastNack        *Nack
	// buildErr is why the node's newest snapshot could not be built or
	// published; empty once one is.
	buildErr string
	// expected marks a node known from before a restart that has not
	// connected to this process yet.
	expected bool
}

// versionInfo is what a node record remembers of a published version.
type versionInfo struct {
	// rev is the newest revision built with this version.
	rev uint64
	// types holds a content hash per resource type (xdsapi.ResourceTypes
	// order). A delta client is not sent a type whose content did not
	// change, so an ACK at a new version also stands for every type whose
	// content equals what the node acked before.
	types [xdsapi.NumResourceTypes]string
}

// New returns a Server. It starts no goroutines until streams arrive.
func New(opts Options) (*Server, error) {
	if opts.Authorizer == nil {
		return nil, errors.New("xds: Options.Authorizer is required")
	}
	if opts.Build == nil {
		return nil, errors.New("xds: Options.Build is required")
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ForgetAfter <= 0 {
		opts.ForgetAfter = DefaultForgetAfter
	}
	if opts.ReconnectGrace <= 0 {
		opts.ReconnectGrace = DefaultReconnectGrace
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		log:         opts.Logger,
		auth:        opts.Authorizer,
		build:       opts.Build,
		now:         opts.Now,
		forgetAfter: opts.ForgetAfter,
		ctx:         ctx,
		cancel:      cancel,
		refreshSem:  make(chan struct{}, 1),
	}
	s.mu.nodes = make(map[string]*nodeState)
	s.mu.streams = make(map[int64]*streamState)
	now := opts.Now()
	s.expectUntil = now.Add(opts.ReconnectGrace)
	for _, info := range opts.Expected {
		if info.ID == "" || info.Zone == "" {
			continue
		}
		s.mu.nodes[info.Key()] = &nodeState{info: info, lastSeen: now, expected: true}
	}
	s.mu.changed = make(chan struct{})
	libLog := logAdapter{l: opts.Logger.Named("go-control-plane")}
	s.cache = cache.NewSnapshotCache(true, zoneIDHash{}, libLog)
	s.xds = serverv3.NewServer(ctx, s.cache, callbacks{s: s}, sotw.WithOrderedADS(), sotw.WithLogger(libLog))
	return s, nil
}

// Register adds the aggregated discovery service (state of the world and
// delta) to g.
func (s *Server) Register(g *grpc.Server) {
	discovery.RegisterAggregatedDiscoveryServiceServer(g, adsService{s: s})
}

// Close ends every stream and waits for their handlers. Streams opened
// afterwards are refused. Close is idempotent.
func (s *Server) Close() {
	s.mu.Lock()
	s.mu.closed = true
	s.notifyLocked()
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
}

// startStream counts a stream handler in, unless the server is closed.
func (s *Server) startStream() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// Refresh rebuilds and publishes the snapshot of every known node (call it
// after each store commit). Snapshots must pass Consistent() before
// SetSnapshot. Concurrent calls run one after the other; a build error for
// one node does not stop the others and is returned joined with the rest.
// After Close it returns ErrClosed.
func (s *Server) Refresh(ctx context.Context) error {
	select {
	case s.refreshSem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("refresh: %w", ctx.Err())
	}
	defer func() { <-s.refreshSem }()

	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	// Only connected nodes are rebuilt: a node that reconnects gets a
	// fresh build on its first request. Long-gone nodes are forgotten.
	infos := make([]xdsapi.NodeInfo, 0, len(s.mu.nodes))
	forget := s.now().Add(-s.forgetAfter)
	for key, n := range s.mu.nodes {
		switch {
		case n.stream != 0:
			infos = append(infos, n.info)
		case n.lastSeen.Before(forget):
			delete(s.mu.nodes, key)
			s.cache.ClearSnapshot(key)
			s.log.Info("forgetting a node disconnected since "+n.lastSeen.Format(time.RFC3339), "node", n.info.ID, "zone", n.info.Zone)
		}
	}
	s.mu.Unlock()
	sort.Slice(infos, func(i, j int) bool { return infos[i].ID < infos[j].ID })

	s.reauthorize()
	var errs []error
	for _, info := range infos {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, fmt.Errorf("refresh: %w", err))...)
		}
		if err := s.buildAndPublish(ctx, info); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// reauthorize checks every bound stream's credentials again and ends the
// streams that are no longer allowed, so that a disabled key or a detached
// policy cuts a node off at the next commit rather than at the node's next
// request, which may never come.
func (s *Server) reauthorize() {
	s.mu.Lock()
	streams := make([]*streamState, 0, len(s.mu.streams))
	for _, st := range s.mu.streams {
		if st.bound && st.handle != nil {
			streams = append(streams, st)
		}
	}
	s.mu.Unlock()
	for _, st := range streams {
		if err := s.auth.Authorize(st.ctx, st.md, st.node); err != nil {
			err = identity.AuthStatus(err)
			s.log.Warn("ending stream: node no longer authorized", "node", st.node.ID, "zone", st.node.Zone, "reason", status.Convert(err).Message())
			st.handle.cancel(err)
		}
	}
}

// buildAndPublish builds info's snapshot and publishes it.
func (s *Server) buildAndPublish(ctx context.Context, info xdsapi.NodeInfo) error {
	snap, rev, err := s.build(ctx, info)
	if err == nil {
		err = s.publish(info, snap, rev)
	}
	// A failure is kept on the node's record, so that a rollout waiting
	// for the node can say why it will not come, rather than time out.
	s.mu.Lock()
	if n, ok := s.mu.nodes[info.Key()]; ok {
		n.buildErr = ""
		if err != nil {
			n.buildErr = err.Error()
		}
		s.notifyLocked()
	}
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("build and publish the snapshot for node %s: %w", info.ID, err)
	}
	return nil
}

// publish sets snap as info's snapshot unless a newer revision was
// published meanwhile or the node's identity changed since the build.
func (s *Server) publish(info xdsapi.NodeInfo, snap *cache.Snapshot, rev uint64) error {
	snap, version, err := normalizeSnapshot(snap)
	if err != nil {
		return err
	}
	if err := snap.Consistent(); err != nil {
		return fmt.Errorf("inconsistent snapshot %s: %w", version, err)
	}
	typeHashes, err := typeHashes(snap)
	if err != nil {
		return err
	}

	s.mu.Lock()
	n, ok := s.mu.nodes[info.Key()]
	s.mu.Unlock()
	if !ok {
		return nil
	}
	n.pub.Lock()
	defer n.pub.Unlock()

	s.mu.Lock()
	stale := n.info != info || (n.published && rev < n.currentRevision)
	same := n.published && version == n.currentVersion
	s.mu.Unlock()
	if stale {
		s.log.Debug("skipping stale snapshot", "node", info.ID, "version", version, "revision", rev)
		return nil
	}
	if !same {
		if err := s.cache.SetSnapshot(s.ctx, info.Key(), snap); err != nil {
			return fmt.Errorf("set snapshot %s: %w", version, err)
		}
		s.log.Debug("published snapshot", "node", info.ID, "zone", info.Zone, "version", version, "revision", rev)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	n.published = true
	n.currentVersion = version
	n.currentRevision = max(n.currentRevision, rev)
	n.rememberVersionLocked(version, rev, typeHashes)
	if n.ackedVersion == version {
		// The node already runs this content; it now stands for rev too.
		n.ackedRevision = max(n.ackedRevision, rev)
	}
	s.notifyLocked()
	return nil
}

// normalizeSnapshot checks that the dbproxy types share one version and
// gives every missing one an empty resource set at that version, so that a
// wildcard subscriber always gets an answer for all four. It returns the
// snapshot to publish (a copy when something was filled in: the builder's
// snapshot may be shared by several nodes and is never written) and the
// version.
func normalizeSnapshot(snap *cache.Snapshot) (*cache.Snapshot, string, error) {
	if snap == nil {
		return nil, "", errors.New("nil snapshot")
	}
	version := ""
	for _, t := range xdsapi.ResourceTypes() {
		v := snap.GetVersion(t)
		switch {
		case v == "":
		case version == "":
			version = v
		case v != version:
			return nil, "", fmt.Errorf("snapshot types carry different versions (%s and %s)", version, v)
		}
	}
	if version == "" {
		return nil, "", errors.New("snapshot has no version")
	}
	out := snap
	for _, t := range xdsapi.ResourceTypes() {
		if snap.GetVersion(t) == "" {
			if out == snap {
				c := *snap // Resources is an array: the copy is independent
				c.VersionMap = nil
				out = &c
			}
			out.Resources[cache.GetResponseType(t)] = cache.NewResources(version, nil)
		}
	}
	return out, version, nil
}

// typeHashes returns a content hash per dbproxy resource type.
func typeHashes(snap *cache.Snapshot) ([xdsapi.NumResourceTypes]string, error) {
	var out [xdsapi.NumResourceTypes]string
	if err := snap.ConstructVersionMap(); err != nil {
		return out, fmt.Errorf("hash snapshot resources: %w", err)
	}
	for i, t := range xdsapi.ResourceTypes() {
		vm := snap.GetVersionMap(t)
		names := make([]string, 0, len(vm))
		for name := range vm {
			names = append(names, name)
		}
		sort.Strings(names)
		h := sha256.New()
		for _, name := range names {
			fmt.Fprintf(h, "%d:%s=%s;", len(name), name, vm[name])
		}
		out[i] = hex.EncodeToString(h.Sum(nil))
	}
	return out, nil
}

// rememberVersionLocked records that version was built at rev, keeping a
// bounded history.
func (n *nodeState) rememberVersionLocked(version string, rev uint64, hashes [xdsapi.NumResourceTypes]string) {
	if n.versions == nil {
		n.versions = make(map[string]versionInfo)
	}
	vi := n.versions[version]
	vi.rev = max(vi.rev, rev)
	vi.types = hashes
	n.versions[version] = vi
	for len(n.versions) > versionHistory {
		oldest, oldestRev := "", uint64(0)
		for v, vi := range n.versions {
			if v != version && (oldest == "" || vi.rev < oldestRev) {
				oldest, oldestRev = v, vi.rev
			}
		}
		delete(n.versions, oldest)
	}
}

// ackLocked records that the node acked version for typeURL and updates the
// whole-node acked version when all types agree. A type acked at an older
// version whose content is unchanged in version counts as acked at version
// (delta clients are sent only the types that changed).
func (n *nodeState) ackLocked(typeURL, version string) {
	if n.acked == nil {
		n.acked = make(map[string]string)
	}
	n.acked[typeURL] = version
	vi, known := n.versions[version]
	for i, t := range xdsapi.ResourceTypes() {
		prev := n.acked[t]
		if prev == version {
			continue
		}
		pvi, ok := n.versions[prev]
		if !known || !ok || pvi.types[i] != vi.types[i] {
			return
		}
	}
	for _, t := range xdsapi.ResourceTypes() {
		n.acked[t] = version
	}
	n.ackedVersion = version
	n.ackedRevision = vi.rev
}

// notifyLocked wakes WaitRollout callers.
func (s *Server) notifyLocked() {
	close(s.mu.changed)
	s.mu.changed = make(chan struct{})
}
