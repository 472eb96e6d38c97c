package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/dbproxy/dbproxy/controlplane/store"
	"github.com/dbproxy/dbproxy/internal/model"
)

// secretRoutes registers the secrets collection.
func (a *API) secretRoutes() {
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
