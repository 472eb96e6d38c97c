package provider

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework-jsontypes/jsontypes"
	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/dbproxy/dbproxy/internal/model"
)

var (
	_ resource.Resource                   = &iamPolicyResource{}
	_ resource.ResourceWithConfigure      = &iamPolicyResource{}
	_ resource.ResourceWithImportState    = &iamPolicyResource{}
	_ resource.ResourceWithValidateConfig = &iamPolicyResource{}
)

func newIAMPolicyResource() resource.Resource { return &iamPolicyResource{} }

// iamPolicyResource is dbproxy_iam_policy: a named IAM JSON policy
// document. The document's type compares JSON by meaning (jsontypes
// semantic equality), so whitespace, key order or the API's own formatting
// never show as a diff.
type iamPolicyResource struct{ data *providerData }

type iamPolicyModel struct {
	ID          types.String         `tfsdk:"id"`
	Name        types.String         `tfsdk:"name"`
	Description types.String         `tfsdk:"description"`
	Policy      jsontypes.Normalized `tfsdk:"policy"`
	Timeouts    timeouts.Value       `tfsdk:"timeouts"`
}

func (r *iamPolicyResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_iam_policy"
}

func (r *iamPolicyResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "A named IAM policy. Attach it to users with `dbproxy_iam_user_policy_attachment`. " +
			"Changing the document of an attached policy reaches every data-plane node before apply returns.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "The policy's name.",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"name": schema.StringAttribute{
				Required:            true,
				MarkdownDescription: "Name of the policy: 1-64 letters, digits and `+=,.@_-`. Changing it replaces the policy.",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"description": schema.StringAttribute{
				Optional:            true,
				MarkdownDescription: "Free-form description.",
			},
			"policy": schema.StringAttribute{
				CustomType:    jsontypes.NormalizedType{},
				Required:      true,
				PlanModifiers: []planmodifier.String{sameJSONKeepsState{}},
				MarkdownDescription: "The policy document in IAM JSON (use `jsonencode()`): `Version` (required, " +
					"`2012-10-17`), `Statement` (at most 100) with `Effect` (`Allow`/`Deny`), `Action` or `NotAction` " +
					"(actions dbproxy checks, such as `dbproxy:Connect`, `dbproxy:ReceiveConfig`, `dbproxy:Get*`; a wildcard " +
					"must match at least one) and " +
					"`Resource` or `NotResource` (plain paths such as `proxy/<proxy>/dbuser/<user>`, not ARNs). " +
					"`Condition` and `Principal` are refused. Documents that differ only in formatting or key order " +
					"are the same. At most 6144 bytes. Invalid JSON is refused at plan; the control plane checks the grammar at apply.",
			},
		},
		Blocks: map[string]schema.Block{
			"timeouts": timeouts.Block(ctx, timeouts.Opts{Create: true, Update: true, Delete: true}),
		},
	}
}

// sameJSONKeepsState plans the prior document when the configuration's
// means the same (other whitespace or key order), so that reformatting a
// policy in the configuration plans nothing. Semantic equality alone
// covers only what the provider returns; Terraform accepts a planned
// prior value in place of an equivalent configuration value.
type sameJSONKeepsState struct{}

func (sameJSONKeepsState) Description(context.Context) string {
	return "Keeps the prior document when the configured one is the same JSON."
}

func (m sameJSONKeepsState) MarkdownDescription(ctx context.Context) string {
	return m.Description(ctx)
}

func (sameJSONKeepsState) PlanModifyString(ctx context.Context, req planmodifier.StringRequest, resp *planmodifier.StringResponse) {
	if req.StateValue.IsNull() || req.StateValue.IsUnknown() || req.PlanValue.IsNull() || req.PlanValue.IsUnknown() {
		return
	}
	if !json.Valid([]byte(req.PlanValue.ValueString())) || !json.Valid([]byte(req.StateValue.ValueString())) {
		return
	}
	prior := jsontypes.NewNormalizedValue(req.StateValue.ValueString())
	same, diags := prior.StringSemanticEquals(ctx, jsontypes.NewNormalizedValue(req.PlanValue.ValueString()))
	resp.Diagnostics.Append(diags...)
	if same {
		resp.PlanValue = req.StateValue
	}
}

