package provider

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	fwresource "github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/dbproxy/dbproxy/internal/cptest"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/vocab"
)

// proxySecrets are two secrets with distinct usernames for the proxies of
// these tests.
const proxySecrets = `
resource "dbproxy_secret" "app" {
  name        = "app"
  username    = "app"
  password_wo = "app-Pa55word"
}

resource "dbproxy_secret" "report" {
  name        = "report"
  username    = "report"
  password_wo = "report-Pa55word"
}
`

// proxyConfig is the secrets and a proxy "main" whose body is given.
func (e *testEnv) proxyConfig(body string) string {
	return e.config(proxySecrets + `
resource "dbproxy_proxy" "main" {
` + body + `
}
`)
}

// proxyAPI reads a proxy through the API.
func (e *testEnv) proxyAPI(name string) (model.Proxy, error) {
	var p model.Proxy
	found, err := e.apiGet("/v1/proxies/"+name, &p)
	if err == nil && !found {
		err = fmt.Errorf("proxy %q does not exist", name)
	}
	return p, err
}

// checkProxy checks the stored proxy through the API.
func (e *testEnv) checkProxy(name string, check func(p model.Proxy) error) resource.TestCheckFunc {
	return func(*terraform.State) error {
		p, err := e.proxyAPI(name)
		if err != nil {
			return err
		}
		return check(p)
	}
}

// checkServed checks that every node of the env serves the proxy's default
// endpoint right when apply returns: no waiting here, the apply did.
func (e *testEnv) checkServed(name string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		for _, n := range e.nodes {
			if _, ok := n.Addr(name, model.DefaultEndpoint); !ok {
				return fmt.Errorf("node %s does not serve proxy %q when apply returns", n.ID, name)
			}
		}
		return nil
	}
}

