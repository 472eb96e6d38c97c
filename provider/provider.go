// Package provider is dbproxy's Terraform provider: resources, data
// sources and an ephemeral resource over the control plane's admin API,
// built on terraform-plugin-framework. Every write waits until the
// data-plane nodes of the zones it affects serve it, so that `terraform
// apply` returns when the change is live.
package provider

import (
	"context"
	"fmt"
	"os"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/ephemeral"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/dbproxy/dbproxy/internal/apiclient"
	"github.com/dbproxy/dbproxy/internal/sigv4"
)

// Address is the provider's source address.
const Address = "registry.terraform.io/dbproxy/dbproxy"

// Environment variables read when the configuration leaves an argument out.
const (
	EnvEndpoint        = "DBPROXY_ENDPOINT"
	EnvAccessKeyID     = "DBPROXY_ACCESS_KEY_ID"
	EnvSecretAccessKey = "DBPROXY_SECRET_ACCESS_KEY"
	EnvCACert          = "DBPROXY_CA_CERT"
	EnvCredentials     = "DBPROXY_CREDENTIALS"
	EnvRegion          = "DBPROXY_REGION"
)

var (
	_ provider.Provider                       = &dbproxyProvider{}
	_ provider.ProviderWithEphemeralResources = &dbproxyProvider{}
)

// Options configure the provider; tests set them, Terraform gets the zero
// value.
type Options struct {
	// Getenv reads the environment (default os.Getenv).
	Getenv func(string) string
}

type dbproxyProvider struct {
	version string
	getenv  func(string) string
}

// New returns a function that makes the provider, as providerserver.Serve
// wants it.
func New(version string, opts Options) func() provider.Provider {
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	return func() provider.Provider {
		return &dbproxyProvider{version: version, getenv: opts.Getenv}
	}
}

type providerModel struct {
	Endpoint        types.String `tfsdk:"endpoint"`
	AccessKeyID     types.String `tfsdk:"access_key_id"`
	SecretAccessKey types.String `tfsdk:"secret_access_key"`
	CACert          types.String `tfsdk:"ca_cert"`
	CredentialsFile types.String `tfsdk:"credentials_file"`
	Region          types.String `tfsdk:"region"`
}

func (p *dbproxyProvider) Metadata(_ context.Context, _ provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = "dbproxy"
	resp.Version = p.version
}

func (p *dbproxyProvider) Schema(_ context.Context, _ provider.SchemaRequest, resp *provider.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "The dbproxy provider declares proxies, their database targets, credentials and " +
			"IAM-style identities on a dbproxy control plane. Requests are signed with SigV4 using an access key " +
			"of the control plane. Each argument left out falls back to an environment variable and then to the " +
			"credentials file.",
		Attributes: map[string]schema.Attribute{
			"endpoint": schema.StringAttribute{
				Optional: true,
				MarkdownDescription: "Base URL of the control plane's admin API, such as `https://127.0.0.1:8443`. " +
					"Falls back to `$" + EnvEndpoint + "`, then to the credentials file's `endpoint`.",
			},
			"access_key_id": schema.StringAttribute{
				Optional: true,
				MarkdownDescription: "Access key id that signs requests. Falls back to `$" + EnvAccessKeyID +
					"`, then to the credentials file.",
			},
			"secret_access_key": schema.StringAttribute{
				Optional:  true,
				Sensitive: true,
				MarkdownDescription: "Secret of the access key. Falls back to `$" + EnvSecretAccessKey +
					"`, then to the credentials file.",
			},
			"ca_cert": schema.StringAttribute{
				Optional: true,
				MarkdownDescription: "PEM certificate of the CA to trust for the API (the control plane's `ca.pem`). " +
					"Falls back to `$" + EnvCACert + "` (PEM), then to the credentials file's `ca_file`; without any, " +
					"the system roots are trusted.",
			},
			"credentials_file": schema.StringAttribute{
				Optional: true,
				MarkdownDescription: "Path of a JSON key file as the control plane writes it (`root-credentials.json`: " +
					"`access_key_id`, `secret_access_key`, `endpoint`, `ca_file`, `region`). Falls back to `$" +
					EnvCredentials + "`.",
			},
			"region": schema.StringAttribute{
				Optional: true,
				MarkdownDescription: "SigV4 region of the control plane (default `" + sigv4.DefaultRegion + "`). Falls back " +
					"to `$" + EnvRegion + "`, then to the credentials file.",
			},
		},
	}
}

// providerData is what Configure hands resources and data sources.
type providerData struct {
	client *apiclient.Client
	// creds is the key the provider signs with: the ephemeral token's
	// default key.
	creds  sigv4.Credentials
	region string
}

