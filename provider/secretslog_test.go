package provider

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
)

// logSignature matches what a SigV4 signature looks like wherever it is
// carried: an Authorization header, a connect token's query.
var logSignature = regexp.MustCompile(`(?i)(signature=[0-9a-f]{8}|x-amz-signature)`)

// providerLogLine is a line the in-process provider logged through tflog.
var providerLogLine = regexp.MustCompile(`(?m)^\S+ \[(TRACE|DEBUG|INFO|WARN|ERROR)\]\s+dbproxy: .*tf_provider_addr=\S+/dbproxy`)

func randomSecretValue(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b)
}

// logLine returns the line of s around offset i.
func logLine(s string, i int) string {
	start := strings.LastIndexByte(s[:i], '\n') + 1
	end := strings.IndexByte(s[i:], '\n')
	if end < 0 {
		return s[start:]
	}
	return s[start : i+end]
}

// secretsLogConfig is the configuration of the run. Secrets come from
// sensitive variables (TF_VAR_*), as they should in real use: a literal in
// the configuration would be in the log as a copy of the file, which says
// nothing about the provider.
func (e *testEnv) secretsLogConfig(version int) string {
	root := e.cp.Root()
	return fmt.Sprintf(`
variable "root_secret_access_key" {
  type      = string
  sensitive = true
}

variable "db_password" {
  type      = string
  sensitive = true
}

provider "dbproxy" {
  endpoint          = %[1]q
  access_key_id     = %[2]q
  secret_access_key = var.root_secret_access_key
  ca_cert           = <<-EOT
%[3]s
EOT
}

resource "dbproxy_secret" "db" {
  name                = "logcheck"
  username            = "logcheck"
  password_wo         = var.db_password
  password_wo_version = %[4]d
}

resource "dbproxy_iam_user" "app" {
  name = "logcheck"
}

resource "dbproxy_access_key" "k" {
  user = dbproxy_iam_user.app.name
}

resource "dbproxy_iam_policy" "connect" {
  name = "logcheck"
  policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = "dbproxy:Connect", Resource = "proxy/main/dbuser/logcheck" }]
  })
}

resource "dbproxy_iam_user_policy_attachment" "app" {
  user        = dbproxy_iam_user.app.name
  policy_name = dbproxy_iam_policy.connect.name
}

ephemeral "dbproxy_auth_token" "t" {
  endpoint          = "proxy.example:3306"
  db_user           = "logcheck"
  access_key_id     = dbproxy_access_key.k.id
  secret_access_key = dbproxy_access_key.k.secret
}

# The token as a write-only argument, as users pass it on. No echo
# resource here: it would put the token in its state, and Terraform logs
# that state.
resource "dbproxy_secret" "token_sink" {
  name                = "token-sink"
  username            = "sink"
  password_wo         = ephemeral.dbproxy_auth_token.t.token
  password_wo_version = %[4]d
}
`, root.Endpoint, root.AccessKeyID, strings.TrimSpace(string(e.cp.CA)), version)
}

// TestAccSecretsStayOutOfProviderLogs runs apply, a rotation, a refresh
// and destroy of everything that carries a secret (a write-only password,
// an access key's secret, the ephemeral connect token, the provider's own
// key) with Terraform and the in-process provider logging at TRACE to one
// file, then looks for each secret, and for any signature, in it.
func TestAccSecretsStayOutOfProviderLogs(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	logPath := filepath.Join(t.TempDir(), "terraform.log")
	// TF_ACC_LOG_PATH sends Terraform's log there (terraform-exec) and
	// the provider's tflog output too: with provider factories the
	// provider runs in this process and terraform-plugin-log's test sink
	// writes to that file at TRACE.
	t.Setenv("TF_ACC_LOG_PATH", logPath)
	t.Setenv("TF_ACC_LOG", "TRACE")
	t.Setenv("TF_LOG", "TRACE")
	t.Setenv("TF_LOG_PATH_MASK", "")

	first := randomSecretValue(t, "pw1-")
	rotated := randomSecretValue(t, "pw2-")
	secrets := map[string]string{
		"database password":         first,
		"rotated database password": rotated,
		"root secret key":           e.cp.Root().SecretAccessKey,
	}
	t.Setenv("TF_VAR_root_secret_access_key", e.cp.Root().SecretAccessKey)
	t.Setenv("TF_VAR_db_password", first)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: e.factories(),
		Steps: []resource.TestStep{
			{
				Config: e.secretsLogConfig(1),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("dbproxy_access_key.k", tfjsonpath.New("secret"), knownvalue.StringFunc(func(v string) error {
						if v == "" {
							return fmt.Errorf("the access key has no secret")
						}
						secrets["access key secret"] = v
						return nil
					})),
				},
				Check: e.checkSecret("token-sink", "sink", 1),
			},
			{
				// A rotation sends the new password, and a new token to
				// the sink.
				PreConfig: func() { t.Setenv("TF_VAR_db_password", rotated) },
				Config:    e.secretsLogConfig(2),
				Check:     resource.ComposeTestCheckFunc(e.checkSecret("logcheck", "logcheck", 2), e.checkSecret("token-sink", "sink", 2)),
			},
			{
				RefreshState: true,
			},
		},
		CheckDestroy: func(*terraform.State) error { return e.checkGone("/v1/secrets/logcheck")(nil) },
	})

	raw, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatalf("read the log: %v", err)
	}
	logs := string(raw)
	// Sanity: the file has Terraform's lines and the provider's, from
	// every part of the run, or the test would prove nothing.
	for _, want := range []string{
		"Terraform version",    // Terraform core
		"created access key",   // this provider's Create
		"made a connect token", // the ephemeral resource's Open
		"tf_resource_type=dbproxy_access_key",
		"waiting for the data plane",      // rollout waits
		"tf_rpc=ReadResource",             // the refresh
		"tf_rpc=ApplyResourceChange",      // apply and destroy
		"tf_resource_type=dbproxy_secret", // the write-only password's resource
	} {
		if !strings.Contains(logs, want) {
			t.Fatalf("the log (%d bytes) lacks %q; the test would prove nothing", len(logs), want)
		}
	}
	// The provider's own tflog lines, not only Terraform's about it.
	if !providerLogLine.MatchString(logs) {
		t.Fatalf("the log (%d bytes) has no line logged by the provider; the test would prove nothing", len(logs))
	}
	if len(secrets) != 4 {
		t.Fatalf("secrets to look for: %d, want 4 (the state check did not run?)", len(secrets))
	}
	for what, s := range secrets {
		if i := strings.Index(logs, s); i >= 0 {
			t.Errorf("the %s is in the log: %q", what, logLine(logs, i))
		}
	}
	if loc := logSignature.FindStringIndex(logs); loc != nil {
		t.Errorf("a signature is in the log: %q", logLine(logs, loc[0]))
	}
	t.Logf("%d lines, %d bytes of Terraform and provider logs checked for %d secrets", strings.Count(logs, "\n"), len(logs), len(secrets))
}
