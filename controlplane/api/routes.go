package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dbproxy/dbproxy/controlplane/iam"
	"github.com/dbproxy/dbproxy/controlplane/store"
	"github.com/dbproxy/dbproxy/internal/model"
)

func (a *API) routes() {
	secrets := &kind[model.Secret]{
		store: model.KindSecret, noun: "Secret", plural: "Secrets",
		key:          pathName("name"),
		resource:     func(r *http.Request) string { return "secret/" + r.PathValue("name") },
		listPrefix:   func(*http.Request) string { return "" },
		listResource: func(*http.Request) string { return "secret/*" },
		meta:         func(v *model.Secret) *model.Meta { return &v.Meta },
		bind:         func(r *http.Request, v *model.Secret) *model.Error { return bindField(r, "name", "name", &v.Name) },
		check:        func(v *model.Secret) error { return v.Validate(false) },
		prepare:      a.prepareSecret,
		beforeDelete: a.secretInUse,
		show:         func(_ context.Context, v *model.Secret) { v.Password = "" },
		what:         func(r *http.Request) string { return fmt.Sprintf("secret %q", r.PathValue("name")) },
	}
	crud(a, "/v1/secrets", "{name}", secrets)

	proxies := &kind[model.Proxy]{
		store: model.KindProxy, noun: "Proxy", plural: "Proxies",
		key:          pathName("name"),
		resource:     func(r *http.Request) string { return "proxy/" + r.PathValue("name") },
		listPrefix:   func(*http.Request) string { return "" },
		listResource: func(*http.Request) string { return "proxy/*" },
		meta:         func(v *model.Proxy) *model.Meta { return &v.Meta },
		bind:         func(r *http.Request, v *model.Proxy) *model.Error { return bindField(r, "name", "name", &v.Name) },
		check:        func(v *model.Proxy) error { v.Normalize(); return v.Validate() },
		prepare:      a.prepareProxy,
		beforeDelete: deleteProxyChildren,
		show: func(_ context.Context, v *model.Proxy) {
			v.Endpoint, v.Addresses = a.addresses(v.Zones, v.Port)
		},
		what: func(r *http.Request) string { return fmt.Sprintf("proxy %q", r.PathValue("name")) },
	}
	crud(a, "/v1/proxies", "{name}", proxies)

	a.mux.HandleFunc("GET /v1/proxies/{proxy}/target-group", a.getTargetGroup)
	groups := &kind[model.TargetGroup]{
		store: model.KindTargetGroup, noun: "TargetGroup", plural: "TargetGroups",
		key:      pathName("proxy"),
		resource: func(r *http.Request) string { return "proxy/" + r.PathValue("proxy") + "/target-group" },
		meta:     func(v *model.TargetGroup) *model.Meta { return &v.Meta },
		bind: func(r *http.Request, v *model.TargetGroup) *model.Error {
			if v.Name != "" && v.Name != model.DefaultTargetGroup {
				return errBadRequest("name", "a proxy has one target group, %q; got %q", model.DefaultTargetGroup, v.Name)
			}
			return bindField(r, "proxy", "proxy", &v.Proxy)
		},
		check:   func(v *model.TargetGroup) error { v.Normalize(); return v.Validate() },
		prepare: func(tx store.Tx, _, next *model.TargetGroup) error { return proxyMustExist(tx, next.Proxy) },
		what:    func(r *http.Request) string { return fmt.Sprintf("the target group of proxy %q", r.PathValue("proxy")) },
	}
	a.mux.HandleFunc("PUT /v1/proxies/{proxy}/target-group", putHandler(a, groups))
	a.mux.HandleFunc("DELETE /v1/proxies/{proxy}/target-group", deleteHandler(a, groups))

	targets := &kind[model.Target]{
		store: model.KindTarget, noun: "Target", plural: "Targets",
		key: func(r *http.Request) string { return r.PathValue("proxy") + "/" + r.PathValue("name") },
		resource: func(r *http.Request) string {
			return "proxy/" + r.PathValue("proxy") + "/target/" + r.PathValue("name")
		},
		listPrefix:   func(r *http.Request) string { return r.PathValue("proxy") + "/" },
		listResource: func(r *http.Request) string { return "proxy/" + r.PathValue("proxy") + "/target/*" },
		meta:         func(v *model.Target) *model.Meta { return &v.Meta },
		bind: func(r *http.Request, v *model.Target) *model.Error {
			if err := bindField(r, "proxy", "proxy", &v.Proxy); err != nil {
				return err
			}
			return bindField(r, "name", "name", &v.Name)
		},
		check:   func(v *model.Target) error { v.Normalize(); return v.Validate() },
		prepare: prepareTarget,
		show: func(ctx context.Context, v *model.Target) {
			v.Health, v.DiscoveredRole = "UNKNOWN", ""
			if a.opts.TargetHealth != nil {
				v.Health, v.DiscoveredRole = a.opts.TargetHealth(ctx, v)
			}
		},
		what: func(r *http.Request) string {
			return fmt.Sprintf("target %q of proxy %q", r.PathValue("name"), r.PathValue("proxy"))
		},
	}
	crud(a, "/v1/proxies/{proxy}/targets", "{name}", targets)

	endpoints := &kind[model.Endpoint]{
		store: model.KindEndpoint, noun: "Endpoint", plural: "Endpoints",
		key: func(r *http.Request) string { return r.PathValue("proxy") + "/" + r.PathValue("name") },
		resource: func(r *http.Request) string {
			return "proxy/" + r.PathValue("proxy") + "/endpoint/" + r.PathValue("name")
		},
		listPrefix:   func(r *http.Request) string { return r.PathValue("proxy") + "/" },
		listResource: func(r *http.Request) string { return "proxy/" + r.PathValue("proxy") + "/endpoint/*" },
		meta:         func(v *model.Endpoint) *model.Meta { return &v.Meta },
		bind: func(r *http.Request, v *model.Endpoint) *model.Error {
			if err := bindField(r, "proxy", "proxy", &v.Proxy); err != nil {
				return err
			}
			return bindField(r, "name", "name", &v.Name)
		},
		check:   func(v *model.Endpoint) error { v.Normalize(); return v.Validate() },
		prepare: a.prepareEndpoint,
		show:    a.showEndpoint,
		what: func(r *http.Request) string {
			return fmt.Sprintf("endpoint %q of proxy %q", r.PathValue("name"), r.PathValue("proxy"))
		},
	}
	crud(a, "/v1/proxies/{proxy}/endpoints", "{name}", endpoints)

	users := &kind[model.User]{
		store: model.KindUser, noun: "User", plural: "Users",
		key:          pathName("name"),
		resource:     func(r *http.Request) string { return "user/" + r.PathValue("name") },
		listPrefix:   func(*http.Request) string { return "" },
		listResource: func(*http.Request) string { return "user/*" },
		meta:         func(v *model.User) *model.Meta { return &v.Meta },
		bind:         func(r *http.Request, v *model.User) *model.Error { return bindField(r, "name", "name", &v.Name) },
		check:        func(v *model.User) error { v.Normalize(); return v.Validate() },
		prepare: func(_ store.Tx, _, next *model.User) error {
			if next.Name == model.RootUser {
				return errConflict("name", "%q is the reserved root user", model.RootUser)
			}
			return nil
		},
		beforeDelete: userInUse,
		what:         func(r *http.Request) string { return fmt.Sprintf("user %q", r.PathValue("name")) },
	}
	crud(a, "/v1/iam/users", "{name}", users)

	policies := &kind[model.Policy]{
		store: model.KindPolicy, noun: "Policy", plural: "Policies",
		key:          pathName("name"),
		resource:     func(r *http.Request) string { return "policy/" + r.PathValue("name") },
		listPrefix:   func(*http.Request) string { return "" },
		listResource: func(*http.Request) string { return "policy/*" },
		meta:         func(v *model.Policy) *model.Meta { return &v.Meta },
		bind:         func(r *http.Request, v *model.Policy) *model.Error { return bindField(r, "name", "name", &v.Name) },
		check: func(v *model.Policy) error {
			if err := v.Validate(); err != nil {
				return err
			}
			if _, err := iam.ParsePolicy(v.Document); err != nil {
				return &model.FieldError{Field: "policy", Message: err.Error()}
			}
			return nil
		},
		beforeDelete: policyInUse,
		what:         func(r *http.Request) string { return fmt.Sprintf("policy %q", r.PathValue("name")) },
	}
	crud(a, "/v1/iam/policies", "{name}", policies)

	attachments := &kind[model.Attachment]{
		store: model.KindAttachment, noun: "UserPolicyAttachment", plural: "UserPolicyAttachments",
		key: func(r *http.Request) string { return r.PathValue("user") + "/" + r.PathValue("policy") },
		resource: func(r *http.Request) string {
			return "user/" + r.PathValue("user") + "/policy/" + r.PathValue("policy")
		},
		listPrefix:   func(r *http.Request) string { return r.PathValue("user") + "/" },
		listResource: func(r *http.Request) string { return "user/" + r.PathValue("user") + "/policy/*" },
		meta:         func(v *model.Attachment) *model.Meta { return &v.Meta },
		bind: func(r *http.Request, v *model.Attachment) *model.Error {
			if err := bindField(r, "user", "user", &v.User); err != nil {
				return err
			}
			return bindField(r, "policy", "policy_name", &v.Policy)
		},
		check: func(*model.Attachment) error { return nil },
		prepare: func(tx store.Tx, _, next *model.Attachment) error {
			if ok, err := exists(tx, model.KindUser, next.User); err != nil || !ok {
				return orNotFound(err, "user", "user %q", next.User)
			}
			if ok, err := exists(tx, model.KindPolicy, next.Policy); err != nil || !ok {
				return orNotFound(err, "policy_name", "policy %q", next.Policy)
			}
			return nil
		},
		what: func(r *http.Request) string {
			return fmt.Sprintf("the attachment of policy %q to user %q", r.PathValue("policy"), r.PathValue("user"))
		},
	}
	crud(a, "/v1/iam/users/{user}/policies", "{policy}", attachments)

	keys := &kind[model.AccessKey]{
		store: model.KindAccessKey, noun: "AccessKey", plural: "AccessKeys",
		key: pathName("id"),
		resource: func(r *http.Request) string {
			return "user/" + r.PathValue("user") + "/access-key/" + r.PathValue("id")
		},
		meta: func(v *model.AccessKey) *model.Meta { return &v.Meta },
		what: func(r *http.Request) string {
			return fmt.Sprintf("access key %q of user %q", r.PathValue("id"), r.PathValue("user"))
		},
		show: func(_ context.Context, v *model.AccessKey) { v.SecretAccessKey = "" },
	}
	a.mux.HandleFunc("GET /v1/iam/users/{user}/access-keys", a.listAccessKeys)
	a.mux.HandleFunc("POST /v1/iam/users/{user}/access-keys", a.createAccessKey)
	a.mux.HandleFunc("GET /v1/iam/users/{user}/access-keys/{id}", a.ownKey(keys, getHandler(a, keys)))
	a.mux.HandleFunc("PATCH /v1/iam/users/{user}/access-keys/{id}", a.updateAccessKey)
	a.mux.HandleFunc("DELETE /v1/iam/users/{user}/access-keys/{id}", a.ownKey(keys, deleteHandler(a, keys)))

	a.mux.HandleFunc("GET /v1/identity", a.identity)
	a.mux.HandleFunc("GET /v1/nodes", a.nodes)
	a.mux.HandleFunc("GET /v1/rollout", a.rollout)
	a.mux.HandleFunc("GET /v1/status", a.status)
	a.mux.HandleFunc("GET /v1/backup", a.backup)
	a.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &model.Error{Status: http.StatusNotFound, Code: "UnknownOperation", Message: fmt.Sprintf("no API operation %s %s", r.Method, r.URL.Path)})
	})
}

