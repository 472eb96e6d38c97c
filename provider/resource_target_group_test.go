package provider

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/dbproxy/dbproxy/dataplane/config"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/nodetest"
	"github.com/dbproxy/dbproxy/internal/vocab"
)

// targetGroupConfig is a secret of nodetest's user, a proxy in zones a and
// b, and, unless pool is "", a target group whose connection_pool_config
// block holds pool.
func (e *testEnv) targetGroupConfig(proxy, pool string) string {
	tg := ""
	if pool != "" {
		tg = `
resource "dbproxy_target_group" "main" {
  proxy_name = dbproxy_proxy.main.id

  connection_pool_config {` + pool + `}
}
`
	}
	return e.config(fmt.Sprintf(`
resource "dbproxy_secret" "app" {
  name        = "app"
  username    = %q
  password_wo = %q
}

resource "dbproxy_proxy" "main" {
  name  = %q
  zones = ["a", "b"]

  auth {
    secret = dbproxy_secret.app.name
  }
}
`, nodetest.User, nodetest.Password, proxy) + tg)
}

// checkGroup checks the pool settings the API holds for proxy (stored
// tells whether a group is stored at all, or the defaults apply).
func (e *testEnv) checkGroup(proxy string, stored bool, want model.PoolConfig) resource.TestCheckFunc {
	return func(*terraform.State) error {
		var g model.TargetGroup
		found, err := e.apiGet("/v1/proxies/"+proxy+"/target-group", &g)
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("proxy %q has no target group", proxy)
		}
		if (g.Revision != 0) != stored {
			return fmt.Errorf("target group of %q stored at revision %d, want stored=%v", proxy, g.Revision, stored)
		}
		pc := g.ConnectionPoolConfig
		if pc.MaxConnectionsPercent != want.MaxConnectionsPercent || pc.MaxIdleConnectionsPercent != want.MaxIdleConnectionsPercent ||
			pc.ConnectionBorrowTimeout != want.ConnectionBorrowTimeout || pc.InitQuery != want.InitQuery ||
			!slices.Equal(pc.SessionPinningFilters, want.SessionPinningFilters) {
			return fmt.Errorf("target group of %q = %+v, want %+v", proxy, pc, want)
		}
		return nil
	}
}

// checkNodePools checks that every node applied the pool settings when
// apply returns, and that a new session through each node starts with
// wait_timeout as init_query sets it ("" for the server's default).
func (e *testEnv) checkNodePools(proxy string, want model.PoolConfig, waitTimeout string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		for _, n := range e.nodes {
			var pc *config.PoolConfig
			for _, p := range n.Node.Node().Config().Proxies {
				if p.Name == proxy {
					pc = &p.Pool
				}
			}
			if pc == nil {
				return fmt.Errorf("node %s has no proxy %q", n.ID, proxy)
			}
			if pc.MaxConnectionsPercent != want.MaxConnectionsPercent || pc.MaxIdleConnectionsPercent != want.MaxIdleConnectionsPercent ||
				pc.ConnectionBorrowTimeout.D() != time.Duration(want.ConnectionBorrowTimeout)*time.Second || pc.InitQuery != want.InitQuery {
				return fmt.Errorf("node %s pool = %+v, want %+v", n.ID, *pc, want)
			}
			addr, ok := n.Addr(proxy, model.DefaultEndpoint)
			if !ok {
				return fmt.Errorf("node %s does not serve proxy %q", n.ID, proxy)
			}
			q := "SELECT IF(@@session.wait_timeout = @@global.wait_timeout, '', @@session.wait_timeout)"
			got, err := queryOne(addr, q)
			if err != nil {
				return fmt.Errorf("node %s: %w", n.ID, err)
			}
			if got != waitTimeout {
				return fmt.Errorf("node %s: a new session has wait_timeout %q (\"\": the server's), want %q", n.ID, got, waitTimeout)
			}
		}
		return nil
	}
}