func (r *iamPolicyResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.data = providerDataFrom(req.ProviderData, &resp.Diagnostics)
}

// ValidateConfig checks the name, and the size of a document that is valid
// JSON, with the control plane's rules at plan time. Invalid JSON is
// reported by the document's type; the IAM grammar (Effect, Action, ...)
// is the API's to judge, at apply, on the policy attribute.
func (r *iamPolicyResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var cfg iamPolicyModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	p := cfg.toAPI()
	unknown := unknownFields(ctx, map[string]attr.Value{"name": cfg.Name, "policy": cfg.Policy, "description": cfg.Description})
	if !json.Valid([]byte(p.Document)) {
		unknown["policy"] = true
	}
	validateWithModel(p.Validate(), unknown, nil, &resp.Diagnostics)
}

func (m *iamPolicyModel) toAPI() model.Policy {
	return model.Policy{Name: m.Name.ValueString(), Description: m.Description.ValueString(), Document: m.Policy.ValueString()}
}

func (m *iamPolicyModel) fromAPI(p *model.Policy) {
	m.ID = types.StringValue(p.Name)
	m.Name = types.StringValue(p.Name)
	m.Description = stringOrNull(p.Description)
	// The framework keeps the prior value when this one means the same.
	m.Policy = jsontypes.NewNormalizedValue(p.Document)
}

func (r *iamPolicyResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var plan iamPolicyModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel, ok := withTimeout(ctx, plan.Timeouts.Create, &resp.Diagnostics)
	if !ok {
		return
	}
	defer cancel()
	body := plan.toAPI()
	what := fmt.Sprintf("IAM Policy %q", body.Name)
	var out model.Policy
	if err := r.data.client.Do(ctx, "PUT", objectPath("iam", "policies", body.Name), body, &out, createOnly); err != nil {
		addCreateError(&resp.Diagnostics, what, body.Name, err, nil)
		return
	}
	plan.fromAPI(&out)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
	// A new policy is attached to nobody yet, but a policy re-created under
	// the name an attachment still refers to grants at once.
	resp.Diagnostics.Append(waitRollout(ctx, r.data.client, out.Revision, nil, what)...)
}

func (r *iamPolicyResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var state iamPolicyModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	var out model.Policy
	if !readObject(ctx, r.data.client, objectPath("iam", "policies", state.ID.ValueString()), &out, "Cannot Read IAM Policy", nil, &resp.State, &resp.Diagnostics) {
		return
	}
	state.fromAPI(&out)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *iamPolicyResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var plan iamPolicyModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel, ok := withTimeout(ctx, plan.Timeouts.Update, &resp.Diagnostics)
	if !ok {
		return
	}
	defer cancel()
	body := plan.toAPI()
	what := fmt.Sprintf("IAM Policy %q", body.Name)
	var out model.Policy
	if err := r.data.client.Do(ctx, "PUT", objectPath("iam", "policies", body.Name), body, &out); err != nil {
		addAPIError(&resp.Diagnostics, "Cannot Update "+what, err, nil)
		return
	}
	plan.fromAPI(&out)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
	// The grants of every user it is attached to change on the nodes.
	resp.Diagnostics.Append(waitRollout(ctx, r.data.client, out.Revision, nil, what)...)
}

func (r *iamPolicyResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var state iamPolicyModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel, ok := withTimeout(ctx, state.Timeouts.Delete, &resp.Diagnostics)
	if !ok {
		return
	}
	defer cancel()
	// The API refuses to delete an attached policy, naming the user:
	// attachments that reference this policy are destroyed first.
	what := fmt.Sprintf("IAM Policy %q", state.ID.ValueString())
	if rev := deleteObject(ctx, r.data.client, objectPath("iam", "policies", state.ID.ValueString()), what, &resp.Diagnostics); rev != 0 {
		resp.Diagnostics.Append(waitRollout(ctx, r.data.client, rev, nil, what)...)
	}
}

func (r *iamPolicyResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	parts, err := splitImportID(req.ID, "name")
	if err != nil {
		resp.Diagnostics.AddError("Invalid Import ID", err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), parts[0])...)
}
