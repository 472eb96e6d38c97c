package provider

import (
	"context"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/dbproxy/dbproxy/internal/model"
)

var (
	_ datasource.DataSource              = &nodesDataSource{}
	_ datasource.DataSourceWithConfigure = &nodesDataSource{}
)

func newNodesDataSource() datasource.DataSource { return &nodesDataSource{} }

// nodesDataSource is data dbproxy_nodes: the data-plane nodes the control
// plane knows and what configuration each serves.
type nodesDataSource struct{ data *providerData }

type nodesModel struct {
	Zone  types.String `tfsdk:"zone"`
	Nodes []nodeModel  `tfsdk:"nodes"`
}

type nodeModel struct {
	ID            types.String `tfsdk:"id"`
	Zone          types.String `tfsdk:"zone"`
	Address       types.String `tfsdk:"address"`
	Connected     types.Bool   `tfsdk:"connected"`
	AckedVersion  types.String `tfsdk:"acked_version"`
	AckedRevision types.Int64  `tfsdk:"acked_revision"`
	LastNack      *nackModel   `tfsdk:"last_nack"`
}

type nackModel struct {
	Version types.String `tfsdk:"version"`
	Message types.String `tfsdk:"message"`
	At      types.String `tfsdk:"at"`
}

func (d *nodesDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_nodes"
}

func (d *nodesDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "The data-plane nodes the control plane knows: their zone, whether they are connected, " +
			"which configuration they acked and the last one they rejected.",
		Attributes: map[string]schema.Attribute{
			"zone": schema.StringAttribute{
				Optional:            true,
				MarkdownDescription: "Only the nodes of this zone. Left out, every node.",
			},
			"nodes": schema.ListNestedAttribute{
				Computed:            true,
				MarkdownDescription: "The nodes, in the control plane's order (by zone, then id).",
				NestedObject: schema.NestedAttributeObject{
					Attributes: map[string]schema.Attribute{
						"id":      schema.StringAttribute{Computed: true, MarkdownDescription: "Node id."},
						"zone":    schema.StringAttribute{Computed: true, MarkdownDescription: "Zone of the node."},
						"address": schema.StringAttribute{Computed: true, MarkdownDescription: "Address clients reach the node's listeners on."},
						"connected": schema.BoolAttribute{Computed: true,
							MarkdownDescription: "Whether the node has a configuration stream to the control plane now."},
						"acked_version": schema.StringAttribute{Computed: true,
							MarkdownDescription: "Version (content hash) of the configuration the node last acked."},
						"acked_revision": schema.Int64Attribute{Computed: true,
							MarkdownDescription: "Store revision of the configuration the node last acked."},
						"last_nack": schema.SingleNestedAttribute{
							Computed:            true,
							MarkdownDescription: "The configuration the node last rejected; null when it rejected none.",
							Attributes: map[string]schema.Attribute{
								"version": schema.StringAttribute{Computed: true, MarkdownDescription: "Version it rejected."},
								"message": schema.StringAttribute{Computed: true, MarkdownDescription: "Why, as the node said."},
								"at":      schema.StringAttribute{Computed: true, MarkdownDescription: "When (RFC 3339)."},
							},
						},
					},
				},
			},
		},
	}
}

func (d *nodesDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	d.data = providerDataFrom(req.ProviderData, &resp.Diagnostics)
}

func (d *nodesDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	if !d.data.ready(&resp.Diagnostics) {
		return
	}
	var cfg nodesModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	var out model.List[model.Node]
	if err := d.data.client.Do(ctx, "GET", "/v1/nodes", nil, &out); err != nil {
		addAPIError(&resp.Diagnostics, "Cannot List Nodes", err, nil)
		return
	}
	cfg.Nodes = []nodeModel{}
	for _, n := range out.Items {
		if !cfg.Zone.IsNull() && n.Zone != cfg.Zone.ValueString() {
			continue
		}
		nm := nodeModel{
			ID:            types.StringValue(n.ID),
			Zone:          types.StringValue(n.Zone),
			Address:       types.StringValue(n.Address),
			Connected:     types.BoolValue(n.Connected),
			AckedVersion:  types.StringValue(n.AckedVersion),
			AckedRevision: types.Int64Value(int64(n.AckedRevision)),
		}
		if n.LastNack != nil {
			nm.LastNack = &nackModel{
				Version: types.StringValue(n.LastNack.Version),
				Message: types.StringValue(n.LastNack.Message),
				At:      types.StringValue(n.LastNack.At.UTC().Format(time.RFC3339)),
			}
		}
		cfg.Nodes = append(cfg.Nodes, nm)
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &cfg)...)
}
