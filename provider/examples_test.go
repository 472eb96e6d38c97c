package provider

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/ephemeral"
	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	fwresource "github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6/tf6server"
	"github.com/hashicorp/terraform-plugin-testing/config"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/dbproxy/dbproxy/internal/cptest"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/nodetest"
)

// examplesDir is the repository's examples/, which the docs are rendered
// from and the quickstart lives in.
const examplesDir = "../examples"

// exampleDirs lists the directories of examples/ that hold Terraform
// configurations, relative to examples/: the provider's, one per resource,
// data source and ephemeral resource, and the quickstart.
func exampleDirs(t *testing.T) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(examplesDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".terraform" || strings.HasPrefix(d.Name(), ".")) && p != examplesDir {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ".tf") {
			rel, err := filepath.Rel(examplesDir, filepath.Dir(p))
			if err != nil {
				return err
			}
			if !slices.Contains(dirs, rel) {
				dirs = append(dirs, rel)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("list %s: %v", examplesDir, err)
	}
	sort.Strings(dirs)
	return dirs
}

// TestExamples_coverEveryType checks that every resource, data source and
// ephemeral resource the provider registers has its example (which the docs
// show), every resource an import.sh, and that no example is left for a type
// the provider no longer has. It needs no Terraform, so it runs in make test.
func TestExamples_coverEveryType(t *testing.T) {
	ctx := context.Background()
	p := New("test", Options{})().(*dbproxyProvider)
	want := map[string]bool{"provider": true, "quickstart": true}
	for _, f := range p.Resources(ctx) {
		var md fwresource.MetadataResponse
		f().Metadata(ctx, fwresource.MetadataRequest{ProviderTypeName: "dbproxy"}, &md)
		name := md.TypeName
		want[filepath.Join("resources", name)] = true
		if _, err := os.Stat(filepath.Join(examplesDir, "resources", name, "import.sh")); err != nil {
			t.Errorf("resource %s has no examples/resources/%s/import.sh: %v", name, name, err)
		}
		if _, err := os.Stat(filepath.Join(examplesDir, "resources", name, "resource.tf")); err != nil {
			t.Errorf("resource %s has no examples/resources/%s/resource.tf: %v", name, name, err)
		}
	}
	for _, f := range p.DataSources(ctx) {
		var md datasource.MetadataResponse
		f().Metadata(ctx, datasource.MetadataRequest{ProviderTypeName: "dbproxy"}, &md)
		name := md.TypeName
		want[filepath.Join("data-sources", name)] = true
		if _, err := os.Stat(filepath.Join(examplesDir, "data-sources", name, "data-source.tf")); err != nil {
			t.Errorf("data source %s has no examples/data-sources/%s/data-source.tf: %v", name, name, err)
		}
	}
	for _, f := range p.EphemeralResources(ctx) {
		var md ephemeral.MetadataResponse
		f().Metadata(ctx, ephemeral.MetadataRequest{ProviderTypeName: "dbproxy"}, &md)
		name := md.TypeName
		want[filepath.Join("ephemeral-resources", name)] = true
		if _, err := os.Stat(filepath.Join(examplesDir, "ephemeral-resources", name, "ephemeral-resource.tf")); err != nil {
			t.Errorf("ephemeral resource %s has no examples/ephemeral-resources/%s/ephemeral-resource.tf: %v", name, name, err)
		}
	}
	for _, d := range exampleDirs(t) {
		if !want[d] {
			t.Errorf("examples/%s is for no type the provider registers: remove it or register the type", d)
		}
	}
}