// queryOne runs q through addr as nodetest's user on a new connection.
func queryOne(addr, q string) (string, error) {
	db, err := sql.Open("mysql", nodetest.DSN(addr, "timeout=5s"))
	if err != nil {
		return "", err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var v string
	if err := db.QueryRowContext(ctx, q).Scan(&v); err != nil {
		return "", fmt.Errorf("%s through %s: %w", q, addr, err)
	}
	return v, nil
}

// defaultPool is what a proxy without a stored target group pools with.
var defaultPool = model.PoolConfig{MaxConnectionsPercent: 100, MaxIdleConnectionsPercent: 50, ConnectionBorrowTimeout: 120, SessionPinningFilters: []string{}}

func TestAccTargetGroup_basic(t *testing.T) {
	e := newTestEnv(t, envOptions{Nodes: []string{"a", "b"}, Database: true})
	const addr = "dbproxy_target_group.main"
	// The database target is made through the API: this test is about the
	// pool settings. It goes with its proxy.
	target := func(proxy string) resource.TestCheckFunc {
		return func(*terraform.State) error {
			var tg model.Target
			e.cp.Do("PUT", "/v1/proxies/"+proxy+"/targets/db1", map[string]any{"host": e.db.Host, "port": e.db.Port, "zone": "a"}, &tg)
			e.cp.WaitRollout(tg.Revision, "a", "b")
			return nil
		}
	}
	first := model.PoolConfig{MaxConnectionsPercent: 40, MaxIdleConnectionsPercent: 20, ConnectionBorrowTimeout: 7,
		InitQuery: "SET SESSION wait_timeout = 1234", SessionPinningFilters: []string{vocab.PinningFilterExcludeVariableSets}}
	firstHCL := `
    max_connections_percent      = 40
    max_idle_connections_percent = 20
    connection_borrow_timeout    = 7
    init_query                   = "SET SESSION wait_timeout = 1234"
    session_pinning_filters      = ["EXCLUDE_VARIABLE_SETS"]
  `
	second := model.PoolConfig{MaxConnectionsPercent: 60, MaxIdleConnectionsPercent: 20, ConnectionBorrowTimeout: 7,
		InitQuery: "SET SESSION wait_timeout = 2345", SessionPinningFilters: []string{vocab.PinningFilterExcludeVariableSets}}
	secondHCL := strings.NewReplacer("= 40", "= 60", "1234", "2345").Replace(firstHCL)
	// 0 is the control plane's "default" for these two: kept as 0 in the
	// state while the server holds the default, so no perpetual diff.
	zeros := model.PoolConfig{MaxConnectionsPercent: 30, MaxIdleConnectionsPercent: 30, ConnectionBorrowTimeout: 120,
		InitQuery: "SET SESSION wait_timeout = 3456", SessionPinningFilters: []string{}}
	zerosHCL := `
    max_connections_percent      = 30
    max_idle_connections_percent = 0
    connection_borrow_timeout    = 0
    init_query                   = "SET SESSION wait_timeout = 3456"
  `
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: e.factories(),
		CheckDestroy:             e.checkGoneAll("/v1/proxies/main", "/v1/proxies/renamed"),
		Steps: []resource.TestStep{
			{
				Config: e.targetGroupConfig("main", firstHCL),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("id"), knownvalue.StringExact("main")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("name"), knownvalue.StringExact(model.DefaultTargetGroup)),
				},
				Check: resource.ComposeTestCheckFunc(
					e.checkGroup("main", true, first),
					target("main"),
					e.checkNodePools("main", first, "1234"),
				),
			},
			{
				ResourceName:      addr,
				ImportState:       true,
				ImportStateVerify: true,
			},
			{
				// Applied on every node when apply returns: new
				// sessions start with the new init_query.
				Config: e.targetGroupConfig("main", secondHCL),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate)},
				},
				Check: resource.ComposeTestCheckFunc(
					e.checkGroup("main", true, second),
					e.checkNodePools("main", second, "2345"),
				),
			},
			{
				// Every setting removed: each goes back to its default
				// on the server and the nodes, init_query stops.
				Config: e.targetGroupConfig("main", "\n  "),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("connection_pool_config").AtMapKey("init_query"), knownvalue.Null()),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("connection_pool_config").AtMapKey("max_idle_connections_percent"), knownvalue.Int64Exact(50)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("connection_pool_config").AtMapKey("session_pinning_filters"), knownvalue.SetSizeExact(0)),
				},
				Check: resource.ComposeTestCheckFunc(
					e.checkGroup("main", true, defaultPool),
					e.checkNodePools("main", defaultPool, ""),
				),
			},
			{
				Config: e.targetGroupConfig("main", zerosHCL),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("connection_pool_config").AtMapKey("connection_borrow_timeout"), knownvalue.Int64Exact(0)),
				},
				Check: resource.ComposeTestCheckFunc(
					e.checkGroup("main", true, zeros),
					e.checkNodePools("main", zeros, "3456"),
				),
			},
			{
				// Drift made through the API shows in the plan and is
				// corrected.
				PreConfig: func() {
					e.apiDo("PUT", "/v1/proxies/main/target-group", map[string]any{"connection_pool_config": map[string]any{
						"max_connections_percent": 10, "init_query": "SET SESSION wait_timeout = 99"}})
				},
				Config: e.targetGroupConfig("main", zerosHCL),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate)},
				},
				Check: resource.ComposeTestCheckFunc(
					e.checkGroup("main", true, zeros),
					e.checkNodePools("main", zeros, "3456"),
				),
			},
			{
				// Destroying the target group resets the settings to
				// the defaults (the stored group is deleted), on the
				// nodes too by the time the destroy returns.
				Config: e.targetGroupConfig("main", ""),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(addr, plancheck.ResourceActionDestroy)},
				},
				Check: resource.ComposeTestCheckFunc(
					e.checkGroup("main", false, defaultPool),
					e.checkNodePools("main", defaultPool, ""),
				),
			},
			{
				Config: e.targetGroupConfig("main", firstHCL),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(addr, plancheck.ResourceActionCreate)},
				},
				Check: e.checkGroup("main", true, first),
			},
			{
				// Replacing the proxy replaces its target group, which
				// references the proxy's id: the settings are applied to
				// the new proxy, not lost with the old one.
				Config: e.targetGroupConfig("renamed", firstHCL),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{
						plancheck.ExpectResourceAction("dbproxy_proxy.main", plancheck.ResourceActionDestroyBeforeCreate),
						plancheck.ExpectResourceAction(addr, plancheck.ResourceActionDestroyBeforeCreate),
						plancheck.ExpectUnknownValue(addr, tfjsonpath.New("proxy_name")),
					},
				},
				Check: resource.ComposeTestCheckFunc(
					func(*terraform.State) error { return e.checkGone("/v1/proxies/main")(nil) },
					e.checkGroup("renamed", true, first),
					resource.TestCheckResourceAttr(addr, "proxy_name", "renamed"),
					target("renamed"),
					e.checkNodePools("renamed", first, "1234"),
				),
			},
			{
				// A replacement without a new name (tainted, as
				// -replace does): the id is unknown in the plan all the
				// same, so the group is replaced with the proxy instead
				// of being lost with the old one.
				Taint:  []string{"dbproxy_proxy.main"},
				Config: e.targetGroupConfig("renamed", firstHCL),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{
						plancheck.ExpectResourceAction("dbproxy_proxy.main", plancheck.ResourceActionDestroyBeforeCreate),
						plancheck.ExpectResourceAction(addr, plancheck.ResourceActionDestroyBeforeCreate),
					},
				},
				Check: e.checkGroup("renamed", true, first),
			},
			{
				// The proxy deleted outside Terraform: both are planned
				// for re-creation.
				PreConfig: func() { e.apiDo("DELETE", "/v1/proxies/renamed", nil) },
				Config:    e.targetGroupConfig("renamed", firstHCL),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{
						plancheck.ExpectResourceAction("dbproxy_proxy.main", plancheck.ResourceActionCreate),
						plancheck.ExpectResourceAction(addr, plancheck.ResourceActionCreate),
					},
				},
				Check: e.checkGroup("renamed", true, first),
			},
		},
	})
}

