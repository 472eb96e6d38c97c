package provider

import (
	"context"
	"fmt"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/objectvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/setvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/setdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/vocab"
)

var (
	_ resource.Resource                   = &targetGroupResource{}
	_ resource.ResourceWithConfigure      = &targetGroupResource{}
	_ resource.ResourceWithImportState    = &targetGroupResource{}
	_ resource.ResourceWithValidateConfig = &targetGroupResource{}
)

func newTargetGroupResource() resource.Resource { return &targetGroupResource{} }

// targetGroupResource is dbproxy_target_group: the pool settings of a
// proxy's one (default) target group.
type targetGroupResource struct{ data *providerData }

// Defaults of a target group, as the control plane's Normalize fills them.
const (
	defaultMaxConnectionsPercent   = 100
	defaultMaxIdlePercentCap       = 50
	defaultConnectionBorrowTimeout = 120
	maxConnectionBorrowTimeout     = 3600
	maxInitQuery                   = 4096
)

// defaultMaxIdle is the idle limit the control plane applies when none is
// given: half the connections, at most max_connections_percent.
func defaultMaxIdle(maxConns int64) int64 { return min(defaultMaxIdlePercentCap, maxConns) }

type targetGroupModel struct {
	ID                   types.String   `tfsdk:"id"`
	ProxyName            types.String   `tfsdk:"proxy_name"`
	Name                 types.String   `tfsdk:"name"`
	ConnectionPoolConfig *poolModel     `tfsdk:"connection_pool_config"`
	Timeouts             timeouts.Value `tfsdk:"timeouts"`
}

type poolModel struct {
	MaxConnectionsPercent     types.Int64  `tfsdk:"max_connections_percent"`
	MaxIdleConnectionsPercent types.Int64  `tfsdk:"max_idle_connections_percent"`
	ConnectionBorrowTimeout   types.Int64  `tfsdk:"connection_borrow_timeout"`
	InitQuery                 types.String `tfsdk:"init_query"`
	SessionPinningFilters     types.Set    `tfsdk:"session_pinning_filters"`
}

// targetGroupRename maps the API's field names to the resource's.
var targetGroupRename = map[string]string{"proxy": "proxy_name"}

func (r *targetGroupResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_target_group"
}