// TestAccExamples_validate runs `terraform init` and `terraform validate`
// on every example directory against this package's provider, served in
// process, so that an example that no longer fits the schema (a renamed
// attribute, a value a validator refuses, a block that became an attribute)
// fails here and not in a user's hands. Validation needs no control plane:
// it runs the schema's and the resources' ValidateConfig checks only.
func TestAccExamples_validate(t *testing.T) {
	if os.Getenv("TF_ACC") == "" {
		t.Skip("acceptance test: set TF_ACC=1 (make testacc)")
	}
	tf := os.Getenv("TF_ACC_TERRAFORM_PATH")
	if tf == "" {
		var err error
		if tf, err = exec.LookPath("terraform"); err != nil {
			t.Fatal("the example checks need terraform on PATH (or TF_ACC_TERRAFORM_PATH); nothing is downloaded")
		}
	}
	env := append(os.Environ(),
		"TF_REATTACH_PROVIDERS="+serveForExamples(t),
		"TF_CLI_CONFIG_FILE="+emptyCLIConfig(t),
		"TF_IN_AUTOMATION=1",
		"CHECKPOINT_DISABLE=1",
	)
	for _, dir := range exampleDirs(t) {
		t.Run(dir, func(t *testing.T) {
			work := t.TempDir()
			copyTerraformFiles(t, filepath.Join(examplesDir, dir), work)
			addRequiredProviders(t, work)
			run := func(args ...string) []byte {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				cmd := exec.CommandContext(ctx, tf, args...)
				cmd.Dir, cmd.Env = work, env
				out, err := cmd.CombinedOutput()
				if err != nil && args[0] != "validate" {
					t.Fatalf("terraform %s in a copy of examples/%s: %v\n%s", strings.Join(args, " "), dir, err, out)
				}
				return out
			}
			run("init", "-backend=false", "-input=false", "-no-color")
			out := run("validate", "-json", "-no-color")
			var res struct {
				Valid       bool `json:"valid"`
				Diagnostics []struct {
					Severity string `json:"severity"`
					Summary  string `json:"summary"`
					Detail   string `json:"detail"`
					Range    *struct {
						Filename string `json:"filename"`
						Start    struct {
							Line int `json:"line"`
						} `json:"start"`
					} `json:"range"`
				} `json:"diagnostics"`
			}
			if err := json.Unmarshal(out, &res); err != nil {
				t.Fatalf("terraform validate -json in examples/%s: %v\n%s", dir, err, out)
			}
			// A warning counts: examples are what users copy, and a
			// deprecated or ignored argument in one is a defect too.
			for _, d := range res.Diagnostics {
				where := ""
				if d.Range != nil {
					where = fmt.Sprintf("%s:%d: ", d.Range.Filename, d.Range.Start.Line)
				}
				t.Errorf("examples/%s: %s%s: %s: %s", dir, where, d.Severity, d.Summary, d.Detail)
			}
			if !res.Valid && len(res.Diagnostics) == 0 {
				t.Errorf("examples/%s: terraform validate says invalid without a diagnostic:\n%s", dir, out)
			}
		})
	}
}