// crud registers the four handlers of a collection.
func crud[T any](a *API, base, item string, k *kind[T]) {
	a.mux.HandleFunc("GET "+base, listHandler(a, k))
	a.mux.HandleFunc("GET "+base+"/"+item, getHandler(a, k))
	a.mux.HandleFunc("PUT "+base+"/"+item, putHandler(a, k))
	a.mux.HandleFunc("DELETE "+base+"/"+item, deleteHandler(a, k))
}

func orNotFound(err error, field, format string, args ...any) error {
	if err != nil {
		return err
	}
	e := errNotFound(fmt.Sprintf(format, args...))
	e.Field = field
	return e
}

func proxyMustExist(tx store.Reader, proxy string) error {
	ok, err := exists(tx, model.KindProxy, proxy)
	if err != nil || !ok {
		return orNotFound(err, "proxy", "proxy %q", proxy)
	}
	return nil
}

func (a *API) prepareSecret(tx store.Tx, cur, next *model.Secret) error {
	if next.Password == "" {
		if cur == nil {
			return errBadRequest("password", "is required when the secret is created")
		}
		next.Password = cur.Password
	}
	if cur == nil || cur.Username == next.Username {
		return nil
	}
	// A new username must not collide with another auth block of a
	// proxy using this secret (see checkUsernames).
	proxies, err := store.DecodeAll[model.Proxy](tx, model.KindProxy, "")
	if err != nil {
		return err
	}
	for _, p := range proxies {
		for _, au := range p.Auth {
			if au.Secret != next.Name {
				continue
			}
			if err := checkUsernames(tx, &p, next); err != nil {
				var e *model.Error
				if errors.As(err, &e) {
					e.Field = "username"
				}
				return err
			}
		}
	}
	return nil
}