func (r *targetGroupResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "The connection pool settings of a proxy's default target group, like " +
			"`aws_db_proxy_default_target_group`. Every proxy has exactly one target group, with default settings " +
			"until this resource sets them: creating the resource takes over the group's settings, and destroying " +
			"it resets them to the defaults on the control plane and the nodes (AWS leaves them as they were). " +
			"Create, update and destroy return when every node of the proxy's zones applies the settings.\n\n" +
			"Set `proxy_name` from the proxy's `id` (`dbproxy_proxy.example.id`) so that the settings are applied " +
			"again when the proxy is replaced.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "The proxy's name, also the import id.",
				PlanModifiers:       []planmodifier.String{keepIDWhileNamed(path.Root("proxy_name"))},
			},
			"proxy_name": schema.StringAttribute{
				Required: true,
				MarkdownDescription: "Name of the proxy. Changing it replaces the resource; reference the proxy's `id` " +
					"(`dbproxy_proxy.example.id`) so that the target group is replaced together with its proxy.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"name": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "Name of the target group: always `" + model.DefaultTargetGroup + "`.",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
		},
		Blocks: map[string]schema.Block{
			"connection_pool_config": schema.SingleNestedBlock{
				MarkdownDescription: "Pool settings, as in RDS Proxy. Required; `connection_pool_config {}` sets " +
					"every setting to its default. A setting removed from the block goes back to its default.",
				Validators: []validator.Object{objectvalidator.IsRequired()},
				Attributes: map[string]schema.Attribute{
					"max_connections_percent": schema.Int64Attribute{
						Optional: true,
						Computed: true,
						Default:  int64default.StaticInt64(defaultMaxConnectionsPercent),
						MarkdownDescription: "Largest size of each pool, as a percentage of the target's `max_connections`, " +
							"1-100 (default 100).",
						Validators: []validator.Int64{int64validator.Between(1, 100)},
					},
					"max_idle_connections_percent": schema.Int64Attribute{
						Optional: true,
						Computed: true,
						MarkdownDescription: "How many idle connections each pool keeps, as a percentage of the target's " +
							"`max_connections`, 0-100 and at most `max_connections_percent`. Left out, or `0`, it is the " +
							"control plane's default: 50, or `max_connections_percent` when that is lower (the control " +
							"plane cannot keep no idle connections at all).",
						PlanModifiers: []planmodifier.Int64{defaultMaxIdleModifier{}},
						Validators:    []validator.Int64{int64validator.Between(0, 100)},
					},
					"connection_borrow_timeout": schema.Int64Attribute{
						Optional: true,
						Computed: true,
						Default:  int64default.StaticInt64(defaultConnectionBorrowTimeout),
						MarkdownDescription: "Seconds a client waits for a database connection before it gets an error, " +
							"0-3600 (default 120). `0` means the default too: the control plane never fails a " +
							"borrow at once.",
						Validators: []validator.Int64{int64validator.Between(0, maxConnectionBorrowTimeout)},
					},
					"init_query": schema.StringAttribute{
						Optional: true,
						MarkdownDescription: "SQL run on every new database connection, such as " +
							"`SET SESSION sql_mode = 'ANSI_QUOTES'`; every client session starts from the state it sets. " +
							"At most 4096 bytes. Removing it stops running it on new connections.",
						Validators: []validator.String{stringvalidator.LengthBetween(1, maxInitQuery)},
					},
					"session_pinning_filters": schema.SetAttribute{
						Optional:    true,
						Computed:    true,
						ElementType: types.StringType,
						Default:     setdefault.StaticValue(types.SetValueMust(types.StringType, []attr.Value{})),
						MarkdownDescription: "Kinds of session state that do not pin a client to its database " +
							"connection. `EXCLUDE_VARIABLE_SETS`: `SET` of a session variable does not pin. Default: none.",
						Validators: []validator.Set{setvalidator.ValueStringsAre(stringvalidator.OneOf(vocab.PinningFilterExcludeVariableSets))},
					},
				},
			},
			"timeouts": timeouts.Block(ctx, timeouts.Opts{Create: true, Update: true, Delete: true}),
		},
	}
}

// defaultMaxIdleModifier plans max_idle_connections_percent when the
// configuration leaves it out: the control plane's default, which depends
// on max_connections_percent, so that no plan shows a change the API would
// not make.
type defaultMaxIdleModifier struct{}

func (defaultMaxIdleModifier) Description(context.Context) string {
	return "Defaults to 50, or to max_connections_percent when that is lower."
}

func (m defaultMaxIdleModifier) MarkdownDescription(ctx context.Context) string {
	return m.Description(ctx)
}

func (defaultMaxIdleModifier) PlanModifyInt64(ctx context.Context, req planmodifier.Int64Request, resp *planmodifier.Int64Response) {
	if !req.ConfigValue.IsNull() || req.Plan.Raw.IsNull() {
		return
	}
	var maxConns types.Int64
	resp.Diagnostics.Append(req.Plan.GetAttribute(ctx, req.Path.ParentPath().AtName("max_connections_percent"), &maxConns)...)
	if resp.Diagnostics.HasError() || maxConns.IsUnknown() || maxConns.IsNull() {
		return
	}
	resp.PlanValue = types.Int64Value(defaultMaxIdle(maxConns.ValueInt64()))
}

func (r *targetGroupResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.data = providerDataFrom(req.ProviderData, &resp.Diagnostics)
}

