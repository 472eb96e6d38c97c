// Package identity answers, in one place for the admin API, the node
// authorizer and the xDS translator, which access key a request is signed
// with and which policies apply to that key's user.
package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hashicorp/go-hclog"

	"github.com/dbproxy/dbproxy/controlplane/iam"
	"github.com/dbproxy/dbproxy/controlplane/store"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/sigv4"
)

// ActiveKey reads an access key, failing with sigv4.ErrUnknownKey or
// sigv4.ErrInactiveKey.
func ActiveKey(ctx context.Context, st store.Store, id string) (*model.AccessKey, error) {
	var k model.AccessKey
	_, err := st.View(ctx, func(r store.Reader) error { return get(r, model.KindAccessKey, id, &k) })
	if errors.Is(err, store.ErrNotFound) {
		return nil, sigv4.ErrUnknownKey
	}
	if err != nil {
		return nil, err
	}
	if k.Status != model.KeyActive {
		return nil, sigv4.ErrInactiveKey
	}
	return &k, nil
}

// ParsePolicies parses stored policy documents, once each. A document
// that does not parse grants nothing: documents are parsed before they
// are stored, so only a newer, stricter parser makes one. Its error is
// returned by policy name for the caller to report.
func ParsePolicies(docs []model.Policy) (parsed map[string]*iam.Policy, bad map[string]error) {
	parsed = make(map[string]*iam.Policy, len(docs))
	for _, d := range docs {
		p, err := iam.ParseStoredPolicy(d.Document)
		if err != nil {
			if bad == nil {
				bad = map[string]error{}
			}
			bad[d.Name] = err
			continue
		}
		parsed[d.Name] = p
	}
	return parsed, bad
}

// Attached returns the parsed policies of the attachments that belong to
// user, in attachment order; attachments of policies that are gone or do
// not parse give nothing.
func Attached(parsed map[string]*iam.Policy, atts []model.Attachment, user string) []*iam.Policy {
	var out []*iam.Policy
	for _, a := range atts {
		if p := parsed[a.Policy]; a.User == user && p != nil {
			out = append(out, p)
		}
	}
	return out
}

// UserPolicies reads the policies attached to user from the store and
// parses them; a stored document that does not parse is logged and grants
// nothing. It reads and parses on every call: servers use a Policies,
// which parses once per document.
func UserPolicies(ctx context.Context, st store.Store, user string, log hclog.Logger) ([]*iam.Policy, error) {
	atts, objs, _, err := readUserPolicies(ctx, st, user)
	if err != nil {
		return nil, err
	}
	docs := make([]model.Policy, 0, len(objs))
	for _, o := range objs {
		var pol model.Policy
		if err := json.Unmarshal(o.Value, &pol); err != nil {
			return nil, fmt.Errorf("decode %s/%s: %w", o.Kind, o.Key, err)
		}
		docs = append(docs, pol)
	}
	parsed, bad := ParsePolicies(docs)
	for name, err := range bad {
		log.Error("stored policy does not parse; it grants nothing", "policy", name, "error", err)
	}
	return Attached(parsed, atts, user), nil
}

func get(r store.Reader, kind, key string, v any) error {
	o, err := r.Get(kind, key)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(o.Value, v); err != nil {
		return fmt.Errorf("decode %s/%s: %w", kind, key, err)
	}
	return nil
}
