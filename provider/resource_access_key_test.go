package provider

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/dbproxy/dbproxy/internal/apiclient"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/sigv4"
)

func accessKeyConfig(user, status string) string {
	s := ""
	if status != "" {
		s = fmt.Sprintf("  status = %q\n", status)
	}
	return fmt.Sprintf(`
resource "dbproxy_iam_user" "first" {
  name = "app"
}

resource "dbproxy_iam_user" "second" {
  name = "app2"
}

resource "dbproxy_access_key" "k" {
  user = dbproxy_iam_user.%s.name
%s}
`, user, s)
}

// keyFromState is the access key in the state.
func keyFromState(s *terraform.State) (id, user, secret string, err error) {
	rs, ok := s.RootModule().Resources["dbproxy_access_key.k"]
	if !ok {
		return "", "", "", errors.New("dbproxy_access_key.k is not in the state")
	}
	a := rs.Primary.Attributes
	return a["id"], a["user"], a["secret"], nil
}

// keyClient is an API client signing with the given key.
func (e *testEnv) keyClient(id, secret string) (*apiclient.Client, error) {
	return apiclient.New(apiclient.Options{
		Endpoint:    e.cp.Root().Endpoint,
		Credentials: sigv4.Credentials{AccessKeyID: id, SecretAccessKey: secret},
		CAPEM:       e.cp.CA,
	})
}

// checkKeySigns checks that the key in the state signs API requests as
// its user (active) or is refused as inactive.
func (e *testEnv) checkKeySigns(wantUser string, active bool) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		id, user, secret, err := keyFromState(s)
		if err != nil {
			return err
		}
		if user != wantUser || secret == "" {
			return fmt.Errorf("key %s: user %q, secret set %v; want user %q and a secret", id, user, secret != "", wantUser)
		}
		c, err := e.keyClient(id, secret)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var who struct {
			User        string `json:"user"`
			AccessKeyID string `json:"access_key_id"`
		}
		err = c.Do(ctx, "GET", "/v1/identity", nil, &who)
		if !active {
			var ae *model.Error
			if !errors.As(err, &ae) || ae.Code != "InactiveAccessKey" {
				return fmt.Errorf("inactive key %s: %v; want the control plane to refuse it as inactive", id, err)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("signing with key %s: %w", id, err)
		}
		if who.User != wantUser || who.AccessKeyID != id {
			return fmt.Errorf("key %s signs as %+v, want user %q", id, who, wantUser)
		}
		return nil
	}
}

