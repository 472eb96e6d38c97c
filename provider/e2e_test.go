package provider

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/dbproxy/dbproxy/internal/nodetest"
)

// e2eConfig is a whole setup: a secret, a proxy, its pool settings, a
// MariaDB target and a read-only endpoint. The children name the proxy by
// its id, so that they are replaced with it.
func (e *testEnv) e2eConfig(proxy, initQuery string, maxConnPercent int) string {
	return e.config(fmt.Sprintf(`
resource "dbproxy_secret" "app" {
  name                = "app"
  username            = %q
  password_wo         = %q
  password_wo_version = 1
}

resource "dbproxy_proxy" "main" {
  name  = %q
  zones = ["a"]
  auth {
    secret = dbproxy_secret.app.name
  }
}

resource "dbproxy_target_group" "main" {
  proxy_name = dbproxy_proxy.main.id
  connection_pool_config {
    max_connections_percent = %d
    init_query              = %q
  }
}

resource "dbproxy_target" "db1" {
  proxy_name = dbproxy_proxy.main.id
  name       = "db1"
  host       = %q
  port       = %d
}

resource "dbproxy_endpoint" "reads" {
  proxy_name  = dbproxy_proxy.main.id
  name        = "reads"
  target_role = "READ_ONLY"
}
`, nodetest.User, nodetest.Password, proxy, maxConnPercent, initQuery, e.db.Host, e.db.Port))
}

// e2eQuery connects to the address a resource's attribute holds (as an
// application would, with go-sql-driver/mysql through the node), runs
// stmts and returns the first column of the last one's first row.
func e2eQuery(s *terraform.State, res, attr string, stmts ...string) (string, error) {
	rs, ok := s.RootModule().Resources[res]
	if !ok {
		return "", fmt.Errorf("%s is not in the state", res)
	}
	addr := rs.Primary.Attributes[attr]
	if addr == "" {
		return "", fmt.Errorf("%s has no %s", res, attr)
	}
	db, err := sql.Open("mysql", nodetest.DSN(addr, "timeout=5s"))
	if err != nil {
		return "", err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	last := len(stmts) - 1
	for _, q := range stmts[:last] {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return "", fmt.Errorf("%s through %s (%s): %w", q, addr, res, err)
		}
	}
	var v string
	if err := db.QueryRowContext(ctx, stmts[last]).Scan(&v); err != nil {
		return "", fmt.Errorf("%s through %s (%s): %w", stmts[last], addr, res, err)
	}
	return v, nil
}

// checkServes checks that the node serves what the state says, at once
// after the apply: a write and a read through the proxy's endpoint, a
// read through the read-only endpoint, and the init_query applied.
func checkServes(wantWaitTimeout string) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		v, err := e2eQuery(s, "dbproxy_proxy.main", "endpoint",
			"CREATE TABLE IF NOT EXISTS e2e (id INT PRIMARY KEY, v VARCHAR(40))",
			"REPLACE INTO e2e VALUES (1, 'written through the proxy')",
			"SELECT v FROM e2e WHERE id = 1")
		if err != nil {
			return err
		}
		if v != "written through the proxy" {
			return fmt.Errorf("read back %q through the proxy", v)
		}
		got, err := e2eQuery(s, "dbproxy_proxy.main", "endpoint", "SELECT @@session.wait_timeout")
		if err != nil {
			return err
		}
		if got != wantWaitTimeout {
			return fmt.Errorf("a new session through the proxy has wait_timeout %s, want %s from init_query", got, wantWaitTimeout)
		}
		// The only target is the writer: READ_ONLY falls back to it.
		v, err = e2eQuery(s, "dbproxy_endpoint.reads", "endpoint", "SELECT v FROM e2e WHERE id = 1")
		if err != nil {
			return err
		}
		if v != "written through the proxy" {
			return fmt.Errorf("read %q through the read-only endpoint", v)
		}
		return nil
	}
}

// TestAccEndToEnd applies a whole setup, queries through a node with
// go-sql-driver/mysql, changes the pool settings and sees the node apply
// them, renames the proxy (its children are replaced with it and served
// again), and destroys everything.
func TestAccEndToEnd(t *testing.T) {
	e := newTestEnv(t, envOptions{Nodes: []string{"a"}, Database: true})
	replaced := func(addr string) plancheck.PlanCheck {
		return plancheck.ExpectResourceAction(addr, plancheck.ResourceActionReplace)
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: e.factories(),
		CheckDestroy: e.checkGoneAll("/v1/secrets/app", "/v1/proxies/main", "/v1/proxies/renamed",
			"/v1/proxies/renamed/targets/db1", "/v1/proxies/renamed/endpoints/reads"),
		Steps: []resource.TestStep{
			{
				Config: e.e2eConfig("main", "SET SESSION wait_timeout = 1234", 100),
				Check:  checkServes("1234"),
			},
			{
				// A pool setting changes in place; the node applies it
				// before apply returns.
				Config: e.e2eConfig("main", "SET SESSION wait_timeout = 4321", 50),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{
						plancheck.ExpectResourceAction("dbproxy_target_group.main", plancheck.ResourceActionUpdate),
						plancheck.ExpectResourceAction("dbproxy_target.db1", plancheck.ResourceActionNoop),
					},
				},
				Check: resource.ComposeTestCheckFunc(
					checkServes("4321"),
					func(*terraform.State) error {
						pc := e.node("a").Node.Node().Config().Proxies[0].Pool
						if pc.MaxConnectionsPercent != 50 {
							return fmt.Errorf("node a pool: max_connections_percent %d, want 50", pc.MaxConnectionsPercent)
						}
						return nil
					},
				),
			},
			{
				// Lesson 4: a replaced proxy takes its children with it.
				Config: e.e2eConfig("renamed", "SET SESSION wait_timeout = 4321", 50),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{
						replaced("dbproxy_proxy.main"),
						replaced("dbproxy_target_group.main"),
						replaced("dbproxy_target.db1"),
						replaced("dbproxy_endpoint.reads"),
					},
				},
				Check: resource.ComposeTestCheckFunc(
					checkServes("4321"),
					func(*terraform.State) error { return e.checkGone("/v1/proxies/main")(nil) },
				),
			},
			{
				// Also when it keeps its name (tainted here): deleting
				// the proxy deletes its children on the control plane, so
				// children left alone would be gone after the apply.
				Taint:  []string{"dbproxy_proxy.main"},
				Config: e.e2eConfig("renamed", "SET SESSION wait_timeout = 4321", 50),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{
						replaced("dbproxy_proxy.main"),
						replaced("dbproxy_target_group.main"),
						replaced("dbproxy_target.db1"),
						replaced("dbproxy_endpoint.reads"),
					},
				},
				Check: checkServes("4321"),
			},
		},
	})
}
