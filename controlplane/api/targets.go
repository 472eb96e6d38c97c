package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/dbproxy/dbproxy/controlplane/store"
	"github.com/dbproxy/dbproxy/internal/model"
)

// targetRoutes registers a proxy's targets.
func (a *API) targetRoutes() {
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
		noZero:  map[string]string{"port": "must be 1-65535, got 0; leave it out for the default, 3306"},
		check:   func(v *model.Target) error { v.Normalize(); return v.Validate() },
		prepare: prepareTarget,
		show: func(ctx context.Context, v *model.Target) {
			v.Health, v.DiscoveredRole, v.HealthReason = "UNKNOWN", "", ""
			if a.opts.TargetHealth != nil {
				v.Health, v.DiscoveredRole, v.HealthReason = a.opts.TargetHealth(ctx, v)
			}
		},
		what: func(r *http.Request) string {
			return fmt.Sprintf("target %q of proxy %q", r.PathValue("name"), r.PathValue("proxy"))
		},
	}
	crud(a, "/v1/proxies/{proxy}/targets", "{name}", targets)
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
