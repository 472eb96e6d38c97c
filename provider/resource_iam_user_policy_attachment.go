package provider

import (
	"context"
	"fmt"

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
	_ resource.Resource                   = &attachmentResource{}
	_ resource.ResourceWithConfigure      = &attachmentResource{}
	_ resource.ResourceWithImportState    = &attachmentResource{}
	_ resource.ResourceWithValidateConfig = &attachmentResource{}
)

func newIAMUserPolicyAttachmentResource() resource.Resource { return &attachmentResource{} }

// attachmentResource is dbproxy_iam_user_policy_attachment: one policy
// attached to one user. Both are its identity, so any change replaces it.
type attachmentResource struct{ data *providerData }

type attachmentModel struct {
	ID         types.String   `tfsdk:"id"`
	User       types.String   `tfsdk:"user"`
	PolicyName types.String   `tfsdk:"policy_name"`
	Timeouts   timeouts.Value `tfsdk:"timeouts"`
}

const attachmentIDFormat = "user/policy_name"

func (r *attachmentResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_iam_user_policy_attachment"
}

func (r *attachmentResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "Attaches an IAM policy to an IAM user. The user's keys get the policy's permissions; " +
			"grants to connect reach every data-plane node before apply returns, and so does their removal on destroy.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "`<user>/<policy_name>`, also the import id.",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"user": schema.StringAttribute{
				Required:            true,
				MarkdownDescription: "Name of the IAM user. Changing it replaces the attachment.",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"policy_name": schema.StringAttribute{
				Required:            true,
				MarkdownDescription: "Name of the IAM policy. Changing it replaces the attachment.",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
		},
		Blocks: map[string]schema.Block{
			// Nothing is updated in place; only the timeouts themselves.
			"timeouts": timeouts.Block(ctx, timeouts.Opts{Create: true, Delete: true}),
		},
	}
}

func (r *attachmentResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.data = providerDataFrom(req.ProviderData, &resp.Diagnostics)
}

// ValidateConfig checks both names with the control plane's rules at plan
// time (a user and a policy name follow the same rule).
func (r *attachmentResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var cfg attachmentModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	u := model.User{Name: cfg.User.ValueString(), Path: defaultUserPath}
	validateWithModel(u.Validate(), unknownFields(ctx, map[string]attr.Value{"name": cfg.User}), map[string]string{"name": "user"}, &resp.Diagnostics)
	p := model.Policy{Name: cfg.PolicyName.ValueString(), Document: "{}"}
	validateWithModel(p.Validate(), unknownFields(ctx, map[string]attr.Value{"name": cfg.PolicyName}), map[string]string{"name": "policy_name"}, &resp.Diagnostics)
}

func attachmentPath(user, policy string) string {
	return objectPath("iam", "users", user, "policies", policy)
}

func (m *attachmentModel) fromAPI(a *model.Attachment) {
	m.ID = types.StringValue(a.User + "/" + a.Policy)
	m.User = types.StringValue(a.User)
	m.PolicyName = types.StringValue(a.Policy)
}

func (r *attachmentResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var plan attachmentModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel, ok := withTimeout(ctx, plan.Timeouts.Create, &resp.Diagnostics)
	if !ok {
		return
	}
	defer cancel()
	user, policy := plan.User.ValueString(), plan.PolicyName.ValueString()
	what := fmt.Sprintf("IAM User Policy Attachment %q", user+"/"+policy)
	var out model.Attachment
	if err := r.data.client.Do(ctx, "PUT", attachmentPath(user, policy), struct{}{}, &out, createOnly); err != nil {
		addCreateError(&resp.Diagnostics, what, user+"/"+policy, err, nil)
		return
	}
	plan.fromAPI(&out)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
	resp.Diagnostics.Append(waitRollout(ctx, r.data.client, out.Revision, nil, what)...)
}

func (r *attachmentResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var state attachmentModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	var out model.Attachment
	if !readObject(ctx, r.data.client, attachmentPath(state.User.ValueString(), state.PolicyName.ValueString()), &out, "Cannot Read IAM User Policy Attachment", nil, &resp.State, &resp.Diagnostics) {
		return
	}
	state.fromAPI(&out)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

// Update only changes the timeouts: every other attribute replaces.
func (r *attachmentResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan attachmentModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *attachmentResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var state attachmentModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel, ok := withTimeout(ctx, state.Timeouts.Delete, &resp.Diagnostics)
	if !ok {
		return
	}
	defer cancel()
	user, policy := state.User.ValueString(), state.PolicyName.ValueString()
	what := fmt.Sprintf("IAM User Policy Attachment %q", user+"/"+policy)
	if rev := deleteObject(ctx, r.data.client, attachmentPath(user, policy), what, &resp.Diagnostics); rev != 0 {
		// The grant is gone from every node before destroy returns.
		resp.Diagnostics.Append(waitRollout(ctx, r.data.client, rev, nil, what)...)
	}
}

// ImportState takes "user/policy_name".
func (r *attachmentResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	parts, err := splitImportID(req.ID, attachmentIDFormat)
	if err != nil {
		resp.Diagnostics.AddError("Invalid Import ID", err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), req.ID)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("user"), parts[0])...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("policy_name"), parts[1])...)
}