func TestAccProxy_basic(t *testing.T) {
	e := newTestEnv(t, envOptions{Nodes: []string{"a", "b"}})
	const addr = "dbproxy_proxy.main"
	minimal := `
  name  = "main"
  zones = ["a", "b"]

  auth {
    secret = dbproxy_secret.app.name
  }
`
	full := `
  name                   = "main"
  zones                  = ["a", "b"]
  require_tls            = true
  idle_client_timeout    = 600
  max_client_connections = 100
  debug_logging          = true

  auth {
    secret                    = dbproxy_secret.app.name
    client_password_auth_type = "MYSQL_CACHING_SHA2_PASSWORD"
    description               = "application"
  }

  auth {
    secret      = dbproxy_secret.report.name
    iam_auth    = "REQUIRED"
    description = "reports"
  }
`
	// full without its optional arguments (the second block keeps its
	// iam_auth, so the block stays).
	stripped := `
  name  = "main"
  zones = ["a", "b"]

  auth {
    secret = dbproxy_secret.app.name
  }

  auth {
    secret   = dbproxy_secret.report.name
    iam_auth = "REQUIRED"
  }
`
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: e.factories(),
		CheckDestroy:             e.checkGone("/v1/proxies/main"),
		Steps: []resource.TestStep{
			{
				// The defaults are planned: the empty plan after this
				// step (not suppressed) shows that the auth block's
				// optional+computed children make no perpetual diff.
				Config: e.proxyConfig(minimal),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("id"), knownvalue.StringExact("main")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("engine_family"), knownvalue.StringExact(vocab.EngineMySQL)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("auth"), knownvalue.ListExact([]knownvalue.Check{
						knownvalue.ObjectExact(map[string]knownvalue.Check{
							"secret":                    knownvalue.StringExact("app"),
							"iam_auth":                  knownvalue.StringExact(vocab.IAMAuthDisabled),
							"client_password_auth_type": knownvalue.StringExact(vocab.AuthNativePassword),
							"description":               knownvalue.Null(),
						}),
					})),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("idle_client_timeout"), knownvalue.Int64Exact(1800)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("require_tls"), knownvalue.Bool(false)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("port"), knownvalue.NotNull()),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("addresses"), knownvalue.ListSizeExact(2)),
				},
				Check: resource.ComposeTestCheckFunc(
					e.checkServed("main"),
					// endpoint and addresses are the API's: the nodes'
					// addresses on the allocated port, zone a first.
					func(s *terraform.State) error {
						p, err := e.proxyAPI("main")
						if err != nil {
							return err
						}
						want := []string{fmt.Sprintf("%s:%d", cptest.ZoneHost(0), p.Port), fmt.Sprintf("%s:%d", cptest.ZoneHost(1), p.Port)}
						if !slices.Equal(p.Addresses, want) {
							return fmt.Errorf("API addresses %v, want %v", p.Addresses, want)
						}
						return resource.ComposeTestCheckFunc(
							resource.TestCheckResourceAttr(addr, "endpoint", want[0]),
							resource.TestCheckResourceAttr(addr, "addresses.1", want[1]),
							resource.TestCheckResourceAttr(addr, "port", fmt.Sprint(p.Port)),
						)(s)
					},
				),
			},
			{
				ResourceName:      addr,
				ImportState:       true,
				ImportStateVerify: true,
			},
			{
				// A change of client_password_auth_type alone is seen
				// and applied in place.
				Config: e.proxyConfig(`
  name  = "main"
  zones = ["a", "b"]

  auth {
    secret                    = dbproxy_secret.app.name
    client_password_auth_type = "MYSQL_CACHING_SHA2_PASSWORD"
  }
`),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{
						plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate),
						plancheck.ExpectKnownValue(addr, tfjsonpath.New("auth").AtSliceIndex(0).AtMapKey("client_password_auth_type"),
							knownvalue.StringExact(vocab.AuthCachingSHA2Password)),
						// The id stays through an update, so children
						// that reference it are not replaced.
						plancheck.ExpectKnownValue(addr, tfjsonpath.New("id"), knownvalue.StringExact("main")),
					},
				},
				Check: e.checkProxy("main", func(p model.Proxy) error {
					if len(p.Auth) != 1 || p.Auth[0].ClientPasswordAuthType != vocab.AuthCachingSHA2Password {
						return fmt.Errorf("auth = %+v", p.Auth)
					}
					return nil
				}),
			},
			{
				Config: e.proxyConfig(full),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate)},
				},
				Check: resource.ComposeTestCheckFunc(
					e.checkProxy("main", func(p model.Proxy) error {
						want := []model.Auth{
							{Secret: "app", IAMAuth: vocab.IAMAuthDisabled, ClientPasswordAuthType: vocab.AuthCachingSHA2Password, Description: "application"},
							{Secret: "report", IAMAuth: vocab.IAMAuthRequired, ClientPasswordAuthType: vocab.AuthNativePassword, Description: "reports"},
						}
						if !slices.Equal(p.Auth, want) || !p.RequireTLS || p.IdleClientTimeout != 600 || p.MaxClientConnections != 100 || !p.DebugLogging {
							return fmt.Errorf("proxy = %+v", p)
						}
						return nil
					}),
					e.checkServed("main"),
				),
			},
			{
				// Removing optional arguments clears them on the server
				// (the empty plan after the step shows they stay so).
				Config: e.proxyConfig(stripped),
				Check: e.checkProxy("main", func(p model.Proxy) error {
					want := []model.Auth{
						{Secret: "app", IAMAuth: vocab.IAMAuthDisabled, ClientPasswordAuthType: vocab.AuthNativePassword},
						{Secret: "report", IAMAuth: vocab.IAMAuthRequired, ClientPasswordAuthType: vocab.AuthNativePassword},
					}
					if !slices.Equal(p.Auth, want) || p.RequireTLS || p.IdleClientTimeout != 1800 || p.MaxClientConnections != 0 || p.DebugLogging {
						return fmt.Errorf("proxy after removing optional arguments = %+v", p)
					}
					return nil
				}),
			},
			{
				// A zone left: when apply returns, its node no longer
				// serves the proxy, and the addresses follow.
				Config: e.proxyConfig(strings.Replace(stripped, `["a", "b"]`, `["a"]`, 1)),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("addresses"), knownvalue.ListSizeExact(1)),
				},
				Check: func(*terraform.State) error {
					if _, ok := e.node("a").Addr("main", model.DefaultEndpoint); !ok {
						return fmt.Errorf("node a does not serve the proxy")
					}
					if _, ok := e.node("b").Addr("main", model.DefaultEndpoint); ok {
						return fmt.Errorf("node b still serves the proxy after zone b was removed")
					}
					return nil
				},
			},
			{
				// Drift made through the API shows in the plan and is
				// corrected.
				PreConfig: func() {
					p, err := e.proxyAPI("main")
					if err != nil {
						t.Fatal(err)
					}
					p.IdleClientTimeout = 42
					p.Auth = p.Auth[:1]
					e.apiDo("PUT", "/v1/proxies/main", p)
				},
				Config: e.proxyConfig(stripped),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate)},
				},
				Check: e.checkProxy("main", func(p model.Proxy) error {
					if p.IdleClientTimeout != 1800 || len(p.Auth) != 2 {
						return fmt.Errorf("drift not corrected: %+v", p)
					}
					return nil
				}),
			},
			{
				// Deleted outside Terraform: planned for re-creation.
				PreConfig: func() { e.apiDo("DELETE", "/v1/proxies/main", nil) },
				Config:    e.proxyConfig(minimal),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(addr, plancheck.ResourceActionCreate)},
				},
				Check: e.checkServed("main"),
			},
			{
				// A new name replaces the proxy; the old one is gone.
				Config: e.proxyConfig(`
  name  = "renamed"
  zones = ["a", "b"]
  port  = 40123

  auth {
    secret = dbproxy_secret.app.name
  }
`),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{
						plancheck.ExpectResourceAction(addr, plancheck.ResourceActionDestroyBeforeCreate),
						plancheck.ExpectUnknownValue(addr, tfjsonpath.New("id")),
					},
				},
				Check: resource.ComposeTestCheckFunc(
					e.checkServed("renamed"),
					func(*terraform.State) error { return e.checkGone("/v1/proxies/main")(nil) },
					resource.TestCheckResourceAttr(addr, "port", "40123"),
				),
			},
		},
	})
}