func TestAccTargetGroup_validation(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	bad := func(proxy, pool string) string {
		block := ""
		if pool != "-" {
			block = "\n  connection_pool_config {\n" + pool + "\n  }\n"
		}
		return e.config(fmt.Sprintf(`
resource "dbproxy_target_group" "bad" {
  proxy_name = %q
%s}
`, proxy, block))
	}
	steps := []struct {
		proxy, pool, want string
	}{
		{"main", "    max_connections_percent = 0", `max_connections_percent value must be between 1 and 100, got: 0`},
		{"main", "    max_connections_percent = 101", `max_connections_percent value must be between 1 and 100, got: 101`},
		{"main", "    max_idle_connections_percent = 101", `max_idle_connections_percent value must be between 0 and 100, got: 101`},
		{"main", "    max_idle_connections_percent = -1", `max_idle_connections_percent value must be between 0 and 100, got: -1`},
		// The cross-field rule, the model's.
		{"main", "    max_connections_percent      = 40\n    max_idle_connections_percent = 60",
			`(?s)Invalid Attribute Value.*must be 0-max_connections_percent \(40\), got 60`},
		{"main", "    connection_borrow_timeout = 3601", `connection_borrow_timeout value must be between 0 and 3600, got: 3601`},
		{"main", "    connection_borrow_timeout = -1", `connection_borrow_timeout value must be between 0 and 3600, got: -1`},
		{"main", `    session_pinning_filters = ["EXCLUDE_EVERYTHING"]`, `session_pinning_filters\[Value\("EXCLUDE_EVERYTHING"\)\] value must be one of: \["EXCLUDE_VARIABLE_SETS"\]`},
		{"main", `    init_query = ""`, `init_query string length must be between 1 and 4096, got: 0`},
		{"main", `    init_query = "` + strings.Repeat("x", 4097) + `"`, `init_query string length must be between 1 and 4096, got: 4097`},
		{"1-bad", "", `(?s)Invalid Attribute Value.*"1-bad" is not a valid proxy name`},
		{"main", "-", `Block connection_pool_config must have a configuration value`},
	}
	var ts []resource.TestStep
	for _, s := range steps {
		ts = append(ts, resource.TestStep{Config: bad(s.proxy, s.pool), PlanOnly: true, ExpectError: wrapRE(s.want)})
	}
	// The import id is the proxy's name, one element.
	ts = append(ts, resource.TestStep{
		Config:        bad("main", ""),
		ResourceName:  "dbproxy_target_group.bad",
		ImportState:   true,
		ImportStateId: "main/default",
		ExpectError:   wrapRE(`(?s)Invalid Import ID.*the import id must have the form "proxy_name", got "main/default"`),
	})
	resource.Test(t, resource.TestCase{ProtoV6ProviderFactories: e.factories(), Steps: ts})
}
