package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/dbproxy/dbproxy/internal/atomicfile"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// NodesFile keeps the nodes connected to this control plane, so that after
// a restart a rollout waits for them to come back (see
// xds.Options.Expected). It is not part of the desired state: writing it
// must not make a new store revision.
const NodesFile = "nodes.json"

// nodesSaveInterval is how often the connected set is compared and saved.
const nodesSaveInterval = 2 * time.Second

// loadNodes reads the nodes saved by the previous process; a missing or
// unreadable file means none (logged by the caller).
func loadNodes(dir string) ([]xdsapi.NodeInfo, error) {
	b, err := os.ReadFile(filepath.Join(dir, NodesFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", NodesFile, err)
	}
	var nodes []xdsapi.NodeInfo
	if err := json.Unmarshal(b, &nodes); err != nil {
		return nil, fmt.Errorf("parse %s: %w", NodesFile, err)
	}
	return nodes, nil
}

// saveNodes writes the connected set atomically.
func saveNodes(dir string, nodes []xdsapi.NodeInfo) error {
	if nodes == nil {
		nodes = []xdsapi.NodeInfo{}
	}
	b, err := json.Marshal(nodes)
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, NodesFile), b, 0o600)
}

// keepNodes saves the connected set whenever it changed, until ctx ends.
func (s *Server) keepNodes(ctx context.Context) {
	var last []xdsapi.NodeInfo
	tick := time.NewTicker(nodesSaveInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		last = s.saveConnected(last)
	}
}

// saveConnected saves the connected set unless it equals last; it returns
// what is saved now.
func (s *Server) saveConnected(last []xdsapi.NodeInfo) []xdsapi.NodeInfo {
	cur := s.xds.ConnectedNodes()
	if last != nil && slices.Equal(cur, last) {
		return last
	}
	if err := saveNodes(s.opts.DataDir, cur); err != nil {
		s.log.Warn("cannot save the connected nodes", "error", err)
		return last
	}
	if cur == nil {
		cur = []xdsapi.NodeInfo{}
	}
	return cur
}
