package provider

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/listvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
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
	_ resource.Resource                   = &endpointResource{}
	_ resource.ResourceWithConfigure      = &endpointResource{}
	_ resource.ResourceWithImportState    = &endpointResource{}
	_ resource.ResourceWithValidateConfig = &endpointResource{}
	_ resource.ResourceWithModifyPlan     = &endpointResource{}
)

func newEndpointResource() resource.Resource { return &endpointResource{} }

// endpointResource is dbproxy_endpoint: an extra endpoint of a proxy.
type endpointResource struct{ data *providerData }

type endpointModel struct {
	ID         types.String   `tfsdk:"id"`
	ProxyName  types.String   `tfsdk:"proxy_name"`
	Name       types.String   `tfsdk:"name"`
	TargetRole types.String   `tfsdk:"target_role"`
	Zones      types.List     `tfsdk:"zones"`
	Port       types.Int64    `tfsdk:"port"`
	Endpoint   types.String   `tfsdk:"endpoint"`
	Addresses  types.List     `tfsdk:"addresses"`
	Timeouts   timeouts.Value `tfsdk:"timeouts"`
}

// privateOwnZones is the private-state key that records whether the
// endpoint has zones of its own on the control plane (true) or follows
// its proxy's (false). The state's zones hold the zones served either
// way, so that alone cannot tell a removed zones argument from one that
// was never set.
const privateOwnZones = "own_zones"

func (r *endpointResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_endpoint"
}

func (r *endpointResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "An extra endpoint of a proxy, like `aws_db_proxy_endpoint`: its own port on the nodes " +
			"of its zones, routing to the writer (`READ_WRITE`) or to readers (`READ_ONLY`, preferring readers in " +
			"the node's own zone). Every proxy has a `READ_WRITE` endpoint of its own, `default`. A create or " +
			"update returns when every node of the endpoint's zones serves it.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "`<proxy_name>/<name>`, also the import id.",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"proxy_name": schema.StringAttribute{
				Required: true,
				MarkdownDescription: "Name of the proxy. Changing it replaces the endpoint; reference the proxy's `id` " +
					"(`dbproxy_proxy.example.id`) so that an endpoint is replaced together with its proxy.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"name": schema.StringAttribute{
				Required: true,
				MarkdownDescription: "Name of the endpoint: a letter, then letters, digits and single hyphens; not " +
					"`default`. Changing it replaces the endpoint.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"target_role": schema.StringAttribute{
				Optional:            true,
				Computed:            true,
				Default:             stringdefault.StaticString(vocab.TargetRoleReadWrite),
				MarkdownDescription: "`READ_WRITE` (default) routes to the writer, `READ_ONLY` to readers.",
				Validators:          []validator.String{stringvalidator.OneOf(vocab.TargetRoleReadWrite, vocab.TargetRoleReadOnly)},
			},
			"zones": schema.ListAttribute{
				ElementType: types.StringType,
				Optional:    true,
				Computed:    true,
				MarkdownDescription: "Zones whose nodes serve the endpoint, each one of the proxy's zones. Leave it " +
					"out to follow the proxy's zones (then it shows them); removing it goes back to the proxy's.",
				Validators: []validator.List{listvalidator.SizeAtLeast(1), listvalidator.UniqueValues()},
			},
			"port": schema.Int64Attribute{
				Optional: true,
				Computed: true,
				MarkdownDescription: "Port the endpoint listens on, 1-65535; left out, the control plane allocates one " +
					"from its port range and keeps it.",
				Validators:    []validator.Int64{int64validator.Between(1, 65535)},
				PlanModifiers: []planmodifier.Int64{int64planmodifier.UseStateForUnknown()},
			},
			"endpoint": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "`host:port` of the endpoint on the first connected node of its zones.",
			},
			"addresses": schema.ListAttribute{
				ElementType:         types.StringType,
				Computed:            true,
				MarkdownDescription: "`host:port` of the endpoint on every connected node of its zones, in zone order.",
			},
		},
		Blocks: map[string]schema.Block{
			"timeouts": timeouts.Block(ctx, timeouts.Opts{Create: true, Update: true, Delete: true}),
		},
	}
}

func (r *endpointResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.data = providerDataFrom(req.ProviderData, &resp.Diagnostics)
}