func (p *dbproxyProvider) Configure(ctx context.Context, req provider.ConfigureRequest, resp *provider.ConfigureResponse) {
	var cfg providerModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	// A value that is not known yet (an endpoint from another resource of
	// the same plan) leaves the provider unconfigured for this run:
	// planning new resources needs no client, and the apply that knows the
	// value configures the provider again.
	for _, v := range []types.String{cfg.Endpoint, cfg.AccessKeyID, cfg.SecretAccessKey, cfg.CACert, cfg.CredentialsFile, cfg.Region} {
		if v.IsUnknown() {
			tflog.Debug(ctx, "provider configuration has unknown values; not configuring a client yet")
			return
		}
	}
	s, ok := p.settings(cfg, resp)
	if !ok {
		return
	}
	client, err := apiclient.New(apiclient.Options{
		Endpoint:    s.endpoint,
		Credentials: sigv4.Credentials{AccessKeyID: s.accessKeyID, SecretAccessKey: s.secretAccessKey},
		Region:      s.region,
		CAPEM:       s.ca,
		UserAgent:   "terraform-provider-dbproxy/" + p.version,
	})
	if err != nil {
		resp.Diagnostics.AddError("Invalid Provider Configuration", "Cannot make an API client: "+err.Error())
		return
	}
	tflog.Debug(ctx, "configured the dbproxy API client", map[string]any{"endpoint": s.endpoint, "access_key_id": s.accessKeyID})
	data := &providerData{client: client, region: s.region,
		creds: sigv4.Credentials{AccessKeyID: s.accessKeyID, SecretAccessKey: s.secretAccessKey}}
	resp.ResourceData = data
	resp.DataSourceData = data
	resp.EphemeralResourceData = data
}

type settings struct {
	endpoint, accessKeyID, secretAccessKey, region string
	ca                                             []byte
}

// settings resolves each argument: the configuration, then the
// environment, then the credentials file.
func (p *dbproxyProvider) settings(cfg providerModel, resp *provider.ConfigureResponse) (settings, bool) {
	pick := func(v types.String, env string) string {
		if s := v.ValueString(); s != "" {
			return s
		}
		return p.getenv(env)
	}
	s := settings{
		endpoint:        pick(cfg.Endpoint, EnvEndpoint),
		accessKeyID:     pick(cfg.AccessKeyID, EnvAccessKeyID),
		secretAccessKey: pick(cfg.SecretAccessKey, EnvSecretAccessKey),
		region:          pick(cfg.Region, EnvRegion),
	}
	if pem := pick(cfg.CACert, EnvCACert); pem != "" {
		s.ca = []byte(pem)
	}
	if file := pick(cfg.CredentialsFile, EnvCredentials); file != "" {
		kf, err := apiclient.LoadKeyFile(file)
		if err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("credentials_file"), "Cannot Read the Credentials File", err.Error())
			return s, false
		}
		fill := func(dst *string, v string) {
			if *dst == "" {
				*dst = v
			}
		}
		fill(&s.endpoint, kf.Endpoint)
		fill(&s.region, kf.Region)
		// A key is taken whole: an id from one place and a secret from
		// another never sign together.
		if s.accessKeyID == "" && s.secretAccessKey == "" {
			s.accessKeyID, s.secretAccessKey = kf.AccessKeyID, kf.SecretAccessKey
		}
		if s.ca == nil && kf.CAFile != "" {
			ca, err := os.ReadFile(kf.CAFile)
			if err != nil {
				resp.Diagnostics.AddAttributeError(path.Root("credentials_file"), "Cannot Read the CA Certificate",
					fmt.Sprintf("The credentials file names the CA file %q: %v", kf.CAFile, err))
				return s, false
			}
			s.ca = ca
		}
	}
	missing := func(attr, env, what string) {
		resp.Diagnostics.AddAttributeError(path.Root(attr), "Missing "+what,
			fmt.Sprintf("Set %s in the provider block, $%s, or a credentials_file that has it.", attr, env))
	}
	if s.endpoint == "" {
		missing("endpoint", EnvEndpoint, "API Endpoint")
	}
	if s.accessKeyID == "" {
		missing("access_key_id", EnvAccessKeyID, "Access Key ID")
	}
	if s.secretAccessKey == "" {
		missing("secret_access_key", EnvSecretAccessKey, "Secret Access Key")
	}
	return s, !resp.Diagnostics.HasError()
}

func (p *dbproxyProvider) Resources(context.Context) []func() resource.Resource {
	return []func() resource.Resource{
		newSecretResource,
		newProxyResource,
		newTargetGroupResource,
		newTargetResource,
		newEndpointResource,
		newIAMUserResource,
		newAccessKeyResource,
		newIAMPolicyResource,
		newIAMUserPolicyAttachmentResource,
	}
}

func (p *dbproxyProvider) DataSources(context.Context) []func() datasource.DataSource {
	return []func() datasource.DataSource{
		newProxyDataSource,
		newNodesDataSource,
		newTargetHealthDataSource,
	}
}

func (p *dbproxyProvider) EphemeralResources(context.Context) []func() ephemeral.EphemeralResource {
	return []func() ephemeral.EphemeralResource{
		newAuthTokenEphemeral,
	}
}
