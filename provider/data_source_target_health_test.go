package provider

import (
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
)

func TestAccTargetHealthDataSource(t *testing.T) {
	e := newTestEnv(t, envOptions{Nodes: []string{"a"}, Database: true})
	deadPort := unusedPort(t, e.db.Host)
	config := func(proxy string) string {
		return e.config(fmt.Sprintf(`
resource "dbproxy_target" "db1" {
  proxy_name = "main"
  name       = "db1"
  host       = %q
  port       = %d
  zone       = "a"
}

data "dbproxy_target_health" "main" {
  # Read after the target is applied.
  proxy_name = %s
}
`, e.db.Host, e.db.Port, proxy))
	}
	target := func(i int, attr string, v knownvalue.Check) statecheck.StateCheck {
		return statecheck.ExpectKnownValue("data.dbproxy_target_health.main", tfjsonpath.New("targets").AtSliceIndex(i).AtMapKey(attr), v)
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: e.factories(),
		Steps: []resource.TestStep{
			{
				// db1 is a real MariaDB (made by Terraform, which waits
				// until the node reports it); "down" listens nowhere
				// (made through the API, waited for here).
				PreConfig: func() {
					e.apiProxy("main", "a")
					e.apiDo("PUT", "/v1/proxies/main/targets/down", map[string]any{"host": e.db.Host, "port": deadPort})
					if err := pollFor(30*time.Second, func() error {
						tg, err := e.apiTarget("main", "down")
						if err == nil && tg.Health != "UNAVAILABLE" {
							err = fmt.Errorf("target down: health %s", tg.Health)
						}
						return err
					}); err != nil {
						t.Fatal(err)
					}
				},
				Config: config("dbproxy_target.db1.proxy_name"),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("data.dbproxy_target_health.main", tfjsonpath.New("targets"), knownvalue.ListSizeExact(2)),
					target(0, "name", knownvalue.StringExact("db1")),
					target(0, "host", knownvalue.StringExact(e.db.Host)),
					target(0, "port", knownvalue.Int64Exact(int64(e.db.Port))),
					target(0, "zone", knownvalue.StringExact("a")),
					target(0, "role", knownvalue.StringExact("AUTO")),
					target(0, "health", knownvalue.StringExact("AVAILABLE")),
					target(0, "discovered_role", knownvalue.StringExact("WRITER")),
					target(0, "health_reason", knownvalue.Null()),
					target(1, "name", knownvalue.StringExact("down")),
					target(1, "zone", knownvalue.Null()),
					target(1, "role", knownvalue.StringExact("AUTO")),
					target(1, "health", knownvalue.StringExact("UNAVAILABLE")),
					// Never reached: no role discovered.
					target(1, "discovered_role", knownvalue.Null()),
					// The node says why: it cannot connect.
					target(1, "health_reason", knownvalue.StringRegexp(regexp.MustCompile(`^node-a: .*connection refused`))),
				},
			},
			{
				Config:      config(`"nope"`),
				ExpectError: wrapRE(`(?s)Proxy Not Found.*There is no proxy "nope" on the control plane`),
			},
		},
	})
}