// ValidateConfig checks the endpoint with the control plane's own rules
// at plan time.
func (r *endpointResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var cfg endpointModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	e := cfg.toAPI(ctx, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	e.Normalize()
	unknown := unknownFields(ctx, map[string]attr.Value{
		"proxy": cfg.ProxyName, "name": cfg.Name, "zones": cfg.Zones,
		// The schema's validators judge these already.
		"target_role": types.StringUnknown(), "port": types.Int64Unknown(),
	})
	validateWithModel(e.Validate(), unknown, proxyChildRename, &resp.Diagnostics)
}

// ModifyPlan plans an update when the zones argument is gone but the
// endpoint still has zones of its own on the control plane: Terraform
// keeps an optional and computed value whose argument is removed, so
// without this the endpoint would never go back to its proxy's zones.
func (r *endpointResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.State.Raw.IsNull() || req.Plan.Raw.IsNull() {
		return
	}
	var cfgZones types.List
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("zones"), &cfgZones)...)
	if resp.Diagnostics.HasError() || !cfgZones.IsNull() {
		return
	}
	raw, ds := req.Private.GetKey(ctx, privateOwnZones)
	resp.Diagnostics.Append(ds...)
	var own bool
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &own); err != nil {
			resp.Diagnostics.AddError("Invalid Private State", fmt.Sprintf("Cannot decode %s: %v. This is a bug in the provider.", privateOwnZones, err))
			return
		}
	}
	if !own {
		return
	}
	// The served zones and addresses change with it.
	resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("zones"), types.ListUnknown(types.StringType))...)
	resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("endpoint"), types.StringUnknown())...)
	resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("addresses"), types.ListUnknown(types.StringType))...)
}

// toAPI is the object to PUT; zones not set (or not known) follow the
// proxy's.
func (m *endpointModel) toAPI(ctx context.Context, diags *diag.Diagnostics) model.Endpoint {
	e := model.Endpoint{
		Proxy:      m.ProxyName.ValueString(),
		Name:       m.Name.ValueString(),
		TargetRole: m.TargetRole.ValueString(),
	}
	// A list with elements not known yet (zones from another resource)
	// is judged at apply.
	if tv, err := m.Zones.ToTerraformValue(ctx); err == nil && tv.IsFullyKnown() {
		e.Zones = listStrings(ctx, m.Zones, diags)
	}
	if !m.Port.IsUnknown() {
		e.Port = int(m.Port.ValueInt64())
	}
	return e
}

// fromAPI sets the state from the API's answer. zones are the zones
// served: the endpoint's own, or its proxy's when it has none.
func (m *endpointModel) fromAPI(e *model.Endpoint, p *model.Proxy) {
	m.ID = types.StringValue(childID(e.Proxy, e.Name))
	m.ProxyName = types.StringValue(e.Proxy)
	m.Name = types.StringValue(e.Name)
	m.TargetRole = types.StringValue(e.TargetRole)
	m.Zones = stringList(e.ZonesOf(p))
	m.Port = types.Int64Value(int64(e.Port))
	m.Endpoint = stringOrNull(e.Endpoint)
	m.Addresses = stringList(e.Addresses)
}

// privateSetter is the Private field of the responses that can set it.
type privateSetter interface {
	SetKey(ctx context.Context, key string, value []byte) diag.Diagnostics
}

func setOwnZones(ctx context.Context, priv privateSetter, e *model.Endpoint) diag.Diagnostics {
	v, _ := json.Marshal(len(e.Zones) > 0)
	return priv.SetKey(ctx, privateOwnZones, v)
}

func endpointWhat(proxy, name string) string {
	return fmt.Sprintf("Endpoint %q of proxy %q", name, proxy)
}

// read gets the endpoint and its proxy; found is false when either is
// gone.
func (r *endpointResource) read(ctx context.Context, proxy, name string) (*model.Endpoint, *model.Proxy, bool, error) {
	var e model.Endpoint
	if err := r.data.client.Do(ctx, "GET", objectPath("proxies", proxy, "endpoints", name), nil, &e); err != nil {
		if model.IsNotFound(err) {
			return nil, nil, false, nil
		}
		return nil, nil, false, err
	}
	p, found, err := proxyOf(ctx, r.data.client, proxy)
	if err != nil || !found {
		return nil, nil, false, err
	}
	return &e, &p, true, nil
}

