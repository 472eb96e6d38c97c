package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dbproxy/dbproxy/internal/sigv4"
)

func TestTokenCommand(t *testing.T) {
	creds := filepath.Join(t.TempDir(), "creds.json")
	if err := os.WriteFile(creds, []byte(`{"access_key_id":"AKIATEST","secret_access_key":"test-secret","region":"eu-test-1"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"token", "--hostname", "db.example", "--port", "6033", "--username", "app", "--credentials", creds}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	v := sigv4.Verifier{Region: "eu-test-1", Lookup: func(_ context.Context, id string) (string, error) {
		if id != "AKIATEST" {
			return "", sigv4.ErrUnknownKey
		}
		return "test-secret", nil
	}}
	tok, err := v.VerifyToken(context.Background(), strings.TrimSpace(stdout.String()), sigv4.ServiceRDS)
	if err != nil {
		t.Fatalf("the printed token does not verify: %v", err)
	}
	if tok.HostPort != "db.example:6033" || tok.Action != "connect" || tok.Params.Get("DBUser") != "app" || tok.Expires.Sub(tok.SignedAt).Minutes() != 15 {
		t.Fatalf("token %+v", tok)
	}

	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no user", []string{"--hostname", "h", "--port", "1"}, nil, "--username are required"},
		{"bad port", []string{"--hostname", "h", "--port", "70000", "--username", "u"}, nil, "--port (1-65535)"},
		{"no credentials", []string{"--hostname", "h", "--port", "1", "--username", "u"}, map[string]string{"DBPROXY_CREDENTIALS": "", "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}, "no access key"},
		{"missing file", []string{"--hostname", "h", "--port", "1", "--username", "u", "--credentials", filepath.Join(t.TempDir(), "none")}, nil, "read credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var stdout, stderr bytes.Buffer
			if code := run(append([]string{"token"}, tc.args...), &stdout, &stderr); code == 0 || !strings.Contains(stderr.String(), tc.want) || stdout.Len() != 0 {
				t.Fatalf("exit %d, stdout %q, stderr %q; want a failure saying %q", code, stdout.String(), stderr.String(), tc.want)
			}
		})
	}
	// The AWS environment variables work as for the aws CLI.
	t.Setenv("DBPROXY_CREDENTIALS", "")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIATEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
	stdout.Reset()
	if code := run([]string{"token", "--hostname", "h", "--port", "1", "--username", "u", "--region", "eu-test-1"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if _, err := v.VerifyToken(context.Background(), strings.TrimSpace(stdout.String()), sigv4.ServiceRDS); err != nil {
		t.Fatalf("token from the environment's key: %v", err)
	}
}
