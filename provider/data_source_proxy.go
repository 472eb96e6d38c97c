package provider

import (
	"context"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/dbproxy/dbproxy/internal/model"
)

var (
	_ datasource.DataSource              = &proxyDataSource{}
	_ datasource.DataSourceWithConfigure = &proxyDataSource{}
)

func newProxyDataSource() datasource.DataSource { return &proxyDataSource{} }

// proxyDataSource is data dbproxy_proxy: a proxy read by name, with every
// attribute of the resource.
type proxyDataSource struct{ data *providerData }

func (d *proxyDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_proxy"
}

func (d *proxyDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	str := func(desc string) schema.StringAttribute {
		return schema.StringAttribute{Computed: true, MarkdownDescription: desc}
	}
	resp.Schema = schema.Schema{
		MarkdownDescription: "Reads a proxy by name, like the `aws_db_proxy` data source: its settings, auth blocks, " +
			"port and the addresses where the nodes of its zones serve it.",
		Attributes: map[string]schema.Attribute{
			"id": str("The proxy's name."),
			"name": schema.StringAttribute{
				Required:            true,
				MarkdownDescription: "Name of the proxy to read.",
			},
			"engine_family": str("Engine family of the databases behind the proxy (`MYSQL`)."),
			"zones": schema.ListAttribute{
				Computed: true, ElementType: types.StringType,
				MarkdownDescription: "Zones whose data-plane nodes serve the proxy.",
			},
			"auth": schema.ListNestedAttribute{
				Computed:            true,
				MarkdownDescription: "The proxy's auth blocks, in their order.",
				NestedObject: schema.NestedAttributeObject{
					Attributes: map[string]schema.Attribute{
						"secret":                    str(descAuthSecret),
						"iam_auth":                  str(descIAMAuth),
						"client_password_auth_type": str(descClientPasswordAuthType),
						"description":               str(descAuthDescription),
					},
				},
			},
			"require_tls":            schema.BoolAttribute{Computed: true, MarkdownDescription: descRequireTLS},
			"idle_client_timeout":    schema.Int64Attribute{Computed: true, MarkdownDescription: descIdleClientTimeout},
			"max_client_connections": schema.Int64Attribute{Computed: true, MarkdownDescription: descMaxClientConnections},
			"debug_logging":          schema.BoolAttribute{Computed: true, MarkdownDescription: descDebugLogging},
			"port":                   schema.Int64Attribute{Computed: true, MarkdownDescription: "Port the proxy's default endpoint listens on."},
			"endpoint":               str(descEndpoint),
			"addresses": schema.ListAttribute{
				Computed: true, ElementType: types.StringType,
				MarkdownDescription: descAddresses,
			},
		},
	}
}

func (d *proxyDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	d.data = providerDataFrom(req.ProviderData, &resp.Diagnostics)
}

func (d *proxyDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	if !d.data.ready(&resp.Diagnostics) {
		return
	}
	var cfg proxyFields
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	name := cfg.Name.ValueString()
	var out model.Proxy
	if err := d.data.client.Do(ctx, "GET", objectPath("proxies", name), nil, &out); err != nil {
		if model.IsNotFound(err) {
			resp.Diagnostics.AddAttributeError(path.Root("name"), "Proxy Not Found",
				fmt.Sprintf("No proxy named %q exists on the control plane. Check the name, or create the proxy first "+
					"(reference the dbproxy_proxy resource's name so that Terraform reads it after the create).", name))
			return
		}
		addAPIError(&resp.Diagnostics, "Cannot Read Proxy", err, nil)
		return
	}
	resp.Diagnostics.Append(cfg.fromAPI(&out)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &cfg)...)
}
