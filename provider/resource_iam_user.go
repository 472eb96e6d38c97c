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
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/dbproxy/dbproxy/internal/model"
)

var (
	_ resource.Resource                   = &iamUserResource{}
	_ resource.ResourceWithConfigure      = &iamUserResource{}
	_ resource.ResourceWithImportState    = &iamUserResource{}
	_ resource.ResourceWithValidateConfig = &iamUserResource{}
)

func newIAMUserResource() resource.Resource { return &iamUserResource{} }

// iamUserResource is dbproxy_iam_user: an identity of the control plane
// that access keys belong to and policies are attached to.
type iamUserResource struct{ data *providerData }

type iamUserModel struct {
	ID       types.String   `tfsdk:"id"`
	Name     types.String   `tfsdk:"name"`
	Path     types.String   `tfsdk:"path"`
	Timeouts timeouts.Value `tfsdk:"timeouts"`
}

// defaultUserPath is the path the API gives a user created without one.
const defaultUserPath = "/"

func (r *iamUserResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_iam_user"
}

func (r *iamUserResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "An IAM user of the control plane. Give it access keys (`dbproxy_access_key`) and attach " +
			"policies to it (`dbproxy_iam_user_policy_attachment`); a policy allowing `dbproxy:Connect` on " +
			"`proxy/<proxy>/dbuser/<user>` lets its keys sign connect tokens for that database user.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "The user's name.",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"name": schema.StringAttribute{
				Required: true,
				MarkdownDescription: "Name of the user: 1-64 letters, digits and `+=,.@_-`. `root` is reserved. Changing " +
					"it replaces the user (its keys and attachments must be replaced with it).",
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"path": schema.StringAttribute{
				Optional: true,
				Computed: true,
				Default:  stringdefault.StaticString(defaultUserPath),
				MarkdownDescription: "Path of the user, for grouping: begins and ends with `/`, at most 512 characters " +
					"(default `/`, as the API sets it). It can be changed in place.",
			},
		},
		Blocks: map[string]schema.Block{
			"timeouts": timeouts.Block(ctx, timeouts.Opts{Create: true, Update: true, Delete: true}),
		},
	}
}

func (r *iamUserResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.data = providerDataFrom(req.ProviderData, &resp.Diagnostics)
}

// ValidateConfig checks the user with the control plane's own rules at
// plan time.
func (r *iamUserResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var cfg iamUserModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	u := cfg.toAPI()
	u.Normalize()
	unknown := unknownFields(ctx, map[string]attr.Value{"name": cfg.Name, "path": cfg.Path})
	validateWithModel(u.Validate(), unknown, nil, &resp.Diagnostics)
}

func (m *iamUserModel) toAPI() model.User {
	return model.User{Name: m.Name.ValueString(), Path: m.Path.ValueString()}
}

func (m *iamUserModel) fromAPI(u *model.User) {
	m.ID = types.StringValue(u.Name)
	m.Name = types.StringValue(u.Name)
	p := u.Path
	if p == "" {
		p = defaultUserPath
	}
	m.Path = types.StringValue(p)
}

// A user's own fields change no node's configuration (only its keys and
// attachments do), so its writes do not wait for a rollout.

func (r *iamUserResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var plan iamUserModel
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
	what := fmt.Sprintf("IAM User %q", body.Name)
	var out model.User
	if err := r.data.client.Do(ctx, "PUT", objectPath("iam", "users", body.Name), body, &out, createOnly); err != nil {
		addCreateError(&resp.Diagnostics, what, body.Name, err, nil)
		return
	}
	plan.fromAPI(&out)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *iamUserResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var state iamUserModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	var out model.User
	if !readObject(ctx, r.data.client, objectPath("iam", "users", state.ID.ValueString()), &out, "Cannot Read IAM User", nil, &resp.State, &resp.Diagnostics) {
		return
	}
	state.fromAPI(&out)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *iamUserResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var plan iamUserModel
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
	var out model.User
	if err := r.data.client.Do(ctx, "PUT", objectPath("iam", "users", body.Name), body, &out); err != nil {
		addAPIError(&resp.Diagnostics, fmt.Sprintf("Cannot Update IAM User %q", body.Name), err, nil)
		return
	}
	plan.fromAPI(&out)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *iamUserResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var state iamUserModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel, ok := withTimeout(ctx, state.Timeouts.Delete, &resp.Diagnostics)
	if !ok {
		return
	}
	defer cancel()
	// The API refuses to delete a user that still has keys or attached
	// policies, and says which; Terraform destroys those first when they
	// reference this user.
	deleteObject(ctx, r.data.client, objectPath("iam", "users", state.ID.ValueString()),
		fmt.Sprintf("IAM User %q", state.ID.ValueString()), &resp.Diagnostics)
}

func (r *iamUserResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	parts, err := splitImportID(req.ID, "name")
	if err != nil {
		resp.Diagnostics.AddError("Invalid Import ID", err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), parts[0])...)
}
