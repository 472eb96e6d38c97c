package api

import (
	"fmt"
	"net/http"

	"github.com/dbproxy/dbproxy/controlplane/iam"
	"github.com/dbproxy/dbproxy/controlplane/store"
	"github.com/dbproxy/dbproxy/internal/model"
)

// policyRoutes registers the IAM policies collection.
func (a *API) policyRoutes() {
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
