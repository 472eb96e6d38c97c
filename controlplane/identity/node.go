package controlplane

import (
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/dbproxy/dbproxy/controlplane/api"
	"github.com/dbproxy/dbproxy/controlplane/iam"
	"github.com/dbproxy/dbproxy/controlplane/pki"
	"github.com/dbproxy/dbproxy/controlplane/store"
	"github.com/dbproxy/dbproxy/controlplane/xds"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/sigv4"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// nodeAuthorizer checks a node's presigned token, that the token names the
// node id and zone the request names, and that the key's user may
// dbproxy:ReceiveConfig on zone/<zone>. It reads the key and the policies
// on every request, so that a disabled key or a detached policy takes
// effect on the next request.
type nodeAuthorizer struct {
	verifier *sigv4.Verifier
	store    store.Store
	log      hclog.Logger
	now      func() time.Time

	// mu caches verified tokens until they expire: a stream's token is
	// checked on every request and at every commit, and recomputing its
	// signature each time is most of the control plane's work at scale.
	// The key's state and the policies are still read every time.
	mu struct {
		sync.Mutex
		tokens map[[sha256.Size]byte]*sigv4.Token
	}
}

// verify checks a token's signature, or finds it already checked.
func (a *nodeAuthorizer) verify(ctx context.Context, raw string) (*sigv4.Token, error) {
	h := sha256.Sum256([]byte(raw))
	now := a.now()
	a.mu.Lock()
	tok, ok := a.mu.tokens[h]
	a.mu.Unlock()
	if ok && now.Before(tok.Expires) {
		return tok, nil
	}
	tok, err := a.verifier.VerifyToken(ctx, raw, sigv4.ServiceAPI)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.mu.tokens == nil {
		a.mu.tokens = map[[sha256.Size]byte]*sigv4.Token{}
	}
	for k, t := range a.mu.tokens {
		if !now.Before(t.Expires) {
			delete(a.mu.tokens, k)
		}
	}
	a.mu.tokens[h] = tok
	return tok, nil
}

var _ xds.Authorizer = (*nodeAuthorizer)(nil)

func (a *nodeAuthorizer) Authorize(ctx context.Context, md metadata.MD, node xdsapi.NodeInfo) error {
	vals := md.Get(xdsapi.TokenMetadataKey)
	if len(vals) != 1 || vals[0] == "" {
		return status.Errorf(codes.Unauthenticated, "no node token: send a presigned token in the %s metadata", xdsapi.TokenMetadataKey)
	}
	tok, err := a.verify(ctx, vals[0])
	if err != nil {
		return status.Error(codes.Unauthenticated, tokenProblem(err))
	}
	if tok.Action != xdsapi.NodeTokenAction {
		return status.Errorf(codes.PermissionDenied, "the token is for action %q, not %s", tok.Action, xdsapi.NodeTokenAction)
	}
	if id := tok.Params.Get(xdsapi.NodeTokenNodeParam); id != node.ID {
		return status.Errorf(codes.PermissionDenied, "the token was issued for node id %q, but the request names node %q", id, node.ID)
	}
	if z := tok.Params.Get(xdsapi.NodeTokenZoneParam); z != node.Zone {
		return status.Errorf(codes.PermissionDenied, "the token was issued for zone %q, but the request names zone %q", z, node.Zone)
	}
	if node.Zone == "" {
		return status.Error(codes.InvalidArgument, "the node names no zone (node.locality.zone)")
	}
	if !model.ValidZone(node.Zone) {
		// No proxy can list such a zone: the node would get an empty
		// configuration and never know why.
		return status.Errorf(codes.InvalidArgument, "the node's zone %q is not a valid zone name (lower-case letters, digits and hyphens)", node.Zone)
	}
	if node.Address != "" && !pki.ValidNodeAddress(node.Address) {
		// The control plane issues the node a certificate for this
		// address; refuse what is not a plain host name or IP address.
		return status.Errorf(codes.InvalidArgument, "the node address %q is not an IP address or a host name", node.Address)
	}
	key, err := api.ActiveKey(ctx, a.store, tok.AccessKeyID)
	if err != nil {
		return status.Error(codes.Unauthenticated, tokenProblem(err))
	}
	if key.User == model.RootUser {
		return nil
	}
	policies, err := api.UserPolicies(ctx, a.store, key.User, a.log)
	if err != nil {
		return status.Errorf(codes.Internal, "read the policies of user %s: %v", key.User, err)
	}
	resource := iam.ZoneResource(node.Zone)
	if d := iam.Evaluate(policies, iam.ActionReceiveConfig, resource); d != iam.Allow {
		return status.Errorf(codes.PermissionDenied, "user %s is not allowed dbproxy:ReceiveConfig on %s (%s)", key.User, resource, d)
	}
	return nil
}

// tokenProblem explains a verification error without echoing the token.
func tokenProblem(err error) string {
	switch {
	case errors.Is(err, sigv4.ErrExpired):
		return "the node token has expired"
	case errors.Is(err, sigv4.ErrClockSkew):
		return "the node token is signed in the future; check the node's clock"
	case errors.Is(err, sigv4.ErrUnknownKey):
		return "the node token's access key does not exist"
	case errors.Is(err, sigv4.ErrInactiveKey):
		return "the node token's access key is inactive"
	case errors.Is(err, sigv4.ErrBadSignature):
		return "the node token's signature does not match"
	case errors.Is(err, sigv4.ErrWrongService), errors.Is(err, sigv4.ErrWrongRegion):
		return "the node token has the wrong credential scope: " + err.Error()
	default:
		return "the node token is malformed"
	}
}

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
