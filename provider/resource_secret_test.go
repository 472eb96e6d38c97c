package provider

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/nodetest"
)

func secretConfig(username, password string, version int) string {
	return fmt.Sprintf(`
resource "dbproxy_secret" "app" {
  name                = "app"
  description         = "application user"
  username            = %q
  password_wo         = %q
  password_wo_version = %d
}
`, username, password, version)
}

func TestAccSecret_basic(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: e.factories(),
		CheckDestroy:             e.checkGone("/v1/secrets/app"),
		Steps: []resource.TestStep{
			{
				Config: e.config(secretConfig("app", "first-password", 1)),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("dbproxy_secret.app", tfjsonpath.New("id"), knownvalue.StringExact("app")),
					statecheck.ExpectKnownValue("dbproxy_secret.app", tfjsonpath.New("username"), knownvalue.StringExact("app")),
					// Write-only: never in the state.
					statecheck.ExpectKnownValue("dbproxy_secret.app", tfjsonpath.New("password_wo"), knownvalue.Null()),
					statecheck.ExpectKnownValue("dbproxy_secret.app", tfjsonpath.New("password_wo_version"), knownvalue.Int64Exact(1)),
				},
				Check: e.checkSecret("app", "app", 1),
			},
			{
				ResourceName:      "dbproxy_secret.app",
				ImportState:       true,
				ImportStateVerify: true,
				// Write-only values are never read back.
				ImportStateVerifyIgnore: []string{"password_wo"},
			},
			{
				Config: e.config(secretConfig("app2", "first-password", 1)),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_secret.app", plancheck.ResourceActionUpdate)},
				},
				Check: e.checkSecret("app", "app2", 1),
			},
			{
				// Drift made through the API shows in the plan and is
				// corrected.
				PreConfig: func() {
					e.apiDo("PUT", "/v1/secrets/app", map[string]any{"username": "someone-else", "password_version": 1})
				},
				Config: e.config(secretConfig("app2", "first-password", 1)),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_secret.app", plancheck.ResourceActionUpdate)},
				},
				Check: e.checkSecret("app", "app2", 1),
			},
			{
				// Deleted outside Terraform: planned for re-creation.
				PreConfig: func() { e.apiDo("DELETE", "/v1/secrets/app", nil) },
				Config:    e.config(secretConfig("app2", "first-password", 1)),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_secret.app", plancheck.ResourceActionCreate)},
				},
				Check: e.checkSecret("app", "app2", 1),
			},
			{
				// A new name replaces the secret.
				Config: e.config(`
resource "dbproxy_secret" "app" {
  name        = "app-renamed"
  username    = "app2"
  password_wo = "first-password"
}
`),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_secret.app", plancheck.ResourceActionDestroyBeforeCreate)},
				},
				Check: resource.ComposeTestCheckFunc(
					e.checkSecret("app-renamed", "app2", 0),
					func(*terraform.State) error { return e.checkGone("/v1/secrets/app")(nil) },
					// Removing the optional description cleared it.
					func(*terraform.State) error {
						var s model.Secret
						if _, err := e.apiGet("/v1/secrets/app-renamed", &s); err != nil {
							return err
						}
						if s.Description != "" {
							return fmt.Errorf("description = %q after it was removed", s.Description)
						}
						return nil
					},
				),
			},
		},
	})
}

// checkSecret checks the stored secret through the API.
func (e *testEnv) checkSecret(name, username string, version int64) resource.TestCheckFunc {
	return func(*terraform.State) error {
		var s model.Secret
		found, err := e.apiGet("/v1/secrets/"+name, &s)
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("secret %q does not exist", name)
		}
		if s.Username != username || s.PasswordVersion != version {
			return fmt.Errorf("secret %q: username %q version %d, want %q and %d", name, s.Username, s.PasswordVersion, username, version)
		}
		if s.Password != "" {
			return fmt.Errorf("the API returned the password of secret %q", name)
		}
		return nil
	}
}

func TestAccSecret_validation(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	bad := func(name, username, rest string) string {
		return e.config(fmt.Sprintf(`
resource "dbproxy_secret" "bad" {
  name     = %q
  username = %q
  %s
}
`, name, username, rest))
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: e.factories(),
		Steps: []resource.TestStep{
			{
				Config:      bad("not a name!", "u", `password_wo = "p"`),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Invalid Attribute Value.*name`),
			},
			{
				Config:      bad("ok", "", `password_wo = "p"`),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Invalid Attribute Value.*username`),
			},
			{
				Config:      bad("ok", "u", "password_wo = \"p\"\npassword_wo_version = -1"),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)password_wo_version.*at least 0`),
			},
			{
				// The password is required.
				Config:      bad("ok", "u", ""),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Missing required argument.*password_wo`),
			},
		},
	})
}

// TestAccSecret_rotation bumps password_wo_version: the node takes the new
// password and refuses the old one.
func TestAccSecret_rotation(t *testing.T) {
	e := newTestEnv(t, envOptions{Nodes: []string{"a"}, Database: true})
	// The proxy is made through the API: this test is about the secret.
	proxy := func() {
		e.apiDo("PUT", "/v1/proxies/main", map[string]any{"zones": []string{"a"}, "auth": []map[string]any{{"secret": "app"}}})
		var tg model.Target
		e.cp.Do("PUT", "/v1/proxies/main/targets/db1", map[string]any{"host": e.db.Host, "port": e.db.Port, "zone": "a"}, &tg)
		e.cp.WaitRollout(tg.Revision, "a")
	}
	login := func(password string) error {
		var p model.Proxy
		if _, err := e.apiGet("/v1/proxies/main", &p); err != nil {
			return err
		}
		addr := fmt.Sprintf("%s:%d", e.nodes[0].Host, p.Port)
		db, err := sql.Open("mysql", fmt.Sprintf("%s:%s@tcp(%s)/%s?timeout=5s", nodetest.User, password, addr, nodetest.Database))
		if err != nil {
			return err
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return db.PingContext(ctx)
	}
	const newPassword = "rotated-Pa55"
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: e.factories(),
		Steps: []resource.TestStep{
			{
				Config: e.config(secretConfig(nodetest.User, nodetest.Password, 1)),
				Check: func(*terraform.State) error {
					proxy()
					return login(nodetest.Password)
				},
			},
			{
				// Changing only the password sends nothing: write-only
				// values are not compared.
				Config: e.config(secretConfig(nodetest.User, newPassword, 1)),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
				Check: func(*terraform.State) error { return login(nodetest.Password) },
			},
			{
				PreConfig: func() {
					if err := e.db.Exec(context.Background(), fmt.Sprintf("ALTER USER '%s'@'%%' IDENTIFIED BY '%s'", nodetest.User, newPassword)); err != nil {
						t.Fatal(err)
					}
				},
				Config: e.config(secretConfig(nodetest.User, newPassword, 2)),
				Check: func(*terraform.State) error {
					// Apply returned after the node acked: no waiting here.
					if err := login(newPassword); err != nil {
						return fmt.Errorf("login with the rotated password: %w", err)
					}
					if err := login(nodetest.Password); err == nil {
						return fmt.Errorf("the old password still logs in after the rotation")
					}
					// The proxy made through the API goes before the
					// secret it uses is destroyed.
					e.apiDo("DELETE", "/v1/proxies/main", nil)
					return nil
				},
			},
		},
	})
}
