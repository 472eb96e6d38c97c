package provider

import (
	"context"
	"fmt"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/listvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/vocab"
)

var (
	_ resource.Resource                   = &proxyResource{}
	_ resource.ResourceWithConfigure      = &proxyResource{}
	_ resource.ResourceWithImportState    = &proxyResource{}
	_ resource.ResourceWithValidateConfig = &proxyResource{}
	_ resource.ResourceWithModifyPlan     = &proxyResource{}
)

func newProxyResource() resource.Resource { return &proxyResource{} }

// proxyResource is dbproxy_proxy: a proxy, served by the data-plane nodes
// of its zones.
type proxyResource struct{ data *providerData }

// Defaults of a proxy, as the control plane's Normalize fills them. The
// schema plans them, so that a configuration that leaves them out plans
// nothing against what the API returns.
const (
	defaultIdleClientTimeout = 1800
	maxIdleClientTimeout     = 28800
)

// proxyFields are the attributes the resource and the data source share.
type proxyFields struct {
	ID                   types.String `tfsdk:"id"`
	Name                 types.String `tfsdk:"name"`
	EngineFamily         types.String `tfsdk:"engine_family"`
	Zones                types.List   `tfsdk:"zones"`
	Auth                 types.List   `tfsdk:"auth"`
	RequireTLS           types.Bool   `tfsdk:"require_tls"`
	IdleClientTimeout    types.Int64  `tfsdk:"idle_client_timeout"`
	MaxClientConnections types.Int64  `tfsdk:"max_client_connections"`
	DebugLogging         types.Bool   `tfsdk:"debug_logging"`
	Port                 types.Int64  `tfsdk:"port"`
	Endpoint             types.String `tfsdk:"endpoint"`
	Addresses            types.List   `tfsdk:"addresses"`
}

type proxyModel struct {
	proxyFields
	Timeouts timeouts.Value `tfsdk:"timeouts"`
}

// authModel is one auth block.
type authModel struct {
	Secret                 types.String `tfsdk:"secret"`
	IAMAuth                types.String `tfsdk:"iam_auth"`
	ClientPasswordAuthType types.String `tfsdk:"client_password_auth_type"`
	Description            types.String `tfsdk:"description"`
}

var authAttrTypes = map[string]attr.Type{
	"secret":                    types.StringType,
	"iam_auth":                  types.StringType,
	"client_password_auth_type": types.StringType,
	"description":               types.StringType,
}

// Descriptions shared by the resource and the data source.
const (
	descProxyID = "The proxy's name. Resources under the proxy (`dbproxy_target_group`, `dbproxy_target`, " +
		"`dbproxy_endpoint`) should set their `proxy_name` from it (`dbproxy_proxy.example.id`): it is unknown " +
		"while the proxy is being replaced, so they are replaced with it instead of pointing at a proxy that " +
		"was deleted and made again without them."
	descProxyName = "Name of the proxy: a letter, then letters, digits and single hyphens, at most 63 characters. " +
		"Changing it replaces the proxy, and with it every target, endpoint and target group that references " +
		"its `id` or `name`."
	descEngineFamily = "Engine family of the databases behind the proxy; `MYSQL` (MySQL and MariaDB) is the one " +
		"supported. Changing it replaces the proxy."
	descZones = "Zones whose data-plane nodes serve the proxy (at least one, each listed once). An apply returns " +
		"when a node of every zone serves the change; a zone with no connected node is waited for."
	descAuth = "Who may connect: one block per secret whose user logs in through the proxy. Secrets of one proxy " +
		"need distinct usernames."
	descAuthSecret = "Name of a `dbproxy_secret` whose credentials clients log in with (and the proxy logs in to " +
		"its targets with)."
	descIAMAuth                = "`DISABLED` (the default): clients log in with the secret's password. `REQUIRED`: clients must log in with a connect token."
	descClientPasswordAuthType = "Authentication plugin clients use with the password: `MYSQL_NATIVE_PASSWORD` (the default) or `MYSQL_CACHING_SHA2_PASSWORD`."
	descAuthDescription        = "Free-form description of the auth block."
	descRequireTLS             = "Whether clients must use TLS (default `false`)."
	descIdleClientTimeout      = "Seconds a client connection may stay idle before the proxy closes it, 1-28800 (default 1800)."
	descMaxClientConnections   = "Largest number of client connections per node; `0` (the default) is no limit."
	descDebugLogging           = "Whether the nodes log details of the proxy's connections (default `false`)."
	descPort                   = "Port the proxy's default endpoint listens on, on every node of its zones. Left out, the control plane allocates one, which then stays."
	descEndpoint               = "Address (`host:port`) of the proxy's default READ_WRITE endpoint: the first of `addresses`. Empty while no node of its zones is connected."
	descAddresses              = "Every address (`host:port`) where a connected node of the proxy's zones serves it, in zone order."
)

