package provider

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-testing/echoprovider"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/nodetest"
)

// tokenUser is the database user of the proxy's iam_auth REQUIRED block.
const tokenUser = "tokuser"

// withEcho adds the echo provider, which copies what its provider block
// gets (an ephemeral value) into the state of its echo resource: the way
// terraform-plugin-testing offers to observe an ephemeral resource.
func withEcho(f map[string]func() (tfprotov6.ProviderServer, error)) map[string]func() (tfprotov6.ProviderServer, error) {
	f["echo"] = echoprovider.NewProviderServer()
	return f
}

// iamProxy makes, through the API, a proxy "main" in zone a whose only
// auth block requires IAM authentication for tokenUser, with the test
// database behind it, and returns where the zone's node serves it.
func (e *testEnv) iamProxy(dbPassword string) string {
	e.t.Helper()
	ctx := context.Background()
	if err := e.db.CreateUser(ctx, tokenUser, dbPassword); err != nil {
		e.t.Fatal(err)
	}
	e.apiDo("PUT", "/v1/secrets/tok", map[string]any{"username": tokenUser, "password": dbPassword})
	var p model.Proxy
	e.cp.Do("PUT", "/v1/proxies/main", map[string]any{"zones": []string{"a"}, "auth": []map[string]any{{"secret": "tok", "iam_auth": "REQUIRED"}}}, &p)
	var tg model.Target
	e.cp.Do("PUT", "/v1/proxies/main/targets/db1", map[string]any{"host": e.db.Host, "port": e.db.Port, "zone": "a"}, &tg)
	e.cp.WaitRollout(tg.Revision, "a")
	return net.JoinHostPort(e.nodes[0].Host, strconv.Itoa(p.Port))
}

// tokenLogin logs in through the node at addr as tokenUser with a token
// as the password: mysql_clear_password over TLS verified against the
// control plane's CA, as a client should.
func (e *testEnv) tokenLogin(addr, token string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(e.cp.CA) {
		return fmt.Errorf("no certificate in the control plane's CA")
	}
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = tokenUser, token, "tcp", addr, nodetest.Database
	cfg.AllowCleartextPasswords, cfg.Timeout = true, 5*time.Second
	cfg.TLS = &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return err
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var who string
	if err := db.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&who); err != nil {
		return err
	}
	if !strings.HasPrefix(who, tokenUser+"@") {
		return fmt.Errorf("logged in as %q, want %s", who, tokenUser)
	}
	return nil
}

// tokenConfig grants an IAM user Connect as grantUser on proxy main and
// makes two tokens: one signed with the user's key (through endpoint),
// one with the provider's key (through hostname and port, 5 minutes).
// The echo provider carries both into the state of echo.tokens.
func tokenConfig(addr, status, grantUser string) string {
	host, port, _ := net.SplitHostPort(addr)
	return fmt.Sprintf(`
resource "dbproxy_iam_user" "app" {
  name = "token-client"
}

resource "dbproxy_access_key" "app" {
  user   = dbproxy_iam_user.app.name
  status = %[4]q
}

resource "dbproxy_iam_policy" "connect" {
  name = "connect-tokuser"
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = "dbproxy:Connect"
      Resource = "proxy/main/dbuser/%[6]s"
    }]
  })
}

resource "dbproxy_iam_user_policy_attachment" "app" {
  user        = dbproxy_iam_user.app.name
  policy_name = dbproxy_iam_policy.connect.name
}

ephemeral "dbproxy_auth_token" "app" {
  endpoint          = %[1]q
  db_user           = %[5]q
  access_key_id     = dbproxy_access_key.app.id
  secret_access_key = dbproxy_access_key.app.secret
}

ephemeral "dbproxy_auth_token" "provider_key" {
  hostname   = %[2]q
  port       = %[3]s
  db_user    = %[5]q
  expires_in = "5m"
}

provider "echo" {
  data = {
    app          = ephemeral.dbproxy_auth_token.app.token
    provider_key = ephemeral.dbproxy_auth_token.provider_key.token
    expires_at   = ephemeral.dbproxy_auth_token.provider_key.expires_at
  }
}

resource "echo" "tokens" {}
`, addr, host, port, status, tokenUser, grantUser)
}