// ValidateConfig checks the settings with the control plane's own rules
// at plan time, max_idle_connections_percent ≤ max_connections_percent
// among them.
func (r *targetGroupResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var cfg targetGroupModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() || cfg.ConnectionPoolConfig == nil {
		return
	}
	g, diags := cfg.toAPI(ctx)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	pc := cfg.ConnectionPoolConfig
	const prefix = "connection_pool_config."
	unknownPool := unknownFields(ctx, map[string]attr.Value{
		"max_connections_percent": pc.MaxConnectionsPercent, "max_idle_connections_percent": pc.MaxIdleConnectionsPercent,
		"connection_borrow_timeout": pc.ConnectionBorrowTimeout, "init_query": pc.InitQuery,
		"session_pinning_filters": pc.SessionPinningFilters,
	})
	inRange := func(v types.Int64, lo, hi int64) bool { return v.ValueInt64() >= lo && v.ValueInt64() <= hi }
	g.Normalize()
	err := dropFieldErrors(g.Validate(), func(field string) bool {
		name, ok := strings.CutPrefix(field, prefix)
		if !ok {
			return false
		}
		name, _, _ = strings.Cut(name, "[")
		switch {
		case unknownPool[name]:
			return true
		case name == "max_idle_connections_percent":
			// The cross-field rule needs both values; the range alone is
			// the schema's.
			return unknownPool["max_connections_percent"] || !inRange(pc.MaxIdleConnectionsPercent, 0, 100) ||
				(!pc.MaxConnectionsPercent.IsNull() && !inRange(pc.MaxConnectionsPercent, 1, 100))
		default:
			// The other ranges are stated by the schema's validators.
			return true
		}
	})
	unknown := unknownFields(ctx, map[string]attr.Value{"proxy": cfg.ProxyName})
	validateWithModel(err, unknown, targetGroupRename, &resp.Diagnostics)
}

// toAPI is the object to PUT: values left out (null) or not known yet are
// sent as zero, which the control plane reads as its default, so a
// setting removed from the configuration is reset on the server.
func (m *targetGroupModel) toAPI(ctx context.Context) (model.TargetGroup, diag.Diagnostics) {
	var diags diag.Diagnostics
	g := model.TargetGroup{Proxy: m.ProxyName.ValueString(), Name: model.DefaultTargetGroup}
	if pc := m.ConnectionPoolConfig; pc != nil {
		filters := []string{}
		if !pc.SessionPinningFilters.IsNull() && !pc.SessionPinningFilters.IsUnknown() {
			diags.Append(pc.SessionPinningFilters.ElementsAs(ctx, &filters, false)...)
		}
		g.ConnectionPoolConfig = model.PoolConfig{
			MaxConnectionsPercent:     int(pc.MaxConnectionsPercent.ValueInt64()),
			MaxIdleConnectionsPercent: int(pc.MaxIdleConnectionsPercent.ValueInt64()),
			ConnectionBorrowTimeout:   int(pc.ConnectionBorrowTimeout.ValueInt64()),
			InitQuery:                 pc.InitQuery.ValueString(),
			SessionPinningFilters:     filters,
		}
	}
	return g, diags
}

// fromAPI sets every attribute from the API's answer. prior is the
// configured or stored block (nil on import): where it holds 0, which the
// control plane stores as its default, the 0 is kept while the server
// holds exactly that default, so that 0 in a configuration plans nothing.
func (m *targetGroupModel) fromAPI(g *model.TargetGroup) diag.Diagnostics {
	var diags diag.Diagnostics
	prior := m.ConnectionPoolConfig
	pc := g.ConnectionPoolConfig
	zeroKept := func(p types.Int64, got, def int) types.Int64 {
		if prior != nil && !p.IsNull() && !p.IsUnknown() && p.ValueInt64() == 0 && got == def {
			return types.Int64Value(0)
		}
		return types.Int64Value(int64(got))
	}
	next := &poolModel{MaxConnectionsPercent: types.Int64Value(int64(pc.MaxConnectionsPercent))}
	if prior != nil {
		next.MaxIdleConnectionsPercent = zeroKept(prior.MaxIdleConnectionsPercent, pc.MaxIdleConnectionsPercent, int(defaultMaxIdle(int64(pc.MaxConnectionsPercent))))
		next.ConnectionBorrowTimeout = zeroKept(prior.ConnectionBorrowTimeout, pc.ConnectionBorrowTimeout, defaultConnectionBorrowTimeout)
	} else {
		next.MaxIdleConnectionsPercent = types.Int64Value(int64(pc.MaxIdleConnectionsPercent))
		next.ConnectionBorrowTimeout = types.Int64Value(int64(pc.ConnectionBorrowTimeout))
	}
	next.InitQuery = stringOrNull(pc.InitQuery)
	vals := make([]attr.Value, 0, len(pc.SessionPinningFilters))
	for _, f := range pc.SessionPinningFilters {
		vals = append(vals, types.StringValue(f))
	}
	set, ds := types.SetValue(types.StringType, vals)
	diags.Append(ds...)
	next.SessionPinningFilters = set
	m.ConnectionPoolConfig = next
	m.ID = types.StringValue(g.Proxy)
	m.ProxyName = types.StringValue(g.Proxy)
	m.Name = types.StringValue(g.Name)
	return diags
}

