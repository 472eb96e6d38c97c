package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"

	"github.com/dbproxy/dbproxy/controlplane/store"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/vocab"
)

// proxyRoutes registers the proxies collection.
func (a *API) proxyRoutes() {
	proxies := &kind[model.Proxy]{
		store: model.KindProxy, noun: "Proxy", plural: "Proxies",
		key:          pathName("name"),
		resource:     func(r *http.Request) string { return "proxy/" + r.PathValue("name") },
		listPrefix:   func(*http.Request) string { return "" },
		listResource: func(*http.Request) string { return "proxy/*" },
		meta:         func(v *model.Proxy) *model.Meta { return &v.Meta },
		bind:         func(r *http.Request, v *model.Proxy) *model.Error { return bindField(r, "name", "name", &v.Name) },
		noZero: map[string]string{
			"idle_client_timeout": "must be 1-28800 seconds, got 0; leave it out for the default, 1800",
		},
		check:        func(v *model.Proxy) error { v.Normalize(); return v.Validate() },
		prepare:      a.prepareProxy,
		beforeDelete: deleteProxyChildren,
		show: func(_ context.Context, v *model.Proxy) {
			v.Endpoint, v.Addresses = a.addresses(v.Zones, v.Port)
		},
		what: func(r *http.Request) string { return fmt.Sprintf("proxy %q", r.PathValue("name")) },
	}
	crud(a, "/v1/proxies", "{name}", proxies)
}

func proxyMustExist(tx store.Reader, proxy string) error {
	ok, err := exists(tx, model.KindProxy, proxy)
	if err != nil || !ok {
		return orNotFound(err, "proxy", "proxy %q", proxy)
	}
	return nil
}

// checkUsernames refuses a proxy whose auth blocks name secrets with the
// same username: a node could not tell which block, password or IAM
// authentication, a login of that user belongs to. override, when not
// nil, stands for the stored secret of its name.
func checkUsernames(tx store.Tx, p *model.Proxy, override *model.Secret) error {
	users := make([]string, len(p.Auth))
	for i, au := range p.Auth {
		var sec model.Secret
		if override != nil && au.Secret == override.Name {
			sec = *override
		} else if err := getInto(tx, model.KindSecret, au.Secret, &sec); errors.Is(err, store.ErrNotFound) {
			return orNotFound(nil, fmt.Sprintf("auth[%d].secret", i), "secret %q", au.Secret)
		} else if err != nil {
			return err
		}
		users[i] = sec.Username
	}
	if j, i, dup := vocab.DuplicateUsername(users); dup {
		return errConflict(fmt.Sprintf("auth[%d].secret", i), "secret %q has username %q, as secret %q of auth[%d] of proxy %q does; a proxy's auth blocks need distinct usernames",
			p.Auth[i].Secret, users[i], p.Auth[j].Secret, j, p.Name)
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
