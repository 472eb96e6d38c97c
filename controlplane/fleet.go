package controlplane

import (
	"context"
	"errors"

	"github.com/dbproxy/dbproxy/controlplane/xds"
	"github.com/dbproxy/dbproxy/internal/model"
)

// fleet adapts the xDS server to what the API reports.
type fleet struct{ s *xds.Server }

func (f fleet) Nodes() []model.Node { return apiNodes(f.s.Nodes()) }

func (f fleet) WaitRollout(ctx context.Context, rev uint64, zones []string) ([]model.Node, bool, error) {
	st, err := f.s.WaitRollout(ctx, rev, zones)
	return apiNodes(st), errors.Is(err, xds.ErrRolloutRejected), err
}

func apiNodes(in []xds.NodeStatus) []model.Node {
	out := make([]model.Node, 0, len(in))
	for _, n := range in {
		an := model.Node{ID: n.ID, Zone: n.Zone, Address: n.Address, Connected: n.Connected,
			CurrentVersion: n.CurrentVersion, CurrentRevision: n.CurrentRevision,
			AckedVersion: n.AckedVersion, AckedRevision: n.AckedRevision, BuildError: n.BuildError}
		if !n.ConnectedAt.IsZero() {
			t := n.ConnectedAt
			an.ConnectedAt = &t
		}
		if !n.LastSeen.IsZero() {
			t := n.LastSeen
			an.LastSeen = &t
		}
		if n.LastNack != nil {
			an.LastNack = &model.Nack{Version: n.LastNack.Version, TypeURL: n.LastNack.TypeURL, Message: n.LastNack.Message, At: n.LastNack.At}
		}
		out = append(out, an)
	}
	return out
}
