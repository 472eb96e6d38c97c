package provider

import (
	"fmt"
	"slices"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/dbproxy/dbproxy/internal/cptest"
)

// endpointConfig is a dbproxy_endpoint "ro"; extra holds further
// arguments.
func endpointConfig(proxy, name, extra string) string {
	return fmt.Sprintf(`
resource "dbproxy_endpoint" "ro" {
  proxy_name = %q
  name       = %q
  %s
}
`, proxy, name, extra)
}

// checkEndpoint checks an endpoint through the API (own zones; nil means
// it follows its proxy's) and that, right after the apply, exactly the
// nodes of served serve it.
func (e *testEnv) checkEndpoint(proxy, name, role string, own []string, served ...string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		ep, err := e.apiEndpoint(proxy, name)
		if err != nil {
			return err
		}
		if ep.TargetRole != role || !slices.Equal(ep.Zones, own) && len(ep.Zones)+len(own) > 0 {
			return fmt.Errorf("endpoint %s/%s: target_role %s zones %v, want %s and %v", proxy, name, ep.TargetRole, ep.Zones, role, own)
		}
		for _, n := range e.nodes {
			a, ok := n.Addr(proxy, name)
			switch want := slices.Contains(served, n.Zone); {
			case want && !ok:
				return fmt.Errorf("node %s does not serve endpoint %s/%s when the apply returned", n.ID, proxy, name)
			case !want && ok:
				return fmt.Errorf("node %s still serves endpoint %s/%s at %s when the apply returned", n.ID, proxy, name, a)
			case ok && a != joinAddr(n.Host, ep.Port):
				return fmt.Errorf("node %s serves endpoint %s/%s at %s, want port %d", n.ID, proxy, name, a, ep.Port)
			}
		}
		return nil
	}
}

