package translate

import (
	"cmp"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/dbproxy/dbproxy/controlplane/iam"
	"github.com/dbproxy/dbproxy/controlplane/identity"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/sigv4"
	"github.com/dbproxy/dbproxy/internal/vocab"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// connectPrincipal is an IAM user that may hold dbproxy:Connect: its
// parsed policies and its active access keys.
type connectPrincipal struct {
	user     string
	policies []*iam.Policy
	keys     []model.AccessKey
}

// connectPrincipals returns the users with active keys, sorted, each with
// its policies. Root is left out: its key is for the admin API, and
// nodes never hold signing material of it. A policy that does not parse
// grants nothing, by the rule of identity.ParsePolicies (the API logs
// such a policy whenever it authorizes its user).
func connectPrincipals(s *model.State) []connectPrincipal {
	docs, _ := identity.ParsePolicies(s.Policies)
	byUser := map[string]*connectPrincipal{}
	for _, k := range s.AccessKeys {
		if k.User == model.RootUser || k.Status != model.KeyActive || k.SecretAccessKey == "" {
			continue
		}
		p, ok := byUser[k.User]
		if !ok {
			p = &connectPrincipal{user: k.User}
			byUser[k.User] = p
		}
		p.keys = append(p.keys, k)
	}
	out := make([]connectPrincipal, 0, len(byUser))
	for _, name := range slices.Sorted(maps.Keys(byUser)) {
		p := byUser[name]
		p.policies = identity.Attached(docs, s.Attachments, name)
		slices.SortFunc(p.keys, func(a, b model.AccessKey) int { return cmp.Compare(a.ID, b.ID) })
		out = append(out, *p)
	}
	return out
}

// addConnectGrants records which keys may connect through proxy as each
// database user of its auth blocks that require IAM authentication.
func (b *builder) addConnectGrants(p model.Proxy) {
	if b.principals == nil {
		b.principals = connectPrincipals(b.state)
	}
	b.connect = true
	for _, a := range p.Auth {
		if a.IAMAuth != vocab.IAMAuthRequired {
			continue
		}
		sec, ok := b.ix.secrets[a.Secret]
		if !ok {
			continue
		}
		res := iam.ProxyDBUserResource(p.Name, sec.Username)
		for _, pr := range b.principals {
			if !iam.Evaluate(pr.policies, iam.ActionConnect, res).Allowed() {
				continue
			}
			for _, k := range pr.keys {
				g, ok := b.grants[k.ID]
				if !ok {
					g = &grantSet{key: k, allow: map[xdsapi.ConnectGrant]bool{}}
					b.grants[k.ID] = g
				}
				g.allow[xdsapi.ConnectGrant{Proxy: p.Name, DBUser: sec.Username}] = true
			}
		}
	}
}

type grantSet struct {
	key   model.AccessKey
	allow map[xdsapi.ConnectGrant]bool
}

// ConnectDates returns the credential-scope dates a node gets signing keys
// for at now: the UTC day before, of and after it, so that tokens signed
// around midnight on either side verify until the next refresh.
func ConnectDates(now time.Time) []string {
	now = now.UTC()
	return []string{sigv4.ScopeDate(now.AddDate(0, 0, -1)), sigv4.ScopeDate(now), sigv4.ScopeDate(now.AddDate(0, 0, 1))}
}

// connectKeys builds the ConnectKeys payload from the recorded grants.
func (b *builder) connectKeys() xdsapi.ConnectKeys {
	region := cmp.Or(b.opts.Region, sigv4.DefaultRegion)
	out := xdsapi.ConnectKeys{Region: region, Keys: []xdsapi.ConnectKey{}}
	dates := ConnectDates(b.opts.Now)
	for _, id := range slices.Sorted(maps.Keys(b.grants)) {
		g := b.grants[id]
		ck := xdsapi.ConnectKey{AccessKeyID: id, User: g.key.User, SigningKeys: map[string]string{}}
		for _, d := range dates {
			sk := sigv4.SigningKey(g.key.SecretAccessKey, sigv4.Scope{Date: d, Region: region, Service: sigv4.ServiceRDS})
			ck.SigningKeys[d] = hex.EncodeToString(sk)
		}
		ck.Allow = slices.SortedFunc(maps.Keys(g.allow), func(a, b xdsapi.ConnectGrant) int {
			return cmp.Or(cmp.Compare(a.Proxy, b.Proxy), cmp.Compare(a.DBUser, b.DBUser))
		})
		out.Keys = append(out.Keys, ck)
	}
	return out
}

// MakeConnectKeysSecret returns keys as the GenericSecret
// xdsapi.ConnectKeysSecret.
func MakeConnectKeysSecret(keys xdsapi.ConnectKeys) (*tlsv3.Secret, error) {
	// encoding/json writes map keys sorted: the same keys give the same
	// bytes, and so the same version.
	payload, err := json.Marshal(keys)
	if err != nil {
		return nil, fmt.Errorf("encode connect keys: %w", err)
	}
	return &tlsv3.Secret{
		Name: xdsapi.ConnectKeysSecret,
		Type: &tlsv3.Secret_GenericSecret{GenericSecret: &tlsv3.GenericSecret{
			Secrets: map[string]*core.DataSource{
				xdsapi.ConnectKeysKey: {Specifier: &core.DataSource_InlineBytes{InlineBytes: payload}},
			},
		}},
	}, nil
}
