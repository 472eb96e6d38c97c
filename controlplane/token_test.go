package controlplane_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	rdsauth "github.com/aws/aws-sdk-go-v2/feature/rds/auth"
	"github.com/go-sql-driver/mysql"

	"github.com/dbproxy/dbproxy/internal/cptest"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/nodetest"
)

// TestConnectTokensThroughTheFleet declares a proxy whose second auth
// block requires IAM authentication, lets an IAM user connect as its
// database user, and logs in through every zone's node with connect tokens
// made by aws-sdk-go-v2's BuildAuthToken, over TLS verified against the
// control plane's CA. Disabling the key, detaching the policy and stopping
// the control plane then do what a user expects.
func TestConnectTokensThroughTheFleet(t *testing.T) {
	f := startFleet(t)
	ctx := context.Background()
	if err := f.db.CreateUser(ctx, "reporting", "reporting-db-password"); err != nil {
		t.Fatal(err)
	}
	cp := f.cp
	cp.Do("PUT", "/v1/secrets/app", map[string]any{"username": nodetest.User, "password": nodetest.Password}, nil)
	cp.Do("PUT", "/v1/secrets/reporting", map[string]any{"username": "reporting", "password": "reporting-db-password"}, nil)
	var p model.Proxy
	cp.Do("PUT", "/v1/proxies/main", map[string]any{"zones": zones, "auth": []map[string]any{
		{"secret": "app"}, {"secret": "reporting", "iam_auth": "REQUIRED"},
	}}, &p)
	cp.Do("PUT", "/v1/proxies/main/targets/db1", map[string]any{"host": f.db.Host, "port": f.db.Port, "zone": "a"}, nil)
	cp.Do("PUT", "/v1/iam/users/alice", map[string]any{}, nil)
	cp.Do("PUT", "/v1/iam/policies/connect-reporting", map[string]string{"policy": `{"Version":"2012-10-17","Statement":[
		{"Effect":"Allow","Action":"dbproxy:Connect","Resource":"proxy/main/dbuser/reporting"}]}`}, nil)
	cp.Do("PUT", "/v1/iam/users/alice/policies/connect-reporting", map[string]any{}, nil)
	var key model.AccessKey
	cp.Do("POST", "/v1/iam/users/alice/access-keys", nil, &key)
	cp.WaitRollout(key.Revision, zones...)

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cp.CA)
	for _, n := range f.nodes {
		if err := mysql.RegisterTLSConfig("token-"+n.ID, &tls.Config{RootCAs: pool, ServerName: n.Host, MinVersion: tls.VersionTLS12}); err != nil {
			t.Fatal(err)
		}
	}
	token := func(hostPort, user string) string {
		t.Helper()
		tok, err := rdsauth.BuildAuthToken(ctx, hostPort, "local", user, aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: key.ID, SecretAccessKey: key.SecretAccessKey}, nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	// login logs in through node i as user with password (a token) and
	// returns CURRENT_USER().
	login := func(i int, user, password string) (string, error) {
		n := f.nodes[i]
		a := addr(n.Host, p.Port)
		cfg := mysql.NewConfig()
		cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = user, password, "tcp", a, nodetest.Database
		cfg.AllowCleartextPasswords, cfg.TLSConfig, cfg.Timeout = true, "token-"+n.ID, 5*time.Second
		db, err := sql.Open("mysql", cfg.FormatDSN())
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var who string
		err = db.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&who)
		return who, err
	}
	allLogIn := func(when string) {
		t.Helper()
		for i, n := range f.nodes {
			who, err := login(i, "reporting", token(addr(n.Host, p.Port), "reporting"))
			if err != nil || !strings.HasPrefix(who, "reporting@") {
				t.Fatalf("%s: token login through %s: %q, %v", when, n.ID, who, err)
			}
		}
	}
	allRefused := func(when, reason string) {
		t.Helper()
		for i, n := range f.nodes {
			_, err := login(i, "reporting", token(addr(n.Host, p.Port), "reporting"))
			if err == nil || !strings.Contains(err.Error(), reason) {
				t.Fatalf("%s: token login through %s: %v; want a refusal saying %q", when, n.ID, err, reason)
			}
		}
	}
	allLogIn("granted")
	// The database user's password does not log in through the proxy.
	if _, err := login(0, "reporting", "reporting-db-password"); err == nil || !strings.Contains(err.Error(), "not a connect token") {
		t.Fatalf("password of a REQUIRED user: %v", err)
	}
	// Nor does a token for the password user's name.
	if _, err := login(0, nodetest.User, token(addr(f.nodes[0].Host, p.Port), nodetest.User)); err == nil {
		t.Fatal("a token logged in as the user of a DISABLED auth block")
	}

	// Disabling the key reaches every node with the rollout.
	start := time.Now()
	var patched model.AccessKey
	cp.Do("PATCH", "/v1/iam/users/alice/access-keys/"+key.ID, map[string]string{"status": "Inactive"}, &patched)
	cp.WaitRollout(patched.Revision, zones...)
	allRefused("key disabled", "may not connect through this node")
	t.Logf("disabling the key: refused by all %d nodes %s after the PATCH", len(f.nodes), time.Since(start).Round(time.Millisecond))
	cp.Do("PATCH", "/v1/iam/users/alice/access-keys/"+key.ID, map[string]string{"status": "Active"}, &patched)
	cp.WaitRollout(patched.Revision, zones...)
	allLogIn("key enabled again")

	// Detaching the policy takes the grant away.
	cp.Do("DELETE", "/v1/iam/users/alice/policies/connect-reporting", nil, nil)
	var st struct {
		Revision uint64 `json:"revision"`
	}
	cp.Do("GET", "/v1/status", nil, &st)
	cp.WaitRollout(st.Revision, zones...)
	allRefused("policy detached", "may not connect through this node")
	cp.Do("PUT", "/v1/iam/users/alice/policies/connect-reporting", map[string]any{}, &st)
	cp.Do("GET", "/v1/status", nil, &st)
	cp.WaitRollout(st.Revision, zones...)
	allLogIn("policy attached again")

	// Nodes verify offline: with the control plane stopped, tokens still
	// log in.
	cp.Stop()
	allLogIn(fmt.Sprintf("control plane stopped (%d nodes)", len(f.nodes)))
}