func TestAccEndpoint_basic(t *testing.T) {
	e := newTestEnv(t, envOptions{Nodes: []string{"a", "b"}})
	e.apiProxy("main", "a", "b")
	e.apiProxy("other", "a")
	port := unusedPort(t, cptest.ZoneHost(0))
	state := func(attr string, v knownvalue.Check) statecheck.StateCheck {
		return statecheck.ExpectKnownValue("dbproxy_endpoint.ro", tfjsonpath.New(attr), v)
	}
	addrA := func(p int) string { return joinAddr(cptest.ZoneHost(0), p) }
	bothZones := knownvalue.ListExact([]knownvalue.Check{knownvalue.StringExact("a"), knownvalue.StringExact("b")})
	update := resource.ConfigPlanChecks{
		PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_endpoint.ro", plancheck.ResourceActionUpdate)},
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: e.factories(),
		CheckDestroy: e.checkGoneAll("/v1/proxies/main/endpoints/ro", "/v1/proxies/main/endpoints/reads",
			"/v1/proxies/other/endpoints/reads"),
		Steps: []resource.TestStep{
			{
				// Only the control plane knows the proxy's zones: refused
				// at apply, on the zone.
				Config:      e.config(endpointConfig("main", "ro", `zones = ["a", "c"]`)),
				ExpectError: wrapRE(`(?s)Cannot Create Endpoint "ro" of proxy "main".*zones = \["a", "c"\].*zone "c" is not one of proxy "main"'s zones`),
			},
			{
				// Zones left out: the proxy's.
				Config: e.config(endpointConfig("main", "ro", `target_role = "READ_ONLY"`)),
				ConfigStateChecks: []statecheck.StateCheck{
					state("id", knownvalue.StringExact("main/ro")),
					state("zones", bothZones),
					state("addresses", knownvalue.ListSizeExact(2)),
					state("endpoint", knownvalue.NotNull()),
					state("port", knownvalue.NotNull()),
				},
				Check: e.checkEndpoint("main", "ro", "READ_ONLY", nil, "a", "b"),
			},
			{
				ResourceName:      "dbproxy_endpoint.ro",
				ImportState:       true,
				ImportStateVerify: true,
			},
			{
				ResourceName:  "dbproxy_endpoint.ro",
				ImportState:   true,
				ImportStateId: "main/ro/extra",
				ExpectError:   wrapRE(`(?s)Invalid Import ID.*the import id must have the form "proxy_name/name", got "main/ro/extra"`),
			},
			{
				// In place: own zones, a port of its own, another role.
				// Node b stops serving it before apply returns.
				Config:           e.config(endpointConfig("main", "ro", fmt.Sprintf("zones = [\"a\"]\n  port = %d", port))),
				ConfigPlanChecks: update,
				ConfigStateChecks: []statecheck.StateCheck{
					state("target_role", knownvalue.StringExact("READ_WRITE")),
					state("zones", knownvalue.ListExact([]knownvalue.Check{knownvalue.StringExact("a")})),
					state("endpoint", knownvalue.StringExact(addrA(port))),
					state("addresses", knownvalue.ListExact([]knownvalue.Check{knownvalue.StringExact(addrA(port))})),
				},
				Check: e.checkEndpoint("main", "ro", "READ_WRITE", []string{"a"}, "a"),
			},
			{
				// Removing zones goes back to the proxy's (Terraform alone
				// would keep the computed value); the port stays.
				Config:           e.config(endpointConfig("main", "ro", fmt.Sprintf("port = %d", port))),
				ConfigPlanChecks: update,
				ConfigStateChecks: []statecheck.StateCheck{
					state("zones", bothZones),
					state("port", knownvalue.Int64Exact(int64(port))),
				},
				Check: e.checkEndpoint("main", "ro", "READ_WRITE", nil, "a", "b"),
			},
			{
				// Drift through the API, own zones and role both, is
				// corrected.
				PreConfig: func() {
					e.apiDo("PUT", "/v1/proxies/main/endpoints/ro", map[string]any{"target_role": "READ_ONLY", "zones": []string{"b"}, "port": port})
				},
				Config:           e.config(endpointConfig("main", "ro", fmt.Sprintf("port = %d", port))),
				ConfigPlanChecks: update,
				Check:            e.checkEndpoint("main", "ro", "READ_WRITE", nil, "a", "b"),
			},
			{
				// Deleted outside Terraform: planned for re-creation.
				PreConfig: func() { e.apiDo("DELETE", "/v1/proxies/main/endpoints/ro", nil) },
				Config:    e.config(endpointConfig("main", "ro", fmt.Sprintf("port = %d", port))),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_endpoint.ro", plancheck.ResourceActionCreate)},
				},
				Check: e.checkEndpoint("main", "ro", "READ_WRITE", nil, "a", "b"),
			},
			{
				// A new name replaces it; the port left out is allocated.
				Config: e.config(endpointConfig("main", "reads", `target_role = "READ_ONLY"`)),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_endpoint.ro", plancheck.ResourceActionDestroyBeforeCreate)},
				},
				ConfigStateChecks: []statecheck.StateCheck{state("id", knownvalue.StringExact("main/reads"))},
				Check: resource.ComposeTestCheckFunc(
					e.checkEndpoint("main", "reads", "READ_ONLY", nil, "a", "b"),
					func(*terraform.State) error { return e.checkGone("/v1/proxies/main/endpoints/ro")(nil) },
				),
			},
			{
				// So does another proxy.
				Config: e.config(endpointConfig("other", "reads", `target_role = "READ_ONLY"`)),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_endpoint.ro", plancheck.ResourceActionDestroyBeforeCreate)},
				},
				ConfigStateChecks: []statecheck.StateCheck{
					state("zones", knownvalue.ListExact([]knownvalue.Check{knownvalue.StringExact("a")})),
				},
				Check: resource.ComposeTestCheckFunc(
					e.checkEndpoint("other", "reads", "READ_ONLY", nil, "a"),
					func(*terraform.State) error { return e.checkGone("/v1/proxies/main/endpoints/reads")(nil) },
				),
			},
		},
	})
}

func TestAccEndpoint_validation(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	bad := func(name, extra string) string { return e.config(endpointConfig("main", name, extra)) }
	steps := []struct {
		config string
		want   string
	}{
		{bad("default", ""), `(?s)Invalid Attribute Value.*"default" is the proxy's own endpoint; choose another name`},
		{bad("read_only", ""), `(?s)Invalid Attribute Value.*"read_only" is not a valid endpoint name`},
		{e.config(endpointConfig("main-", "ro", "")), `(?s)Invalid Attribute Value.*proxy_name.*"main-" is not a valid proxy name`},
		{bad("ro", `target_role = "READ"`), `(?s)target_role.*value must be one of.*"READ_WRITE".*got: "READ"`},
		{bad("ro", `zones = []`), `(?s)zones.*list must contain at least 1 elements, got: 0`},
		{bad("ro", `zones = ["a", "a"]`), `(?s)zones.*This attribute contains duplicate values of: "a"`},
		{bad("ro", `zones = ["Zone A"]`), `(?s)Invalid Attribute Value.*zones = \["Zone A"\].*"Zone A" is not a valid zone name`},
		{bad("ro", `port = 0`), `(?s)port.*value must be between 1 and 65535, got: 0`},
	}
	var ts []resource.TestStep
	for _, s := range steps {
		ts = append(ts, resource.TestStep{Config: s.config, PlanOnly: true, ExpectError: wrapRE(s.want)})
	}
	resource.Test(t, resource.TestCase{ProtoV6ProviderFactories: e.factories(), Steps: ts})
}