func (r *proxyResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_proxy"
}

func (r *proxyResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "A proxy for MySQL and MariaDB databases, like `aws_db_proxy`: the nodes of its zones " +
			"accept client connections on its endpoint and pool them onto its targets. Create and update return " +
			"when every node of its zones serves the change.\n\n" +
			"Resources under the proxy should reference it by `dbproxy_proxy.<name>.id` (or `.name`) in their " +
			"`proxy_name`, so that Terraform orders them after the proxy and replaces them when the proxy is " +
			"replaced: deleting a proxy deletes its targets, endpoints and target group on the control plane.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: descProxyID,
				PlanModifiers:       []planmodifier.String{keepIDWhileNamed(path.Root("name"))},
			},
			"name": schema.StringAttribute{
				Required:            true,
				MarkdownDescription: descProxyName,
				// The name's rules are the model's (ValidateConfig).
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"engine_family": schema.StringAttribute{
				Optional:            true,
				Computed:            true,
				Default:             stringdefault.StaticString(vocab.EngineMySQL),
				MarkdownDescription: descEngineFamily,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.RequiresReplace()},
				Validators:          []validator.String{stringvalidator.OneOf(vocab.EngineMySQL)},
			},
			"zones": schema.ListAttribute{
				Required:            true,
				ElementType:         types.StringType,
				MarkdownDescription: descZones,
				// Duplicates are the model's rule (ValidateConfig), which names the zone.
				Validators: []validator.List{listvalidator.SizeAtLeast(1)},
			},
			"require_tls": schema.BoolAttribute{
				Optional:            true,
				Computed:            true,
				Default:             booldefault.StaticBool(false),
				MarkdownDescription: descRequireTLS,
			},
			"idle_client_timeout": schema.Int64Attribute{
				Optional:            true,
				Computed:            true,
				Default:             int64default.StaticInt64(defaultIdleClientTimeout),
				MarkdownDescription: descIdleClientTimeout,
				Validators:          []validator.Int64{int64validator.Between(1, maxIdleClientTimeout)},
			},
			"max_client_connections": schema.Int64Attribute{
				Optional:            true,
				Computed:            true,
				Default:             int64default.StaticInt64(0),
				MarkdownDescription: descMaxClientConnections,
				Validators:          []validator.Int64{int64validator.AtLeast(0)},
			},
			"debug_logging": schema.BoolAttribute{
				Optional:            true,
				Computed:            true,
				Default:             booldefault.StaticBool(false),
				MarkdownDescription: descDebugLogging,
			},
			"port": schema.Int64Attribute{
				Optional:            true,
				Computed:            true,
				MarkdownDescription: descPort,
				// The control plane keeps an allocated port when an
				// update sends none.
				PlanModifiers: []planmodifier.Int64{int64planmodifier.UseStateForUnknown()},
				Validators:    []validator.Int64{int64validator.Between(1, 65535)},
			},
			// Endpoint and addresses follow the connected nodes: they are
			// known after each apply rather than kept from the state.
			"endpoint": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: descEndpoint,
			},
			"addresses": schema.ListAttribute{
				Computed:            true,
				ElementType:         types.StringType,
				MarkdownDescription: descAddresses,
			},
		},
		Blocks: map[string]schema.Block{
			// A list, not a set: a set of blocks whose children are
			// optional and computed shows a diff on every plan (the
			// planned elements, with unknowns, never match the stored
			// ones). The defaults are planned, so an unchanged
			// configuration plans nothing and a change of one child
			// is an in-place update of that element.
			"auth": schema.ListNestedBlock{
				MarkdownDescription: descAuth,
				Validators:          []validator.List{listvalidator.IsRequired(), listvalidator.SizeAtLeast(1)},
				NestedObject: schema.NestedBlockObject{
					Attributes: map[string]schema.Attribute{
						"secret": schema.StringAttribute{
							Required:            true,
							MarkdownDescription: descAuthSecret,
						},
						"iam_auth": schema.StringAttribute{
							Optional:            true,
							Computed:            true,
							Default:             stringdefault.StaticString(vocab.IAMAuthDisabled),
							MarkdownDescription: descIAMAuth,
							Validators:          []validator.String{stringvalidator.OneOf(vocab.IAMAuthDisabled, vocab.IAMAuthRequired)},
						},
						"client_password_auth_type": schema.StringAttribute{
							Optional:            true,
							Computed:            true,
							Default:             stringdefault.StaticString(vocab.AuthNativePassword),
							MarkdownDescription: descClientPasswordAuthType,
							Validators:          []validator.String{stringvalidator.OneOf(vocab.AuthNativePassword, vocab.AuthCachingSHA2Password)},
						},
						"description": schema.StringAttribute{
							Optional:            true,
							MarkdownDescription: descAuthDescription,
							// The API does not tell "" from none: leave it out instead.
							Validators: []validator.String{stringvalidator.LengthAtLeast(1)},
						},
					},
				},
			},
			"timeouts": timeouts.Block(ctx, timeouts.Opts{Create: true, Update: true, Delete: true}),
		},
	}
}

