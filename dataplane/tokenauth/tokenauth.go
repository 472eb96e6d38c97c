// Package tokenauth verifies connect tokens on a data-plane node, offline:
// RDS-style SigV4 presigned tokens (service rds-db, action connect, the
// database user in DBUser) checked against the date-scoped signing keys and
// the grants the control plane pushed. The node never holds a secret access
// key and never calls the control plane to log a client in.
package tokenauth

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dbproxy/dbproxy/internal/sigv4"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// ConnectAction is the Action of a connect token.
const ConnectAction = "connect"

// ErrNotAllowed means the token is valid but its key may not connect as
// that database user through that proxy.
var ErrNotAllowed = errors.New("not allowed to connect")

// Verifier checks connect tokens against one set of pushed keys. It is
// safe for concurrent use; a new set of keys makes a new Verifier, so that
// what one remembers never outlives the keys it was checked with.
type Verifier struct {
	keys map[string]*key
	v    sigv4.Verifier
	now  func() time.Time

	// mu guards seen: the tokens whose signature this verifier checked,
	// until they expire. Applications reuse a token for many connections
	// during its 15 minutes; a signature check costs tens of
	// microseconds, a lookup well under one.
	mu   sync.Mutex
	seen map[string]verified
}

// verified is what a token's checked signature proved.
type verified struct {
	accessKeyID, action string
	dbUsers             []string
	expires             time.Time
}

// maxSeen bounds how many verified tokens a Verifier remembers.
const maxSeen = 4096

type key struct {
	user    string
	signing map[string][]byte
	allow   map[xdsapi.ConnectGrant]bool
}

// New returns a verifier for ck; nil ck (no keys pushed) gives one that
// refuses every token. now is the clock (nil: time.Now).
func New(ck *xdsapi.ConnectKeys, now func() time.Time) (*Verifier, error) {
	if now == nil {
		now = time.Now
	}
	vf := &Verifier{keys: map[string]*key{}, now: now, seen: map[string]verified{}}
	region := sigv4.DefaultRegion
	if ck != nil {
		if ck.Region != "" {
			region = ck.Region
		}
		for _, k := range ck.Keys {
			kk := &key{user: k.User, signing: map[string][]byte{}, allow: map[xdsapi.ConnectGrant]bool{}}
			for date, h := range k.SigningKeys {
				b, err := hex.DecodeString(h)
				if err != nil {
					// The error would quote key material; name the key only.
					return nil, fmt.Errorf("connect key %s: signing key for %s is not hex", k.AccessKeyID, date)
				}
				kk.signing[date] = b
			}
			for _, g := range k.Allow {
				kk.allow[g] = true
			}
			vf.keys[k.AccessKeyID] = kk
		}
	}
	vf.v = sigv4.Verifier{SigningKeys: vf.signingKey, Region: region, Now: now}
	return vf, nil
}

func (vf *Verifier) signingKey(_ context.Context, id string, scope sigv4.Scope) ([]byte, error) {
	k, ok := vf.keys[id]
	if !ok {
		return nil, &reason{msg: fmt.Sprintf("access key %s may not connect through this node (it is unknown, inactive or root's, or its user has no dbproxy:Connect grant for a proxy here)", id), err: sigv4.ErrUnknownKey}
	}
	if scope.Service != sigv4.ServiceRDS {
		return nil, fmt.Errorf("service %q: %w", scope.Service, sigv4.ErrWrongService)
	}
	sk, ok := k.signing[scope.Date]
	if !ok {
		return nil, &reason{msg: fmt.Sprintf("access key %s has no signing key for %s on this node (the token's date)", id, scope.Date), err: sigv4.ErrUnknownKey}
	}
	return sk, nil
}

// Identity is who a verified token speaks for.
type Identity struct {
	AccessKeyID string
	User        string
}