// serveForExamples serves the provider in process in go-plugin's debug
// mode and returns the TF_REATTACH_PROVIDERS value that makes Terraform use
// it for dbproxy/dbproxy instead of looking for a binary.
func serveForExamples(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	reattach := make(chan *plugin.ReattachConfig, 1)
	closed := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- tf6server.Serve(Address,
			providerserver.NewProtocol6(New("test", Options{Getenv: func(string) string { return "" }})()),
			tf6server.WithDebug(ctx, reattach, closed),
			tf6server.WithGoPluginLogger(hclog.NewNullLogger()),
			tf6server.WithLoggingSink(t))
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Error("the in-process provider did not stop within 10s")
		}
	})
	var cfg *plugin.ReattachConfig
	select {
	case cfg = <-reattach:
	case err := <-errc:
		t.Fatalf("serve the provider: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the in-process provider did not start within 30s")
	}
	type addr struct{ Network, String string }
	type entry struct {
		Protocol        string
		ProtocolVersion int
		Pid             int
		Test            bool
		Addr            addr
	}
	b, err := json.Marshal(map[string]entry{Address: {
		Protocol: string(cfg.Protocol), ProtocolVersion: cfg.ProtocolVersion, Pid: cfg.Pid, Test: cfg.Test,
		Addr: addr{Network: cfg.Addr.Network(), String: cfg.Addr.String()},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// emptyCLIConfig is a CLI configuration with nothing in it, so that the
// machine's own (dev_overrides, mirrors) plays no part.
func emptyCLIConfig(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "terraformrc")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// addRequiredProviders declares the provider's source address in dir
// unless one of its files does: the examples of single resources leave it
// out, as registry docs do, and without it Terraform would look for
// hashicorp/dbproxy.
func addRequiredProviders(t *testing.T, dir string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.tf"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "required_providers") {
			return
		}
	}
	const hcl = `terraform {
  required_providers {
    dbproxy = {
      source = "dbproxy/dbproxy"
    }
  }
}
`
	if err := os.WriteFile(filepath.Join(dir, "zz_required_providers.tf"), []byte(hcl), 0o600); err != nil {
		t.Fatal(err)
	}
}

// copyTerraformFiles copies the .tf files of src into dst: terraform init
// writes .terraform and a lock file, which must not land in examples/.
func copyTerraformFiles(t *testing.T, src, dst string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(src, "*.tf"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no .tf files in %s (%v)", src, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, filepath.Base(f)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAccExamples_quickstart applies examples/quickstart as a user would
// (its own provider block, reading a key file) against a control plane,
// nodes in zones a, b and c and MariaDB: the first apply must log in
// through the proxy with the ephemeral token (the configuration's own
// check, run by the mariadb client), the plan after each apply must be
// empty, a second apply switches to passwords and changes the pool, which
// a node then serves, and destroy leaves nothing behind.
func TestAccExamples_quickstart(t *testing.T) {
	e := newTestEnv(t, envOptions{Nodes: []string{"a", "b", "c"}, Database: true})
	if _, err := exec.LookPath("mariadb"); err != nil {
		t.Fatal("the quickstart's login check needs the mariadb client (apt-get install mariadb-client)")
	}
	// The quickstart names its provider by source address dbproxy/dbproxy.
	t.Setenv("TF_ACC_PROVIDER_NAMESPACE", "dbproxy")
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, e.cp.CA, 0o600); err != nil {
		t.Fatal(err)
	}
	root := e.cp.Root()
	keyFile := filepath.Join(dir, "root-credentials.json")
	b, err := json.Marshal(map[string]string{"access_key_id": root.AccessKeyID, "secret_access_key": root.SecretAccessKey,
		"endpoint": root.Endpoint, "ca_file": caFile})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	vars := func(extra config.Variables) config.Variables {
		v := config.Variables{
			"credentials_file":  config.StringVariable(keyFile),
			"ca_file":           config.StringVariable(caFile),
			"database_host":     config.StringVariable(e.db.Host),
			"database_port":     config.IntegerVariable(e.db.Port),
			"database_user":     config.StringVariable(nodetest.User),
			"database_password": config.StringVariable(nodetest.Password),
		}
		maps.Copy(v, extra)
		return v
	}
	const initQuery = "SET SESSION wait_timeout = 600"
	// The providers go with each step: the quickstart's own
	// required_providers block rules out giving them to the TestCase.
	resource.Test(t, resource.TestCase{
		Steps: []resource.TestStep{
			{
				ProtoV6ProviderFactories: e.factories(),
				ConfigDirectory:          config.StaticDirectory(filepath.Join(examplesDir, "quickstart")),
				ConfigVariables:          vars(nil),
				ConfigStateChecks: []statecheck.StateCheck{
					// Created only when its local-exec logged in with the token.
					statecheck.ExpectKnownValue("terraform_data.token_login_check[0]", tfjsonpath.New("id"), knownvalue.NotNull()),
					statecheck.ExpectKnownOutputValue("target_health", knownvalue.StringExact("AVAILABLE")),
					statecheck.ExpectKnownOutputValue("addresses", knownvalue.ListSizeExact(3)),
				},
				Check: func(*terraform.State) error {
					var p model.Proxy
					if _, err := e.apiGet("/v1/proxies/main", &p); err != nil {
						return err
					}
					if len(p.Auth) != 1 || p.Auth[0].IAMAuth != "REQUIRED" || !p.RequireTLS {
						return fmt.Errorf("proxy main on the control plane: auth %+v, require_tls %v; want one REQUIRED block and TLS", p.Auth, p.RequireTLS)
					}
					return nil
				},
			},
			{
				ProtoV6ProviderFactories: e.factories(),
				ConfigDirectory:          config.StaticDirectory(filepath.Join(examplesDir, "quickstart")),
				ConfigVariables: vars(config.Variables{
					"iam_auth":                  config.StringVariable("DISABLED"),
					"connection_borrow_timeout": config.IntegerVariable(30),
					"init_query":                config.StringVariable(initQuery),
				}),
				Check: func(*terraform.State) error {
					var g model.TargetGroup
					if _, err := e.apiGet("/v1/proxies/main/target-group", &g); err != nil {
						return err
					}
					if g.ConnectionPoolConfig.InitQuery != initQuery || g.ConnectionPoolConfig.ConnectionBorrowTimeout != 30 {
						return fmt.Errorf("target group on the control plane: %+v", g.ConnectionPoolConfig)
					}
					var p model.Proxy
					if _, err := e.apiGet("/v1/proxies/main", &p); err != nil {
						return err
					}
					// Apply returned, so the node in zone c serves the
					// new pool: a new client's connection runs init_query.
					v, err := e.passwordQuery(net.JoinHostPort(cptest.ZoneHost(2), strconv.Itoa(p.Port)), "SELECT @@session.wait_timeout")
					if err != nil {
						return fmt.Errorf("a password login through the node in zone c: %w", err)
					}
					if v != "600" {
						return fmt.Errorf("through the node in zone c, wait_timeout is %s: the new init_query is not served", v)
					}
					return nil
				},
			},
		},
		CheckDestroy: func(*terraform.State) error {
			for _, p := range []string{"/v1/proxies/main", "/v1/secrets/app", "/v1/iam/users/app-client", "/v1/iam/policies/connect-main-app"} {
				found, err := e.apiGet(p, &json.RawMessage{})
				if err != nil {
					return err
				}
				if found {
					return fmt.Errorf("%s is still on the control plane after destroy", p)
				}
			}
			return nil
		},
	})
}

// passwordQuery logs in through addr as nodetest's user with its password,
// over TLS verified against the control plane's CA, and returns the first
// column of q's first row.
func (e *testEnv) passwordQuery(addr, q string) (string, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(e.cp.CA) {
		return "", fmt.Errorf("no certificate in the control plane's CA")
	}
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = nodetest.User, nodetest.Password, "tcp", addr, nodetest.Database
	cfg.Timeout = 5 * time.Second
	cfg.TLS = &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return "", err
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var v string
	if err := db.QueryRowContext(ctx, q).Scan(&v); err != nil {
		return "", err
	}
	return v, nil
}
