package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbproxy/dbproxy/controlplane/api"
	"github.com/dbproxy/dbproxy/controlplane/store"
	"github.com/dbproxy/dbproxy/internal/apiclient"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/mysqltest"
	"github.com/dbproxy/dbproxy/internal/sigv4"
)

// env is an API over a real bbolt store, with a root key.
type env struct {
	t     *testing.T
	url   string
	store store.Store
	root  sigv4.Credentials
	now   atomic.Pointer[time.Time]
	h     *api.API
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, nil)
}

// newEnvWith is newEnv with options changed by opt (nil: none).
func newEnvWith(t *testing.T, opt func(*api.Options)) *env {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "state.db"), store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{t: t, store: st}
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	e.now.Store(&now)
	key, err := api.NewAccessKey(model.RootUser)
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.Update(t.Context(), func(tx store.Tx) error {
		u, _ := json.Marshal(model.User{Name: model.RootUser, Path: "/"})
		k, _ := json.Marshal(key)
		if err := tx.Put(model.KindUser, model.RootUser, u); err != nil {
			return err
		}
		return tx.Put(model.KindAccessKey, key.ID, k)
	})
	if err != nil {
		t.Fatal(err)
	}
	e.root = sigv4.Credentials{AccessKeyID: key.ID, SecretAccessKey: key.SecretAccessKey}
	opts := api.Options{Store: st, Logger: mysqltest.TestLogger(t), Now: e.clock, PortMin: 7000, PortMax: 7002}
	if opt != nil {
		opt(&opts)
	}
	h, err := api.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	e.h = h
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	e.url = srv.URL
	return e
}

func (e *env) clock() time.Time { return *e.now.Load() }

func (e *env) client(c sigv4.Credentials) *apiclient.Client {
	e.t.Helper()
	cl, err := apiclient.New(apiclient.Options{Endpoint: e.url, Credentials: c, Now: e.clock})
	if err != nil {
		e.t.Fatal(err)
	}
	return cl
}

// do calls the API and returns the API error (nil on success).
func do(t *testing.T, c *apiclient.Client, method, path string, in, out any, h ...apiclient.Header) *model.Error {
	t.Helper()
	err := c.Do(context.Background(), method, path, in, out, h...)
	if err == nil {
		return nil
	}
	var ae *model.Error
	if !errors.As(err, &ae) {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return ae
}

func must(t *testing.T, c *apiclient.Client, method, path string, in, out any, h ...apiclient.Header) {
	t.Helper()
	if e := do(t, c, method, path, in, out, h...); e != nil {
		t.Fatalf("%s %s: %v", method, path, e)
	}
}

func obj(s string) map[string]any {
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		panic(err)
	}
	return m
}

func seed(t *testing.T, c *apiclient.Client) {
	t.Helper()
	must(t, c, "PUT", "/v1/secrets/app", obj(`{"username":"app","password":"pw"}`), nil)
	must(t, c, "PUT", "/v1/proxies/main", obj(`{"zones":["a","b"],"auth":[{"secret":"app"}]}`), nil)
}