// Check verifies token for logging in as dbUser through proxy: signature,
// lifetime, action, DBUser, and the key's grant. The error says why in
// words fit for the client; it never contains the token.
func (vf *Verifier) Check(ctx context.Context, token, proxy, dbUser string) (Identity, error) {
	if vf == nil {
		return Identity{}, errors.New("this node has no connect keys")
	}
	tok, err := vf.verify(ctx, token)
	if err != nil {
		return Identity{}, err
	}
	if tok.action != ConnectAction {
		return Identity{}, fmt.Errorf("the token's action is %q, not %s", tok.action, ConnectAction)
	}
	if len(tok.dbUsers) != 1 || tok.dbUsers[0] != dbUser {
		return Identity{}, fmt.Errorf("the token is for another database user, not %s", dbUser)
	}
	k := vf.keys[tok.accessKeyID]
	if !k.allow[xdsapi.ConnectGrant{Proxy: proxy, DBUser: dbUser}] {
		return Identity{}, fmt.Errorf("access key %s (user %s) is %w as %s through proxy %s", tok.accessKeyID, k.user, ErrNotAllowed, dbUser, proxy)
	}
	return Identity{AccessKeyID: tok.accessKeyID, User: k.user}, nil
}

// verify checks the token's signature and lifetime, or finds it among the
// tokens already checked that have not expired.
func (vf *Verifier) verify(ctx context.Context, token string) (verified, error) {
	now := vf.now()
	vf.mu.Lock()
	e, ok := vf.seen[token]
	vf.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e, nil
	}
	tok, err := vf.v.VerifyToken(ctx, token, sigv4.ServiceRDS)
	if err != nil {
		return verified{}, describe(err)
	}
	e = verified{accessKeyID: tok.AccessKeyID, action: tok.Action, dbUsers: tok.Params["DBUser"], expires: tok.Expires}
	vf.mu.Lock()
	defer vf.mu.Unlock()
	if len(vf.seen) >= maxSeen {
		for t, old := range vf.seen {
			if !now.Before(old.expires) {
				delete(vf.seen, t)
			}
		}
		if len(vf.seen) >= maxSeen {
			clear(vf.seen)
		}
	}
	vf.seen[token] = e
	return e, nil
}

// describe turns a verification error into what the client is told; the
// result still matches the sigv4 sentinel with errors.Is.
func describe(err error) error {
	msg := "the connect token is not valid"
	switch {
	case errors.Is(err, sigv4.ErrMissingAuth), errors.Is(err, sigv4.ErrMalformed):
		msg = "the password is not a connect token"
	case errors.Is(err, sigv4.ErrExpired):
		msg = "the connect token has expired"
	case errors.Is(err, sigv4.ErrClockSkew):
		msg = "the connect token is signed in the future (is the client's clock right?)"
	case errors.Is(err, sigv4.ErrBadSignature):
		msg = "the connect token's signature does not match"
	case errors.Is(err, sigv4.ErrWrongRegion), errors.Is(err, sigv4.ErrWrongService):
		msg = "the connect token is signed for another region or service"
	}
	// The key lookup's own words name the key and why.
	var own *reason
	if errors.As(err, &own) {
		msg = own.msg
	}
	return &reason{msg: msg, err: err}
}

// reason is an error with a message of its own that unwraps to its cause.
type reason struct {
	msg string
	err error
}

func (r *reason) Error() string { return r.msg }
func (r *reason) Unwrap() error { return r.err }

// Common returns what two sets of connect keys agree on: the keys in
// both, with the signing keys (same day, same key) and grants of both. A
// node that cannot apply a new configuration keeps serving the old one
// with Common(old, new) keys, so that a revocation in the new one still
// takes effect while an addition waits for a configuration it can apply.
func Common(a, b *xdsapi.ConnectKeys) *xdsapi.ConnectKeys {
	if a == nil || b == nil || a.Region != b.Region {
		return nil
	}
	inB := map[string]xdsapi.ConnectKey{}
	for _, k := range b.Keys {
		inB[k.AccessKeyID] = k
	}
	out := &xdsapi.ConnectKeys{Region: a.Region, Keys: []xdsapi.ConnectKey{}}
	for _, ka := range a.Keys {
		kb, ok := inB[ka.AccessKeyID]
		if !ok {
			continue
		}
		k := xdsapi.ConnectKey{AccessKeyID: ka.AccessKeyID, User: ka.User, SigningKeys: map[string]string{}}
		for date, sk := range ka.SigningKeys {
			if kb.SigningKeys[date] == sk {
				k.SigningKeys[date] = sk
			}
		}
		grants := map[xdsapi.ConnectGrant]bool{}
		for _, g := range kb.Allow {
			grants[g] = true
		}
		for _, g := range ka.Allow {
			if grants[g] {
				k.Allow = append(k.Allow, g)
			}
		}
		if len(k.SigningKeys) > 0 && len(k.Allow) > 0 {
			out.Keys = append(out.Keys, k)
		}
	}
	return out
}