// TestAccProxy_zoneWithoutNode: a zone of the proxy with no connected node
// is waited for; the create times out naming it, and once a node of the
// zone is up the next apply completes.
func TestAccProxy_zoneWithoutNode(t *testing.T) {
	e := newTestEnv(t, envOptions{Nodes: []string{"a"}})
	cfg := e.proxyConfig(`
  name  = "main"
  zones = ["a", "c"]

  auth {
    secret = dbproxy_secret.app.name
  }

  timeouts {
    create = "3s"
  }
`)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: e.factories(),
		CheckDestroy:             e.checkGone("/v1/proxies/main"),
		Steps: []resource.TestStep{
			{
				Config:      cfg,
				ExpectError: wrapRE(`(?s)Timed Out Waiting for the Data Plane.*Proxy "main" was stored.*Zones with no connected node: c\.`),
			},
			{
				// The proxy is tainted: the next apply replaces it and
				// waits for the node of zone c, now up.
				PreConfig: func() { e.startNode("c") },
				Config:    cfg,
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_proxy.main", plancheck.ResourceActionDestroyBeforeCreate)},
				},
				Check: e.checkServed("main"),
			},
		},
	})
}

func TestAccProxy_validation(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	// Two secrets with one username, made before the plan: the API would
	// refuse them together only at apply.
	e.apiDo("PUT", "/v1/secrets/s1", map[string]any{"username": "same", "password": "p1"})
	e.apiDo("PUT", "/v1/secrets/s2", map[string]any{"username": "same", "password": "p2"})
	bad := func(body string) string {
		return e.config(`
resource "dbproxy_proxy" "bad" {
` + body + `
}
`)
	}
	auth := `
  auth {
    secret = "s1"
  }
`
	steps := []struct {
		body, want string
	}{
		{`
  name  = "main"
  zones = ["a"]

  auth {
    secret = "s1"
  }

  auth {
    secret = "s1"
  }
`, `(?s)Invalid Attribute Value.*secret "s1" is listed twice`},
		{`
  name  = "main"
  zones = ["a", "Zone_B"]
` + auth, `(?s)Invalid Attribute Value.*"Zone_B" is not a valid zone name`},
		{`
  name  = "main"
  zones = ["a", "a"]
` + auth, `(?s)Invalid Attribute Value.*zone "a" is listed twice`},
		{`
  name  = "main"
  zones = []
` + auth, `(?s)zones list must contain at least 1 elements`},
		{`
  name  = "1-bad"
  zones = ["a"]
` + auth, `(?s)"1-bad" is not a valid proxy name`},
		{`
  name  = "` + strings.Repeat("a", 64) + `"
  zones = ["a"]
` + auth, `(?s)Invalid Attribute Value.*is not a valid proxy name \(a letter, then letters, digits and single hyphens, at most 63\)`},
		{`
  name                = "main"
  zones               = ["a"]
  idle_client_timeout = 0
` + auth, `idle_client_timeout value must be between 1 and 28800, got: 0`},
		{`
  name                = "main"
  zones               = ["a"]
  idle_client_timeout = 28801
` + auth, `idle_client_timeout value must be between 1 and 28800, got: 28801`},
		{`
  name                   = "main"
  zones                  = ["a"]
  max_client_connections = -1
` + auth, `max_client_connections value must be at least 0, got: -1`},
		{`
  name  = "main"
  zones = ["a"]
  port  = 70000
` + auth, `port value must be between 1 and 65535, got: 70000`},
		{`
  name          = "main"
  zones         = ["a"]
  engine_family = "POSTGRESQL"
` + auth, `engine_family value must be one of: \["MYSQL"\]`},
		{`
  name  = "main"
  zones = ["a"]

  auth {
    secret   = "s1"
    iam_auth = "SOMETIMES"
  }
`, `auth\[0\]\.iam_auth value must be one of: \["DISABLED" "REQUIRED"\]`},
		{`
  name  = "main"
  zones = ["a"]

  auth {
    secret                    = "s1"
    client_password_auth_type = "MYSQL_CLEAR_PASSWORD"
  }
`, `auth\[0\]\.client_password_auth_type value must be one of`},
		{`
  name  = "main"
  zones = ["a"]

  auth {
    secret      = "s1"
    description = ""
  }
`, `auth\[0\]\.description string length must be at least 1`},
		{`
  name  = "main"
  zones = ["a"]
`, `(?s)Block auth must have a configuration value`},
	}
	var ts []resource.TestStep
	for _, s := range steps {
		ts = append(ts, resource.TestStep{Config: bad(s.body), PlanOnly: true, ExpectError: wrapRE(s.want)})
	}
	// Secrets sharing a username are a warning at plan (TestProxyModifyPlan)
	// and the API's error at apply, on the auth block that repeats it.
	ts = append(ts, resource.TestStep{
		Config: bad(`
  name  = "main"
  zones = ["a"]

  auth {
    secret = "s1"
  }

  auth {
    secret = "s2"
  }
`),
		ExpectError: wrapRE(`(?s)Cannot Create Proxy "main".*secret "s2" has username "same", as secret "s1" of auth\[0\] of proxy "main" does`),
	})
	resource.Test(t, resource.TestCase{ProtoV6ProviderFactories: e.factories(), Steps: ts})
}