// put stores the endpoint, waits until the nodes of its zones (and of
// the zones it served before, which stop serving it) serve the change
// and sets the state from the API (read again after the rollout, so that
// the addresses are those of the nodes that serve it).
func (r *endpointResource) put(ctx context.Context, plan *endpointModel, before []string, state *tfsdk.State, priv privateSetter, diags *diag.Diagnostics) {
	create := before == nil
	body := plan.toAPI(ctx, diags)
	if diags.HasError() {
		return
	}
	what := endpointWhat(body.Proxy, body.Name)
	var out model.Endpoint
	p := objectPath("proxies", body.Proxy, "endpoints", body.Name)
	if create {
		if err := r.data.client.Do(ctx, "PUT", p, body, &out, createOnly); err != nil {
			addCreateError(diags, what, childID(body.Proxy, body.Name), err, proxyChildRename)
			return
		}
	} else if err := r.data.client.Do(ctx, "PUT", p, body, &out); err != nil {
		addAPIError(diags, "Cannot Update "+what, err, proxyChildRename)
		return
	}
	proxy, found, err := proxyOf(ctx, r.data.client, body.Proxy)
	if err != nil || !found {
		diags.AddError("Cannot Read the Endpoint's Proxy", fmt.Sprintf("%s was stored, but its proxy cannot be read: %v", what, err))
		return
	}
	plan.fromAPI(&out, &proxy)
	diags.Append(state.Set(ctx, plan)...)
	diags.Append(setOwnZones(ctx, priv, &out)...)
	zones := out.ZonesOf(&proxy)
	for _, z := range before {
		if !slices.Contains(zones, z) {
			zones = append(zones, z)
		}
	}
	rd := waitChildRollout(ctx, r.data.client, out.Revision, body.Proxy, zones, what)
	diags.Append(rd...)
	if rd.HasError() {
		return
	}
	e, pr, found, err := r.read(ctx, body.Proxy, body.Name)
	if err != nil || !found {
		diags.AddError("Cannot Read "+what, fmt.Sprintf("%s is served by the nodes, but reading it back failed: %v", what, err))
		return
	}
	plan.fromAPI(e, pr)
	diags.Append(state.Set(ctx, plan)...)
}

func (r *endpointResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var plan endpointModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel, ok := withTimeout(ctx, plan.Timeouts.Create, &resp.Diagnostics)
	if !ok {
		return
	}
	defer cancel()
	r.put(ctx, &plan, nil, &resp.State, resp.Private, &resp.Diagnostics)
}

func (r *endpointResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var state endpointModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	proxy, name := state.ProxyName.ValueString(), state.Name.ValueString()
	e, p, found, err := r.read(ctx, proxy, name)
	if err != nil {
		addAPIError(&resp.Diagnostics, "Cannot Read "+endpointWhat(proxy, name), err, proxyChildRename)
		return
	}
	if !found {
		resp.State.RemoveResource(ctx)
		return
	}
	state.fromAPI(e, p)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
	resp.Diagnostics.Append(setOwnZones(ctx, resp.Private, e)...)
}

func (r *endpointResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var plan, state endpointModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel, ok := withTimeout(ctx, plan.Timeouts.Update, &resp.Diagnostics)
	if !ok {
		return
	}
	defer cancel()
	before := listStrings(ctx, state.Zones, &resp.Diagnostics)
	if before == nil {
		before = []string{}
	}
	r.put(ctx, &plan, before, &resp.State, resp.Private, &resp.Diagnostics)
}

func (r *endpointResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var state endpointModel
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
	what := endpointWhat(proxy, name)
	rev := deleteObject(ctx, r.data.client, objectPath("proxies", proxy, "endpoints", name), what, &resp.Diagnostics)
	if resp.Diagnostics.HasError() || rev == 0 {
		return
	}
	// The nodes that served it stop listening before destroy returns, so
	// that its port is free for what comes next.
	zones := listStrings(ctx, state.Zones, &resp.Diagnostics)
	resp.Diagnostics.Append(waitDeleted(ctx, r.data.client, rev, proxy, zones, what)...)
}

func (r *endpointResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	parts, err := splitImportID(req.ID, childImportFormat)
	if err != nil {
		resp.Diagnostics.AddError("Invalid Import ID", err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), req.ID)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("proxy_name"), parts[0])...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("name"), parts[1])...)
}
