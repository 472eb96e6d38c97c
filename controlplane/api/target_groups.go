package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/dbproxy/dbproxy/controlplane/store"
	"github.com/dbproxy/dbproxy/internal/model"
)

// targetGroupRoutes registers a proxy's target group.
func (a *API) targetGroupRoutes() {
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
		// connection_borrow_timeout and max_idle_connections_percent
		// take 0 for their default: the provider documents it so.
		noZero: map[string]string{
			"connection_pool_config.max_connections_percent": "must be 1-100, got 0; leave it out for the default, 100",
		},
		check:   func(v *model.TargetGroup) error { v.Normalize(); return v.Validate() },
		prepare: func(tx store.Tx, _, next *model.TargetGroup) error { return proxyMustExist(tx, next.Proxy) },
		what:    func(r *http.Request) string { return fmt.Sprintf("the target group of proxy %q", r.PathValue("proxy")) },
	}
	a.mux.HandleFunc("PUT /v1/proxies/{proxy}/target-group", putHandler(a, groups))
	a.mux.HandleFunc("DELETE /v1/proxies/{proxy}/target-group", deleteHandler(a, groups))
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