func TestValidationNamesTheField(t *testing.T) {
	e := newEnv(t)
	c := e.client(e.root)
	seed(t, c)
	cases := []struct {
		name, method, path, body, code, field string
		status                                int
	}{
		{"malformed json", "PUT", "/v1/secrets/s", `{"username":`, "MalformedJSON", "", 400},
		{"unknown field", "PUT", "/v1/secrets/s", `{"username":"u","password":"p","colour":1}`, "ValidationError", "colour", 400},
		{"wrong type", "PUT", "/v1/proxies/p", `{"zones":"a","auth":[{"secret":"app"}]}`, "ValidationError", "zones", 400},
		{"secret without password", "PUT", "/v1/secrets/s", `{"username":"u"}`, "ValidationError", "password", 400},
		{"secret bad name", "PUT", "/v1/secrets/-x", `{"username":"u","password":"p"}`, "ValidationError", "name", 400},
		{"name differs from path", "PUT", "/v1/secrets/s", `{"name":"t","username":"u","password":"p"}`, "ValidationError", "name", 400},
		{"proxy no zones", "PUT", "/v1/proxies/p", `{"auth":[{"secret":"app"}]}`, "ValidationError", "zones", 400},
		{"proxy bad zone", "PUT", "/v1/proxies/p", `{"zones":["A b"],"auth":[{"secret":"app"}]}`, "ValidationError", "zones[0]", 400},
		{"proxy bad engine", "PUT", "/v1/proxies/p", `{"engine_family":"POSTGRESQL","zones":["a"],"auth":[{"secret":"app"}]}`, "ValidationError", "engine_family", 400},
		{"proxy bad iam_auth", "PUT", "/v1/proxies/p", `{"zones":["a"],"auth":[{"secret":"app","iam_auth":"MAYBE"}]}`, "ValidationError", "auth[0].iam_auth", 400},
		{"proxy unknown secret", "PUT", "/v1/proxies/p", `{"zones":["a"],"auth":[{"secret":"nope"}]}`, "NotFound", "auth[0].secret", 404},
		{"proxy idle timeout", "PUT", "/v1/proxies/p", `{"zones":["a"],"auth":[{"secret":"app"}],"idle_client_timeout":99999}`, "ValidationError", "idle_client_timeout", 400},
		{"proxy port", "PUT", "/v1/proxies/p", `{"zones":["a"],"auth":[{"secret":"app"}],"port":70000}`, "ValidationError", "port", 400},
		{"pool percent", "PUT", "/v1/proxies/main/target-group", `{"connection_pool_config":{"max_connections_percent":101}}`, "ValidationError", "connection_pool_config.max_connections_percent", 400},
		{"pool idle over max", "PUT", "/v1/proxies/main/target-group", `{"connection_pool_config":{"max_connections_percent":20,"max_idle_connections_percent":30}}`, "ValidationError", "connection_pool_config.max_idle_connections_percent", 400},
		{"pool filter", "PUT", "/v1/proxies/main/target-group", `{"connection_pool_config":{"session_pinning_filters":["NONE"]}}`, "ValidationError", "connection_pool_config.session_pinning_filters[0]", 400},
		{"target group of missing proxy", "PUT", "/v1/proxies/nope/target-group", `{}`, "NotFound", "proxy", 404},
		{"target bad role", "PUT", "/v1/proxies/main/targets/db1", `{"host":"127.0.0.1","role":"PRIMARY"}`, "ValidationError", "role", 400},
		{"target no host", "PUT", "/v1/proxies/main/targets/db1", `{"port":3306}`, "ValidationError", "host", 400},
		{"target bad port", "PUT", "/v1/proxies/main/targets/db1", `{"host":"h","port":0.5}`, "ValidationError", "port", 400},
		{"endpoint zone not of proxy", "PUT", "/v1/proxies/main/endpoints/ro", `{"target_role":"READ_ONLY","zones":["c"]}`, "ValidationError", "zones[0]", 400},
		{"endpoint bad role", "PUT", "/v1/proxies/main/endpoints/ro", `{"target_role":"READ"}`, "ValidationError", "target_role", 400},
		{"endpoint reserved name", "PUT", "/v1/proxies/main/endpoints/default", `{}`, "ValidationError", "name", 400},
		{"policy not json", "PUT", "/v1/iam/policies/p", `{"policy":"{"}`, "ValidationError", "policy", 400},
		{"policy bad effect", "PUT", "/v1/iam/policies/p", `{"policy":"{\"Statement\":[{\"Effect\":\"Maybe\",\"Action\":\"*\",\"Resource\":\"*\"}]}"}`, "ValidationError", "policy", 400},
		{"user reserved", "PUT", "/v1/iam/users/root", `{}`, "Conflict", "name", 409},
		{"user bad path", "PUT", "/v1/iam/users/u", `{"path":"x"}`, "ValidationError", "path", 400},
		{"attach missing policy", "PUT", "/v1/iam/users/root/policies/nope", `{}`, "NotFound", "policy_name", 404},
		{"key status", "POST", "/v1/iam/users/root/access-keys", `{"status":"Sleeping"}`, "ValidationError", "status", 400},
		{"bad If-Match", "PUT", "/v1/secrets/app", `{"username":"app"}`, "ValidationError", "If-Match", 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body any
			if err := json.Unmarshal([]byte(tc.body), &body); err != nil {
				body = json.RawMessage(tc.body) // sent as is, malformed on purpose
			}
			var h []apiclient.Header
			if tc.name == "bad If-Match" {
				h = append(h, apiclient.Header{Name: "If-Match", Value: "soon"})
			}
			got := do(t, c, tc.method, tc.path, rawOr(tc.body, body), nil, h...)
			if got == nil {
				t.Fatalf("%s %s %s succeeded; want %d %s", tc.method, tc.path, tc.body, tc.status, tc.code)
			}
			if got.Status != tc.status || got.Code != tc.code || got.Field != tc.field {
				t.Fatalf("got %d %s field %q (%s); want %d %s field %q", got.Status, got.Code, got.Field, got.Message, tc.status, tc.code, tc.field)
			}
			if got.Message == "" {
				t.Fatal("an error without a message")
			}
		})
	}
	// Nothing invalid was stored.
	var list struct{ Items []model.Proxy }
	must(t, c, "GET", "/v1/proxies", nil, &list)
	if len(list.Items) != 1 {
		t.Fatalf("proxies after invalid writes = %d, want 1", len(list.Items))
	}
}

