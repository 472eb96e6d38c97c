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
			return a.attachmentLimit(tx, next)
		},
		what: func(r *http.Request) string {
			return fmt.Sprintf("the attachment of policy %q to user %q", r.PathValue("policy"), r.PathValue("user"))
		},
	}
	crud(a, "/v1/iam/users/{user}/policies", "{policy}", attachments)
}

// attachmentLimit refuses a new attachment beyond the user's limit, as
// IAM does (LimitExceeded): every request of the user evaluates all its
// policies. Writing an existing attachment again is no new one.
func (a *API) attachmentLimit(tx store.Tx, next *model.Attachment) error {
	objs, err := tx.List(model.KindAttachment, next.User+"/")
	if err != nil {
		return err
	}
	n := 0
	for _, o := range objs {
		if o.Key != next.User+"/"+next.Policy {
			n++
		}
	}
	if limit := a.opts.MaxAttachmentsPerUser; n >= limit {
		return &model.Error{Status: http.StatusConflict, Code: "LimitExceeded", Field: "user",
			Message: fmt.Sprintf("user %q has %d attached policies, the most a user may have; detach one first or combine policies", next.User, limit)}
	}
	return nil
}