func (r *proxyResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.data = providerDataFrom(req.ProviderData, &resp.Diagnostics)
}

// proxySchemaChecked are the model's rules that a schema validator states
// already; the model's copy of them is not reported twice.
var proxySchemaChecked = []string{"zones", "engine_family", "idle_client_timeout", "max_client_connections", "port", ".iam_auth", ".client_password_auth_type"}

// ValidateConfig checks the proxy with the control plane's own rules at
// plan time: a secret listed twice, zone names, and everything else the
// API would refuse at apply.
func (r *proxyResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var cfg proxyModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	p, diags := cfg.toAPI(ctx)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	p.Normalize()
	unknown := unknownFields(ctx, map[string]attr.Value{
		"name": cfg.Name, "engine_family": cfg.EngineFamily, "zones": cfg.Zones, "auth": cfg.Auth,
		"idle_client_timeout": cfg.IdleClientTimeout, "max_client_connections": cfg.MaxClientConnections, "port": cfg.Port,
	})
	// Without an auth block the schema says so; the model's "at least
	// one" would only repeat it.
	if len(p.Auth) == 0 {
		unknown["auth"] = true
	}
	err := dropFieldErrors(p.Validate(), func(field string) bool {
		for _, f := range proxySchemaChecked {
			if field == f || (strings.HasPrefix(f, ".") && strings.HasSuffix(field, f)) {
				return true
			}
		}
		return false
	})
	validateWithModel(err, unknown, nil, &resp.Diagnostics)
}