// rawOr sends malformed bodies byte for byte.
func rawOr(raw string, v any) any {
	if _, ok := v.(json.RawMessage); ok {
		return apiclient.RawBody(raw)
	}
	return v
}

func TestCRUDIdempotentAndOptimistic(t *testing.T) {
	e := newEnv(t)
	c := e.client(e.root)
	var s model.Secret
	if err := do(t, c, "PUT", "/v1/secrets/app", obj(`{"username":"app","password":"hunter2"}`), &s); err != nil {
		t.Fatal(err)
	}
	if s.Password != "" {
		t.Fatal("the API returned a password")
	}
	first := s.Revision
	// The same PUT again changes nothing.
	must(t, c, "PUT", "/v1/secrets/app", obj(`{"username":"app","password":"hunter2"}`), &s)
	if s.Revision != first {
		t.Fatalf("an identical PUT made revision %d (was %d)", s.Revision, first)
	}
	// Omitting the password keeps it.
	must(t, c, "PUT", "/v1/secrets/app", obj(`{"username":"app"}`), &s)
	if s.Revision != first {
		t.Fatalf("PUT without password changed the secret (revision %d, was %d)", s.Revision, first)
	}
	raw := readRaw(t, e.store, model.KindSecret, "app")
	if !strings.Contains(raw, "hunter2") {
		t.Fatal("the password was lost when a PUT omitted it")
	}
	// If-Match with a stale revision is refused and changes nothing.
	err := do(t, c, "PUT", "/v1/secrets/app", obj(`{"username":"other"}`), nil, apiclient.IfMatch(first+100))
	if err == nil || err.Status != http.StatusPreconditionFailed {
		t.Fatalf("stale If-Match: %v; want 412", err)
	}
	must(t, c, "PUT", "/v1/secrets/app", obj(`{"username":"other"}`), &s, apiclient.IfMatch(first))
	if s.Revision <= first || s.Username != "other" {
		t.Fatalf("If-Match update: %+v", s)
	}
	// If-None-Match: * creates only.
	if err := do(t, c, "PUT", "/v1/secrets/app", obj(`{"username":"x","password":"y"}`), nil, apiclient.Header{Name: "If-None-Match", Value: "*"}); err == nil || err.Code != "AlreadyExists" {
		t.Fatalf("If-None-Match on an existing secret: %v", err)
	}

	// Ports are allocated from the range, kept on update, and unique.
	var p1, p2 model.Proxy
	must(t, c, "PUT", "/v1/proxies/one", obj(`{"zones":["a"],"auth":[{"secret":"app"}]}`), &p1)
	must(t, c, "PUT", "/v1/proxies/two", obj(`{"zones":["a"],"auth":[{"secret":"app"}]}`), &p2)
	if p1.Port != 7000 || p2.Port != 7001 {
		t.Fatalf("allocated ports %d, %d; want 7000, 7001", p1.Port, p2.Port)
	}
	must(t, c, "PUT", "/v1/proxies/one", obj(`{"zones":["a","b"],"auth":[{"secret":"app"}]}`), &p1)
	if p1.Port != 7000 {
		t.Fatalf("update moved the port to %d", p1.Port)
	}
	if err := do(t, c, "PUT", "/v1/proxies/three", obj(`{"zones":["a"],"auth":[{"secret":"app"}],"port":7001}`), nil); err == nil || err.Status != 409 || err.Field != "port" {
		t.Fatalf("taken port: %v", err)
	}
	var ep model.Endpoint
	must(t, c, "PUT", "/v1/proxies/one/endpoints/ro", obj(`{"target_role":"READ_ONLY"}`), &ep)
	if ep.Port != 7002 {
		t.Fatalf("endpoint port %d", ep.Port)
	}
	if err := do(t, c, "PUT", "/v1/proxies/three", obj(`{"zones":["a"],"auth":[{"secret":"app"}]}`), nil); err == nil || err.Status != 409 {
		t.Fatalf("exhausted port range: %v", err)
	}

	// A target group reads as defaults until written.
	var g model.TargetGroup
	must(t, c, "GET", "/v1/proxies/one/target-group", nil, &g)
	if g.ConnectionPoolConfig.MaxConnectionsPercent != 100 || g.ConnectionPoolConfig.ConnectionBorrowTimeout != 120 {
		t.Fatalf("default target group: %+v", g)
	}
	must(t, c, "PUT", "/v1/proxies/one/targets/db1", obj(`{"host":"127.0.0.1","port":3306,"zone":"a"}`), nil)
	if err := do(t, c, "PUT", "/v1/proxies/one/targets/db2", obj(`{"host":"127.0.0.1","port":3306}`), nil); err == nil || err.Status != 409 {
		t.Fatalf("duplicate host:port: %v", err)
	}

	// Deleting a secret in use is refused; deleting a proxy cascades.
	if err := do(t, c, "DELETE", "/v1/secrets/app", nil, nil); err == nil || err.Status != 409 || !strings.Contains(err.Message, "proxy") {
		t.Fatalf("delete secret in use: %v", err)
	}
	must(t, c, "DELETE", "/v1/proxies/one", nil, nil)
	for _, path := range []string{"/v1/proxies/one", "/v1/proxies/one/targets/db1", "/v1/proxies/one/endpoints/ro"} {
		if err := do(t, c, "GET", path, nil, nil); err == nil || err.Status != 404 {
			t.Fatalf("GET %s after the proxy was deleted: %v", path, err)
		}
	}
	if err := do(t, c, "DELETE", "/v1/proxies/one", nil, nil); err == nil || err.Status != 404 {
		t.Fatalf("second delete: %v", err)
	}
}

