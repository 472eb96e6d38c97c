package identity

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/dbproxy/dbproxy/controlplane/iam"
	"github.com/dbproxy/dbproxy/controlplane/pki"
	"github.com/dbproxy/dbproxy/controlplane/store"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/sigv4"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// Authorizer checks a node's credentials. md is the stream's gRPC metadata
// (the token is md[xdsapi.TokenMetadataKey]). It is called for every
// request on every stream, SotW and Delta, ADS and HDS, with the node the
// request names. The returned error should be a gRPC status
// (codes.Unauthenticated / codes.PermissionDenied) with a clear reason;
// the stream is then closed with it.
type Authorizer interface {
	Authorize(ctx context.Context, md metadata.MD, node xdsapi.NodeInfo) error
}

// AuthStatus returns an Authorizer's error as the gRPC status error the
// stream ends with: err itself when it is a status error with a code other
// than OK and Unknown, and codes.PermissionDenied naming err otherwise.
func AuthStatus(err error) error {
	if st, ok := status.FromError(err); ok && st.Code() != codes.OK && st.Code() != codes.Unknown {
		return err
	}
	return status.Error(codes.PermissionDenied, fmt.Sprintf("node not authorized: %v", err))
}

// AuthorizerFunc adapts a function to the Authorizer interface.
type AuthorizerFunc func(ctx context.Context, md metadata.MD, node xdsapi.NodeInfo) error

// Authorize calls f.
func (f AuthorizerFunc) Authorize(ctx context.Context, md metadata.MD, node xdsapi.NodeInfo) error {
	return f(ctx, md, node)
}

// NodeAuthorizer checks a node's presigned token, that the token names the
// node id and zone the request names, and that the key's user may
// dbproxy:ReceiveConfig on zone/<zone>. It reads the key on every request
// and the policies whenever the store's revision changed, so that a
// disabled key or a detached policy takes effect on the next request.
type NodeAuthorizer struct {
	verifier *sigv4.Verifier
	store    store.Store
	policies *Policies
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

// NewNodeAuthorizer returns an authorizer that verifies tokens with
// verifier and reads keys and policies from st.
func NewNodeAuthorizer(verifier *sigv4.Verifier, st store.Store, log hclog.Logger, now func() time.Time) *NodeAuthorizer {
	if now == nil {
		now = time.Now
	}
	return &NodeAuthorizer{verifier: verifier, store: st, policies: NewPolicies(st, log), log: log, now: now}
}

// verify checks a token's signature, or finds it already checked.
func (a *NodeAuthorizer) verify(ctx context.Context, raw string) (*sigv4.Token, error) {
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

var _ Authorizer = (*NodeAuthorizer)(nil)

// Authorize checks one request of a node.
func (a *NodeAuthorizer) Authorize(ctx context.Context, md metadata.MD, node xdsapi.NodeInfo) error {
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
	key, err := ActiveKey(ctx, a.store, tok.AccessKeyID)
	if err != nil {
		return status.Error(codes.Unauthenticated, tokenProblem(err))
	}
	if key.User == model.RootUser {
		return nil
	}
	policies, err := a.policies.UserPolicies(ctx, key.User)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
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
