package provider

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
)

// targetConfig is a dbproxy_target "db"; extra holds further arguments.
func targetConfig(proxy, name, host string, port int, extra string) string {
	return fmt.Sprintf(`
resource "dbproxy_target" "db" {
  proxy_name = %q
  name       = %q
  host       = %q
  port       = %d
  %s
}
`, proxy, name, host, port, extra)
}

// checkTarget checks a target through the API.
func (e *testEnv) checkTarget(proxy, name, zone, role string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		t, err := e.apiTarget(proxy, name)
		if err != nil {
			return err
		}
		if t.Zone != zone || t.Role != role {
			return fmt.Errorf("target %s/%s: zone %q role %q, want %q and %q", proxy, name, t.Zone, t.Role, zone, role)
		}
		return nil
	}
}

// checkNodeTargets checks, right after an apply, that the node of zone z
// already routes to exactly the targets named: apply waited for it.
func (e *testEnv) checkNodeTargets(z, proxy string, names ...string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		ts := e.node(z).Node.Node().Targets(proxy)
		if len(ts) != len(names) {
			return fmt.Errorf("node %s has %d targets of proxy %s right after the apply, want %v", z, len(ts), proxy, names)
		}
		return nil
	}
}

func TestAccTarget_basic(t *testing.T) {
	e := newTestEnv(t, envOptions{Nodes: []string{"a"}, Database: true})
	e.apiProxy("main", "a")
	e.apiProxy("other", "a")
	state := func(attr string, v knownvalue.Check) statecheck.StateCheck {
		return statecheck.ExpectKnownValue("dbproxy_target.db", tfjsonpath.New(attr), v)
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: e.factories(),
		CheckDestroy: e.checkGoneAll("/v1/proxies/main/targets/db1", "/v1/proxies/main/targets/db2",
			"/v1/proxies/other/targets/db2"),
		Steps: []resource.TestStep{
			{
				Config: e.config(targetConfig("main", "db1", e.db.Host, e.db.Port, `zone = "a"`)),
				ConfigStateChecks: []statecheck.StateCheck{
					state("id", knownvalue.StringExact("main/db1")),
					state("role", knownvalue.StringExact("AUTO")),
					state("zone", knownvalue.StringExact("a")),
					// Apply returned when the node reported it healthy.
					state("health", knownvalue.StringExact("AVAILABLE")),
					state("discovered_role", knownvalue.StringExact("WRITER")),
				},
				Check: resource.ComposeTestCheckFunc(e.checkTarget("main", "db1", "a", "AUTO"), e.checkNodeTargets("a", "main", "db1")),
			},
			{
				ResourceName:      "dbproxy_target.db",
				ImportState:       true,
				ImportStateId:     "main/db1",
				ImportStateVerify: true,
			},
			{
				ResourceName:  "dbproxy_target.db",
				ImportState:   true,
				ImportStateId: "db1",
				ExpectError:   wrapRE(`(?s)Invalid Import ID.*the import id must have the form\s+"proxy_name/name", got "db1"`),
			},
			{
				// In place: a declared role; the zone removed is cleared.
				Config: e.config(targetConfig("main", "db1", e.db.Host, e.db.Port, `role = "WRITER"`)),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_target.db", plancheck.ResourceActionUpdate)},
				},
				ConfigStateChecks: []statecheck.StateCheck{
					state("zone", knownvalue.Null()),
					state("health", knownvalue.StringExact("AVAILABLE")),
				},
				Check: e.checkTarget("main", "db1", "", "WRITER"),
			},
			{
				// Drift made through the API shows in the plan and is
				// corrected.
				PreConfig: func() {
					e.apiDo("PUT", "/v1/proxies/main/targets/db1", map[string]any{"host": e.db.Host, "port": e.db.Port, "zone": "b", "role": "READER"})
				},
				Config: e.config(targetConfig("main", "db1", e.db.Host, e.db.Port, `role = "WRITER"`)),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_target.db", plancheck.ResourceActionUpdate)},
				},
				Check: e.checkTarget("main", "db1", "", "WRITER"),
			},
			{
				// Deleted outside Terraform: planned for re-creation.
				PreConfig: func() { e.apiDo("DELETE", "/v1/proxies/main/targets/db1", nil) },
				Config:    e.config(targetConfig("main", "db1", e.db.Host, e.db.Port, `role = "WRITER"`)),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_target.db", plancheck.ResourceActionCreate)},
				},
				Check: e.checkTarget("main", "db1", "", "WRITER"),
			},
			{
				// A new name replaces the target (the old one goes first:
				// a proxy takes one target per host and port).
				Config: e.config(targetConfig("main", "db2", e.db.Host, e.db.Port, "")),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_target.db", plancheck.ResourceActionDestroyBeforeCreate)},
				},
				ConfigStateChecks: []statecheck.StateCheck{state("id", knownvalue.StringExact("main/db2"))},
				Check: resource.ComposeTestCheckFunc(
					e.checkTarget("main", "db2", "", "AUTO"),
					func(*terraform.State) error { return e.checkGone("/v1/proxies/main/targets/db1")(nil) },
					e.checkNodeTargets("a", "main", "db2"),
				),
			},
			{
				// Another proxy replaces it too.
				Config: e.config(targetConfig("other", "db2", e.db.Host, e.db.Port, "")),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_target.db", plancheck.ResourceActionDestroyBeforeCreate)},
				},
				Check: resource.ComposeTestCheckFunc(
					e.checkTarget("other", "db2", "", "AUTO"),
					func(*terraform.State) error { return e.checkGone("/v1/proxies/main/targets/db2")(nil) },
					e.checkNodeTargets("a", "main"),
				),
			},
		},
	})
}

