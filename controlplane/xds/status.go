package xds

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// NodeStatus is what the server knows about one node.
type NodeStatus struct {
	ID, Zone, Address string
	// Connected reports whether the node has an open stream.
	Connected bool
	// ConnectedAt is when the current (or last) stream named the node;
	// LastSeen when the node last sent a request or disconnected.
	ConnectedAt, LastSeen time.Time
	// CurrentVersion and CurrentRevision are what the server wants the
	// node to have.
	CurrentVersion  string
	CurrentRevision uint64
	// AckedVersion and AckedRevision are what the node acked for every
	// resource type.
	AckedVersion  string
	AckedRevision uint64
	// BuildError is why the control plane could not build or publish the
	// node's newest configuration ("" when it could).
	BuildError string
	// LastNack is the node's most recent rejection, if any; it stays
	// after later versions are acked (compare its Version).
	LastNack *Nack
}

// Nack is one rejection of a version by a node.
type Nack struct {
	Version, TypeURL, Message string
	At                        time.Time
}

// Nodes returns the status of every known node, sorted by zone, then id.
func (s *Server) Nodes() []NodeStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]NodeStatus, 0, len(s.mu.nodes))
	for _, n := range s.mu.nodes {
		out = append(out, n.statusLocked())
	}
	sortStatuses(out)
	return out
}

func (n *nodeState) statusLocked() NodeStatus {
	st := NodeStatus{
		ID:              n.info.ID,
		Zone:            n.info.Zone,
		Address:         n.info.Address,
		Connected:       n.stream != 0,
		ConnectedAt:     n.connectedAt,
		LastSeen:        n.lastSeen,
		CurrentVersion:  n.currentVersion,
		CurrentRevision: n.currentRevision,
		AckedVersion:    n.ackedVersion,
		AckedRevision:   n.ackedRevision,
		BuildError:      n.buildErr,
	}
	if n.lastNack != nil {
		nack := *n.lastNack
		st.LastNack = &nack
	}
	return st
}

func sortStatuses(st []NodeStatus) {
	sort.Slice(st, func(i, j int) bool {
		if st[i].Zone != st[j].Zone {
			return st[i].Zone < st[j].Zone
		}
		return st[i].ID < st[j].ID
	})
}

// WaitRollout blocks until every connected node in zones (nil: all zones;
// an empty non-nil slice: none) has acked, for every resource type, a
// snapshot built at revision >= rev, and each zone named in zones has a
// connected node. It returns the statuses of the
// connected nodes in zones; a node that NACKed the wanted version makes it
// return at once with an error wrapping ErrRolloutRejected; ctx expiry
// returns the statuses with ctx.Err() wrapped; Close returns ErrClosed.
func (s *Server) WaitRollout(ctx context.Context, rev uint64, zones []string) ([]NodeStatus, error) {
	for {
		s.mu.Lock()
		statuses, done, rejected := s.rolloutLocked(rev, zones)
		changed, closed := s.mu.changed, s.mu.closed
		s.mu.Unlock()

		switch {
		case closed:
			return statuses, ErrClosed
		case rejected != nil && rejected.BuildError != "":
			return statuses, fmt.Errorf("%w: the control plane cannot build the configuration of node %s (zone %s): %s",
				ErrRolloutRejected, rejected.ID, rejected.Zone, rejected.BuildError)
		case rejected != nil:
			return statuses, fmt.Errorf("%w: node %s (zone %s) rejected version %s (%s): %s",
				ErrRolloutRejected, rejected.ID, rejected.Zone, rejected.LastNack.Version, rejected.LastNack.TypeURL, rejected.LastNack.Message)
		case done:
			return statuses, nil
		}
		// Waking at the end of the reconnect grace lets a wait that only
		// waited for nodes known from before a restart finish.
		var graceEnd <-chan time.Time
		var timer *time.Timer
		if d := s.expectUntil.Sub(s.now()); d > 0 {
			timer = time.NewTimer(d)
			graceEnd = timer.C
		}
		var ctxErr error
		select {
		case <-changed:
		case <-graceEnd:
		case <-ctx.Done():
			ctxErr = ctx.Err()
		}
		if timer != nil {
			timer.Stop()
		}
		if ctxErr != nil {
			return statuses, fmt.Errorf("wait for rollout of revision %d: %w", rev, ctxErr)
		}
	}
}

// rolloutLocked reports the statuses of the connected nodes in zones (and,
// during the reconnect grace, of the expected ones not back yet), whether
// all of them have rev, and the first that rejected it.
func (s *Server) rolloutLocked(rev uint64, zones []string) (statuses []NodeStatus, done bool, rejected *NodeStatus) {
	done = true
	awaitExpected := s.now().Before(s.expectUntil)
	// A zone asked for by name is served only once a node of it is
	// connected: one with no node yet is waited for, not skipped.
	served := make(map[string]bool, len(zones))
	for _, n := range s.mu.nodes {
		if zones != nil && !slices.Contains(zones, n.info.Zone) {
			continue
		}
		if n.stream != 0 {
			served[n.info.Zone] = true
		}
		if n.stream == 0 {
			if n.expected && awaitExpected {
				// Known from before a restart, not back yet.
				statuses = append(statuses, n.statusLocked())
				done = false
			}
			continue
		}
		st := n.statusLocked()
		statuses = append(statuses, st)
		if st.AckedRevision >= rev && st.AckedVersion != "" {
			continue
		}
		done = false
		if st.BuildError != "" || (st.LastNack != nil && st.LastNack.Version == st.CurrentVersion && st.CurrentRevision >= rev && st.AckedVersion != st.CurrentVersion) {
			if rejected == nil || st.ID < rejected.ID {
				rejected = &st
			}
		}
	}
	for _, z := range zones {
		if !served[z] {
			done = false
		}
	}
	sortStatuses(statuses)
	return statuses, done, rejected
}

// ConnectedNodes lists the nodes connected now, for the control plane to
// keep as the next process's Options.Expected.
func (s *Server) ConnectedNodes() []xdsapi.NodeInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []xdsapi.NodeInfo
	for _, n := range s.mu.nodes {
		if n.stream != 0 {
			out = append(out, n.info)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}
