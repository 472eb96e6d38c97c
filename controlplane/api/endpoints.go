package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/dbproxy/dbproxy/controlplane/store"
	"github.com/dbproxy/dbproxy/internal/model"
)

// endpointRoutes registers a proxy's endpoints.
func (a *API) endpointRoutes() {
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