func TestAccTarget_validation(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	bad := func(proxy, name, host string, port int, extra string) string {
		return e.config(targetConfig(proxy, name, host, port, extra))
	}
	steps := []struct {
		config string
		want   string
	}{
		{bad("1main", "db1", "h", 3306, ""), `(?s)Invalid Attribute Value.*proxy_name.*"1main" is not a valid proxy name`},
		{bad("main", "db 1", "h", 3306, ""), `(?s)Invalid Attribute Value.*"db 1" is not a valid target name`},
		{bad("main", "db1", "no such host!", 3306, ""), `(?s)Invalid Attribute Value.*host.*is not a valid host name or IP address`},
		{bad("main", "db1", "h", 0, ""), `(?s)port.*value must be between 1 and 65535, got: 0`},
		{bad("main", "db1", "h", 65536, ""), `(?s)port.*value must be between 1 and 65535, got: 65536`},
		{bad("main", "db1", "h", 3306, `role = "PRIMARY"`), `(?s)role.*value must be one of.*"AUTO".*got: "PRIMARY"`},
		{bad("main", "db1", "h", 3306, `zone = "Zone_A"`), `(?s)Invalid Attribute Value.*zone.*"Zone_A" is not a valid zone name`},
	}
	var ts []resource.TestStep
	for _, s := range steps {
		ts = append(ts, resource.TestStep{Config: s.config, PlanOnly: true, ExpectError: wrapRE(s.want)})
	}
	// What only the control plane knows is refused at apply, on the
	// attribute it concerns.
	ts = append(ts, resource.TestStep{
		Config:      bad("nope", "db1", "h", 3306, ""),
		ExpectError: wrapRE(`(?s)Cannot Create Target "db1" of proxy "nope".*proxy_name = "nope".*proxy "nope"`),
	})
	resource.Test(t, resource.TestCase{ProtoV6ProviderFactories: e.factories(), Steps: ts})
}

// TestAccTarget_waitsForHealth is lesson 6 of the issue: a database that
// is not reachable yet does not fail the apply at once. The first target
// comes up while the apply waits; the second never does, and the error at
// the end of its timeout says what the nodes report.
func TestAccTarget_waitsForHealth(t *testing.T) {
	e := newTestEnv(t, envOptions{Nodes: []string{"a"}, Database: true})
	e.apiProxy("main", "a")
	latePort := unusedPort(t, e.db.Host)
	deadPort := unusedPort(t, e.db.Host)
	late := fmt.Sprintf(`
resource "dbproxy_target" "late" {
  proxy_name = "main"
  name       = "late"
  host       = %q
  port       = %d
  timeouts {
    create = "2m"
  }
}
`, e.db.Host, latePort)
	dead := fmt.Sprintf(`
resource "dbproxy_target" "dead" {
  proxy_name = "main"
  name       = "dead"
  host       = %q
  port       = %d
  timeouts {
    create = "5s"
  }
}
`, e.db.Host, deadPort)
	// The database "comes up" at latePort once the node has reported the
	// target unreachable, that is while the apply waits. The goroutine
	// ends with the test, and the forwarder with it.
	cameUp := make(chan error, 1)
	stop := make(chan struct{})
	bringUp := func() {
		var fwd *forwarder
		done := make(chan struct{})
		t.Cleanup(func() {
			close(stop)
			<-done
			if fwd != nil {
				fwd.close()
			}
		})
		go func() {
			defer close(done)
			err := pollFor(time.Minute, func() error {
				select {
				case <-stop:
					return nil
				default:
				}
				tg, err := e.apiTarget("main", "late")
				if err != nil {
					return err
				}
				if tg.Health != "UNAVAILABLE" {
					return fmt.Errorf("health %s", tg.Health)
				}
				return nil
			})
			select {
			case <-stop:
				return
			default:
			}
			if err == nil {
				fwd, err = startForwarder(joinAddr(e.db.Host, latePort), joinAddr(e.db.Host, e.db.Port))
			}
			cameUp <- err
		}()
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: e.factories(),
		CheckDestroy:             e.checkGoneAll("/v1/proxies/main/targets/late", "/v1/proxies/main/targets/dead"),
		Steps: []resource.TestStep{
			{
				PreConfig: bringUp,
				Config:    e.config(late),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("dbproxy_target.late", tfjsonpath.New("health"), knownvalue.StringExact("AVAILABLE")),
					statecheck.ExpectKnownValue("dbproxy_target.late", tfjsonpath.New("discovered_role"), knownvalue.StringExact("WRITER")),
				},
				Check: func(*terraform.State) error {
					// The apply saw the target unreachable before it
					// came up.
					if err := <-cameUp; err != nil {
						return fmt.Errorf("the target was never seen unreachable during the apply: %w", err)
					}
					return nil
				},
			},
			{
				Config: e.config(late + dead),
				ExpectError: wrapRE(`(?s)Timed Out Waiting for the Target to Be Available.*` +
					`Target "dead" of proxy "main" was stored.*The nodes report health\s+UNAVAILABLE.*Why:\s+node-a:`),
			},
		},
	})
}