// checkUsernames refuses a proxy whose auth blocks name secrets with the
// same username: a node could not tell which block, password or IAM
// authentication, a login of that user belongs to. override, when not
// nil, stands for the stored secret of its name.
func checkUsernames(tx store.Tx, p *model.Proxy, override *model.Secret) error {
	seen := map[string]int{}
	for i, au := range p.Auth {
		var sec model.Secret
		if override != nil && au.Secret == override.Name {
			sec = *override
		} else if err := getInto(tx, model.KindSecret, au.Secret, &sec); errors.Is(err, store.ErrNotFound) {
			return orNotFound(nil, fmt.Sprintf("auth[%d].secret", i), "secret %q", au.Secret)
		} else if err != nil {
			return err
		}
		if j, dup := seen[sec.Username]; dup {
			return errConflict(fmt.Sprintf("auth[%d].secret", i), "secret %q has username %q, as secret %q of auth[%d] of proxy %q does; a proxy's auth blocks need distinct usernames",
				au.Secret, sec.Username, p.Auth[j].Secret, j, p.Name)
		}
		seen[sec.Username] = i
	}
	return nil
}

func (a *API) secretInUse(tx store.Tx, cur *model.Secret) error {
	proxies, err := store.DecodeAll[model.Proxy](tx, model.KindProxy, "")
	if err != nil {
		return err
	}
	for _, p := range proxies {
		for _, au := range p.Auth {
			if au.Secret == cur.Name {
				return errConflict("name", "secret %q is used by proxy %q; remove it from the proxy's auth first", cur.Name, p.Name)
			}
		}
	}
	return nil
}