func TestAccAuthToken_connect(t *testing.T) {
	e := newTestEnv(t, envOptions{Nodes: []string{"a"}, Database: true})
	addr := e.iamProxy("tokuser-db-Pa55")
	t.Cleanup(func() { e.apiDo("DELETE", "/v1/proxies/main", nil) })
	var appToken string
	// tokenNotInState checks that no dbproxy resource's state holds a
	// token: only the echo resource, which exists to show it, does.
	tokenNotInState := func(s *terraform.State) error {
		for name, rs := range s.RootModule().Resources {
			if strings.HasPrefix(name, "echo.") {
				continue
			}
			for k, v := range rs.Primary.Attributes {
				if strings.Contains(v, "X-Amz-Signature") {
					return fmt.Errorf("%s.%s holds a connect token", name, k)
				}
			}
		}
		return nil
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: withEcho(e.factories()),
		Steps: []resource.TestStep{
			{
				Config: e.config(tokenConfig(addr, "Active", tokenUser)),
				ConfigStateChecks: []statecheck.StateCheck{
					// The user's token logs in through the node right after
					// apply: the key and the grant reached it before apply
					// returned.
					statecheck.ExpectKnownValue("echo.tokens", tfjsonpath.New("data").AtMapKey("app"), knownvalue.StringFunc(func(tok string) error {
						appToken = tok
						if !strings.HasPrefix(tok, addr+"?") || !strings.Contains(tok, "Action=connect") ||
							!strings.Contains(tok, "DBUser="+tokenUser) || !strings.Contains(tok, "X-Amz-Expires=900") {
							return fmt.Errorf("token %.60s... is not an RDS IAM token for %s", tok, addr)
						}
						if err := e.tokenLogin(addr, tok); err != nil {
							return fmt.Errorf("login with the token of the user's key: %w", err)
						}
						return nil
					})),
					// The provider's key (root) signs a 5-minute token, which
					// no grant lets connect.
					statecheck.ExpectKnownValue("echo.tokens", tfjsonpath.New("data").AtMapKey("provider_key"), knownvalue.StringFunc(func(tok string) error {
						u, err := url.Parse("https://" + tok)
						if err != nil {
							return err
						}
						q := u.Query()
						if cred := q.Get("X-Amz-Credential"); !strings.HasPrefix(cred, e.cp.Root().AccessKeyID+"/") || !strings.HasSuffix(cred, "/rds-db/aws4_request") {
							return fmt.Errorf("the provider-key token is signed by %q", cred)
						}
						if q.Get("X-Amz-Expires") != "300" {
							return fmt.Errorf("the provider-key token lives %ss, want 300", q.Get("X-Amz-Expires"))
						}
						if err := e.tokenLogin(addr, tok); err == nil || !strings.Contains(err.Error(), "may not connect") {
							return fmt.Errorf("login with the root key's token: %v; want a refusal", err)
						}
						return nil
					})),
					statecheck.ExpectKnownValue("echo.tokens", tfjsonpath.New("data").AtMapKey("expires_at"), knownvalue.StringFunc(func(v string) error {
						at, err := time.Parse(time.RFC3339, v)
						if err != nil {
							return err
						}
						if d := time.Until(at); d <= 0 || d > 5*time.Minute {
							return fmt.Errorf("expires_at %s is not within 5 minutes from now", v)
						}
						return nil
					})),
				},
				Check: tokenNotInState,
			},
			{
				// Disabling the key: the apply returns once the node has
				// dropped it, so the token made before is refused at once.
				Config: e.config(tokenConfig(addr, "Inactive", tokenUser)),
				Check: resource.ComposeTestCheckFunc(tokenNotInState, func(*terraform.State) error {
					if appToken == "" {
						return fmt.Errorf("no token from the first step")
					}
					if err := e.tokenLogin(addr, appToken); err == nil || !strings.Contains(err.Error(), "may not connect") {
						return fmt.Errorf("login with the disabled key's token: %v; want a refusal", err)
					}
					return nil
				}),
			},
			{
				// Enabled again: the same token logs in right after apply.
				Config: e.config(tokenConfig(addr, "Active", tokenUser)),
				Check: func(*terraform.State) error {
					if err := e.tokenLogin(addr, appToken); err != nil {
						return fmt.Errorf("login after the key was enabled again: %w", err)
					}
					return nil
				},
			},
			{
				// A policy changed in place takes the grant away on the
				// node before apply returns.
				Config: e.config(tokenConfig(addr, "Active", "someone-else")),
				Check: func(*terraform.State) error {
					if err := e.tokenLogin(addr, appToken); err == nil || !strings.Contains(err.Error(), "may not connect") {
						return fmt.Errorf("login after the grant was changed: %v; want a refusal", err)
					}
					return nil
				},
			},
		},
	})
}

