package provider

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/dbproxy/dbproxy/internal/apiclient"
)

// factoriesWithEnv serves the provider with env as its environment.
func factoriesWithEnv(env map[string]string) map[string]func() (tfprotov6.ProviderServer, error) {
	return map[string]func() (tfprotov6.ProviderServer, error){
		"dbproxy": providerserver.NewProtocol6WithError(New("test", Options{Getenv: func(k string) string { return env[k] }})()),
	}
}

const oneSecret = `
resource "dbproxy_secret" "s" {
  name        = "s"
  username    = "u"
  password_wo = "p"
}
`

// writeKeyFile writes a key file for the root key, as the control plane
// writes root-credentials.json, with the CA next to it.
func (e *testEnv) writeKeyFile(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, e.cp.CA, 0o600); err != nil {
		t.Fatal(err)
	}
	root := e.cp.Root()
	kf := apiclient.KeyFile{AccessKeyID: root.AccessKeyID, SecretAccessKey: root.SecretAccessKey,
		Region: root.Region, Endpoint: root.Endpoint, CAFile: ca}
	b, err := json.Marshal(kf)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "key.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestAccProvider_configSources configures the provider from each place it
// reads: a credentials_file argument, the environment alone, and the
// credentials file named by the environment.
func TestAccProvider_configSources(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	keyFile := e.writeKeyFile(t)
	root := e.cp.Root()
	check := []statecheck.StateCheck{
		statecheck.ExpectKnownValue("dbproxy_secret.s", tfjsonpath.New("id"), knownvalue.StringExact("s")),
	}
	t.Run("credentials_file argument", func(t *testing.T) {
		resource.Test(t, resource.TestCase{
			ProtoV6ProviderFactories: factoriesWithEnv(nil),
			CheckDestroy:             e.checkGone("/v1/secrets/s"),
			Steps: []resource.TestStep{{
				Config:            fmt.Sprintf("provider \"dbproxy\" {\n  credentials_file = %q\n}\n", keyFile) + oneSecret,
				ConfigStateChecks: check,
			}},
		})
	})
	t.Run("environment", func(t *testing.T) {
		resource.Test(t, resource.TestCase{
			ProtoV6ProviderFactories: factoriesWithEnv(map[string]string{
				EnvEndpoint: root.Endpoint, EnvAccessKeyID: root.AccessKeyID, EnvSecretAccessKey: root.SecretAccessKey,
				EnvCACert: string(e.cp.CA),
			}),
			CheckDestroy: e.checkGone("/v1/secrets/s"),
			Steps:        []resource.TestStep{{Config: oneSecret, ConfigStateChecks: check}},
		})
	})
	t.Run("credentials file from the environment", func(t *testing.T) {
		resource.Test(t, resource.TestCase{
			ProtoV6ProviderFactories: factoriesWithEnv(map[string]string{EnvCredentials: keyFile}),
			CheckDestroy:             e.checkGone("/v1/secrets/s"),
			Steps:                    []resource.TestStep{{Config: oneSecret, ConfigStateChecks: check}},
		})
	})
	t.Run("argument beats the environment", func(t *testing.T) {
		// A wrong endpoint in the environment is not used when the
		// configuration names one.
		resource.Test(t, resource.TestCase{
			ProtoV6ProviderFactories: factoriesWithEnv(map[string]string{EnvEndpoint: "https://127.0.0.1:1"}),
			CheckDestroy:             e.checkGone("/v1/secrets/s"),
			Steps:                    []resource.TestStep{{Config: e.config(oneSecret), ConfigStateChecks: check}},
		})
	})
}

func TestAccProvider_badConfig(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	root := e.cp.Root()
	withKey := func(secret string) string {
		return fmt.Sprintf(`
provider "dbproxy" {
  endpoint          = %q
  access_key_id     = %q
  secret_access_key = %q
  ca_cert           = <<-EOT
%s
EOT
}
`, root.Endpoint, root.AccessKeyID, secret, strings.TrimSpace(string(e.cp.CA))) + oneSecret
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factoriesWithEnv(nil),
		Steps: []resource.TestStep{
			{
				Config:      oneSecret,
				ExpectError: regexp.MustCompile(`(?s)Missing API Endpoint.*Missing Access Key ID.*Missing Secret Access Key`),
			},
			{
				Config:      "provider \"dbproxy\" {\n  credentials_file = \"/nonexistent/key.json\"\n}\n" + oneSecret,
				ExpectError: regexp.MustCompile(`(?s)Cannot Read the Credentials File.*/nonexistent/key.json`),
			},
			{
				// A wrong secret is the API's SignatureDoesNotMatch, and
				// the secret itself is never in the message.
				Config:      withKey("not-the-secret"),
				ExpectError: regexp.MustCompile(`(?s)SignatureDoesNotMatch`),
			},
		},
	})
}

// TestAccProvider_unknownConfigAtPlan configures the provider from a value
// that is known only at apply (another resource's output): the plan of new
// resources needs no client, and the apply configures the provider with
// the known value.
func TestAccProvider_unknownConfigAtPlan(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	root := e.cp.Root()
	cfg := fmt.Sprintf(`
resource "terraform_data" "endpoint" {
  input = %q
}

provider "dbproxy" {
  endpoint          = terraform_data.endpoint.output
  access_key_id     = %q
  secret_access_key = %q
  ca_cert           = <<-EOT
%s
EOT
}
`, root.Endpoint, root.AccessKeyID, root.SecretAccessKey, strings.TrimSpace(string(e.cp.CA))) + oneSecret
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: factoriesWithEnv(nil),
		CheckDestroy:             e.checkGone("/v1/secrets/s"),
		Steps: []resource.TestStep{{
			Config: cfg,
			Check:  e.checkSecret("s", "u", 0),
			ConfigStateChecks: []statecheck.StateCheck{
				statecheck.ExpectKnownValue("dbproxy_secret.s", tfjsonpath.New("username"), knownvalue.StringExact("u")),
			},
		}},
	})
}
