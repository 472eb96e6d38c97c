package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/dbproxy/dbproxy/controlplane/iam"
	"github.com/dbproxy/dbproxy/controlplane/store"
	"github.com/dbproxy/dbproxy/internal/model"
)

// Policies answers which policies apply to a user, like UserPolicies, from
// what it read and parsed before while the store's revision is the same.
// Parsing a user's documents is most of what authorising a request costs
// (about 1 ms for a policy of 100 statements), and every request of the
// user needs them: reading and parsing them on every request let one user
// with many policies slow every caller. A change to any policy or
// attachment makes a new store revision, so the next request after it
// reads again: a detached policy stops granting at once, as before. It is
// safe for concurrent use.
type Policies struct {
	st  store.Store
	log hclog.Logger

	mu struct {
		sync.Mutex
		// rev is the store revision users holds answers for.
		rev   uint64
		users map[string][]*iam.Policy
		// docs are parsed documents by policy name, kept across
		// revisions while the stored object is unchanged (the same
		// ModRevision): a write elsewhere in the store makes the next
		// request read the user's attachments again, but neither decode
		// nor parse the documents again. A document is
		// dropped when a whole revision passes without a read of it
		// (docs moves to prevDocs when the revision changes), so that
		// deleted policies do not stay.
		docs, prevDocs map[string]parsedDoc
	}
}

type parsedDoc struct {
	modRevision uint64
	policy      *iam.Policy // nil when the document does not parse
}

// NewPolicies returns a Policies reading st; log is told of stored
// documents that do not parse (once per change of the document).
func NewPolicies(st store.Store, log hclog.Logger) *Policies {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	c := &Policies{st: st, log: log}
	c.mu.users, c.mu.docs = map[string][]*iam.Policy{}, map[string]parsedDoc{}
	return c
}

// UserPolicies returns the parsed policies attached to user, in attachment
// order, as UserPolicies does. The slice and the policies are shared with
// other callers: they must not be changed.
func (c *Policies) UserPolicies(ctx context.Context, user string) ([]*iam.Policy, error) {
	rev := c.st.Revision()
	c.mu.Lock()
	if c.mu.rev == rev {
		if ps, ok := c.mu.users[user]; ok {
			c.mu.Unlock()
			return ps, nil
		}
	}
	c.mu.Unlock()

	atts, objs, viewRev, err := readUserPolicies(ctx, c.st, user)
	if err != nil {
		return nil, err
	}
	parsed := make(map[string]*iam.Policy, len(objs))
	for _, o := range objs {
		parsed[o.Key] = c.parse(o)
	}
	ps := Attached(parsed, atts, user)

	c.mu.Lock()
	defer c.mu.Unlock()
	if viewRev > c.mu.rev {
		c.mu.rev = viewRev
		c.mu.users = map[string][]*iam.Policy{}
		c.mu.prevDocs, c.mu.docs = c.mu.docs, map[string]parsedDoc{}
	}
	if viewRev == c.mu.rev {
		c.mu.users[user] = ps
	}
	// An answer from an older revision than one already held is
	// returned (it was true when the request began) but not kept.
	return ps, nil
}

// parse returns the parsed policy of a stored object, decoding and
// parsing it only when the object changed since it last did.
func (c *Policies) parse(o store.Object) *iam.Policy {
	c.mu.Lock()
	e, ok := c.mu.docs[o.Key]
	if !ok {
		if e, ok = c.mu.prevDocs[o.Key]; ok {
			c.mu.docs[o.Key] = e
		}
	}
	c.mu.Unlock()
	if ok && e.modRevision == o.ModRevision {
		return e.policy
	}
	var p *iam.Policy
	var pol model.Policy
	err := json.Unmarshal(o.Value, &pol)
	if err == nil {
		p, err = iam.ParseStoredPolicy(pol.Document)
	}
	if err != nil {
		c.log.Error("stored policy does not parse; it grants nothing", "policy", o.Key, "error", err)
		p = nil
	}
	c.mu.Lock()
	c.mu.docs[o.Key] = parsedDoc{modRevision: o.ModRevision, policy: p}
	c.mu.Unlock()
	return p
}

// readUserPolicies reads user's attachments and the stored policies they
// name (undecoded) in one snapshot, and returns its revision.
func readUserPolicies(ctx context.Context, st store.Store, user string) (atts []model.Attachment, pols []store.Object, rev uint64, err error) {
	rev, err = st.View(ctx, func(r store.Reader) error {
		var err error
		if atts, err = store.DecodeAll[model.Attachment](r, model.KindAttachment, user+"/"); err != nil {
			return err
		}
		for _, at := range atts {
			o, err := r.Get(model.KindPolicy, at.Policy)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			pols = append(pols, o)
		}
		return nil
	})
	if err != nil {
		return nil, nil, 0, fmt.Errorf("read the policies of user %s: %w", user, err)
	}
	return atts, pols, rev, nil
}
