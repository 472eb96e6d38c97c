package provider

import (
	"context"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/vocab"
)

var (
	_ resource.Resource                   = &targetResource{}
	_ resource.ResourceWithConfigure      = &targetResource{}
	_ resource.ResourceWithImportState    = &targetResource{}
	_ resource.ResourceWithValidateConfig = &targetResource{}
)

func newTargetResource() resource.Resource { return &targetResource{} }

// targetResource is dbproxy_target: one database server behind a proxy.
type targetResource struct{ data *providerData }

type targetModel struct {
	ID             types.String   `tfsdk:"id"`
	ProxyName      types.String   `tfsdk:"proxy_name"`
	Name           types.String   `tfsdk:"name"`
	Host           types.String   `tfsdk:"host"`
	Port           types.Int64    `tfsdk:"port"`
	Zone           types.String   `tfsdk:"zone"`
	Role           types.String   `tfsdk:"role"`
	Health         types.String   `tfsdk:"health"`
	DiscoveredRole types.String   `tfsdk:"discovered_role"`
	HealthReason   types.String   `tfsdk:"health_reason"`
	Timeouts       timeouts.Value `tfsdk:"timeouts"`
}

// proxyChildRename maps the API's field names of objects under a proxy to
// the resources'.
var proxyChildRename = map[string]string{"proxy": "proxy_name"}

func (r *targetResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_target"
}

func (r *targetResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "A database server (MySQL or MariaDB) behind a proxy, like `aws_db_proxy_target`. " +
			"Every node of the proxy's zones monitors it (connect and `@@read_only`) and reports its health and " +
			"role to the control plane.\n\n" +
			"A create or update returns when every node of the proxy's zones serves the change **and** the nodes " +
			"report the target `AVAILABLE`. A database that is not reachable yet does not fail the apply at once: " +
			"the provider waits, bounded by the `create`/`update` timeout, and when the timeout ends first the " +
			"error says what the nodes report. A target whose create timed out stays on the control plane and is " +
			"marked tainted, so the next apply replaces it and waits again.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "`<proxy_name>/<name>`, also the import id.",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"proxy_name": schema.StringAttribute{
				Required: true,
				MarkdownDescription: "Name of the proxy. Changing it replaces the target; reference the proxy's `id` " +
					"(`dbproxy_proxy.example.id`) so that a target is replaced together with its proxy.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"name": schema.StringAttribute{
				Required:            true,
				MarkdownDescription: "Name of the target within its proxy (letters, digits, `.`, `_`, `-`). Changing it replaces the target.",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"host": schema.StringAttribute{
				Required:            true,
				MarkdownDescription: "Host name or IP address of the database server, as the nodes reach it.",
			},
			"port": schema.Int64Attribute{
				Optional:            true,
				Computed:            true,
				Default:             int64default.StaticInt64(3306),
				MarkdownDescription: "Port of the database server, 1-65535. Defaults to `3306`.",
				Validators:          []validator.Int64{int64validator.Between(1, 65535)},
			},
			"zone": schema.StringAttribute{
				Optional: true,
				MarkdownDescription: "Zone the database server runs in. `READ_ONLY` endpoints prefer readers in the " +
					"client's node's own zone. Leave it out when the server is in no particular zone.",
			},
			"role": schema.StringAttribute{
				Optional: true,
				Computed: true,
				Default:  stringdefault.StaticString(vocab.RoleAuto),
				MarkdownDescription: "Role of the server: `AUTO` (default) discovers writer or reader from " +
					"`@@read_only`; `WRITER` or `READER` declare it.",
				Validators: []validator.String{stringvalidator.OneOf(vocab.RoleAuto, vocab.RoleWriter, vocab.RoleReader)},
			},
			"health": schema.StringAttribute{
				Computed: true,
				MarkdownDescription: "Health as the nodes of the proxy's zones report it: `AVAILABLE` (every node " +
					"reaches it), `DEGRADED` (some do), `UNAVAILABLE` (none does) or `UNKNOWN` (no recent report).",
			},
			"discovered_role": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "Role the nodes discovered: `WRITER` or `READER`; null while they do not agree or have not checked yet.",
			},
			"health_reason": schema.StringAttribute{
				Computed: true,
				MarkdownDescription: "Why nodes find the target unhealthy, with the nodes that say so (for example " +
					"`node-a: dial tcp 10.0.0.5:3306: connection refused`); null while every report is healthy.",
			},
		},
		Blocks: map[string]schema.Block{
			"timeouts": timeouts.Block(ctx, timeouts.Opts{Create: true, Update: true, Delete: true}),
		},
	}
}

func (r *targetResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.data = providerDataFrom(req.ProviderData, &resp.Diagnostics)
}