func (a *API) prepareProxy(tx store.Tx, cur, next *model.Proxy) error {
	if err := checkUsernames(tx, next, nil); err != nil {
		return err
	}
	if next.Port == 0 && cur != nil {
		next.Port = cur.Port
	}
	port, err := a.allocatePort(tx, next.Port, "proxy/"+next.Name, "port")
	if err != nil {
		return err
	}
	next.Port = port
	next.Endpoint, next.Addresses = "", nil
	return nil
}

// deleteProxyChildren cascades a proxy's deletion to its target group,
// targets and endpoints, which cannot exist without it.
func deleteProxyChildren(tx store.Tx, cur *model.Proxy) error {
	if err := tx.Delete(model.KindTargetGroup, cur.Name); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	for _, k := range []string{model.KindTarget, model.KindEndpoint} {
		objs, err := tx.List(k, cur.Name+"/")
		if err != nil {
			return err
		}
		for _, o := range objs {
			if err := tx.Delete(k, o.Key); err != nil {
				return err
			}
		}
	}
	return nil
}

func prepareTarget(tx store.Tx, _, next *model.Target) error {
	if err := proxyMustExist(tx, next.Proxy); err != nil {
		return err
	}
	others, err := store.DecodeAll[model.Target](tx, model.KindTarget, next.Proxy+"/")
	if err != nil {
		return err
	}
	for _, o := range others {
		if o.Name != next.Name && o.Host == next.Host && o.Port == next.Port {
			return errConflict("host", "%s:%d is already target %q of proxy %q", next.Host, next.Port, o.Name, next.Proxy)
		}
	}
	next.Health, next.DiscoveredRole = "", ""
	return nil
}