func TestAccAccessKey_basic(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	// ids remembers every key the test made, for CheckDestroy.
	var ids []string
	var firstSecret string
	remember := func(s *terraform.State) error {
		id, _, secret, err := keyFromState(s)
		if err != nil {
			return err
		}
		if len(ids) == 0 || ids[len(ids)-1] != id {
			ids = append(ids, id)
		}
		if firstSecret == "" {
			firstSecret = secret
		}
		return nil
	}
	keyStatus := func(user, want string) resource.TestCheckFunc {
		return func(s *terraform.State) error {
			id, _, _, err := keyFromState(s)
			if err != nil {
				return err
			}
			var k model.AccessKey
			if _, err := e.apiGet("/v1/iam/users/"+user+"/access-keys/"+id, &k); err != nil {
				return err
			}
			if k.Status != want {
				return fmt.Errorf("key %s has status %q on the control plane, want %q", id, k.Status, want)
			}
			return nil
		}
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: e.factories(),
		CheckDestroy: func(*terraform.State) error {
			for _, id := range ids {
				for _, u := range []string{"app", "app2"} {
					if err := e.checkGone("/v1/iam/users/" + u + "/access-keys/" + id)(nil); err != nil {
						return err
					}
				}
			}
			return e.checkGone("/v1/iam/users/app")(nil)
		},
		Steps: []resource.TestStep{
			{
				Config: e.config(accessKeyConfig("first", "")),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("dbproxy_access_key.k", tfjsonpath.New("status"), knownvalue.StringExact("Active")),
					statecheck.ExpectKnownValue("dbproxy_access_key.k", tfjsonpath.New("id"), knownvalue.StringRegexp(regexp.MustCompile(`^DBPK[A-Z2-7]{16}$`))),
					statecheck.ExpectKnownValue("dbproxy_access_key.k", tfjsonpath.New("create_date"),
						knownvalue.StringFunc(func(v string) error { _, err := time.Parse(time.RFC3339, v); return err })),
					statecheck.ExpectSensitiveValue("dbproxy_access_key.k", tfjsonpath.New("secret")),
				},
				Check: resource.ComposeTestCheckFunc(remember, e.checkKeySigns("app", true)),
			},
			{
				ResourceName: "dbproxy_access_key.k",
				ImportState:  true,
				ImportStateIdFunc: func(s *terraform.State) (string, error) {
					id, user, _, err := keyFromState(s)
					return user + "/" + id, err
				},
				ImportStateVerify: true,
				// The API never returns the secret again.
				ImportStateVerifyIgnore: []string{"secret"},
			},
			{
				// Disabling updates the key in place; the control plane
				// refuses it at once.
				Config: e.config(accessKeyConfig("first", "Inactive")),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_access_key.k", plancheck.ResourceActionUpdate)},
				},
				Check: resource.ComposeTestCheckFunc(remember, keyStatus("app", "Inactive"), e.checkKeySigns("app", false),
					func(s *terraform.State) error {
						if _, _, secret, _ := keyFromState(s); secret != firstSecret {
							return errors.New("the secret in the state changed with the status")
						}
						return nil
					}),
			},
			{
				// Removing status enables the key again.
				Config: e.config(accessKeyConfig("first", "")),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_access_key.k", plancheck.ResourceActionUpdate)},
				},
				Check: resource.ComposeTestCheckFunc(keyStatus("app", "Active"), e.checkKeySigns("app", true)),
			},
			{
				// Drift made through the API is corrected.
				PreConfig: func() {
					e.apiDo("PATCH", "/v1/iam/users/app/access-keys/"+ids[0], map[string]string{"status": "Inactive"})
				},
				Config: e.config(accessKeyConfig("first", "")),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_access_key.k", plancheck.ResourceActionUpdate)},
				},
				Check: resource.ComposeTestCheckFunc(keyStatus("app", "Active"), e.checkKeySigns("app", true)),
			},
			{
				// Deleted outside Terraform: a new key is made.
				PreConfig: func() { e.apiDo("DELETE", "/v1/iam/users/app/access-keys/"+ids[0], nil) },
				Config:    e.config(accessKeyConfig("first", "")),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_access_key.k", plancheck.ResourceActionCreate)},
				},
				Check: resource.ComposeTestCheckFunc(remember, e.checkKeySigns("app", true), func(*terraform.State) error {
					if len(ids) != 2 {
						return fmt.Errorf("keys %v: want a new key id", ids)
					}
					return nil
				}),
			},
			{
				// Another user replaces the key: the old one is gone.
				Config: e.config(accessKeyConfig("second", "")),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("dbproxy_access_key.k", plancheck.ResourceActionDestroyBeforeCreate)},
				},
				Check: resource.ComposeTestCheckFunc(remember, e.checkKeySigns("app2", true), func(*terraform.State) error {
					return e.checkGone("/v1/iam/users/app/access-keys/" + ids[1])(nil)
				}),
			},
		},
	})
}

func TestAccAccessKey_validation(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: e.factories(),
		Steps: []resource.TestStep{
			{
				Config:      e.config(accessKeyConfig("first", "Disabled")),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Invalid Attribute Value Match.*status = "Disabled".*must be one of: \["Active" "Inactive"\]`),
			},
			{
				Config: e.config(`
resource "dbproxy_access_key" "k" {
  user = "no such user!"
}
`),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Invalid Attribute Value.*user.*user name`),
			},
			{
				// A user that does not exist: the API's error is on user.
				Config: e.config(`
resource "dbproxy_access_key" "k" {
  user = "nobody"
}
`),
				ExpectError: regexp.MustCompile(`(?s)Cannot Create an Access Key for IAM User "nobody".*NotFound`),
			},
			{
				Config:        e.config(accessKeyConfig("first", "")),
				ResourceName:  "dbproxy_access_key.k",
				ImportState:   true,
				ImportStateId: "DBPKONLYANID",
				ExpectError:   regexp.MustCompile(`(?s)Invalid Import ID.*"user/access_key_id"`),
			},
		},
	})
}