// TestConnectKeysFollowTheDay runs the control plane and a node on a clock
// just before midnight UTC: the node holds signing keys for the day
// before, of and after; once the clock passes midnight, a refresh (the
// hourly one, called here) pushes the next three days without any commit.
func TestConnectKeysFollowTheDay(t *testing.T) {
	// A clock behind the real one, so that certificates issued with it
	// are already valid for TLS, which checks the real time.
	day := time.Now().UTC().Truncate(24 * time.Hour).Add(-24 * time.Hour)
	var offset atomic.Int64
	offset.Store(int64(time.Until(day.Add(24*time.Hour - 30*time.Second))))
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	cp := cptest.StartOptions(t, cptest.Options{Now: now})
	n := cp.StartNode(cptest.NodeOptions{ID: "node-a", Zone: "a", Host: cptest.ZoneHost(0), Credentials: cp.NodeCredentials("node-a", "a")})
	n.WaitSynced(t) // rollouts wait for connected nodes only
	cp.Do("PUT", "/v1/secrets/tok", map[string]any{"username": "reporting", "password": "pw"}, nil)
	cp.Do("PUT", "/v1/proxies/main", map[string]any{"zones": []string{"a"}, "auth": []map[string]any{{"secret": "tok", "iam_auth": "REQUIRED"}}}, nil)
	cp.Do("PUT", "/v1/iam/users/alice", map[string]any{}, nil)
	cp.Do("PUT", "/v1/iam/policies/p", map[string]string{"policy": `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"dbproxy:Connect","Resource":"proxy/*"}]}`}, nil)
	cp.Do("PUT", "/v1/iam/users/alice/policies/p", map[string]any{}, nil)
	var key model.AccessKey
	cp.Do("POST", "/v1/iam/users/alice/access-keys", nil, &key)
	cp.WaitRollout(key.Revision, "a")

	dates := func() []string {
		cfg := n.Node.Node().Config()
		if cfg == nil || cfg.Connect == nil || len(cfg.Connect.Keys) != 1 {
			return nil
		}
		return slices.Sorted(maps.Keys(cfg.Connect.Keys[0].SigningKeys))
	}
	d := func(t time.Time) string { return t.Format("20060102") }
	want := []string{d(day.AddDate(0, 0, -1)), d(day), d(day.AddDate(0, 0, 1))}
	if got := dates(); !slices.Equal(got, want) {
		t.Fatalf("before midnight the node holds keys for %v, want %v", got, want)
	}
	version := n.Status().Version

	offset.Add(int64(time.Minute)) // 00:00:30 the next day
	if err := cp.XDS().Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	want = []string{d(day), d(day.AddDate(0, 0, 1)), d(day.AddDate(0, 0, 2))}
	deadline := time.Now().Add(20 * time.Second)
	for !slices.Equal(dates(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("after midnight the node holds keys for %v, want %v", dates(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n.Status().Version == version {
		t.Fatal("new signing keys arrived without a new version")
	}
}
