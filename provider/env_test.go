package provider

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/dbproxy/dbproxy/internal/cptest"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/mysqltest"
	"github.com/dbproxy/dbproxy/internal/nodetest"
)

// testEnv is what an acceptance test runs against: an in-process control
// plane, optionally a node per zone and a MariaDB server, and the provider
// configured for them.
type testEnv struct {
	t     *testing.T
	cp    *cptest.ControlPlane
	db    *mysqltest.Server
	nodes []*cptest.Node
}

// envOptions choose what a test needs beyond the control plane.
type envOptions struct {
	// Nodes starts a node in each of these zones ("a" is 127.0.1.1, ...).
	Nodes []string
	// Database starts a MariaDB server with nodetest's user and database.
	Database bool
}

// newTestEnv starts what opts ask for. It skips the test unless TF_ACC is
// set, as terraform-plugin-testing does, and checks that terraform is on
// PATH rather than letting the framework download one.
func newTestEnv(t *testing.T, opts envOptions) *testEnv {
	t.Helper()
	if os.Getenv("TF_ACC") == "" {
		t.Skip("acceptance test: set TF_ACC=1 (make testacc)")
	}
	if os.Getenv("TF_ACC_TERRAFORM_PATH") == "" {
		tf, err := exec.LookPath("terraform")
		if err != nil {
			t.Fatal("acceptance tests need terraform on PATH (or TF_ACC_TERRAFORM_PATH); nothing is downloaded")
		}
		t.Setenv("TF_ACC_TERRAFORM_PATH", tf)
	}
	// A CLI configuration of the tests' own: nothing from the machine's.
	cliConfig := filepath.Join(t.TempDir(), "terraformrc")
	if err := os.WriteFile(cliConfig, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TF_CLI_CONFIG_FILE", cliConfig)
	e := &testEnv{t: t, cp: cptest.Start(t)}
	if opts.Database {
		e.db = mysqltest.StartT(t, mysqltest.Options{})
		nodetest.PrepareServer(t, e.db)
	}
	for _, z := range opts.Nodes {
		i := strings.Index("abcdefgh", z)
		creds := e.cp.NodeCredentials("node-"+z, z)
		e.nodes = append(e.nodes, e.cp.StartNode(cptest.NodeOptions{
			ID: "node-" + z, Zone: z, Host: cptest.ZoneHost(i), Credentials: creds,
		}))
	}
	for _, n := range e.nodes {
		n.WaitSynced(t)
	}
	return e
}

// factories serve the provider in process.
func (e *testEnv) factories() map[string]func() (tfprotov6.ProviderServer, error) {
	return map[string]func() (tfprotov6.ProviderServer, error){
		"dbproxy": providerserver.NewProtocol6WithError(New("test", Options{Getenv: func(string) string { return "" }})()),
	}
}

// providerBlock configures the provider for the control plane with the
// root key.
func (e *testEnv) providerBlock() string {
	root := e.cp.Root()
	return fmt.Sprintf(`
provider "dbproxy" {
  endpoint          = %q
  access_key_id     = %q
  secret_access_key = %q
  ca_cert           = <<-EOT
%s
EOT
}
`, root.Endpoint, root.AccessKeyID, root.SecretAccessKey, strings.TrimSpace(string(e.cp.CA)))
}

// config is a configuration with the provider block in front.
func (e *testEnv) config(hcl string) string { return e.providerBlock() + hcl }

// apiGet reads an object through the API as root; found is false on a
// 404.
func (e *testEnv) apiGet(path string, out any) (found bool, err error) {
	err = e.cp.Client.Do(context.Background(), "GET", path, nil, out)
	if model.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// apiDo calls the API as root and fails the test on error: how tests
// change things behind Terraform's back.
func (e *testEnv) apiDo(method, path string, in any) {
	e.t.Helper()
	if err := e.cp.Client.Do(context.Background(), method, path, in, nil); err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
}

// checkGone is a CheckDestroy: the object at path no longer exists.
func (e *testEnv) checkGone(path string) func(*terraform.State) error {
	return func(*terraform.State) error {
		found, err := e.apiGet(path, &map[string]any{})
		if err != nil {
			return err
		}
		if found {
			return fmt.Errorf("%s still exists after destroy", path)
		}
		return nil
	}
}
