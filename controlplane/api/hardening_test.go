package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dbproxy/dbproxy/controlplane/api"
	"github.com/dbproxy/dbproxy/controlplane/store"
	"github.com/dbproxy/dbproxy/internal/apiclient"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/sigv4"
	"github.com/dbproxy/dbproxy/internal/testing/testutil"
)

// TestBodiesAreReadAsSent checks that a body is refused, naming the field,
// where encoding/json alone would silently change what it says: invalid
// UTF-8 and unpaired surrogate escapes (replaced by U+FFFD) and repeated
// keys (the last one kept).
func TestBodiesAreReadAsSent(t *testing.T) {
	e := newEnv(t)
	c := e.client(e.root)
	seed(t, c)
	cases := []struct {
		name, path, body, code, field string
	}{
		{"invalid utf-8 in a value", "/v1/secrets/s", "{\"username\":\"a\xffb\",\"password\":\"p\"}", "ValidationError", "username"},
		{"invalid utf-8 in a nested value", "/v1/proxies/p", "{\"zones\":[\"a\"],\"auth\":[{\"secret\":\"app\",\"description\":\"\xc3\"}]}", "ValidationError", "auth[0].description"},
		{"invalid utf-8 in a key", "/v1/secrets/s", "{\"user\xffname\":\"a\",\"password\":\"p\"}", "ValidationError", "user\uFFFDname"},
		{"unpaired surrogate escape", "/v1/secrets/s", `{"username":"a\ud800b","password":"p"}`, "ValidationError", "username"},
		{"low surrogate alone", "/v1/secrets/s", `{"username":"a\uDC00","password":"p"}`, "ValidationError", "username"},
		{"invalid utf-8 in a top-level string", "/v1/secrets/s", "\"\xff\"", "MalformedJSON", ""},
		{"repeated key", "/v1/secrets/s", `{"username":"a","password":"p","username":"root"}`, "ValidationError", "username"},
		{"repeated nested key", "/v1/proxies/p", `{"zones":["a"],"auth":[{"secret":"app","iam_auth":"REQUIRED","iam_auth":"DISABLED"}]}`, "ValidationError", "auth[0].iam_auth"},
		{"repeated key in a second element", "/v1/proxies/p", `{"zones":["a"],"auth":[{"secret":"app"},{"secret":"b","secret":"c"}]}`, "ValidationError", "auth[1].secret"},
		{"repeated key in a sub-object", "/v1/proxies/main/target-group", `{"connection_pool_config":{"max_connections_percent":10,"max_connections_percent":100}}`, "ValidationError", "connection_pool_config.max_connections_percent"},
		{"repeated key in an access key request", "/v1/iam/users/root/access-keys", `{"status":"Inactive","status":"Active"}`, "ValidationError", "status"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			method := "PUT"
			if strings.HasSuffix(tc.path, "/access-keys") {
				method = "POST"
			}
			got := do(t, c, method, tc.path, apiclient.RawBody(tc.body), nil)
			if got == nil {
				t.Fatalf("%s %s %q succeeded; want 400 %s", method, tc.path, tc.body, tc.code)
			}
			if got.Status != http.StatusBadRequest || got.Code != tc.code || got.Field != tc.field {
				t.Fatalf("got %d %s field %q (%s); want 400 %s field %q", got.Status, got.Code, got.Field, got.Message, tc.code, tc.field)
			}
			if !strings.Contains(got.Message, "UTF-8") && !strings.Contains(got.Message, "more than once") {
				t.Fatalf("the message does not say what is wrong: %s", got.Message)
			}
		})
	}
	// Nothing was stored.
	if err := do(t, c, "GET", "/v1/secrets/s", nil, nil); err == nil || err.Status != http.StatusNotFound {
		t.Fatalf("GET /v1/secrets/s after refused writes: %v; want 404", err)
	}

	// U+FFFD that is sent, literally or escaped, is text like any other,
	// and the same key in two different objects is no repetition.
	must(t, c, "PUT", "/v1/secrets/s", apiclient.RawBody(`{"username":"a`+"\uFFFD"+`b\ufffd\uFFFD","password":"p","description":"\ud83d\ude00"}`), nil)
	var s model.Secret
	must(t, c, "GET", "/v1/secrets/s", nil, &s)
	if s.Username != "a\uFFFDb\uFFFD\uFFFD" || s.Description != "\U0001F600" {
		t.Fatalf("stored username %q, description %q", s.Username, s.Description)
	}
	must(t, c, "PUT", "/v1/proxies/two", apiclient.RawBody(`{"zones":["a"],"auth":[{"secret":"app"},{"secret":"s"}]}`), nil)
}