// put writes the settings and waits until the nodes of the proxy's zones
// apply them.
func (r *targetGroupResource) put(ctx context.Context, plan *targetGroupModel, summary string, state *tfsdk.State, diags *diag.Diagnostics) {
	body, ds := plan.toAPI(ctx)
	diags.Append(ds...)
	if diags.HasError() {
		return
	}
	what := fmt.Sprintf("The target group of proxy %q", body.Proxy)
	var out model.TargetGroup
	if err := r.data.client.Do(ctx, "PUT", objectPath("proxies", body.Proxy, "target-group"), body, &out); err != nil {
		addAPIError(diags, summary+" "+what, err, targetGroupRename)
		return
	}
	diags.Append(plan.fromAPI(&out)...)
	diags.Append(state.Set(ctx, plan)...)
	diags.Append(waitChildRollout(ctx, r.data.client, out.Revision, body.Proxy, nil, what)...)
}

func (r *targetGroupResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var plan targetGroupModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel, ok := withTimeout(ctx, plan.Timeouts.Create, &resp.Diagnostics)
	if !ok {
		return
	}
	defer cancel()
	// No create-only header: the group exists with every proxy (at its
	// defaults until written), so creating the resource adopts it, as
	// aws_db_proxy_default_target_group does.
	r.put(ctx, &plan, "Cannot Create", &resp.State, &resp.Diagnostics)
}

func (r *targetGroupResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var state targetGroupModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	var out model.TargetGroup
	// The API answers 404 only when the proxy is gone; a group never
	// written (or reset) reads as the defaults, which the next plan
	// corrects like any other drift.
	if !readObject(ctx, r.data.client, objectPath("proxies", state.ID.ValueString(), "target-group"), &out, "Cannot Read Target Group", targetGroupRename, &resp.State, &resp.Diagnostics) {
		return
	}
	resp.Diagnostics.Append(state.fromAPI(&out)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *targetGroupResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var plan targetGroupModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel, ok := withTimeout(ctx, plan.Timeouts.Update, &resp.Diagnostics)
	if !ok {
		return
	}
	defer cancel()
	r.put(ctx, &plan, "Cannot Update", &resp.State, &resp.Diagnostics)
}

// Delete resets the settings to the defaults: the API deletes the stored
// group, and a proxy without one pools with the defaults.
func (r *targetGroupResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var state targetGroupModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel, ok := withTimeout(ctx, state.Timeouts.Delete, &resp.Diagnostics)
	if !ok {
		return
	}
	defer cancel()
	proxy := state.ID.ValueString()
	what := fmt.Sprintf("The target group of proxy %q", proxy)
	rev := deleteObject(ctx, r.data.client, objectPath("proxies", proxy, "target-group"), what, &resp.Diagnostics)
	if resp.Diagnostics.HasError() || rev == 0 {
		return
	}
	resp.Diagnostics.Append(waitDeleted(ctx, r.data.client, rev, proxy, nil, what+" (reset to the defaults)")...)
}

func (r *targetGroupResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	parts, err := splitImportID(req.ID, "proxy_name")
	if err != nil {
		resp.Diagnostics.AddError("Invalid Import ID", err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), parts[0])...)
}
