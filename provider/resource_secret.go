package provider

import (
	"context"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/dbproxy/dbproxy/internal/model"
)

var (
	_ resource.Resource                   = &secretResource{}
	_ resource.ResourceWithConfigure      = &secretResource{}
	_ resource.ResourceWithImportState    = &secretResource{}
	_ resource.ResourceWithValidateConfig = &secretResource{}
)

func newSecretResource() resource.Resource { return &secretResource{} }

// secretResource is dbproxy_secret: the database credentials a proxy logs
// in with.
type secretResource struct{ data *providerData }

type secretModel struct {
	ID                types.String   `tfsdk:"id"`
	Name              types.String   `tfsdk:"name"`
	Description       types.String   `tfsdk:"description"`
	Username          types.String   `tfsdk:"username"`
	PasswordWO        types.String   `tfsdk:"password_wo"`
	PasswordWOVersion types.Int64    `tfsdk:"password_wo_version"`
	Timeouts          timeouts.Value `tfsdk:"timeouts"`
}

// secretRename maps the API's field names to the resource's.
var secretRename = map[string]string{"password": "password_wo", "password_version": "password_wo_version"}

func (r *secretResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_secret"
}

func (r *secretResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "Database credentials that a proxy uses to log in to its targets, and that clients use to " +
			"log in to the proxy (unless its auth block requires IAM authentication). The password is write-only: " +
			"it never enters the plan or the state, and the control plane never returns it. Change " +
			"`password_wo_version` to send a new password.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "The secret's name.",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"name": schema.StringAttribute{
				Required:            true,
				MarkdownDescription: "Name of the secret, referenced by a proxy's `auth` blocks. Changing it replaces the secret.",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"description": schema.StringAttribute{
				Optional:            true,
				MarkdownDescription: "Free-form description.",
			},
			"username": schema.StringAttribute{
				Required:            true,
				MarkdownDescription: "Database user name.",
			},
			"password_wo": schema.StringAttribute{
				Required:  true,
				WriteOnly: true,
				Sensitive: true,
				MarkdownDescription: "Database password (write-only: never stored in the plan or the state). It is sent " +
					"when the secret is created and whenever `password_wo_version` changes; changing only this value " +
					"sends nothing.",
			},
			"password_wo_version": schema.Int64Attribute{
				Optional: true,
				MarkdownDescription: "Version of `password_wo`. Change it (for example increase it) to rotate the " +
					"password on the control plane and every node.",
				Validators: []validator.Int64{int64validator.AtLeast(0)},
			},
		},
		Blocks: map[string]schema.Block{
			"timeouts": timeouts.Block(ctx, timeouts.Opts{Create: true, Update: true, Delete: true}),
		},
	}
}

func (r *secretResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.data = providerDataFrom(req.ProviderData, &resp.Diagnostics)
}

// ValidateConfig checks the secret with the control plane's own rules at
// plan time.
func (r *secretResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var cfg secretModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	s := cfg.toAPI(false)
	unknown := unknownFields(ctx, map[string]attr.Value{"name": cfg.Name, "username": cfg.Username, "description": cfg.Description})
	validateWithModel(s.Validate(false), unknown, secretRename, &resp.Diagnostics)
}

// toAPI is the object to PUT; the password is sent only when withPassword.
func (m *secretModel) toAPI(withPassword bool) model.Secret {
	s := model.Secret{
		Name:            m.Name.ValueString(),
		Description:     m.Description.ValueString(),
		Username:        m.Username.ValueString(),
		PasswordVersion: m.PasswordWOVersion.ValueInt64(),
	}
	if withPassword {
		s.Password = m.PasswordWO.ValueString()
	}
	return s
}

// fromAPI sets the state from the API's answer; the write-only password
// stays null.
func (m *secretModel) fromAPI(s *model.Secret) {
	m.ID = types.StringValue(s.Name)
	m.Name = types.StringValue(s.Name)
	m.Description = stringOrNull(s.Description)
	m.Username = types.StringValue(s.Username)
	m.PasswordWO = types.StringNull()
	if s.PasswordVersion != 0 || !m.PasswordWOVersion.IsNull() {
		m.PasswordWOVersion = types.Int64Value(s.PasswordVersion)
	}
}

func (r *secretResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var plan, cfg secretModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel, ok := withTimeout(ctx, plan.Timeouts.Create, &resp.Diagnostics)
	if !ok {
		return
	}
	defer cancel()
	// Write-only values are only in the configuration.
	plan.PasswordWO = cfg.PasswordWO
	body := plan.toAPI(true)
	what := fmt.Sprintf("Secret %q", body.Name)
	var out model.Secret
	if err := r.data.client.Do(ctx, "PUT", objectPath("secrets", body.Name), body, &out, createOnly); err != nil {
		addCreateError(&resp.Diagnostics, what, body.Name, err, secretRename)
		return
	}
	plan.fromAPI(&out)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
	resp.Diagnostics.Append(waitRollout(ctx, r.data.client, out.Revision, nil, what)...)
}

func (r *secretResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var state secretModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	var out model.Secret
	if !readObject(ctx, r.data.client, objectPath("secrets", state.ID.ValueString()), &out, "Cannot Read Secret", secretRename, &resp.State, &resp.Diagnostics) {
		return
	}
	state.fromAPI(&out)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *secretResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var plan, state, cfg secretModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel, ok := withTimeout(ctx, plan.Timeouts.Update, &resp.Diagnostics)
	if !ok {
		return
	}
	defer cancel()
	// The password is sent again only when its version changes; without
	// one the control plane keeps the stored password.
	rotate := !plan.PasswordWOVersion.Equal(state.PasswordWOVersion)
	plan.PasswordWO = cfg.PasswordWO
	body := plan.toAPI(rotate)
	what := fmt.Sprintf("Secret %q", body.Name)
	var out model.Secret
	if err := r.data.client.Do(ctx, "PUT", objectPath("secrets", body.Name), body, &out); err != nil {
		addAPIError(&resp.Diagnostics, "Cannot Update "+what, err, secretRename)
		return
	}
	plan.fromAPI(&out)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
	resp.Diagnostics.Append(waitRollout(ctx, r.data.client, out.Revision, nil, what)...)
}

func (r *secretResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var state secretModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel, ok := withTimeout(ctx, state.Timeouts.Delete, &resp.Diagnostics)
	if !ok {
		return
	}
	defer cancel()
	deleteObject(ctx, r.data.client, objectPath("secrets", state.ID.ValueString()), fmt.Sprintf("Secret %q", state.ID.ValueString()), &resp.Diagnostics)
}

func (r *secretResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	parts, err := splitImportID(req.ID, "name")
	if err != nil {
		resp.Diagnostics.AddError("Invalid Import ID", err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), parts[0])...)
}
