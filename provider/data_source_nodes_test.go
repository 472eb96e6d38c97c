package provider

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/dbproxy/dbproxy/internal/cptest"
	"github.com/dbproxy/dbproxy/internal/model"
)

func TestAccNodesDataSource(t *testing.T) {
	e := newTestEnv(t, envOptions{Nodes: []string{"a", "b"}})
	config := e.config(`
data "dbproxy_nodes" "all" {}

data "dbproxy_nodes" "b" {
  zone = "b"
}
`)
	node := func(i int, attr string) tfjsonpath.Path {
		return tfjsonpath.New("nodes").AtSliceIndex(i).AtMapKey(attr)
	}
	check := func(ds string, i int, attr string, v knownvalue.Check) statecheck.StateCheck {
		return statecheck.ExpectKnownValue("data.dbproxy_nodes."+ds, node(i, attr), v)
	}
	nonEmpty := knownvalue.StringRegexp(regexp.MustCompile(`.`))
	var port int
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: e.factories(),
		Steps: []resource.TestStep{
			{
				Config: config,
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("data.dbproxy_nodes.all", tfjsonpath.New("nodes"), knownvalue.ListSizeExact(2)),
					check("all", 0, "id", knownvalue.StringExact("node-a")),
					check("all", 0, "zone", knownvalue.StringExact("a")),
					check("all", 0, "address", knownvalue.StringExact(cptest.ZoneHost(0))),
					check("all", 0, "connected", knownvalue.Bool(true)),
					check("all", 0, "acked_version", nonEmpty),
					check("all", 0, "acked_revision", knownvalue.NotNull()),
					check("all", 0, "last_nack", knownvalue.Null()),
					check("all", 1, "id", knownvalue.StringExact("node-b")),
					statecheck.ExpectKnownValue("data.dbproxy_nodes.b", tfjsonpath.New("nodes"), knownvalue.ListSizeExact(1)),
					check("b", 0, "id", knownvalue.StringExact("node-b")),
					check("b", 0, "zone", knownvalue.StringExact("b")),
					check("b", 0, "connected", knownvalue.Bool(true)),
				},
			},
			{
				// Something else holds a port on zone b's address: node b
				// cannot bind an endpoint there and rejects the
				// configuration, and says why.
				PreConfig: func() {
					hog, err := net.Listen("tcp", joinAddr(cptest.ZoneHost(1), 0))
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { hog.Close() })
					port = hog.Addr().(*net.TCPAddr).Port
					e.apiProxy("main", "a", "b")
					e.apiDo("PUT", "/v1/proxies/main/endpoints/clash", map[string]any{"port": port})
					err = pollFor(30*time.Second, func() error {
						var l model.List[model.Node]
						if _, err := e.apiGet("/v1/nodes", &l); err != nil {
							return err
						}
						for _, n := range l.Items {
							if n.ID == "node-b" && n.LastNack != nil {
								return nil
							}
						}
						return fmt.Errorf("node b has not rejected a configuration: %+v", l.Items)
					})
					if err != nil {
						t.Fatal(err)
					}
				},
				Config: config,
				ConfigStateChecks: []statecheck.StateCheck{
					check("all", 0, "last_nack", knownvalue.Null()),
					check("b", 0, "last_nack", knownvalue.ObjectPartial(map[string]knownvalue.Check{
						"version": nonEmpty,
						"message": knownvalue.StringFunc(func(s string) error {
							if !regexp.MustCompile(`\b` + strconv.Itoa(port) + `\b`).MatchString(s) {
								return fmt.Errorf("the NACK message %q does not name port %d", s, port)
							}
							return nil
						}),
						"at": knownvalue.StringRegexp(regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`)),
					})),
				},
			},
		},
	})
}
