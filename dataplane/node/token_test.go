package node_test

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	rdsauth "github.com/aws/aws-sdk-go-v2/feature/rds/auth"
	gomysql "github.com/go-sql-driver/mysql"

	"github.com/dbproxy/dbproxy/dataplane/config"
	"github.com/dbproxy/dbproxy/dataplane/mysql"
	"github.com/dbproxy/dbproxy/internal/mysqltest"
	"github.com/dbproxy/dbproxy/internal/nodetest"
	"github.com/dbproxy/dbproxy/internal/sigv4"
	"github.com/dbproxy/dbproxy/internal/vocab"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// connectKey is what the control plane would push for one access key:
// its signing keys for the days around now and its grants.
func connectKey(id, secret string, allow ...xdsapi.ConnectGrant) xdsapi.ConnectKey {
	k := xdsapi.ConnectKey{AccessKeyID: id, User: "user-of-" + id, SigningKeys: map[string]string{}, Allow: allow}
	now := time.Now().UTC()
	for _, d := range []time.Time{now.AddDate(0, 0, -1), now, now.AddDate(0, 0, 1)} {
		date := sigv4.ScopeDate(d)
		k.SigningKeys[date] = hex.EncodeToString(sigv4.SigningKey(secret, sigv4.Scope{Date: date, Region: sigv4.DefaultRegion, Service: sigv4.ServiceRDS}))
	}
	return k
}

