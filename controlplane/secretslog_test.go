package controlplane_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/dbproxy/dbproxy/controlplane"
	"github.com/dbproxy/dbproxy/controlplane/translate"
	"github.com/dbproxy/dbproxy/internal/apiclient"
	"github.com/dbproxy/dbproxy/internal/cptest"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/mysqltest"
	"github.com/dbproxy/dbproxy/internal/nodetest"
	"github.com/dbproxy/dbproxy/internal/sigv4"
)

// logSink collects log lines from many goroutines.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func randomSecret(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b)
}

// signatureInLog matches what a SigV4 signature looks like wherever it is
// carried: an Authorization header, a presigned token's query, a raw
// x-dbproxy-token value.
var signatureInLog = regexp.MustCompile(`(?i)(signature=[0-9a-f]{8}|x-amz-signature|x-dbproxy-token[^a-z])`)

// TestSecretsStayOutOfLogs runs the control plane and three nodes with
// every log line at trace level going to one place, walks them through the
// paths that handle secrets (database logins right and wrong, a password
// rotation, access keys created, refused, disabled and deleted, signatures
// bad, expired and unknown, a node refused, a restart), and then looks for
// every secret the run used, and for any signature, in what was logged.
func TestSecretsStayOutOfLogs(t *testing.T) {
	sink := &logSink{}
	cp := cptest.StartOptions(t, cptest.Options{Log: sink})
	db := mysqltest.StartT(t, mysqltest.Options{})
	nodetest.PrepareServer(t, db)
	ctx := context.Background()

	password := randomSecret(t, "pw1-")
	bad := randomSecret(t, "badsecret-")
	rotated := randomSecret(t, "pw2-")
	wrong := randomSecret(t, "wrong-")
	if err := db.CreateUser(ctx, "logcheck", password); err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{"database password": password, "rotated database password": rotated, "wrong client password": wrong, "a wrong secret key": bad}

	var nodes []*cptest.Node
	for i, z := range zones {
		creds := cp.NodeCredentials("node-"+z, z)
		secrets["secret key of node-"+z] = creds.SecretAccessKey
		nodes = append(nodes, cp.StartNode(cptest.NodeOptions{ID: "node-" + z, Zone: z, Host: cptest.ZoneHost(i), Credentials: creds}))
	}
	for _, n := range nodes {
		n.WaitSynced(t) // rollouts wait for connected nodes only
	}
	tokenDBPassword := randomSecret(t, "tokdb-")
	if err := db.CreateUser(ctx, "tokcheck", tokenDBPassword); err != nil {
		t.Fatal(err)
	}
	secrets["database password of the token user"] = tokenDBPassword
	cp.Do("PUT", "/v1/secrets/app", map[string]any{"username": "logcheck", "password": password}, nil)
	cp.Do("PUT", "/v1/secrets/tok", map[string]any{"username": "tokcheck", "password": tokenDBPassword}, nil)
	var p model.Proxy
	cp.Do("PUT", "/v1/proxies/main", map[string]any{"zones": zones, "debug_logging": true, "auth": []map[string]any{
		{"secret": "app"}, {"secret": "tok", "iam_auth": "REQUIRED"}}}, &p)
	cp.Do("PUT", "/v1/iam/users/reporter", map[string]any{}, nil)
	cp.Do("PUT", "/v1/iam/policies/connect", map[string]string{"policy": `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"dbproxy:Connect","Resource":"proxy/main/dbuser/tokcheck"}]}`}, nil)
	cp.Do("PUT", "/v1/iam/users/reporter/policies/connect", map[string]any{}, nil)
	var reporter model.AccessKey
	cp.Do("POST", "/v1/iam/users/reporter/access-keys", nil, &reporter)
	secrets["secret key of reporter"] = reporter.SecretAccessKey
	for _, d := range translate.ConnectDates(time.Now()) {
		sk := sigv4.SigningKey(reporter.SecretAccessKey, sigv4.Scope{Date: d, Region: sigv4.DefaultRegion, Service: sigv4.ServiceRDS})
		secrets["signing key of reporter for "+d] = hex.EncodeToString(sk)
	}
	var tg model.Target
	cp.Do("PUT", "/v1/proxies/main/targets/db1", map[string]any{"host": db.Host, "port": db.Port, "zone": "a"}, &tg)
	cp.WaitRollout(tg.Revision, zones...)

	login := func(n *cptest.Node, pass string) error {
		db, err := sql.Open("mysql", fmt.Sprintf("logcheck:%s@tcp(%s)/%s?timeout=5s", pass, addr(n.Host, p.Port), nodetest.Database))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var v int
		return db.QueryRowContext(ctx, "SELECT 1").Scan(&v)
	}
	for _, n := range nodes {
		if err := login(n, password); err != nil {
			t.Fatalf("login through %s: %v", n.ID, err)
		}
		var me *mysql.MySQLError
		if err := login(n, wrong); !errors.As(err, &me) || me.Number != 1045 {
			t.Fatalf("login through %s with a wrong password: %v; want error 1045", n.ID, err)
		}
	}

	// Connect tokens: good ones, an expired one, one signed with a wrong
	// secret. Each token is a secret for its lifetime.
	for i, n := range nodes {
		hostPort := addr(n.Host, p.Port)
		good, err := sigv4.Presign(ctx, hostPort, "connect", url.Values{"DBUser": {"tokcheck"}}, sigv4.ServiceRDS, sigv4.DefaultRegion,
			15*time.Minute, sigv4.Credentials{AccessKeyID: reporter.ID, SecretAccessKey: reporter.SecretAccessKey}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		expired, _ := sigv4.Presign(ctx, hostPort, "connect", url.Values{"DBUser": {"tokcheck"}}, sigv4.ServiceRDS, sigv4.DefaultRegion,
			15*time.Minute, sigv4.Credentials{AccessKeyID: reporter.ID, SecretAccessKey: reporter.SecretAccessKey}, time.Now().Add(-time.Hour))
		forged, _ := sigv4.Presign(ctx, hostPort, "connect", url.Values{"DBUser": {"tokcheck"}}, sigv4.ServiceRDS, sigv4.DefaultRegion,
			15*time.Minute, sigv4.Credentials{AccessKeyID: reporter.ID, SecretAccessKey: bad}, time.Now())
		for j, tok := range []string{good, expired, forged} {
			secrets[fmt.Sprintf("connect token %d of node %d", j, i)] = tok
			db, err := sql.Open("mysql", fmt.Sprintf("tokcheck:%s@tcp(%s)/%s?timeout=5s&tls=skip-verify&allowCleartextPasswords=true", tok, hostPort, nodetest.Database))
			if err != nil {
				t.Fatal(err)
			}
			var v int
			err = db.QueryRowContext(ctx, "SELECT 1").Scan(&v)
			db.Close()
			if (j == 0) != (err == nil) {
				t.Fatalf("token %d through %s: %v", j, n.ID, err)
			}
		}
	}

	// A rotation: the server's password changes, then the secret.
	if err := db.Exec(ctx, "ALTER USER 'logcheck'@'%' IDENTIFIED BY '"+rotated+"'"); err != nil {
		t.Fatal(err)
	}
	var sec model.Secret
	cp.Do("PUT", "/v1/secrets/app", map[string]any{"username": "logcheck", "password": rotated}, &sec)
	cp.WaitRollout(sec.Revision, zones...)
	for _, n := range nodes {
		if err := login(n, rotated); err != nil {
			t.Fatalf("login through %s after the rotation: %v", n.ID, err)
		}
	}

	// Requests the API refuses: a wrong secret for the root key, an
	// unknown key, an expired signature, a key disabled and then deleted.
	root := cp.Root()
	secrets["root secret key"] = root.SecretAccessKey
	refused := func(what string, creds sigv4.Credentials, now func() time.Time) {
		t.Helper()
		c, err := apiclient.New(apiclient.Options{Endpoint: "https://" + cp.APIAddr(), Credentials: creds, CAPEM: cp.CA, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		var ae *model.Error
		if err := c.Do(ctx, "GET", "/v1/proxies", nil, nil); !errors.As(err, &ae) || ae.Status/100 != 4 {
			t.Fatalf("%s: %v; want a 4xx", what, err)
		}
	}
	refused("wrong secret", sigv4.Credentials{AccessKeyID: root.AccessKeyID, SecretAccessKey: bad}, nil)
	refused("unknown key", sigv4.Credentials{AccessKeyID: "AKIDUNKNOWNUNKNOWN00", SecretAccessKey: bad}, nil)
	refused("expired signature", sigv4.Credentials{AccessKeyID: root.AccessKeyID, SecretAccessKey: root.SecretAccessKey},
		func() time.Time { return time.Now().Add(-time.Hour) })
	cp.Do("PUT", "/v1/iam/users/ops", map[string]any{}, nil)
	var key model.AccessKey
	cp.Do("POST", "/v1/iam/users/ops/access-keys", nil, &key)
	secrets["secret key of ops"] = key.SecretAccessKey
	opsCreds := sigv4.Credentials{AccessKeyID: key.ID, SecretAccessKey: key.SecretAccessKey}
	refused("no policy", opsCreds, nil)
	cp.Do("PATCH", "/v1/iam/users/ops/access-keys/"+key.ID, map[string]string{"status": "Inactive"}, nil)
	refused("inactive key", opsCreds, nil)
	cp.Do("DELETE", "/v1/iam/users/ops/access-keys/"+key.ID, nil, nil)
	refused("deleted key", opsCreds, nil)

	// A node whose key does not allow its zone.
	stray := cp.StartNode(cptest.NodeOptions{ID: "node-stray", Zone: "b", Host: cptest.ZoneHost(1), Credentials: nodes[0].Credentials()})
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(stray.Status().LastError, "not allowed") {
		if time.Now().After(deadline) {
			t.Fatalf("stray node: %+v; want a refusal", stray.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
	stray.Stop()

	// A restart reads the sealed state back.
	cp.Restart()
	for _, n := range nodes {
		n.WaitSynced(t)
	}
	for _, n := range nodes {
		n.Stop()
	}
	cp.Stop()

	mk, err := os.ReadFile(filepath.Join(cp.Dir, controlplane.MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	secrets["master key"] = strings.TrimSpace(string(mk))

	logs := sink.String()
	if !strings.Contains(logs, "node-stray") || !strings.Contains(logs, "logcheck") || !strings.Contains(logs, "connect token accepted") {
		t.Fatalf("the log sink missed the run (%d bytes); the test would prove nothing", len(logs))
	}
	// Writes leave an audit line with who made them (and never a body).
	if audit := "write: method=PATCH path=/v1/iam/users/ops/access-keys/" + key.ID + " status=200 user=root"; !strings.Contains(logs, audit) {
		t.Errorf("no audit line %q in the logs", audit)
	}
	for what, s := range secrets {
		if i := strings.Index(logs, s); i >= 0 {
			t.Errorf("the %s is in the logs: %q", what, line(logs, i))
		}
	}
	if loc := signatureInLog.FindStringIndex(logs); loc != nil {
		t.Errorf("a signature is in the logs: %q", line(logs, loc[0]))
	}
	t.Logf("%d lines, %d bytes of logs checked for %d secrets", strings.Count(logs, "\n"), len(logs), len(secrets))
}

// line returns the line of s around offset i.
func line(s string, i int) string {
	start := strings.LastIndexByte(s[:i], '\n') + 1
	end := strings.IndexByte(s[i:], '\n')
	if end < 0 {
		return s[start:]
	}
	return s[start : i+end]
}