// ModifyPlan warns at plan time of auth blocks whose secrets, as they
// exist on the control plane now, share a username: the API refuses that
// at apply. It is a warning, not an error, because the same plan may
// change a secret's username (the fix of this very mistake), which the
// proxy's plan cannot see. Secrets that do not exist yet are left to the
// API.
func (r *proxyResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.Plan.Raw.IsNull() || r.data == nil || r.data.client == nil {
		return
	}
	var plan proxyModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() || plan.Auth.IsUnknown() || plan.Auth.IsNull() {
		return
	}
	var auths []authModel
	resp.Diagnostics.Append(plan.Auth.ElementsAs(ctx, &auths, false)...)
	if resp.Diagnostics.HasError() {
		return
	}
	type owner struct {
		index  int
		secret string
	}
	byUser := map[string]owner{}
	for i, a := range auths {
		if a.Secret.IsUnknown() || a.Secret.IsNull() {
			continue
		}
		var s model.Secret
		if err := r.data.client.Do(ctx, "GET", objectPath("secrets", a.Secret.ValueString()), nil, &s); err != nil {
			if !model.IsNotFound(err) {
				tflog.Debug(ctx, "cannot read an auth block's secret at plan time; the API checks it at apply",
					map[string]any{"secret": a.Secret.ValueString(), "error": err.Error()})
			}
			continue
		}
		if o, dup := byUser[s.Username]; dup {
			resp.Diagnostics.AddAttributeWarning(path.Root("auth").AtListIndex(i).AtName("secret"), "Auth Blocks Share a Username",
				fmt.Sprintf("Secret %q has username %q, as secret %q of auth block %d does: a proxy's auth blocks need "+
					"secrets with distinct usernames, and the control plane will refuse the proxy at apply unless this "+
					"plan changes one of the usernames. Use one auth block per database user.", s.Name, s.Username, o.secret, o.index))
			continue
		}
		byUser[s.Username] = owner{index: i, secret: s.Name}
	}
}

// toAPI is the object to PUT. Values not known (at validation) are left at
// their zero value.
func (m *proxyModel) toAPI(ctx context.Context) (model.Proxy, diag.Diagnostics) {
	var diags diag.Diagnostics
	p := model.Proxy{
		Name:                 m.Name.ValueString(),
		EngineFamily:         m.EngineFamily.ValueString(),
		Zones:                listStrings(ctx, m.Zones, &diags),
		RequireTLS:           m.RequireTLS.ValueBool(),
		IdleClientTimeout:    int(m.IdleClientTimeout.ValueInt64()),
		MaxClientConnections: int(m.MaxClientConnections.ValueInt64()),
		DebugLogging:         m.DebugLogging.ValueBool(),
		Port:                 int(m.Port.ValueInt64()),
		Auth:                 []model.Auth{},
	}
	if !m.Auth.IsNull() && !m.Auth.IsUnknown() {
		var auths []authModel
		diags.Append(m.Auth.ElementsAs(ctx, &auths, false)...)
		for _, a := range auths {
			// A removed description is sent empty, which clears it.
			p.Auth = append(p.Auth, model.Auth{
				Secret:                 a.Secret.ValueString(),
				IAMAuth:                a.IAMAuth.ValueString(),
				ClientPasswordAuthType: a.ClientPasswordAuthType.ValueString(),
				Description:            a.Description.ValueString(),
			})
		}
	}
	return p, diags
}

// fromAPI sets every attribute from the API's answer.
func (f *proxyFields) fromAPI(p *model.Proxy) diag.Diagnostics {
	var diags diag.Diagnostics
	f.ID = types.StringValue(p.Name)
	f.Name = types.StringValue(p.Name)
	f.EngineFamily = types.StringValue(p.EngineFamily)
	f.Zones = stringList(p.Zones)
	auths := make([]attr.Value, 0, len(p.Auth))
	for _, a := range p.Auth {
		v, ds := types.ObjectValue(authAttrTypes, map[string]attr.Value{
			"secret":                    types.StringValue(a.Secret),
			"iam_auth":                  types.StringValue(a.IAMAuth),
			"client_password_auth_type": types.StringValue(a.ClientPasswordAuthType),
			"description":               stringOrNull(a.Description),
		})
		diags.Append(ds...)
		auths = append(auths, v)
	}
	l, ds := types.ListValue(types.ObjectType{AttrTypes: authAttrTypes}, auths)
	diags.Append(ds...)
	f.Auth = l
	f.RequireTLS = types.BoolValue(p.RequireTLS)
	f.IdleClientTimeout = types.Int64Value(int64(p.IdleClientTimeout))
	f.MaxClientConnections = types.Int64Value(int64(p.MaxClientConnections))
	f.DebugLogging = types.BoolValue(p.DebugLogging)
	f.Port = types.Int64Value(int64(p.Port))
	f.Endpoint = stringOrNull(p.Endpoint)
	f.Addresses = stringList(p.Addresses)
	return diags
}