func (a *API) prepareEndpoint(tx store.Tx, cur, next *model.Endpoint) error {
	var p model.Proxy
	if err := getInto(tx, model.KindProxy, next.Proxy, &p); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return orNotFound(nil, "proxy", "proxy %q", next.Proxy)
		}
		return err
	}
	for i, z := range next.Zones {
		if !model.HasZone(p.Zones, z) {
			return errBadRequest(fmt.Sprintf("zones[%d]", i), "zone %q is not one of proxy %q's zones %v", z, p.Name, p.Zones)
		}
	}
	if next.Port == 0 && cur != nil {
		next.Port = cur.Port
	}
	port, err := a.allocatePort(tx, next.Port, "endpoint/"+next.Proxy+"/"+next.Name, "port")
	if err != nil {
		return err
	}
	next.Port = port
	next.Endpoint, next.Addresses = "", nil
	return nil
}

func (a *API) showEndpoint(ctx context.Context, e *model.Endpoint) {
	var p model.Proxy
	if err := a.getObject(ctx, model.KindProxy, e.Proxy, &p); err != nil {
		return
	}
	e.Endpoint, e.Addresses = a.addresses(e.ZonesOf(&p), e.Port)
}

// allocatePort returns want when no other proxy or endpoint uses it, or,
// when want is 0, the lowest free port of the range. owner names the
// object asking, which may keep its own port.
func (a *API) allocatePort(tx store.Reader, want int, owner, field string) (int, error) {
	used := map[int]string{}
	proxies, err := store.DecodeAll[model.Proxy](tx, model.KindProxy, "")
	if err != nil {
		return 0, err
	}
	for _, p := range proxies {
		used[p.Port] = "proxy/" + p.Name
	}
	eps, err := store.DecodeAll[model.Endpoint](tx, model.KindEndpoint, "")
	if err != nil {
		return 0, err
	}
	for _, e := range eps {
		used[e.Port] = "endpoint/" + e.Proxy + "/" + e.Name
	}
	if want != 0 {
		if o, ok := used[want]; ok && o != owner {
			return 0, errConflict(field, "port %d is already used by %s", want, o)
		}
		return want, nil
	}
	for p := a.opts.PortMin; p <= a.opts.PortMax; p++ {
		if _, ok := used[p]; !ok {
			return p, nil
		}
	}
	return 0, errConflict(field, "no free port left in %d-%d", a.opts.PortMin, a.opts.PortMax)
}

