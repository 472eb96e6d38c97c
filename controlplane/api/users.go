package api

import (
	"fmt"
	"net/http"

	"github.com/dbproxy/dbproxy/controlplane/store"
	"github.com/dbproxy/dbproxy/internal/model"
)

// userRoutes registers the IAM users collection.
func (a *API) userRoutes() {
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
