package provider

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/dbproxy/dbproxy/internal/model"
)

var (
	_ resource.Resource                   = &accessKeyResource{}
	_ resource.ResourceWithConfigure      = &accessKeyResource{}
	_ resource.ResourceWithImportState    = &accessKeyResource{}
	_ resource.ResourceWithValidateConfig = &accessKeyResource{}
)

func newAccessKeyResource() resource.Resource { return &accessKeyResource{} }

// accessKeyResource is dbproxy_access_key: a key pair of an IAM user. The
// control plane returns the secret only to the call that creates the key,
// so the state keeps it from then on, as aws_iam_access_key does.
type accessKeyResource struct{ data *providerData }

type accessKeyModel struct {
	ID         types.String   `tfsdk:"id"`
	User       types.String   `tfsdk:"user"`
	Status     types.String   `tfsdk:"status"`
	Secret     types.String   `tfsdk:"secret"`
	CreateDate types.String   `tfsdk:"create_date"`
	Timeouts   timeouts.Value `tfsdk:"timeouts"`
}

func (r *accessKeyResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_access_key"
}

func (r *accessKeyResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "An access key of an IAM user: it signs API requests and connect tokens. The secret is " +
			"returned by the control plane only when the key is created; it is kept in the state from then on " +
			"(mark outputs that use it `sensitive`, and protect the state). An imported key has no secret.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "The access key id (`DBPK...`).",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"user": schema.StringAttribute{
				Required:            true,
				MarkdownDescription: "Name of the IAM user the key belongs to. Changing it replaces the key (a new id and secret).",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"status": schema.StringAttribute{
				Optional: true,
				Computed: true,
				Default:  stringdefault.StaticString(model.KeyActive),
				MarkdownDescription: "`Active` (default) or `Inactive`. An inactive key signs nothing the control plane " +
					"or the nodes accept; changing the status keeps the key and its secret.",
				Validators: []validator.String{stringvalidator.OneOf(model.KeyActive, model.KeyInactive)},
			},
			"secret": schema.StringAttribute{
				Computed:  true,
				Sensitive: true,
				MarkdownDescription: "The secret access key. Known only when the key is created (null after an " +
					"import); it never changes.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"create_date": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "When the key was created (RFC 3339, UTC).",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
		},
		Blocks: map[string]schema.Block{
			"timeouts": timeouts.Block(ctx, timeouts.Opts{Create: true, Update: true, Delete: true}),
		},
	}
}

func (r *accessKeyResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.data = providerDataFrom(req.ProviderData, &resp.Diagnostics)
}

// ValidateConfig checks the user name with the control plane's rules for
// users at plan time.
func (r *accessKeyResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var cfg accessKeyModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	u := model.User{Name: cfg.User.ValueString(), Path: defaultUserPath}
	unknown := unknownFields(ctx, map[string]attr.Value{"name": cfg.User})
	validateWithModel(u.Validate(), unknown, map[string]string{"name": "user"}, &resp.Diagnostics)
}

// fromAPI sets the state from the API's answer; the secret is taken only
// when the answer has it (the create), else the state's stays.
func (m *accessKeyModel) fromAPI(k *model.AccessKey) {
	m.ID = types.StringValue(k.ID)
	m.User = types.StringValue(k.User)
	m.Status = types.StringValue(k.Status)
	if k.SecretAccessKey != "" {
		m.Secret = types.StringValue(k.SecretAccessKey)
	} else if m.Secret.IsUnknown() {
		m.Secret = types.StringNull()
	}
	m.CreateDate = types.StringValue(k.CreatedAt.UTC().Format(time.RFC3339))
}

func keyPath(user, id string) string { return objectPath("iam", "users", user, "access-keys", id) }

func (r *accessKeyResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var plan accessKeyModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel, ok := withTimeout(ctx, plan.Timeouts.Create, &resp.Diagnostics)
	if !ok {
		return
	}
	defer cancel()
	user := plan.User.ValueString()
	var out model.AccessKey
	body := map[string]string{"status": plan.Status.ValueString()}
	if err := r.data.client.Do(ctx, "POST", objectPath("iam", "users", user, "access-keys"), body, &out); err != nil {
		addAPIError(&resp.Diagnostics, fmt.Sprintf("Cannot Create an Access Key for IAM User %q", user), err, nil)
		return
	}
	// The id is no secret; the secret is never logged.
	tflog.Info(ctx, "created access key", map[string]any{"user": user, "access_key_id": out.ID})
	plan.fromAPI(&out)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
	resp.Diagnostics.Append(waitKeyRollout(ctx, r.data, out.Revision, user, out.ID)...)
}

// waitKeyRollout waits until every node serves a key change: nodes verify
// connect tokens with the keys the control plane pushed them, so a token
// signed with a new key works, and a disabled key is refused, once apply
// returns.
func waitKeyRollout(ctx context.Context, d *providerData, rev uint64, user, id string) diag.Diagnostics {
	return waitRollout(ctx, d.client, rev, nil, fmt.Sprintf("Access key %s of IAM user %q", id, user))
}

func (r *accessKeyResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var state accessKeyModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	var out model.AccessKey
	if !readObject(ctx, r.data.client, keyPath(state.User.ValueString(), state.ID.ValueString()), &out, "Cannot Read Access Key", nil, &resp.State, &resp.Diagnostics) {
		return
	}
	state.fromAPI(&out)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *accessKeyResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var plan accessKeyModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel, ok := withTimeout(ctx, plan.Timeouts.Update, &resp.Diagnostics)
	if !ok {
		return
	}
	defer cancel()
	user, id := plan.User.ValueString(), plan.ID.ValueString()
	var out model.AccessKey
	if err := r.data.client.Do(ctx, "PATCH", keyPath(user, id), map[string]string{"status": plan.Status.ValueString()}, &out); err != nil {
		addAPIError(&resp.Diagnostics, fmt.Sprintf("Cannot Update Access Key %s", id), err, nil)
		return
	}
	tflog.Info(ctx, "changed the status of an access key", map[string]any{"user": user, "access_key_id": id, "status": out.Status})
	plan.fromAPI(&out)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
	resp.Diagnostics.Append(waitKeyRollout(ctx, r.data, out.Revision, user, id)...)
}

func (r *accessKeyResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var state accessKeyModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel, ok := withTimeout(ctx, state.Timeouts.Delete, &resp.Diagnostics)
	if !ok {
		return
	}
	defer cancel()
	user, id := state.User.ValueString(), state.ID.ValueString()
	rev := deleteObject(ctx, r.data.client, keyPath(user, id), fmt.Sprintf("Access Key %s", id), &resp.Diagnostics)
	if rev != 0 {
		// A deleted key must stop signing on every node before destroy
		// returns.
		resp.Diagnostics.Append(waitKeyRollout(ctx, r.data, rev, user, id)...)
	}
}

// ImportState takes "user/access_key_id". The secret cannot be read back:
// it stays null.
func (r *accessKeyResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	parts, err := splitImportID(req.ID, "user/access_key_id")
	if err != nil {
		resp.Diagnostics.AddError("Invalid Import ID", err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("user"), parts[0])...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), parts[1])...)
}
