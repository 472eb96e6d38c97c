package provider

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-validators/ephemeralvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/ephemeral"
	"github.com/hashicorp/terraform-plugin-framework/ephemeral/schema"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/dbproxy/dbproxy/internal/sigv4"
)

var (
	_ ephemeral.EphemeralResource                     = &authTokenEphemeral{}
	_ ephemeral.EphemeralResourceWithConfigure        = &authTokenEphemeral{}
	_ ephemeral.EphemeralResourceWithValidateConfig   = &authTokenEphemeral{}
	_ ephemeral.EphemeralResourceWithConfigValidators = &authTokenEphemeral{}
)

func newAuthTokenEphemeral() ephemeral.EphemeralResource { return &authTokenEphemeral{} }

// authTokenEphemeral is the ephemeral dbproxy_auth_token: a connect token
// in the RDS IAM format, made in the provider and never stored in the
// plan or the state.
type authTokenEphemeral struct{ data *providerData }

type authTokenModel struct {
	Endpoint        types.String `tfsdk:"endpoint"`
	Hostname        types.String `tfsdk:"hostname"`
	Port            types.Int64  `tfsdk:"port"`
	DBUser          types.String `tfsdk:"db_user"`
	ExpiresIn       types.String `tfsdk:"expires_in"`
	AccessKeyID     types.String `tfsdk:"access_key_id"`
	SecretAccessKey types.String `tfsdk:"secret_access_key"`
	Token           types.String `tfsdk:"token"`
	ExpiresAt       types.String `tfsdk:"expires_at"`
}

// defaultTokenLifetime is a token's lifetime when expires_in is not set:
// the longest the nodes accept, as BuildAuthToken makes them.
const defaultTokenLifetime = sigv4.MaxExpires

func (e *authTokenEphemeral) Metadata(_ context.Context, req ephemeral.MetadataRequest, resp *ephemeral.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_auth_token"
}

func (e *authTokenEphemeral) Schema(_ context.Context, _ ephemeral.SchemaRequest, resp *ephemeral.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "A connect token for logging in to a proxy with IAM authentication, as " +
			"`aws rds generate-db-auth-token` (or `dbproxy token`) makes it: a SigV4 presigned string, service " +
			"`rds-db`, signed for the provider's region with the provider's access key or the one given here. " +
			"Clients send it as the password with `mysql_clear_password` over TLS, to a proxy whose auth block " +
			"for `db_user` has `iam_auth = \"REQUIRED\"`; the key's user needs a policy allowing `dbproxy:Connect` " +
			"on `proxy/<proxy>/dbuser/<db_user>`. Being ephemeral, the token is never in the plan or the state: " +
			"pass it to a write-only argument or a provider block. Give either `endpoint` (such as a proxy's " +
			"`endpoint` attribute) or `hostname` and `port`. Nodes do not compare the host and port with the ones " +
			"they listen on, so a token made for a load balancer's name works too.",
		Attributes: map[string]schema.Attribute{
			"endpoint": schema.StringAttribute{
				Optional: true,
				MarkdownDescription: "Where the client connects, as `host:port` (for example " +
					"`dbproxy_proxy.main.endpoint`). Conflicts with `hostname` and `port`.",
			},
			"hostname": schema.StringAttribute{
				Optional:            true,
				MarkdownDescription: "Host name or address the client connects to. Requires `port`.",
				Validators:          []validator.String{stringvalidator.LengthAtLeast(1)},
			},
			"port": schema.Int64Attribute{
				Optional:            true,
				MarkdownDescription: "Port the client connects to. Requires `hostname`.",
				Validators:          []validator.Int64{int64validator.Between(1, 65535)},
			},
			"db_user": schema.StringAttribute{
				Required:            true,
				MarkdownDescription: "The database user to log in as (the `username` of the proxy's secret).",
				Validators:          []validator.String{stringvalidator.LengthAtLeast(1)},
			},
			"expires_in": schema.StringAttribute{
				Optional: true,
				MarkdownDescription: "Lifetime of the token as a duration such as `5m` or `90s`: at least `1s`, at " +
					"most and by default `15m`. A token may be used for any number of logins while it is valid; " +
					"sessions already logged in outlive it.",
			},
			"access_key_id": schema.StringAttribute{
				Optional: true,
				MarkdownDescription: "Access key that signs the token (for example `dbproxy_access_key.app.id`). " +
					"Requires `secret_access_key`. Default: the provider's key.",
			},
			"secret_access_key": schema.StringAttribute{
				Optional:            true,
				Sensitive:           true,
				MarkdownDescription: "Secret of `access_key_id` (for example `dbproxy_access_key.app.secret`).",
			},
			"token": schema.StringAttribute{
				Computed:            true,
				Sensitive:           true,
				MarkdownDescription: "The connect token: the password to log in with.",
			},
			"expires_at": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "When the token expires (RFC 3339, UTC).",
			},
		},
	}
}