// ValidateConfig checks the target with the control plane's own rules at
// plan time.
func (r *targetResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var cfg targetModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	t := cfg.toAPI()
	t.Normalize()
	unknown := unknownFields(ctx, map[string]attr.Value{
		"proxy": cfg.ProxyName, "name": cfg.Name, "host": cfg.Host, "zone": cfg.Zone,
		// The schema's validators judge these already; one diagnostic
		// each is enough.
		"port": types.Int64Unknown(), "role": types.StringUnknown(),
	})
	validateWithModel(t.Validate(), unknown, proxyChildRename, &resp.Diagnostics)
}

func (m *targetModel) toAPI() model.Target {
	return model.Target{
		Proxy: m.ProxyName.ValueString(),
		Name:  m.Name.ValueString(),
		Host:  m.Host.ValueString(),
		Port:  int(m.Port.ValueInt64()),
		Zone:  m.Zone.ValueString(),
		Role:  m.Role.ValueString(),
	}
}

func (m *targetModel) fromAPI(t *model.Target) {
	m.ID = types.StringValue(childID(t.Proxy, t.Name))
	m.ProxyName = types.StringValue(t.Proxy)
	m.Name = types.StringValue(t.Name)
	m.Host = types.StringValue(t.Host)
	m.Port = types.Int64Value(int64(t.Port))
	m.Zone = stringOrNull(t.Zone)
	m.Role = types.StringValue(t.Role)
	m.Health = types.StringValue(t.Health)
	m.DiscoveredRole = stringOrNull(t.DiscoveredRole)
	m.HealthReason = stringOrNull(t.HealthReason)
}

func targetWhat(proxy, name string) string {
	return fmt.Sprintf("Target %q of proxy %q", name, proxy)
}

// put stores the target, waits until the nodes serve it and report it
// available, and sets the state from the last answer (also when the wait
// fails, so that what the nodes report is in the state).
func (r *targetResource) put(ctx context.Context, plan *targetModel, create bool, state *tfsdk.State, diags *diag.Diagnostics) {
	body := plan.toAPI()
	what := targetWhat(body.Proxy, body.Name)
	var out model.Target
	p := objectPath("proxies", body.Proxy, "targets", body.Name)
	if create {
		if err := r.data.client.Do(ctx, "PUT", p, body, &out, createOnly); err != nil {
			addCreateError(diags, what, childID(body.Proxy, body.Name), err, proxyChildRename)
			return
		}
	} else if err := r.data.client.Do(ctx, "PUT", p, body, &out); err != nil {
		addAPIError(diags, "Cannot Update "+what, err, proxyChildRename)
		return
	}
	plan.fromAPI(&out)
	diags.Append(state.Set(ctx, plan)...)
	rd := waitChildRollout(ctx, r.data.client, out.Revision, body.Proxy, nil, what)
	diags.Append(rd...)
	if rd.HasError() {
		return
	}
	t, hd := waitTargetHealth(ctx, r.data.client, body.Proxy, body.Name, what)
	if t != nil {
		plan.fromAPI(t)
		diags.Append(state.Set(ctx, plan)...)
	}
	diags.Append(hd...)
}

func (r *targetResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var plan targetModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel, ok := withTimeout(ctx, plan.Timeouts.Create, &resp.Diagnostics)
	if !ok {
		return
	}
	defer cancel()
	r.put(ctx, &plan, true, &resp.State, &resp.Diagnostics)
}

func (r *targetResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var state targetModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	var out model.Target
	if !readObject(ctx, r.data.client, objectPath("proxies", state.ProxyName.ValueString(), "targets", state.Name.ValueString()), &out,
		"Cannot Read "+targetWhat(state.ProxyName.ValueString(), state.Name.ValueString()), proxyChildRename, &resp.State, &resp.Diagnostics) {
		return
	}
	state.fromAPI(&out)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *targetResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var plan targetModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel, ok := withTimeout(ctx, plan.Timeouts.Update, &resp.Diagnostics)
	if !ok {
		return
	}
	defer cancel()
	r.put(ctx, &plan, false, &resp.State, &resp.Diagnostics)
}

func (r *targetResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var state targetModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel, ok := withTimeout(ctx, state.Timeouts.Delete, &resp.Diagnostics)
	if !ok {
		return
	}
	defer cancel()
	proxy, name := state.ProxyName.ValueString(), state.Name.ValueString()
	what := targetWhat(proxy, name)
	rev := deleteObject(ctx, r.data.client, objectPath("proxies", proxy, "targets", name), what, &resp.Diagnostics)
	if resp.Diagnostics.HasError() || rev == 0 {
		return
	}
	// Nodes stop sending traffic to the target before destroy returns,
	// so that the database can go right after.
	resp.Diagnostics.Append(waitDeleted(ctx, r.data.client, rev, proxy, nil, what)...)
}

func (r *targetResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	parts, err := splitImportID(req.ID, childImportFormat)
	if err != nil {
		resp.Diagnostics.AddError("Invalid Import ID", err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), req.ID)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("proxy_name"), parts[0])...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("name"), parts[1])...)
}