// TestExplicitZeroOutOfRange checks that 0 is refused where the range
// starts at 1 and 0 means nothing, while a field left out still takes its
// default, and that the zeros that do mean something keep their meaning.
func TestExplicitZeroOutOfRange(t *testing.T) {
	e := newEnv(t)
	c := e.client(e.root)
	seed(t, c)
	refused := []struct {
		name, path, body, field string
	}{
		{"idle_client_timeout", "/v1/proxies/p", `{"zones":["a"],"auth":[{"secret":"app"}],"idle_client_timeout":0}`, "idle_client_timeout"},
		{"idle_client_timeout as -0", "/v1/proxies/p", `{"zones":["a"],"auth":[{"secret":"app"}],"idle_client_timeout":-0}`, "idle_client_timeout"},
		{"max_connections_percent", "/v1/proxies/main/target-group", `{"connection_pool_config":{"max_connections_percent":0}}`, "connection_pool_config.max_connections_percent"},
		{"target port", "/v1/proxies/main/targets/db", `{"host":"127.0.0.1","port":0}`, "port"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			got := do(t, c, "PUT", tc.path, apiclient.RawBody(tc.body), nil)
			if got == nil || got.Status != http.StatusBadRequest || got.Field != tc.field || !strings.Contains(got.Message, "got 0") {
				t.Fatalf("PUT %s %s: %v; want 400 naming %s", tc.path, tc.body, got, tc.field)
			}
		})
	}

	// Left out, each takes its default; the zeros with a documented
	// meaning are accepted: port 0 allocates, max_client_connections 0 is
	// the node default, connection_borrow_timeout and
	// max_idle_connections_percent 0 are their defaults.
	var p model.Proxy
	must(t, c, "PUT", "/v1/proxies/p", apiclient.RawBody(`{"zones":["a"],"auth":[{"secret":"app"}],"port":0,"max_client_connections":0}`), &p)
	if p.IdleClientTimeout != 1800 || p.Port == 0 {
		t.Fatalf("proxy defaults: idle_client_timeout %d, port %d", p.IdleClientTimeout, p.Port)
	}
	var g model.TargetGroup
	must(t, c, "PUT", "/v1/proxies/main/target-group", apiclient.RawBody(`{"connection_pool_config":{"connection_borrow_timeout":0,"max_idle_connections_percent":0}}`), &g)
	if pc := g.ConnectionPoolConfig; pc.MaxConnectionsPercent != 100 || pc.ConnectionBorrowTimeout != 120 || pc.MaxIdleConnectionsPercent != 50 {
		t.Fatalf("target group defaults: %+v", pc)
	}
	var tg model.Target
	must(t, c, "PUT", "/v1/proxies/main/targets/db", apiclient.RawBody(`{"host":"127.0.0.1"}`), &tg)
	if tg.Port != 3306 {
		t.Fatalf("target default port %d", tg.Port)
	}
	// A Go client that never sets a field sends no 0 for it.
	must(t, c, "PUT", "/v1/proxies/q", model.Proxy{Zones: []string{"a"}, Auth: []model.Auth{{Secret: "app"}}}, &p)
	must(t, c, "PUT", "/v1/proxies/q/targets/db", model.Target{Host: "127.0.0.2"}, nil)
	must(t, c, "PUT", "/v1/proxies/q/target-group", model.TargetGroup{}, nil)
}

