package provider

import (
	"fmt"
	"net"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/dbproxy/dbproxy/internal/cptest"
)

// TestAccRollout_timeout: apply returns only when the data plane serves
// the change, and says which zones and nodes do not. A node that rejects
// the change fails the apply at once, naming the node and its NACK; a zone
// of the proxy with no node is waited for (not skipped) until the
// timeout, and the error names the zone; once a node of it is up the next
// apply completes.
func TestAccRollout_timeout(t *testing.T) {
	e := newTestEnv(t, envOptions{Nodes: []string{"a"}})
	e.apiProxy("solo", "a")
	e.apiProxy("main", "a", "b")
	// Something else holds this port on zone a's address, so node a
	// cannot bind an endpoint there.
	hog, err := net.Listen("tcp", joinAddr(cptest.ZoneHost(0), 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hog.Close() })
	hogPort := hog.Addr().(*net.TCPAddr).Port
	clash := fmt.Sprintf(`
resource "dbproxy_endpoint" "clash" {
  proxy_name = "solo"
  name       = "clash"
  port       = %d
  timeouts {
    create = "1m"
  }
}
`, hogPort)
	wide := func(timeout string) string {
		return fmt.Sprintf(`
resource "dbproxy_endpoint" "wide" {
  proxy_name = "main"
  name       = "wide"
  timeouts {
    create = %q
  }
}
`, timeout)
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: e.factories(),
		CheckDestroy:             e.checkGoneAll("/v1/proxies/solo/endpoints/clash", "/v1/proxies/main/endpoints/wide"),
		Steps: []resource.TestStep{
			{
				// A NACK ends the wait at once (well before the minute).
				Config: e.config(clash),
				ExpectError: wrapRE(`(?s)The Data Plane Rejected the Change.*Endpoint "clash" of proxy "solo" was stored.*` +
					`Node node-a \(zone a, connected\) serves revision \d+; it last rejected version \S+: .*` + fmt.Sprint(hogPort)),
			},
			{
				// The clash goes: node a takes the next configuration.
				// (A step of its own: created in the same apply, the
				// next endpoint could be stored before the clash is
				// deleted, and be rejected with it.)
				Config: e.config(""),
				Check:  e.checkGoneAll("/v1/proxies/solo/endpoints/clash"),
			},
			{
				// Zone b has no node: the wait ends with the timeout.
				Config: e.config(wide("3s")),
				ExpectError: wrapRE(`(?s)Timed Out Waiting for the Data Plane.*Endpoint "wide" of proxy "main" was stored.*` +
					`not every data-plane node serves it before the timeout.*Zones with no connected node: b\.`),
			},
			{
				// A node of zone b comes up: the tainted endpoint is
				// replaced and served by both zones.
				PreConfig: func() { e.startNode("b") },
				Config:    e.config(wide("1m")),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_endpoint.wide", plancheck.ResourceActionDestroyBeforeCreate)},
				},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("dbproxy_endpoint.wide", tfjsonpath.New("addresses"), knownvalue.ListSizeExact(2)),
				},
				Check: e.checkEndpoint("main", "wide", "READ_WRITE", nil, "a", "b"),
			},
		},
	})
}