// addresses lists where clients reach a listener on port: one address per
// connected node of zones, in zone order; the first is the endpoint.
func (a *API) addresses(zones []string, port int) (string, []string) {
	if a.opts.Fleet == nil || port == 0 {
		return "", []string{}
	}
	nodes := a.opts.Fleet.Nodes()
	out := []string{}
	for _, z := range zones {
		for _, n := range nodes {
			if n.Zone == z && n.Connected && n.Address != "" {
				addr := net.JoinHostPort(n.Address, strconv.Itoa(port))
				if !slices.Contains(out, addr) {
					out = append(out, addr)
				}
			}
		}
	}
	if len(out) == 0 {
		return "", out
	}
	return out[0], out
}

func userInUse(tx store.Tx, cur *model.User) error {
	if cur.Name == model.RootUser {
		return errConflict("name", "the root user cannot be deleted")
	}
	keys, err := store.DecodeAll[model.AccessKey](tx, model.KindAccessKey, "")
	if err != nil {
		return err
	}
	for _, k := range keys {
		if k.User == cur.Name {
			return errConflict("name", "user %q still has access key %s; delete its keys first", cur.Name, k.ID)
		}
	}
	atts, err := tx.List(model.KindAttachment, cur.Name+"/")
	if err != nil {
		return err
	}
	if len(atts) > 0 {
		return errConflict("name", "user %q still has %d attached policies; detach them first", cur.Name, len(atts))
	}
	return nil
}

func policyInUse(tx store.Tx, cur *model.Policy) error {
	atts, err := store.DecodeAll[model.Attachment](tx, model.KindAttachment, "")
	if err != nil {
		return err
	}
	for _, at := range atts {
		if at.Policy == cur.Name {
			return errConflict("name", "policy %q is attached to user %q; detach it first", cur.Name, at.User)
		}
	}
	return nil
}

// getTargetGroup returns the stored target group or, when none was
// written, the defaults every proxy starts with.
func (a *API) getTargetGroup(w http.ResponseWriter, r *http.Request) {
	proxy := r.PathValue("proxy")
	if err := a.authorize(r.Context(), "dbproxy:GetTargetGroup", "proxy/"+proxy+"/target-group"); err != nil {
		a.fail(w, r, err)
		return
	}
	var g model.TargetGroup
	_, err := a.opts.Store.View(r.Context(), func(rd store.Reader) error {
		if err := proxyMustExist(rd, proxy); err != nil {
			return err
		}
		err := getInto(rd, model.KindTargetGroup, proxy, &g)
		if errors.Is(err, store.ErrNotFound) {
			g = model.TargetGroup{Proxy: proxy}
			g.Normalize()
			return nil
		}
		return err
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, g)
}

// ownKey refuses a key id that belongs to another user than the path's.
func (a *API) ownKey(k *kind[model.AccessKey], next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var key model.AccessKey
		err := a.getObject(r.Context(), model.KindAccessKey, r.PathValue("id"), &key)
		if err == nil && key.User != r.PathValue("user") {
			err = store.ErrNotFound
		}
		if errors.Is(err, store.ErrNotFound) {
			// Authorise first so that an unauthorised caller cannot
			// probe which key ids exist.
			if aerr := a.authorize(r.Context(), "dbproxy:Get"+k.noun, k.resource(r)); aerr != nil {
				a.fail(w, r, aerr)
				return
			}
			a.fail(w, r, errNotFound(k.what(r)))
			return
		}
		if err != nil {
			a.fail(w, r, err)
			return
		}
		next(w, r)
	}
}

