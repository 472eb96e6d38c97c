package provider

import (
	"fmt"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/dbproxy/dbproxy/internal/model"
)

func iamUserConfig(name, path string) string {
	if path == "" {
		return fmt.Sprintf(`
resource "dbproxy_iam_user" "app" {
  name = %q
}
`, name)
	}
	return fmt.Sprintf(`
resource "dbproxy_iam_user" "app" {
  name = %q
  path = %q
}
`, name, path)
}

// checkIAMUser checks the stored user through the API.
func (e *testEnv) checkIAMUser(name, path string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		var u model.User
		found, err := e.apiGet("/v1/iam/users/"+name, &u)
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("IAM user %q does not exist", name)
		}
		if u.Path != path {
			return fmt.Errorf("IAM user %q has path %q, want %q", name, u.Path, path)
		}
		return nil
	}
}

func TestAccIAMUser_basic(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: e.factories(),
		CheckDestroy: func(s *terraform.State) error {
			for _, n := range []string{"alice", "bob"} {
				if err := e.checkGone("/v1/iam/users/" + n)(s); err != nil {
					return err
				}
			}
			return nil
		},
		Steps: []resource.TestStep{
			{
				Config: e.config(iamUserConfig("alice", "/team/")),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("dbproxy_iam_user.app", tfjsonpath.New("id"), knownvalue.StringExact("alice")),
					statecheck.ExpectKnownValue("dbproxy_iam_user.app", tfjsonpath.New("path"), knownvalue.StringExact("/team/")),
				},
				Check: e.checkIAMUser("alice", "/team/"),
			},
			{
				ResourceName:      "dbproxy_iam_user.app",
				ImportState:       true,
				ImportStateVerify: true,
			},
			{
				Config: e.config(iamUserConfig("alice", "/ops/")),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_iam_user.app", plancheck.ResourceActionUpdate)},
				},
				Check: e.checkIAMUser("alice", "/ops/"),
			},
			{
				// Drift made through the API is corrected.
				PreConfig: func() { e.apiDo("PUT", "/v1/iam/users/alice", map[string]any{"path": "/elsewhere/"}) },
				Config:    e.config(iamUserConfig("alice", "/ops/")),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_iam_user.app", plancheck.ResourceActionUpdate)},
				},
				Check: e.checkIAMUser("alice", "/ops/"),
			},
			{
				// Removing the optional path sets the API's default.
				Config: e.config(iamUserConfig("alice", "")),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_iam_user.app", plancheck.ResourceActionUpdate)},
				},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("dbproxy_iam_user.app", tfjsonpath.New("path"), knownvalue.StringExact("/")),
				},
				Check: e.checkIAMUser("alice", "/"),
			},
			{
				// Deleted outside Terraform: planned for re-creation.
				PreConfig: func() { e.apiDo("DELETE", "/v1/iam/users/alice", nil) },
				Config:    e.config(iamUserConfig("alice", "")),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_iam_user.app", plancheck.ResourceActionCreate)},
				},
				Check: e.checkIAMUser("alice", "/"),
			},
			{
				// A new name replaces the user.
				Config: e.config(iamUserConfig("bob", "")),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_iam_user.app", plancheck.ResourceActionDestroyBeforeCreate)},
				},
				Check: resource.ComposeTestCheckFunc(
					e.checkIAMUser("bob", "/"),
					e.checkGone("/v1/iam/users/alice"),
				),
			},
		},
	})
}

func TestAccIAMUser_validation(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	// A user made outside Terraform is not taken over by a create.
	e.apiDo("PUT", "/v1/iam/users/taken", map[string]any{})
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: e.factories(),
		Steps: []resource.TestStep{
			{
				Config:      e.config(iamUserConfig("not a name!", "")),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Invalid Attribute Value.*name.*user name`),
			},
			{
				Config:      e.config(iamUserConfig("carol", "no-slashes")),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Invalid Attribute Value.*path.*must begin and end with '/'`),
			},
			{
				Config:      e.config(iamUserConfig("taken", "")),
				ExpectError: regexp.MustCompile(`(?s)Object Already Exists.*terraform import <address> taken`),
			},
			{
				Config:        e.config(iamUserConfig("taken", "")),
				ResourceName:  "dbproxy_iam_user.app",
				ImportState:   true,
				ImportStateId: "a/b",
				ExpectError:   regexp.MustCompile(`(?s)Invalid Import ID.*"name"`),
			},
		},
	})
}