// TestDotSegmentsAreABadRequest checks that "." and ".." (also as %2E) in
// place of a name are a 400 naming the field, not a redirect to another
// path.
func TestDotSegmentsAreABadRequest(t *testing.T) {
	e := newEnv(t)
	c := e.client(e.root)
	seed(t, c)
	must(t, c, "PUT", "/v1/iam/users/alice", obj(`{}`), nil)
	cases := []struct {
		method, path, field string
	}{
		{"PUT", "/v1/secrets/..", "name"},
		{"GET", "/v1/secrets/.", "name"},
		{"DELETE", "/v1/proxies/..", "name"},
		{"PUT", "/v1/proxies/../targets/db", "proxy"},
		{"PUT", "/v1/proxies/main/targets/.", "name"},
		{"PUT", "/v1/iam/users/..", "name"},
		{"PUT", "/v1/iam/users/alice/policies/..", "policy_name"},
		{"DELETE", "/v1/iam/users/alice/access-keys/..", "access_key_id"},
		{"GET", "/v1/../v1/secrets", ""},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			var body any
			if tc.method == "PUT" {
				body = obj(`{}`)
			}
			got := do(t, c, tc.method, tc.path, body, nil)
			if got == nil || got.Status != http.StatusBadRequest || got.Code != "ValidationError" || got.Field != tc.field {
				t.Fatalf("%s %s: %v; want 400 ValidationError naming %q", tc.method, tc.path, got, tc.field)
			}
		})
	}
	// Spelled %2E, as an attacker might to get past a check of the raw
	// path, they are the same.
	for _, tc := range []struct{ path, field string }{
		{"/v1/iam/users/%2e/policies/p", "user"},
		{"/v1/proxies/main/endpoints/%2E%2E", "name"},
		{"/v1/secrets/.%2e", "name"},
	} {
		status, got := e.raw(t, "PUT", tc.path, []byte(`{}`), true)
		if status != http.StatusBadRequest || got == nil || got.Field != tc.field {
			t.Fatalf("PUT %s: %d %v; want 400 naming %q", tc.path, status, got, tc.field)
		}
	}
	// The names the path cannot carry are refused in bodies too, for the
	// provider's plan-time checks.
	for _, v := range []error{(&model.User{Name: "..", Path: "/"}).Validate(), (&model.Policy{Name: ".", Document: "{}"}).Validate()} {
		if es, ok := model.AsFieldErrors(v); !ok || es[0].Field != "name" {
			t.Fatalf("a dot name: %v; want an error naming name", v)
		}
	}
}

// raw sends a request for a path as it is given, escapes included (the API
// client escapes a path), signed with the root key when sign is true, and
// returns the status and the API error.
func (e *env) raw(t *testing.T, method, path string, body []byte, sign bool) (int, *model.Error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, e.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if sign {
		if err := sigv4.SignRequest(t.Context(), req, body, e.root, sigv4.DefaultRegion, e.clock()); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Error *model.Error }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil && resp.StatusCode >= 400 {
		t.Fatalf("%s %s: %d with a body that is not an API error: %v", method, path, resp.StatusCode, err)
	}
	return resp.StatusCode, out.Error
}

// logEnv is an env whose API logs at DEBUG into a buffer.
func logEnv(t *testing.T) (*env, *testutil.SyncBuffer) {
	t.Helper()
	var buf testutil.SyncBuffer
	e := newEnvWith(t, func(o *api.Options) {
		o.Logger = hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Debug})
	})
	return e, &buf
}