func readRaw(t *testing.T, st store.Store, kind, key string) string {
	t.Helper()
	var out string
	_, err := st.View(t.Context(), func(r store.Reader) error {
		o, err := r.Get(kind, key)
		out = string(o.Value)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAuthorization(t *testing.T) {
	e := newEnv(t)
	root := e.client(e.root)
	seed(t, root)
	// alice may read proxies and write anything under proxy/main, but an
	// explicit Deny forbids deleting it.
	must(t, root, "PUT", "/v1/iam/users/alice", obj(`{}`), nil)
	must(t, root, "PUT", "/v1/iam/policies/ops", map[string]string{"policy": `{
		"Version": "2012-10-17",
		"Statement": [
			{"Effect": "Allow", "Action": ["dbproxy:Get*", "dbproxy:List*"], "Resource": "proxy/*"},
			{"Effect": "Allow", "Action": "dbproxy:Put*", "Resource": "proxy/main*"},
			{"Effect": "Allow", "Action": "dbproxy:*", "Resource": "proxy/main"},
			{"Effect": "Deny", "Action": "dbproxy:DeleteProxy", "Resource": "*"}
		]}`}, nil)
	must(t, root, "PUT", "/v1/iam/users/alice/policies/ops", obj(`{}`), nil)
	var key model.AccessKey
	must(t, root, "POST", "/v1/iam/users/alice/access-keys", nil, &key)
	if key.SecretAccessKey == "" || key.ID == "" {
		t.Fatal("a new access key came back without its secret")
	}
	var again model.AccessKey
	must(t, root, "GET", "/v1/iam/users/alice/access-keys/"+key.ID, nil, &again)
	if again.SecretAccessKey != "" {
		t.Fatal("GET returned the secret access key")
	}
	alice := sigv4.Credentials{AccessKeyID: key.ID, SecretAccessKey: key.SecretAccessKey}
	ac := e.client(alice)

	t.Run("allowed", func(t *testing.T) {
		must(t, ac, "GET", "/v1/proxies/main", nil, nil)
		must(t, ac, "PUT", "/v1/proxies/main/targets/db1", obj(`{"host":"127.0.0.1"}`), nil)
		var id map[string]string
		must(t, ac, "GET", "/v1/identity", nil, &id)
		if id["user"] != "alice" {
			t.Fatalf("identity = %v", id)
		}
	})
	t.Run("default deny", func(t *testing.T) {
		err := do(t, ac, "GET", "/v1/secrets/app", nil, nil)
		if err == nil || err.Status != 403 || err.Code != "AccessDenied" || !strings.Contains(err.Message, "dbproxy:GetSecret") {
			t.Fatalf("GetSecret: %v", err)
		}
		if err := do(t, ac, "PUT", "/v1/iam/users/mallory", obj(`{}`), nil); err == nil || err.Status != 403 {
			t.Fatalf("PutUser: %v", err)
		}
	})
	t.Run("explicit deny wins", func(t *testing.T) {
		if err := do(t, ac, "DELETE", "/v1/proxies/main", nil, nil); err == nil || err.Status != 403 {
			t.Fatalf("DeleteProxy: %v", err)
		}
	})
	t.Run("bad signature", func(t *testing.T) {
		bad := e.client(sigv4.Credentials{AccessKeyID: key.ID, SecretAccessKey: "wrong" + key.SecretAccessKey})
		err := do(t, bad, "GET", "/v1/proxies/main", nil, nil)
		if err == nil || err.Status != 401 || err.Code != "SignatureDoesNotMatch" {
			t.Fatalf("bad signature: %v", err)
		}
		if strings.Contains(err.Message, key.SecretAccessKey) {
			t.Fatal("the error echoes the secret")
		}
	})
	t.Run("expired signature", func(t *testing.T) {
		past := e.clock().Add(-time.Hour)
		old, err := apiclient.New(apiclient.Options{Endpoint: e.url, Credentials: alice, Now: func() time.Time { return past }})
		if err != nil {
			t.Fatal(err)
		}
		if err := do(t, old, "GET", "/v1/proxies/main", nil, nil); err == nil || err.Status != 401 || err.Code != "RequestExpired" {
			t.Fatalf("old signature: %v", err)
		}
	})
	t.Run("unknown key", func(t *testing.T) {
		u := e.client(sigv4.Credentials{AccessKeyID: "DBPKNOSUCHKEY0000000", SecretAccessKey: "x"})
		if err := do(t, u, "GET", "/v1/proxies/main", nil, nil); err == nil || err.Status != 401 || err.Code != "InvalidAccessKeyId" {
			t.Fatalf("unknown key: %v", err)
		}
	})
	t.Run("unsigned", func(t *testing.T) {
		resp, err := http.Get(e.url + "/v1/proxies")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Fatalf("unsigned request: %d", resp.StatusCode)
		}
	})
	t.Run("disabled key", func(t *testing.T) {
		must(t, root, "PATCH", "/v1/iam/users/alice/access-keys/"+key.ID, obj(`{"status":"Inactive"}`), nil)
		if err := do(t, ac, "GET", "/v1/proxies/main", nil, nil); err == nil || err.Status != 401 || err.Code != "InactiveAccessKey" {
			t.Fatalf("inactive key: %v", err)
		}
		must(t, root, "PATCH", "/v1/iam/users/alice/access-keys/"+key.ID, obj(`{"status":"Active"}`), nil)
		must(t, ac, "GET", "/v1/proxies/main", nil, nil)
	})
	t.Run("dependencies", func(t *testing.T) {
		if err := do(t, root, "DELETE", "/v1/iam/users/alice", nil, nil); err == nil || err.Status != 409 {
			t.Fatalf("delete user with keys: %v", err)
		}
		if err := do(t, root, "DELETE", "/v1/iam/policies/ops", nil, nil); err == nil || err.Status != 409 {
			t.Fatalf("delete attached policy: %v", err)
		}
		if err := do(t, root, "DELETE", "/v1/iam/users/root", nil, nil); err == nil || err.Status != 409 {
			t.Fatalf("delete root: %v", err)
		}
		must(t, root, "DELETE", "/v1/iam/users/alice/access-keys/"+key.ID, nil, nil)
		must(t, root, "DELETE", "/v1/iam/users/alice/policies/ops", nil, nil)
		must(t, root, "DELETE", "/v1/iam/users/alice", nil, nil)
		must(t, root, "DELETE", "/v1/iam/policies/ops", nil, nil)
		// The deleted key no longer works.
		if err := do(t, ac, "GET", "/v1/proxies/main", nil, nil); err == nil || err.Status != 401 {
			t.Fatalf("deleted key: %v", err)
		}
	})
}

func TestOverlongPathNameIsABadRequest(t *testing.T) {
	e := newEnv(t)
	c := e.client(e.root)
	long := strings.Repeat("x", 40000) // more than the store's key limit
	for _, path := range []string{"/v1/secrets/" + long, "/v1/iam/users/" + long, "/v1/proxies/p/targets/" + long} {
		for _, method := range []string{"GET", "DELETE"} {
			err := do(t, c, method, path, nil, nil)
			if err == nil || err.Status != 400 || err.Code != "ValidationError" {
				t.Fatalf("%s %.40s...: %v, want 400 ValidationError", method, path, err)
			}
		}
	}
}

// TestStoreFailureIsNotASignatureError: when the key cannot be read, the
// caller is told the server failed, not that its signature is malformed.
func TestStoreFailureIsNotASignatureError(t *testing.T) {
	e := newEnv(t)
	c := e.client(e.root)
	must(t, c, "GET", "/v1/identity", nil, nil)
	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}
	if err := do(t, c, "GET", "/v1/identity", nil, nil); err == nil || err.Status != 500 || err.Code != "InternalError" {
		t.Fatalf("request with the store closed: %v, want 500 InternalError", err)
	}
}

// TestAuthBlocksNeedDistinctUsernames: a node could not tell which auth
// block a login belongs to, so a proxy whose secrets share a username is
// refused, as is a secret's rename into such a collision.
func TestAuthBlocksNeedDistinctUsernames(t *testing.T) {
	e := newEnv(t)
	c := e.client(e.root)
	must(t, c, "PUT", "/v1/secrets/pw", obj(`{"username":"app","password":"x"}`), nil)
	must(t, c, "PUT", "/v1/secrets/tok", obj(`{"username":"app","password":"y"}`), nil)
	must(t, c, "PUT", "/v1/secrets/other", obj(`{"username":"reporting","password":"z"}`), nil)
	ae := do(t, c, "PUT", "/v1/proxies/p", obj(`{"zones":["a"],"auth":[{"secret":"tok","iam_auth":"REQUIRED"},{"secret":"pw"}]}`), nil)
	if ae == nil || ae.Status != 409 || ae.Field != "auth[1].secret" || !strings.Contains(ae.Message, `username "app"`) {
		t.Fatalf("two auth blocks for one username: %+v; want 409 naming auth[1].secret", ae)
	}
	must(t, c, "PUT", "/v1/proxies/p", obj(`{"zones":["a"],"auth":[{"secret":"tok","iam_auth":"REQUIRED"},{"secret":"other"}]}`), nil)
	ae = do(t, c, "PUT", "/v1/secrets/other", obj(`{"username":"app"}`), nil)
	if ae == nil || ae.Status != 409 || ae.Field != "username" {
		t.Fatalf("renaming a secret into a collision: %+v; want 409 naming username", ae)
	}
	var s model.Secret
	must(t, c, "GET", "/v1/secrets/other", nil, &s)
	if s.Username != "reporting" {
		t.Fatalf("the refused rename was stored: %q", s.Username)
	}
	// A rename that collides with nothing is fine.
	must(t, c, "PUT", "/v1/secrets/other", obj(`{"username":"reports"}`), nil)
	ae = do(t, c, "PUT", "/v1/proxies/q", obj(`{"zones":["a"],"auth":[{"secret":"missing"}]}`), nil)
	if ae == nil || ae.Status != 404 || ae.Field != "auth[0].secret" {
		t.Fatalf("a missing secret: %+v; want 404 naming auth[0].secret", ae)
	}
}