func TestAccAuthToken_validation(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	token := func(args string) string {
		return e.config(fmt.Sprintf(`
ephemeral "dbproxy_auth_token" "t" {
  db_user = "app"
%s
}
`, args))
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: e.factories(),
		Steps: []resource.TestStep{
			{
				Config:      token("  endpoint = \"proxy.example:3306\"\n  hostname = \"proxy.example\"\n  port = 3306"),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Invalid Attribute Combination.*endpoint.*hostname`),
			},
			{
				Config:      token(`  hostname = "proxy.example"`),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Invalid Attribute Combination.*port`),
			},
			{
				Config:      token(`  endpoint = "proxy.example"`),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Invalid Endpoint.*endpoint must be host:port`),
			},
			{
				Config:      token("  endpoint = \"proxy.example:3306\"\n  expires_in = \"20m\""),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Invalid Token Lifetime.*expires_in = "20m".*from 1s to 15m0s`),
			},
			{
				Config:      token("  endpoint = \"proxy.example:3306\"\n  expires_in = \"soon\""),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Invalid Token Lifetime.*a duration such as 5m`),
			},
			{
				Config:      token("  endpoint = \"proxy.example:3306\"\n  access_key_id = \"DBPKXXXXXXXXXXXXXXXX\""),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Invalid Attribute Combination.*secret_access_key`),
			},
			{
				Config:      token("  hostname = \"proxy.example\"\n  port = 70000"),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)port.*must be between 1 and 65535`),
			},
		},
	})
}

func TestTokenLifetime(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"15m", 15 * time.Minute, true},
		{"90s", 90 * time.Second, true},
		{"1s", time.Second, true},
		{"15m1s", 0, false},
		{"0s", 0, false},
		{"-5m", 0, false},
		{"1500ms", 0, false},
		{"soon", 0, false},
		{"", 0, false},
	} {
		got, err := tokenLifetime(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("tokenLifetime(%q) = %s, %v; want %s, ok %v", c.in, got, err, c.want, c.ok)
		}
	}
}

func TestSplitEndpoint(t *testing.T) {
	for _, c := range []struct {
		in   string
		host string
		port int
		ok   bool
	}{
		{"proxy.example:3306", "proxy.example", 3306, true},
		{"127.0.1.1:6033", "127.0.1.1", 6033, true},
		{"[::1]:3306", "::1", 3306, true},
		{"proxy.example", "", 0, false},
		{":3306", "", 0, false},
		{"proxy.example:0", "", 0, false},
		{"proxy.example:70000", "", 0, false},
		{"proxy.example:mysql", "", 0, false},
	} {
		host, port, err := splitEndpoint(c.in)
		if (err == nil) != c.ok || host != c.host || port != c.port {
			t.Errorf("splitEndpoint(%q) = %q, %d, %v; want %q, %d, ok %v", c.in, host, port, err, c.host, c.port, c.ok)
		}
	}
}
