package provider

import (
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/compare"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
)

func TestAccProxyDataSource_basic(t *testing.T) {
	e := newTestEnv(t, envOptions{Nodes: []string{"a"}})
	const res, data = "dbproxy_proxy.main", "data.dbproxy_proxy.main"
	same := func(attr string) statecheck.StateCheck {
		return statecheck.CompareValuePairs(res, tfjsonpath.New(attr), data, tfjsonpath.New(attr), compare.ValuesSame())
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: e.factories(),
		CheckDestroy:             e.checkGone("/v1/proxies/main"),
		Steps: []resource.TestStep{
			{
				Config: e.proxyConfig(`
  name                = "main"
  zones               = ["a"]
  idle_client_timeout = 900
  require_tls         = true

  auth {
    secret      = dbproxy_secret.app.name
    description = "application"
  }

  auth {
    secret                    = dbproxy_secret.report.name
    client_password_auth_type = "MYSQL_CACHING_SHA2_PASSWORD"
  }
`) + `
data "dbproxy_proxy" "main" {
  name = dbproxy_proxy.main.name
}
`,
				ConfigStateChecks: []statecheck.StateCheck{
					same("id"), same("name"), same("engine_family"), same("zones"), same("auth"), same("require_tls"),
					same("idle_client_timeout"), same("max_client_connections"), same("debug_logging"), same("port"),
					same("endpoint"), same("addresses"),
					statecheck.ExpectKnownValue(data, tfjsonpath.New("idle_client_timeout"), knownvalue.Int64Exact(900)),
					statecheck.ExpectKnownValue(data, tfjsonpath.New("auth").AtSliceIndex(1).AtMapKey("client_password_auth_type"),
						knownvalue.StringExact("MYSQL_CACHING_SHA2_PASSWORD")),
					statecheck.ExpectKnownValue(data, tfjsonpath.New("auth").AtSliceIndex(0).AtMapKey("description"),
						knownvalue.StringExact("application")),
					statecheck.ExpectKnownValue(data, tfjsonpath.New("addresses"), knownvalue.ListSizeExact(1)),
				},
			},
			{
				Config: e.config(`
data "dbproxy_proxy" "missing" {
  name = "missing"
}
`),
				ExpectError: wrapRE(`(?s)Proxy Not Found.*No proxy named "missing" exists on the control plane`),
			},
		},
	})
}
