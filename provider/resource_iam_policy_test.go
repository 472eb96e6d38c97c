package provider

import (
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/dbproxy/dbproxy/internal/model"
)

// policyConfig is a policy whose document is the HCL expression doc.
func policyConfig(name, description, doc string) string {
	d := ""
	if description != "" {
		d = fmt.Sprintf("  description = %q\n", description)
	}
	return fmt.Sprintf(`
resource "dbproxy_iam_policy" "p" {
  name   = %q
%s  policy = %s
}
`, name, d, doc)
}

// The same document three ways: jsonencode, and a heredoc with other
// whitespace and key order.
const (
	connectDocHCL = `jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = "dbproxy:Connect"
      Resource = "proxy/main/dbuser/app"
    }]
  })`
	connectDocHeredoc = `<<-EOT
    {
      "Statement": [
        {
          "Resource": "proxy/main/dbuser/app",
          "Action":   "dbproxy:Connect",
          "Effect":   "Allow"
        }
      ],
      "Version": "2012-10-17"
    }
  EOT`
	connectDocJSON = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"dbproxy:Connect","Resource":"proxy/main/dbuser/app"}]}`
	readerDocJSON  = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"dbproxy:Connect","Resource":"proxy/main/dbuser/reader"}]}`
)

// checkPolicy checks the stored policy through the API: its document
// means the same as want.
func (e *testEnv) checkPolicy(name, description, want string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		var p model.Policy
		found, err := e.apiGet("/v1/iam/policies/"+name, &p)
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("IAM policy %q does not exist", name)
		}
		var got, exp any
		if err := json.Unmarshal([]byte(p.Document), &got); err != nil {
			return fmt.Errorf("stored document of %q: %w", name, err)
		}
		if err := json.Unmarshal([]byte(want), &exp); err != nil {
			return err
		}
		if !reflect.DeepEqual(got, exp) {
			return fmt.Errorf("IAM policy %q has document %s, want %s", name, p.Document, want)
		}
		if p.Description != description {
			return fmt.Errorf("IAM policy %q has description %q, want %q", name, p.Description, description)
		}
		return nil
	}
}

func TestAccIAMPolicy_basic(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: e.factories(),
		CheckDestroy: func(s *terraform.State) error {
			if err := e.checkGone("/v1/iam/policies/connect")(s); err != nil {
				return err
			}
			return e.checkGone("/v1/iam/policies/connect2")(s)
		},
		Steps: []resource.TestStep{
			{
				Config: e.config(policyConfig("connect", "lets app connect", connectDocHCL)),
				Check:  e.checkPolicy("connect", "lets app connect", connectDocJSON),
			},
			{
				ResourceName:      "dbproxy_iam_policy.p",
				ImportState:       true,
				ImportStateVerify: true,
			},
			{
				// Other whitespace and key order: nothing to do.
				Config: e.config(policyConfig("connect", "lets app connect", connectDocHeredoc)),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
			},
			{
				// A real change updates the policy in place.
				Config: e.config(policyConfig("connect", "lets app connect", strings.ReplaceAll(connectDocHeredoc, "dbuser/app", "dbuser/reader"))),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_iam_policy.p", plancheck.ResourceActionUpdate)},
				},
				Check: e.checkPolicy("connect", "lets app connect", readerDocJSON),
			},
			{
				// The API reformatting the same document is no drift...
				PreConfig: func() {
					e.apiDo("PUT", "/v1/iam/policies/connect", map[string]string{"description": "lets app connect", "policy": readerDocJSON})
				},
				Config: e.config(policyConfig("connect", "lets app connect", strings.ReplaceAll(connectDocHeredoc, "dbuser/app", "dbuser/reader"))),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
			},
			{
				// ...another document set through the API is, and is
				// corrected.
				PreConfig: func() {
					e.apiDo("PUT", "/v1/iam/policies/connect", map[string]string{"description": "lets app connect", "policy": connectDocJSON})
				},
				Config: e.config(policyConfig("connect", "lets app connect", strings.ReplaceAll(connectDocHeredoc, "dbuser/app", "dbuser/reader"))),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_iam_policy.p", plancheck.ResourceActionUpdate)},
				},
				Check: e.checkPolicy("connect", "lets app connect", readerDocJSON),
			},
			{
				// Deleted outside Terraform: planned for re-creation.
				PreConfig: func() { e.apiDo("DELETE", "/v1/iam/policies/connect", nil) },
				Config:    e.config(policyConfig("connect", "lets app connect", connectDocHCL)),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_iam_policy.p", plancheck.ResourceActionCreate)},
				},
				Check: e.checkPolicy("connect", "lets app connect", connectDocJSON),
			},
			{
				// A new name replaces it; the removed description is
				// cleared.
				Config: e.config(policyConfig("connect2", "", connectDocHCL)),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_iam_policy.p", plancheck.ResourceActionDestroyBeforeCreate)},
				},
				Check: resource.ComposeTestCheckFunc(
					e.checkPolicy("connect2", "", connectDocJSON),
					e.checkGone("/v1/iam/policies/connect"),
				),
			},
		},
	})
}

func TestAccIAMPolicy_validation(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: e.factories(),
		Steps: []resource.TestStep{
			{
				Config:      e.config(policyConfig("bad", "", `"{\"Statement\": ["`)),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Invalid JSON String Value.*policy =`),
			},
			{
				Config:      e.config(policyConfig("not a name!", "", connectDocHCL)),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Invalid Attribute Value.*name\s+= "not a name!".*policy name`),
			},
			{
				Config:      e.config(policyConfig("big", "", fmt.Sprintf(`jsonencode({Statement = [{Effect = "Allow", Action = "dbproxy:Connect", Resource = "proxy/main/dbuser/%s"}]})`, strings.Repeat("x", 6200)))),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Invalid Attribute Value.*policy =.*at most 6144 characters`),
			},
			{
				// Valid JSON but not a valid policy: the API refuses it at
				// apply, on the policy attribute.
				Config: e.config(policyConfig("bad", "", `jsonencode({
    Version   = "2012-10-17"
    Statement = [{
      Effect   = "Maybe"
      Action   = "dbproxy:Connect"
      Resource = "proxy/main/dbuser/app"
    }]
  })`)),
				ExpectError: regexp.MustCompile(`(?s)Cannot Create IAM Policy "bad".*with dbproxy_iam_policy.p,.*policy = jsonencode.*Statement\[0\]\.Effect`),
			},
		},
	})
}
