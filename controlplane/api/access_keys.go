package api

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/dbproxy/dbproxy/controlplane/store"
	"github.com/dbproxy/dbproxy/internal/model"
)

// accessKeyRoutes registers a user's access keys.
func (a *API) accessKeyRoutes() {
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