func (e *authTokenEphemeral) ConfigValidators(context.Context) []ephemeral.ConfigValidator {
	return []ephemeral.ConfigValidator{
		ephemeralvalidator.ExactlyOneOf(path.MatchRoot("endpoint"), path.MatchRoot("hostname")),
		ephemeralvalidator.Conflicting(path.MatchRoot("endpoint"), path.MatchRoot("port")),
		ephemeralvalidator.RequiredTogether(path.MatchRoot("hostname"), path.MatchRoot("port")),
		ephemeralvalidator.RequiredTogether(path.MatchRoot("access_key_id"), path.MatchRoot("secret_access_key")),
	}
}

func (e *authTokenEphemeral) Configure(_ context.Context, req ephemeral.ConfigureRequest, resp *ephemeral.ConfigureResponse) {
	e.data = providerDataFrom(req.ProviderData, &resp.Diagnostics)
}

// ValidateConfig checks what the attribute validators cannot: the
// endpoint's form and the lifetime.
func (e *authTokenEphemeral) ValidateConfig(ctx context.Context, req ephemeral.ValidateConfigRequest, resp *ephemeral.ValidateConfigResponse) {
	var cfg authTokenModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if v := cfg.Endpoint; !v.IsNull() && !v.IsUnknown() {
		if _, _, err := splitEndpoint(v.ValueString()); err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("endpoint"), "Invalid Endpoint", err.Error())
		}
	}
	if v := cfg.ExpiresIn; !v.IsNull() && !v.IsUnknown() {
		if _, err := tokenLifetime(v.ValueString()); err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("expires_in"), "Invalid Token Lifetime", err.Error())
		}
	}
}

// splitEndpoint parses "host:port".
func splitEndpoint(ep string) (string, int, error) {
	host, p, err := net.SplitHostPort(ep)
	if err != nil {
		return "", 0, fmt.Errorf("endpoint must be host:port, such as proxy.example:3306: %v", err)
	}
	port, err := strconv.Atoi(p)
	if host == "" || err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("endpoint must be host:port with a port of 1-65535, got %q", ep)
	}
	return host, port, nil
}

// tokenLifetime parses expires_in: whole seconds from 1s to 15m.
func tokenLifetime(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("expires_in must be a duration such as 5m or 90s, got %q", s)
	}
	if d < time.Second || d > sigv4.MaxExpires || d%time.Second != 0 {
		return 0, fmt.Errorf("expires_in must be whole seconds from 1s to %s (what nodes accept), got %s", sigv4.MaxExpires, s)
	}
	return d, nil
}

func (e *authTokenEphemeral) Open(ctx context.Context, req ephemeral.OpenRequest, resp *ephemeral.OpenResponse) {
	if !e.data.ready(&resp.Diagnostics) {
		return
	}
	var cfg authTokenModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	host, port := cfg.Hostname.ValueString(), int(cfg.Port.ValueInt64())
	if !cfg.Endpoint.IsNull() {
		var err error
		if host, port, err = splitEndpoint(cfg.Endpoint.ValueString()); err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("endpoint"), "Invalid Endpoint", err.Error())
			return
		}
	}
	lifetime := defaultTokenLifetime
	if !cfg.ExpiresIn.IsNull() {
		var err error
		if lifetime, err = tokenLifetime(cfg.ExpiresIn.ValueString()); err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("expires_in"), "Invalid Token Lifetime", err.Error())
			return
		}
	}
	creds, keySource := e.data.creds, "the provider's key"
	if !cfg.AccessKeyID.IsNull() {
		creds = sigv4.Credentials{AccessKeyID: cfg.AccessKeyID.ValueString(), SecretAccessKey: cfg.SecretAccessKey.ValueString()}
		keySource = "access_key_id"
	}
	if creds.AccessKeyID == "" || creds.SecretAccessKey == "" {
		resp.Diagnostics.AddError("No Access Key to Sign With",
			"Set access_key_id and secret_access_key (both known and not empty), or configure the provider with a key.")
		return
	}
	region := e.data.region
	if region == "" {
		region = sigv4.DefaultRegion
	}
	hostPort := net.JoinHostPort(host, strconv.Itoa(port))
	now := time.Now()
	// sigv4.Presign makes, for a 15-minute lifetime, the very bytes that
	// aws-sdk-go-v2's rds/auth BuildAuthToken makes (internal/sigv4's
	// compatibility test); unlike BuildAuthToken it takes a lifetime.
	token, err := sigv4.Presign(ctx, hostPort, "connect", url.Values{"DBUser": {cfg.DBUser.ValueString()}},
		sigv4.ServiceRDS, region, lifetime, creds, now)
	if err != nil {
		// Presign's errors name no secret.
		resp.Diagnostics.AddError("Cannot Make a Connect Token", err.Error())
		return
	}
	tflog.Debug(ctx, "made a connect token", map[string]any{
		"endpoint": hostPort, "db_user": cfg.DBUser.ValueString(), "access_key_id": creds.AccessKeyID,
		"key": keySource, "region": region, "expires_in": lifetime.String(),
	})
	cfg.Token = types.StringValue(token)
	cfg.ExpiresAt = types.StringValue(now.Add(lifetime).UTC().Format(time.RFC3339))
	resp.Diagnostics.Append(resp.Result.Set(ctx, &cfg)...)
}
