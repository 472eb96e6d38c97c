package provider

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/dbproxy/dbproxy/internal/model"
)

// Helpers of dbproxy_proxy, dbproxy_target_group and data dbproxy_proxy.

// dropFieldErrors removes the model's field errors that drop selects: those
// a schema validator reports already, so that one mistake gives one
// diagnostic. Other errors pass unchanged.
func dropFieldErrors(err error, drop func(field string) bool) error {
	es, ok := model.AsFieldErrors(err)
	if !ok {
		return err
	}
	var kept model.FieldErrors
	for _, fe := range es {
		if !drop(fe.Field) {
			kept = append(kept, fe)
		}
	}
	return kept.Err()
}

// keepIDWhileNamed plans a computed id that equals the name at namePath:
// the prior id while the name stays, unknown otherwise. Unlike
// UseStateForUnknown it never carries the id across a replacement, so that
// children that reference the id see an unknown value when their parent is
// replaced and are replaced with it (their proxy_name requires replace).
func keepIDWhileNamed(namePath path.Path) planmodifier.String {
	return keepIDWhileNamedModifier{namePath: namePath}
}

type keepIDWhileNamedModifier struct{ namePath path.Path }

func (m keepIDWhileNamedModifier) Description(context.Context) string {
	return "The id stays while the name stays; it is unknown when the object is replaced."
}

func (m keepIDWhileNamedModifier) MarkdownDescription(ctx context.Context) string {
	return m.Description(ctx)
}

func (m keepIDWhileNamedModifier) PlanModifyString(ctx context.Context, req planmodifier.StringRequest, resp *planmodifier.StringResponse) {
	// A create (Terraform also plans the create half of a replacement
	// from a null prior state) or a destroy: nothing to keep.
	if req.State.Raw.IsNull() || req.Plan.Raw.IsNull() || !req.PlanValue.IsUnknown() || req.StateValue.IsNull() {
		return
	}
	var planned, prior types.String
	resp.Diagnostics.Append(req.Plan.GetAttribute(ctx, m.namePath, &planned)...)
	resp.Diagnostics.Append(req.State.GetAttribute(ctx, m.namePath, &prior)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if !planned.IsUnknown() && planned.Equal(prior) {
		resp.PlanValue = req.StateValue
	}
}