// logLine is the start of every line hclog writes: a time and a level.
var logLine = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\S+ \[(TRACE|DEBUG|INFO|WARN|ERROR)\] `)

// TestPathsCannotAddLogLines checks that a newline in a request path,
// signed or not, is escaped in the log instead of starting a line.
func TestPathsCannotAddLogLines(t *testing.T) {
	e, buf := logEnv(t)
	forged := "/v1/secrets/x%0A2026-12-01T12:00:00.000Z%20[ERROR]%20forged:%20user=root%0D"
	for _, tc := range []struct {
		method string
		sign   bool
	}{{"GET", true}, {"PUT", true}, {"GET", false}} {
		status, _ := e.raw(t, tc.method, forged, []byte(`{"username":"u","password":"p"}`), tc.sign)
		if status < 400 {
			t.Fatalf("%s %s: %d", tc.method, forged, status)
		}
	}
	out := buf.String()
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if !logLine.MatchString(line) {
			t.Errorf("a log line that hclog did not start: %q", line)
		}
	}
	if n := strings.Count(out, `x\n2026-12-01T12:00:00.000Z [ERROR] forged: user=root\r`); n != 3 {
		t.Fatalf("the escaped path is in %d lines, want 3 (a read, a write and a refusal):\n%s", n, out)
	}
}

// TestRefusedRequestsLogAtALimitedRate floods the API with unsigned
// requests: only a burst of them is logged, then one a second, and the
// next line says how many were not.
func TestRefusedRequestsLogAtALimitedRate(t *testing.T) {
	e, buf := logEnv(t)
	const flood = 10000
	for range flood {
		req := httptest.NewRequest("GET", "/v1/proxies", nil)
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized {
			t.Fatalf("an unsigned request: %d", rec.Code)
		}
	}
	lines := strings.Count(buf.String(), "request refused")
	t.Logf("%d refused requests in one instant logged %d lines", flood, lines)
	if lines != 10 {
		t.Fatalf("%d refused requests logged %d lines, want the burst of 10", flood, lines)
	}
	// A second later one more may be logged, and it counts the rest.
	next := e.clock().Add(time.Second)
	e.now.Store(&next)
	e.h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/proxies", nil))
	if got, want := strings.Count(buf.String(), "request refused"), 11; got != want {
		t.Fatalf("after a second: %d lines, want %d", got, want)
	}
	if !strings.Contains(buf.String(), fmt.Sprintf("not_logged_before=%d", flood-10)) {
		t.Fatalf("the line after the flood does not count the %d not logged:\n%s", flood-10, buf.String())
	}
	// Signed requests are not limited by it.
	c := e.client(e.root)
	for range 20 {
		must(t, c, "GET", "/v1/proxies", nil, nil)
	}
	if got := strings.Count(buf.String(), "request: method=GET path=/v1/proxies status=200"); got != 20 {
		t.Fatalf("signed requests logged %d lines, want 20", got)
	}
}

// TestPolicyDocumentRules checks the rules a policy document must meet on
// write, and that a document stored under the older rules still grants
// what it did.
func TestPolicyDocumentRules(t *testing.T) {
	e := newEnv(t)
	c := e.client(e.root)
	seed(t, c)
	for name, doc := range map[string]string{
		"missing Version":         `{"Statement":[{"Effect":"Allow","Action":"dbproxy:GetProxy","Resource":"*"}]}`,
		"unknown Version":         `{"Version":"2008-10-17","Statement":[{"Effect":"Allow","Action":"dbproxy:GetProxy","Resource":"*"}]}`,
		"unknown action":          `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"dbproxy:GetProxie","Resource":"*"}]}`,
		"unknown NotAction":       `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","NotAction":"dbproxy:DeleteProxys","Resource":"*"}]}`,
		"wildcard matches none":   `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"dbproxy:Drop*","Resource":"*"}]}`,
		"more than 100 statement": `{"Version":"2012-10-17","Statement":[` + strings.Repeat(`{"Effect":"Allow","Action":"*","Resource":"*"},`, 100) + `{"Effect":"Allow","Action":"*","Resource":"*"}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			got := do(t, c, "PUT", "/v1/iam/policies/p", map[string]string{"policy": doc}, nil)
			if got == nil || got.Status != http.StatusBadRequest || got.Field != "policy" {
				t.Fatalf("PUT of a policy with %s: %v; want 400 naming policy", name, got)
			}
		})
	}
	// Every route checks a known action: none answers 500 (authorize
	// refuses an unknown one).
	must(t, c, "PUT", "/v1/iam/users/alice", obj(`{}`), nil)
	must(t, c, "PUT", "/v1/iam/policies/p", map[string]string{"policy": `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"dbproxy:*","Resource":"*"}]}`}, nil)
	for _, r := range []struct{ method, path string }{
		{"GET", "/v1/secrets"}, {"GET", "/v1/secrets/app"}, {"GET", "/v1/proxies"}, {"GET", "/v1/proxies/main"},
		{"GET", "/v1/proxies/main/target-group"}, {"DELETE", "/v1/proxies/main/target-group"},
		{"GET", "/v1/proxies/main/targets"}, {"GET", "/v1/proxies/main/targets/x"},
		{"GET", "/v1/proxies/main/endpoints"}, {"GET", "/v1/proxies/main/endpoints/x"},
		{"GET", "/v1/iam/users"}, {"GET", "/v1/iam/users/alice"}, {"GET", "/v1/iam/policies"}, {"GET", "/v1/iam/policies/p"},
		{"GET", "/v1/iam/users/alice/policies"}, {"GET", "/v1/iam/users/alice/policies/p"}, {"DELETE", "/v1/iam/users/alice/policies/p"},
		{"GET", "/v1/iam/users/alice/access-keys"}, {"GET", "/v1/iam/users/alice/access-keys/x"}, {"PATCH", "/v1/iam/users/alice/access-keys/x"},
		{"DELETE", "/v1/iam/users/alice/access-keys/x"}, {"GET", "/v1/nodes"}, {"GET", "/v1/rollout"}, {"GET", "/v1/status"}, {"GET", "/v1/identity"},
		{"DELETE", "/v1/proxies/main/targets/x"}, {"DELETE", "/v1/proxies/main/endpoints/x"}, {"DELETE", "/v1/iam/policies/nope"}, {"DELETE", "/v1/secrets/nope"},
	} {
		var body any
		if r.method == "PATCH" {
			body = obj(`{"status":"Active"}`)
		}
		if got := do(t, c, r.method, r.path, body, nil); got != nil && got.Status >= 500 {
			t.Errorf("%s %s: %v", r.method, r.path, got)
		}
	}

	// A document stored before these rules (no Version, an action that
	// does not exist) keeps granting what it did.
	const old = `{"Statement":[{"Effect":"Allow","Action":["dbproxy:GetProxy","dbproxy:Frobnicate"],"Resource":"proxy/*"}]}`
	_, err := e.store.Update(t.Context(), func(tx store.Tx) error {
		b, _ := json.Marshal(model.Policy{Name: "old", Document: old})
		return tx.Put(model.KindPolicy, "old", b)
	})
	if err != nil {
		t.Fatal(err)
	}
	must(t, c, "PUT", "/v1/iam/users/bob", obj(`{}`), nil)
	must(t, c, "PUT", "/v1/iam/users/bob/policies/old", obj(`{}`), nil)
	var key model.AccessKey
	must(t, c, "POST", "/v1/iam/users/bob/access-keys", nil, &key)
	bob := e.client(sigv4.Credentials{AccessKeyID: key.ID, SecretAccessKey: key.SecretAccessKey})
	must(t, bob, "GET", "/v1/proxies/main", nil, nil)
	if got := do(t, bob, "GET", "/v1/secrets/app", nil, nil); got == nil || got.Status != http.StatusForbidden {
		t.Fatalf("bob reads a secret: %v; want 403", got)
	}
}

// TestAttachmentLimit checks that a user takes at most the configured
// number of policies, that writing an existing attachment again is not a
// new one, and that another user is not affected.
func TestAttachmentLimit(t *testing.T) {
	e := newEnv(t) // the default limit, 10
	c := e.client(e.root)
	must(t, c, "PUT", "/v1/iam/users/alice", obj(`{}`), nil)
	for i := range 11 {
		must(t, c, "PUT", fmt.Sprintf("/v1/iam/policies/p%d", i), map[string]string{"policy": `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"dbproxy:GetProxy","Resource":"*"}]}`}, nil)
	}
	for i := range 10 {
		must(t, c, "PUT", fmt.Sprintf("/v1/iam/users/alice/policies/p%d", i), obj(`{}`), nil)
	}
	got := do(t, c, "PUT", "/v1/iam/users/alice/policies/p10", obj(`{}`), nil)
	if got == nil || got.Status != http.StatusConflict || got.Code != "LimitExceeded" || got.Field != "user" {
		t.Fatalf("an 11th attachment: %v; want 409 LimitExceeded naming user", got)
	}
	must(t, c, "PUT", "/v1/iam/users/alice/policies/p3", obj(`{}`), nil)
	must(t, c, "DELETE", "/v1/iam/users/alice/policies/p3", nil, nil)
	must(t, c, "PUT", "/v1/iam/users/alice/policies/p10", obj(`{}`), nil)
	must(t, c, "PUT", "/v1/iam/users/bob", obj(`{}`), nil)
	must(t, c, "PUT", "/v1/iam/users/bob/policies/p3", obj(`{}`), nil)
}