func (a *API) listAccessKeys(w http.ResponseWriter, r *http.Request) {
	user := r.PathValue("user")
	if err := a.authorize(r.Context(), "dbproxy:ListAccessKeys", "user/"+user+"/access-key/*"); err != nil {
		a.fail(w, r, err)
		return
	}
	var items []model.AccessKey
	rev, err := a.opts.Store.View(r.Context(), func(rd store.Reader) error {
		if ok, err := exists(rd, model.KindUser, user); err != nil || !ok {
			return orNotFound(err, "user", "user %q", user)
		}
		all, err := store.DecodeAll[model.AccessKey](rd, model.KindAccessKey, "")
		for _, k := range all {
			if k.User == user {
				k.SecretAccessKey = ""
				items = append(items, k)
			}
		}
		return err
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if items == nil {
		items = []model.AccessKey{}
	}
	writeJSON(w, http.StatusOK, model.List[model.AccessKey]{Items: items, Revision: rev})
}

// NewAccessKey returns a fresh key pair for user.
func NewAccessKey(user string) (model.AccessKey, error) {
	id := make([]byte, 10)
	secret := make([]byte, 30)
	if _, err := rand.Read(id); err != nil {
		return model.AccessKey{}, fmt.Errorf("generate access key id: %w", err)
	}
	if _, err := rand.Read(secret); err != nil {
		return model.AccessKey{}, fmt.Errorf("generate secret access key: %w", err)
	}
	return model.AccessKey{
		// AWS key ids are 20 upper-case characters; DBPK marks ours.
		ID:              "DBPK" + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(id),
		User:            user,
		Status:          model.KeyActive,
		SecretAccessKey: base64.StdEncoding.EncodeToString(secret),
	}, nil
}

func (a *API) createAccessKey(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user := r.PathValue("user")
	if err := a.authorize(ctx, "dbproxy:PutAccessKey", "user/"+user+"/access-key/*"); err != nil {
		a.fail(w, r, err)
		return
	}
	var req struct {
		Status string `json:"status"`
	}
	if r.ContentLength != 0 {
		if err := decode(r, &req); err != nil {
			a.fail(w, r, err)
			return
		}
	}
	if req.Status == "" {
		req.Status = model.KeyActive
	}
	if req.Status != model.KeyActive && req.Status != model.KeyInactive {
		a.fail(w, r, errBadRequest("status", "must be Active or Inactive, got %q", req.Status))
		return
	}
	key, err := NewAccessKey(user)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	key.Status = req.Status
	_, err = a.opts.Store.Update(ctx, func(tx store.Tx) error {
		if ok, err := exists(tx, model.KindUser, user); err != nil || !ok {
			return orNotFound(err, "user", "user %q", user)
		}
		now := a.opts.Now().UTC()
		key.Meta = model.Meta{Revision: tx.Revision(), CreatedAt: now, UpdatedAt: now}
		b, err := json.Marshal(key)
		if err != nil {
			return err
		}
		a.log.Info("access key created", "user", user, "access_key_id", key.ID, "by", principalFrom(ctx).User)
		return tx.Put(model.KindAccessKey, key.ID, b)
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, key)
}

func (a *API) updateAccessKey(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user, id := r.PathValue("user"), r.PathValue("id")
	if err := a.authorize(ctx, "dbproxy:PutAccessKey", "user/"+user+"/access-key/"+id); err != nil {
		a.fail(w, r, err)
		return
	}
	var req struct {
		Status string `json:"status"`
	}
	if err := decode(r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if req.Status != model.KeyActive && req.Status != model.KeyInactive {
		a.fail(w, r, errBadRequest("status", "must be Active or Inactive, got %q", req.Status))
		return
	}
	var out model.AccessKey
	_, err := a.opts.Store.Update(ctx, func(tx store.Tx) error {
		if err := getInto(tx, model.KindAccessKey, id, &out); err != nil || out.User != user {
			if err == nil || errors.Is(err, store.ErrNotFound) {
				return errNotFound(fmt.Sprintf("access key %q of user %q", id, user))
			}
			return err
		}
		if out.Status == req.Status {
			return nil
		}
		out.Status = req.Status
		out.Revision, out.UpdatedAt = tx.Revision(), a.opts.Now().UTC()
		b, err := json.Marshal(out)
		if err != nil {
			return err
		}
		a.log.Info("access key status changed", "user", user, "access_key_id", id, "status", req.Status, "by", principalFrom(ctx).User)
		return tx.Put(model.KindAccessKey, id, b)
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out.SecretAccessKey = ""
	writeJSON(w, http.StatusOK, out)
}

func (a *API) identity(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	writeJSON(w, http.StatusOK, map[string]string{"user": p.User, "access_key_id": p.AccessKeyID})
}

func (a *API) nodes(w http.ResponseWriter, r *http.Request) {
	if err := a.authorize(r.Context(), "dbproxy:ListNodes", "node/*"); err != nil {
		a.fail(w, r, err)
		return
	}
	nodes := []model.Node{}
	if a.opts.Fleet != nil {
		nodes = append(nodes, a.opts.Fleet.Nodes()...)
	}
	writeJSON(w, http.StatusOK, model.List[model.Node]{Items: nodes})
}

// rollout waits (up to ?wait=, default 0) until the nodes of ?zones= (all
// when empty) serve ?revision= (default: the newest).
func (a *API) rollout(w http.ResponseWriter, r *http.Request) {
	if err := a.authorize(r.Context(), "dbproxy:GetRollout", "node/*"); err != nil {
		a.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	rev := a.opts.Store.Revision()
	if v := q.Get("revision"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			a.fail(w, r, errBadRequest("revision", "must be a store revision, got %q", v))
			return
		}
		rev = n
	}
	var wait time.Duration
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			a.fail(w, r, errBadRequest("wait", "must be a duration such as 30s, got %q", v))
			return
		}
		wait = min(d, a.opts.MaxRolloutWait)
	}
	var zones []string
	if v := q.Get("zones"); v != "" {
		zones = strings.Split(v, ",")
	}
	out := model.Rollout{Revision: rev, Zones: zones, Nodes: []model.Node{}}
	if zones == nil {
		out.Zones = []string{}
	}
	if a.opts.Fleet == nil {
		out.Complete = true
		writeJSON(w, http.StatusOK, out)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	nodes, rejected, err := a.opts.Fleet.WaitRollout(ctx, rev, zones)
	out.Nodes = append(out.Nodes, nodes...)
	out.Rejected = rejected
	for _, z := range zones {
		if !slices.ContainsFunc(nodes, func(n model.Node) bool { return n.Zone == z && n.Connected }) {
			out.ZonesWithoutNodes = append(out.ZonesWithoutNodes, z)
		}
	}
	switch {
	case err == nil:
		out.Complete = true
	case rejected:
		out.Message = err.Error()
	case errors.Is(err, context.DeadlineExceeded):
		out.Message = fmt.Sprintf("not every node acked revision %d within %s", rev, wait)
		if len(out.ZonesWithoutNodes) > 0 {
			out.Message += fmt.Sprintf("; no node is connected in zone(s) %s", strings.Join(out.ZonesWithoutNodes, ", "))
		}
	default:
		out.Message = err.Error()
	}
	writeJSON(w, http.StatusOK, out)
}

// backup answers with a consistent copy of the store file (sealed values
// stay sealed: restoring it needs the same master key). It is built in
// memory first, so that a failure is an error answer rather than a cut
// file.
func (a *API) backup(w http.ResponseWriter, r *http.Request) {
	if err := a.authorize(r.Context(), "dbproxy:GetBackup", "backup"); err != nil {
		a.fail(w, r, err)
		return
	}
	var buf bytes.Buffer
	rev, err := a.opts.Store.Backup(r.Context(), &buf)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="state-%d.db"`, rev))
	w.Header().Set(model.RevisionHeader, strconv.FormatUint(rev, 10))
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	_, _ = w.Write(buf.Bytes())
}

func (a *API) status(w http.ResponseWriter, r *http.Request) {
	if err := a.authorize(r.Context(), "dbproxy:GetStatus", "status"); err != nil {
		a.fail(w, r, err)
		return
	}
	connected, total := 0, 0
	if a.opts.Fleet != nil {
		for _, n := range a.opts.Fleet.Nodes() {
			total++
			if n.Connected {
				connected++
			}
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"revision": a.opts.Store.Revision(), "nodes": total, "nodes_connected": connected})
}