// TestConnectTokens logs in with RDS-style connect tokens made by
// aws-sdk-go-v2's rds/auth BuildAuthToken, as users of an auth block with
// iam_auth REQUIRED, and checks every way a token or a password is
// refused, each with its reason.
func TestConnectTokens(t *testing.T) {
	s := mysqltest.StartT(t, mysqltest.Options{})
	nodetest.PrepareServer(t, s)
	if err := s.CreateUser(t.Context(), "tokenuser", "token-user-password"); err != nil {
		t.Fatal(err)
	}
	cfg := nodetest.Config(s)
	cfg.Secrets = append(cfg.Secrets, config.Secret{Name: "tok", Username: "tokenuser", Password: "token-user-password"})
	cfg.Proxies[0].Auth = append(cfg.Proxies[0].Auth, config.Auth{Secret: "tok", IAMAuth: vocab.IAMAuthRequired})
	cfg.Connect = &xdsapi.ConnectKeys{Region: sigv4.DefaultRegion, Keys: []xdsapi.ConnectKey{
		connectKey("AKIAGOOD", "good-secret", xdsapi.ConnectGrant{Proxy: "main", DBUser: "tokenuser"}),
		connectKey("AKIAOTHER", "other-secret", xdsapi.ConnectGrant{Proxy: "elsewhere", DBUser: "tokenuser"}),
	}}
	env := nodetest.Start(t, cfg, s)

	build := func(id, secret, user string) string {
		t.Helper()
		tok, err := rdsauth.BuildAuthToken(t.Context(), env.Addr, sigv4.DefaultRegion, user, aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: id, SecretAccessKey: secret}, nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	login := func(user, password, params string) error { return loginAs(t, env.Addr, user, password, params) }
	const overTLS = "tls=skip-verify&allowCleartextPasswords=true"
	good := build("AKIAGOOD", "good-secret", "tokenuser")

	t.Run("token", func(t *testing.T) {
		if err := login("tokenuser", good, overTLS); err != nil {
			t.Fatalf("login with a connect token: %v", err)
		}
		// A token is good for its whole lifetime, not just once.
		if err := login("tokenuser", good, overTLS); err != nil {
			t.Fatalf("second login with the same token: %v", err)
		}
	})
	t.Run("mariadb client", func(t *testing.T) {
		c := nodeCLI(env)
		res := c.run(t, "", "--user=tokenuser", "--password="+good, "--ssl", "-N", "-e", "SELECT CURRENT_USER()")
		if res.exit != 0 || !strings.HasPrefix(res.stdout, "tokenuser@") {
			t.Fatalf("%s", res)
		}
	})
	t.Run("password users unaffected", func(t *testing.T) {
		if err := login(nodetest.User, nodetest.Password, ""); err != nil {
			t.Fatalf("the user of a DISABLED block: %v", err)
		}
	})

	expired, err := sigv4.Presign(t.Context(), env.Addr, tokenAction, url.Values{"DBUser": {"tokenuser"}}, sigv4.ServiceRDS, sigv4.DefaultRegion,
		15*time.Minute, sigv4.Credentials{AccessKeyID: "AKIAGOOD", SecretAccessKey: "good-secret"}, time.Now().Add(-20*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, user, password, params string
		code                         uint16
		msg                          string
	}{
		{"the password", "tokenuser", "token-user-password", overTLS, mysql.ERAccessDenied, "the password is not a connect token"},
		{"without TLS", "tokenuser", good, "allowCleartextPasswords=true", mysql.ERSecureTransportRequired, "requires TLS"},
		{"token for another user", "tokenuser", build("AKIAGOOD", "good-secret", nodetest.User), overTLS, mysql.ERAccessDenied, "for another database user"},
		{"expired", "tokenuser", expired, overTLS, mysql.ERAccessDenied, "has expired"},
		{"wrong secret", "tokenuser", build("AKIAGOOD", "not-the-secret", "tokenuser"), overTLS, mysql.ERAccessDenied, "signature does not match"},
		{"unknown key", "tokenuser", build("AKIAUNKNOWN", "x", "tokenuser"), overTLS, mysql.ERAccessDenied, "may not connect through this node"},
		{"key granted another proxy", "tokenuser", build("AKIAOTHER", "other-secret", "tokenuser"), overTLS, mysql.ERAccessDenied, "not allowed to connect as tokenuser through proxy main"},
		{"tampered", "tokenuser", strings.Replace(good, "X-Amz-Expires=900", "X-Amz-Expires=899", 1), overTLS, mysql.ERAccessDenied, "signature does not match"},
	} {
		t.Run("refused/"+tc.name, func(t *testing.T) {
			err := login(tc.user, tc.password, tc.params)
			var me *gomysql.MySQLError
			if !errors.As(err, &me) || me.Number != tc.code {
				t.Fatalf("got %v; want MySQL error %d", err, tc.code)
			}
			if !strings.Contains(me.Message, tc.msg) {
				t.Fatalf("message %q; want it to say %q", me.Message, tc.msg)
			}
			if strings.Contains(me.Message, "X-Amz-Signature") || (len(tc.password) > 20 && strings.Contains(me.Message, tc.password)) {
				t.Fatalf("the error quotes the token or password: %q", me.Message)
			}
		})
	}

	t.Run("revoked even when the rest fails to apply", func(t *testing.T) {
		// The new configuration drops AKIAGOOD's grant, keeps AKIAOTHER,
		// and adds a proxy the node cannot start (its address is taken).
		next := *cfg
		next.Connect = &xdsapi.ConnectKeys{Region: sigv4.DefaultRegion, Keys: []xdsapi.ConnectKey{cfg.Connect.Keys[1]}}
		broken := cfg.Proxies[0]
		broken.Name = "broken"
		broken.Endpoints = []config.Endpoint{{Name: "rw", Address: env.Addr, TargetRole: vocab.TargetRoleReadWrite}}
		next.Proxies = append(slices.Clone(cfg.Proxies), broken)
		if err := env.Node.Apply(t.Context(), &next); err == nil {
			t.Fatal("a proxy on a taken address applied")
		}
		if err := login("tokenuser", good, overTLS); err == nil || !strings.Contains(err.Error(), "may not connect through this node") {
			t.Fatalf("token of a key the rejected configuration revoked: %v", err)
		}
		// Put the keys back for the next subtest.
		if err := env.Node.Apply(t.Context(), cfg); err != nil {
			t.Fatal(err)
		}
		if err := login("tokenuser", good, overTLS); err != nil {
			t.Fatalf("token after the keys came back: %v", err)
		}
	})
	t.Run("revoked even when the configuration is invalid", func(t *testing.T) {
		next := *cfg
		next.Connect = &xdsapi.ConnectKeys{Region: sigv4.DefaultRegion, Keys: []xdsapi.ConnectKey{cfg.Connect.Keys[1]}}
		next.Proxies = slices.Clone(cfg.Proxies)
		next.Proxies[0].Auth = nil // invalid: no auth block
		if err := env.Node.Apply(t.Context(), &next); err == nil {
			t.Fatal("a proxy without auth blocks applied")
		}
		if err := login("tokenuser", good, overTLS); err == nil || !strings.Contains(err.Error(), "may not connect through this node") {
			t.Fatalf("token of a key the invalid configuration revoked: %v", err)
		}
		if err := login(nodetest.User, nodetest.Password, ""); err != nil {
			t.Fatalf("the running configuration stopped serving: %v", err)
		}
		if err := env.Node.Apply(t.Context(), cfg); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("keys withdrawn", func(t *testing.T) {
		db, err := sql.Open("mysql", (&gomysql.Config{User: "tokenuser", Passwd: good, Net: "tcp", Addr: env.Addr, DBName: nodetest.Database,
			AllowNativePasswords: true, AllowCleartextPasswords: true, TLSConfig: "skip-verify"}).FormatDSN())
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		conn, err := db.Conn(t.Context())
		if err != nil {
			t.Fatalf("token login before the keys change: %v", err)
		}
		defer conn.Close()
		next := *cfg
		next.Connect = &xdsapi.ConnectKeys{Region: sigv4.DefaultRegion, Keys: []xdsapi.ConnectKey{}}
		if err := env.Node.Apply(t.Context(), &next); err != nil {
			t.Fatal(err)
		}
		if err := login("tokenuser", good, overTLS); err == nil || !strings.Contains(err.Error(), "may not connect through this node") {
			t.Fatalf("token login after its key was withdrawn: %v", err)
		}
		// A session that logged in before keeps working: the change
		// restarted no proxy.
		var one int
		if err := conn.QueryRowContext(t.Context(), "SELECT 1").Scan(&one); err != nil {
			t.Fatalf("session logged in before the change: %v", err)
		}
	})
}

// tokenAction is the Action of a connect token.
const tokenAction = "connect"
