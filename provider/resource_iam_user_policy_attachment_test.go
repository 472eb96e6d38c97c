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
)

// attachmentConfig attaches policy "one" or "two" to user alice.
func attachmentConfig(policy string) string {
	return fmt.Sprintf(`
resource "dbproxy_iam_user" "alice" {
  name = "alice"
}

resource "dbproxy_iam_policy" "one" {
  name   = "one"
  policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = "dbproxy:Connect", Resource = "proxy/main/dbuser/one" }]
  })
}

resource "dbproxy_iam_policy" "two" {
  name   = "two"
  policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = "dbproxy:Connect", Resource = "proxy/main/dbuser/two" }]
  })
}

resource "dbproxy_iam_user_policy_attachment" "a" {
  user        = dbproxy_iam_user.alice.name
  policy_name = dbproxy_iam_policy.%s.name
}
`, policy)
}

// checkAttached checks through the API that policy is attached to user.
func (e *testEnv) checkAttached(user, policy string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		found, err := e.apiGet("/v1/iam/users/"+user+"/policies/"+policy, &map[string]any{})
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("policy %q is not attached to user %q", policy, user)
		}
		return nil
	}
}

func TestAccIAMUserPolicyAttachment_basic(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: e.factories(),
		CheckDestroy: func(s *terraform.State) error {
			for _, p := range []string{"/v1/iam/users/alice/policies/one", "/v1/iam/users/alice/policies/two", "/v1/iam/users/alice", "/v1/iam/policies/one"} {
				if err := e.checkGone(p)(s); err != nil {
					return err
				}
			}
			return nil
		},
		Steps: []resource.TestStep{
			{
				Config: e.config(attachmentConfig("one")),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("dbproxy_iam_user_policy_attachment.a", tfjsonpath.New("id"), knownvalue.StringExact("alice/one")),
				},
				Check: e.checkAttached("alice", "one"),
			},
			{
				ResourceName:      "dbproxy_iam_user_policy_attachment.a",
				ImportState:       true,
				ImportStateId:     "alice/one",
				ImportStateVerify: true,
			},
			{
				// Detached outside Terraform: planned for re-attachment.
				PreConfig: func() { e.apiDo("DELETE", "/v1/iam/users/alice/policies/one", nil) },
				Config:    e.config(attachmentConfig("one")),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_iam_user_policy_attachment.a", plancheck.ResourceActionCreate)},
				},
				Check: e.checkAttached("alice", "one"),
			},
			{
				// Another policy replaces the attachment.
				Config: e.config(attachmentConfig("two")),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_iam_user_policy_attachment.a", plancheck.ResourceActionDestroyBeforeCreate)},
				},
				Check: resource.ComposeTestCheckFunc(
					e.checkAttached("alice", "two"),
					e.checkGone("/v1/iam/users/alice/policies/one"),
				),
			},
		},
	})
}

func TestAccIAMUserPolicyAttachment_validation(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	e.apiDo("PUT", "/v1/iam/users/bob", map[string]any{})
	e.apiDo("PUT", "/v1/iam/policies/p", map[string]string{"policy": connectDocJSON})
	e.apiDo("PUT", "/v1/iam/users/bob/policies/p", map[string]any{})
	one := func(user, policy string) string {
		return e.config(fmt.Sprintf(`
resource "dbproxy_iam_user_policy_attachment" "a" {
  user        = %q
  policy_name = %q
}
`, user, policy))
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: e.factories(),
		Steps: []resource.TestStep{
			{
				Config:      one("bad user!", "p"),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Invalid Attribute Value.*user\s+= "bad user!".*user name`),
			},
			{
				Config:      one("bob", "bad policy!"),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Invalid Attribute Value.*policy_name = "bad policy!".*policy name`),
			},
			{
				// A policy that does not exist: the API's error is on
				// policy_name.
				Config:      one("bob", "missing"),
				ExpectError: regexp.MustCompile(`(?s)Cannot Create IAM User Policy Attachment "bob/missing".*policy_name = "missing".*policy "missing"`),
			},
			{
				// An attachment made outside Terraform is imported, not
				// taken over.
				Config:      one("bob", "p"),
				ExpectError: regexp.MustCompile(`(?s)Object Already Exists.*terraform import <address> bob/p`),
			},
			{
				Config:        one("bob", "p"),
				ResourceName:  "dbproxy_iam_user_policy_attachment.a",
				ImportState:   true,
				ImportStateId: "bob",
				ExpectError:   regexp.MustCompile(`(?s)Invalid Import ID.*"user/policy_name"`),
			},
		},
	})
}