// TestProxyModifyPlan: auth blocks whose existing secrets share a username
// get a warning at plan, on the block that repeats it; distinct usernames
// and secrets not made yet get none.
func TestProxyModifyPlan(t *testing.T) {
	cp := cptest.Start(t)
	ctx := context.Background()
	cp.Do("PUT", "/v1/secrets/s1", map[string]any{"username": "same", "password": "p1"}, nil)
	cp.Do("PUT", "/v1/secrets/s2", map[string]any{"username": "same", "password": "p2"}, nil)
	cp.Do("PUT", "/v1/secrets/s3", map[string]any{"username": "other", "password": "p3"}, nil)
	r := &proxyResource{data: &providerData{client: cp.Client}}
	var sr fwresource.SchemaResponse
	r.Schema(ctx, fwresource.SchemaRequest{}, &sr)
	plan := func(secrets ...string) tfsdk.Plan {
		t.Helper()
		var auths []attr.Value
		for _, s := range secrets {
			auths = append(auths, types.ObjectValueMust(authAttrTypes, map[string]attr.Value{
				"secret": types.StringValue(s), "iam_auth": types.StringValue(vocab.IAMAuthDisabled),
				"client_password_auth_type": types.StringValue(vocab.AuthNativePassword), "description": types.StringNull(),
			}))
		}
		m := proxyModel{
			proxyFields: proxyFields{
				ID: types.StringUnknown(), Name: types.StringValue("main"), EngineFamily: types.StringValue(vocab.EngineMySQL),
				Zones:      types.ListValueMust(types.StringType, []attr.Value{types.StringValue("a")}),
				Auth:       types.ListValueMust(types.ObjectType{AttrTypes: authAttrTypes}, auths),
				RequireTLS: types.BoolValue(false), IdleClientTimeout: types.Int64Value(1800), MaxClientConnections: types.Int64Value(0),
				DebugLogging: types.BoolValue(false), Port: types.Int64Unknown(), Endpoint: types.StringUnknown(),
				Addresses: types.ListUnknown(types.StringType),
			},
			Timeouts: timeouts.Value{Object: types.ObjectNull(map[string]attr.Type{
				"create": types.StringType, "update": types.StringType, "delete": types.StringType})},
		}
		st := tfsdk.State{Schema: sr.Schema}
		if diags := st.Set(ctx, &m); diags.HasError() {
			t.Fatalf("plan: %v", diags)
		}
		return tfsdk.Plan{Schema: sr.Schema, Raw: st.Raw}
	}
	for _, tc := range []struct {
		name     string
		secrets  []string
		warnings int
	}{
		{"shared username", []string{"s1", "s2"}, 1},
		{"distinct usernames", []string{"s1", "s3"}, 0},
		{"secret not made yet", []string{"s1", "later"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := plan(tc.secrets...)
			req := fwresource.ModifyPlanRequest{Plan: p, State: tfsdk.State{Schema: sr.Schema, Raw: tftypes.NewValue(p.Raw.Type(), nil)}}
			resp := fwresource.ModifyPlanResponse{Plan: p}
			r.ModifyPlan(ctx, req, &resp)
			if resp.Diagnostics.HasError() {
				t.Fatalf("errors: %v", resp.Diagnostics)
			}
			ws := resp.Diagnostics.Warnings()
			if len(ws) != tc.warnings {
				t.Fatalf("warnings = %v, want %d", ws, tc.warnings)
			}
			if tc.warnings > 0 {
				w, ok := ws[0].(diag.DiagnosticWithPath)
				if !ok || !w.Path().Equal(path.Root("auth").AtListIndex(1).AtName("secret")) ||
					!strings.Contains(w.Detail(), `Secret "s2" has username "same", as secret "s1" of auth block 0 does`) {
					t.Fatalf("warning = %#v", ws[0])
				}
			}
		})
	}
}
