package provider

import (
	"context"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/dbproxy/dbproxy/internal/model"
)

var (
	_ datasource.DataSource              = &targetHealthDataSource{}
	_ datasource.DataSourceWithConfigure = &targetHealthDataSource{}
)

func newTargetHealthDataSource() datasource.DataSource { return &targetHealthDataSource{} }

// targetHealthDataSource is data dbproxy_target_health: what the nodes
// report about each target of a proxy.
type targetHealthDataSource struct{ data *providerData }

type targetHealthModel struct {
	ProxyName types.String        `tfsdk:"proxy_name"`
	Targets   []targetHealthEntry `tfsdk:"targets"`
}

type targetHealthEntry struct {
	Name           types.String `tfsdk:"name"`
	Host           types.String `tfsdk:"host"`
	Port           types.Int64  `tfsdk:"port"`
	Zone           types.String `tfsdk:"zone"`
	Role           types.String `tfsdk:"role"`
	Health         types.String `tfsdk:"health"`
	DiscoveredRole types.String `tfsdk:"discovered_role"`
	HealthReason   types.String `tfsdk:"health_reason"`
}

func (d *targetHealthDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_target_health"
}

func (d *targetHealthDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "The health of a proxy's targets as the nodes of the proxy's zones report it (they " +
			"connect to each target and read `@@read_only` every few hundred milliseconds and report changes within " +
			"about a second), like `aws_db_proxy_targets`' `target_health`.",
		Attributes: map[string]schema.Attribute{
			"proxy_name": schema.StringAttribute{
				Required:            true,
				MarkdownDescription: "Name of the proxy.",
			},
			"targets": schema.ListNestedAttribute{
				Computed:            true,
				MarkdownDescription: "The proxy's targets, by name.",
				NestedObject: schema.NestedAttributeObject{
					Attributes: map[string]schema.Attribute{
						"name": schema.StringAttribute{Computed: true, MarkdownDescription: "Name of the target."},
						"host": schema.StringAttribute{Computed: true, MarkdownDescription: "Host of the database server."},
						"port": schema.Int64Attribute{Computed: true, MarkdownDescription: "Port of the database server."},
						"zone": schema.StringAttribute{Computed: true, MarkdownDescription: "Zone of the target; null when it has none."},
						"role": schema.StringAttribute{Computed: true, MarkdownDescription: "Declared role: `AUTO`, `WRITER` or `READER`."},
						"health": schema.StringAttribute{Computed: true,
							MarkdownDescription: "`AVAILABLE` (every node reaches it), `DEGRADED` (some do), `UNAVAILABLE` (none does) or `UNKNOWN` (no recent report)."},
						"discovered_role": schema.StringAttribute{Computed: true,
							MarkdownDescription: "`WRITER` or `READER` as the nodes discovered it; null while unknown."},
						"health_reason": schema.StringAttribute{Computed: true,
							MarkdownDescription: "Why nodes find the target unhealthy, with the nodes that say so; null while every report is healthy."},
					},
				},
			},
		},
	}
}

func (d *targetHealthDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	d.data = providerDataFrom(req.ProviderData, &resp.Diagnostics)
}

func (d *targetHealthDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	if !d.data.ready(&resp.Diagnostics) {
		return
	}
	var cfg targetHealthModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	proxy := cfg.ProxyName.ValueString()
	// The targets' list answers 200 with no items for a proxy that does
	// not exist: ask for the proxy first so that a typo is an error.
	if _, found, err := proxyOf(ctx, d.data.client, proxy); err != nil {
		resp.Diagnostics.AddError("Cannot Read Target Health", err.Error())
		return
	} else if !found {
		resp.Diagnostics.AddAttributeError(pathProxyName, "Proxy Not Found", fmt.Sprintf("There is no proxy %q on the control plane.", proxy))
		return
	}
	var out model.List[model.Target]
	if err := d.data.client.Do(ctx, "GET", objectPath("proxies", proxy, "targets"), nil, &out); err != nil {
		addAPIError(&resp.Diagnostics, "Cannot Read Target Health", err, proxyChildRename)
		return
	}
	cfg.Targets = []targetHealthEntry{}
	for _, t := range out.Items {
		cfg.Targets = append(cfg.Targets, targetHealthEntry{
			Name:           types.StringValue(t.Name),
			Host:           types.StringValue(t.Host),
			Port:           types.Int64Value(int64(t.Port)),
			Zone:           stringOrNull(t.Zone),
			Role:           types.StringValue(t.Role),
			Health:         types.StringValue(t.Health),
			DiscoveredRole: stringOrNull(t.DiscoveredRole),
			HealthReason:   stringOrNull(t.HealthReason),
		})
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &cfg)...)
}
