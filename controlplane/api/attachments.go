package api

import (
	"fmt"
	"net/http"

	"github.com/dbproxy/dbproxy/controlplane/store"
	"github.com/dbproxy/dbproxy/internal/model"
)

// attachmentRoutes registers a user's policy attachments.
func (a *API) attachmentRoutes() {
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
}