func (r *proxyResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var plan proxyModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel, ok := withTimeout(ctx, plan.Timeouts.Create, &resp.Diagnostics)
	if !ok {
		return
	}
	defer cancel()
	body, diags := plan.toAPI(ctx)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	what := fmt.Sprintf("Proxy %q", body.Name)
	var out model.Proxy
	if err := r.data.client.Do(ctx, "PUT", objectPath("proxies", body.Name), body, &out, createOnly); err != nil {
		addCreateError(&resp.Diagnostics, what, body.Name, err, nil)
		return
	}
	// The state is saved before the wait: a proxy stored but not served
	// in time is tainted and replaced by the next apply, never lost.
	resp.Diagnostics.Append(plan.fromAPI(&out)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
	resp.Diagnostics.Append(waitChildRollout(ctx, r.data.client, out.Revision, out.Name, out.Zones, what)...)
}

func (r *proxyResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var state proxyModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	var out model.Proxy
	if !readObject(ctx, r.data.client, objectPath("proxies", state.ID.ValueString()), &out, "Cannot Read Proxy", nil, &resp.State, &resp.Diagnostics) {
		return
	}
	resp.Diagnostics.Append(state.fromAPI(&out)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *proxyResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var plan, state proxyModel
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
	body, diags := plan.toAPI(ctx)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	what := fmt.Sprintf("Proxy %q", body.Name)
	var out model.Proxy
	if err := r.data.client.Do(ctx, "PUT", objectPath("proxies", body.Name), body, &out); err != nil {
		addAPIError(&resp.Diagnostics, "Cannot Update "+what, err, nil)
		return
	}
	resp.Diagnostics.Append(plan.fromAPI(&out)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
	resp.Diagnostics.Append(waitChildRollout(ctx, r.data.client, out.Revision, out.Name, out.Zones, what)...)
	if resp.Diagnostics.HasError() {
		return
	}
	// The connected nodes of a zone the proxy left stop serving it too.
	var left []string
	for _, z := range listStrings(ctx, state.Zones, &resp.Diagnostics) {
		if !model.HasZone(out.Zones, z) {
			left = append(left, z)
		}
	}
	if len(left) > 0 {
		resp.Diagnostics.Append(waitDeleted(ctx, r.data.client, out.Revision, out.Name, left, what+" (zones it left)")...)
	}
}

func (r *proxyResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	if !r.data.ready(&resp.Diagnostics) {
		return
	}
	var state proxyModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel, ok := withTimeout(ctx, state.Timeouts.Delete, &resp.Diagnostics)
	if !ok {
		return
	}
	defer cancel()
	what := fmt.Sprintf("Proxy %q", state.ID.ValueString())
	rev := deleteObject(ctx, r.data.client, objectPath("proxies", state.ID.ValueString()), what, &resp.Diagnostics)
	if resp.Diagnostics.HasError() || rev == 0 {
		return
	}
	// The delete returns when the connected nodes no longer serve the
	// proxy, so that its port is free when a replacement is made. A zone
	// with no connected node is not waited for: nothing there can stop
	// serving it until a node connects, and then it gets the delete.
	zones := listStrings(ctx, state.Zones, &resp.Diagnostics)
	resp.Diagnostics.Append(waitDeleted(ctx, r.data.client, rev, state.ID.ValueString(), zones, what+" (deleted)")...)
}

func (r *proxyResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	parts, err := splitImportID(req.ID, "name")
	if err != nil {
		resp.Diagnostics.AddError("Invalid Import ID", err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), parts[0])...)
}
