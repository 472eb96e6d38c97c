package sigv4_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/dbproxy/dbproxy/internal/sigv4"
)

func TestVerifyRequest(t *testing.T) {
	const target = "https://cp.example:8443/v1/proxies/my%20proxy?wait=30s&b=2&a=1"
	body := []byte(`{"name":"p1","zones":["a","b"]}`)

	type tc struct {
		name string
		// build returns the request as the server sees it and its body.
		build func(t *testing.T) (*http.Request, []byte)
		now   time.Time
		want  error
	}
	sign := func(method string, body []byte, creds sigv4.Credentials, reg string, at time.Time) func(t *testing.T) (*http.Request, []byte) {
		return func(t *testing.T) (*http.Request, []byte) {
			return signedRequest(t, method, target, body, creds, reg, at)
		}
	}
	tamper := func(fn func(r *http.Request, body []byte) []byte) func(t *testing.T) (*http.Request, []byte) {
		return func(t *testing.T) (*http.Request, []byte) {
			r, b := signedRequest(t, http.MethodPut, target, body, activeCreds, region, t0)
			return r, fn(r, b)
		}
	}
	cases := []tc{
		{name: "round trip with body", build: sign(http.MethodPut, body, activeCreds, region, t0), now: t0},
		{name: "round trip without body", build: sign(http.MethodGet, nil, activeCreds, region, t0), now: t0},
		{name: "date within skew before", build: sign(http.MethodGet, nil, activeCreds, region, t0), now: t0.Add(5 * time.Minute)},
		{name: "date within skew after", build: sign(http.MethodGet, nil, activeCreds, region, t0), now: t0.Add(-5 * time.Minute)},
		{name: "unsigned header added later", now: t0, build: tamper(func(r *http.Request, b []byte) []byte {
			r.Header.Set("X-Forwarded-For", "10.0.0.1")
			r.Header.Set("User-Agent", "something else")
			return b
		})},

		{name: "request too old", build: sign(http.MethodGet, nil, activeCreds, region, t0), now: t0.Add(5*time.Minute + time.Second), want: sigv4.ErrClockSkew},
		{name: "request from the future", build: sign(http.MethodGet, nil, activeCreds, region, t0), now: t0.Add(-5*time.Minute - time.Second), want: sigv4.ErrClockSkew},
		{name: "wrong secret", build: sign(http.MethodPut, body, wrongSecret, region, t0), now: t0, want: sigv4.ErrBadSignature},
		{name: "unknown key", build: sign(http.MethodPut, body, unknownCreds, region, t0), now: t0, want: sigv4.ErrUnknownKey},
		{name: "inactive key", build: sign(http.MethodPut, body, inactiveCreds, region, t0), now: t0, want: sigv4.ErrInactiveKey},
		{name: "wrong region", build: sign(http.MethodPut, body, activeCreds, "other-1", t0), now: t0, want: sigv4.ErrWrongRegion},
		{name: "wrong service", now: t0, want: sigv4.ErrWrongService, build: tamper(func(r *http.Request, b []byte) []byte {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "/dbproxy/", "/rds-db/", 1))
			return b
		})},
		{name: "tampered signature", now: t0, want: sigv4.ErrBadSignature, build: tamper(func(r *http.Request, b []byte) []byte {
			auth := r.Header.Get("Authorization")
			last := auth[len(auth)-1]
			flipped := byte('0')
			if last == '0' {
				flipped = '1'
			}
			r.Header.Set("Authorization", auth[:len(auth)-1]+string(flipped))
			return b
		})},
		{name: "tampered body", now: t0, want: sigv4.ErrBadSignature, build: tamper(func(r *http.Request, b []byte) []byte {
			return []byte(strings.Replace(string(b), "p1", "p2", 1))
		})},
		{name: "tampered body and its hash header", now: t0, want: sigv4.ErrBadSignature, build: tamper(func(r *http.Request, b []byte) []byte {
			nb := []byte(strings.Replace(string(b), "p1", "p2", 1))
			r2, _ := signedRequest(t, http.MethodPut, target, nb, activeCreds, region, t0)
			r.Header.Set("X-Amz-Content-Sha256", r2.Header.Get("X-Amz-Content-Sha256"))
			return nb
		})},
		{name: "tampered signed header", now: t0, want: sigv4.ErrBadSignature, build: tamper(func(r *http.Request, b []byte) []byte {
			r.Header.Set("X-Dbproxy-Request", "two")
			return b
		})},
		{name: "removed signed header", now: t0, want: sigv4.ErrBadSignature, build: tamper(func(r *http.Request, b []byte) []byte {
			r.Header.Del("Content-Type")
			return b
		})},
		{name: "tampered host", now: t0, want: sigv4.ErrBadSignature, build: tamper(func(r *http.Request, b []byte) []byte {
			r.Host = "evil.example:8443"
			return b
		})},
		{name: "tampered method", now: t0, want: sigv4.ErrBadSignature, build: tamper(func(r *http.Request, b []byte) []byte {
			r.Method = http.MethodDelete
			return b
		})},
		{name: "tampered path", now: t0, want: sigv4.ErrBadSignature, build: tamper(func(r *http.Request, b []byte) []byte {
			r.URL.Path = "/v1/proxies/other"
			r.URL.RawPath = ""
			return b
		})},
		{name: "tampered query", now: t0, want: sigv4.ErrBadSignature, build: tamper(func(r *http.Request, b []byte) []byte {
			r.URL.RawQuery = "wait=31s&b=2&a=1"
			return b
		})},
		{name: "tampered date", now: t0, want: sigv4.ErrBadSignature, build: tamper(func(r *http.Request, b []byte) []byte {
			r.Header.Set("X-Amz-Date", t0.Add(time.Second).Format("20060102T150405Z"))
			return b
		})},
		{name: "dropped content-length from signed headers", now: t0, want: sigv4.ErrBadSignature, build: tamper(func(r *http.Request, b []byte) []byte {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "content-length;", "", 1))
			return b
		})},
		{name: "unsigned header claimed as signed", now: t0, want: sigv4.ErrBadSignature, build: tamper(func(r *http.Request, b []byte) []byte {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "SignedHeaders=", "SignedHeaders=accept-encoding;", 1))
			r.Header.Set("Accept-Encoding", "gzip")
			return b
		})},
		{name: "missing Authorization", now: t0, want: sigv4.ErrMissingAuth, build: tamper(func(r *http.Request, b []byte) []byte {
			r.Header.Del("Authorization")
			return b
		})},
		{name: "missing X-Amz-Date", now: t0, want: sigv4.ErrMalformed, build: tamper(func(r *http.Request, b []byte) []byte {
			r.Header.Del("X-Amz-Date")
			return b
		})},
		{name: "date does not match scope", now: t0.Add(24 * time.Hour), want: sigv4.ErrMalformed, build: tamper(func(r *http.Request, b []byte) []byte {
			r.Header.Set("X-Amz-Date", t0.Add(24*time.Hour).Format("20060102T150405Z"))
			return b
		})},
		{name: "two Authorization headers", now: t0, want: sigv4.ErrMalformed, build: tamper(func(r *http.Request, b []byte) []byte {
			r.Header.Add("Authorization", r.Header.Get("Authorization"))
			return b
		})},
		// Dropped from the signed set after signing: the signature no
		// longer matches (a client may sign without the header; see
		// TestVerifyRequestWithoutContentHashHeader).
		{name: "content hash header removed after signing", now: t0, want: sigv4.ErrBadSignature, build: tamper(func(r *http.Request, b []byte) []byte {
			r.Header.Del("X-Amz-Content-Sha256")
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "x-amz-content-sha256;", "", 1))
			return b
		})},
	}
	for _, garbage := range []string{
		"Basic dXNlcjpwYXNz",
		"AWS4-HMAC-SHA256",
		"AWS4-HMAC-SHA256 ",
		"AWS4-HMAC-SHA256 Credential=AKID/20260304/eu-test-1/dbproxy/aws4_request",
		"AWS4-HMAC-SHA256 Credential=AKID/20260304/eu-test-1/dbproxy/aws4_request, SignedHeaders=host;x-amz-date, Signature=zz",
		"AWS4-HMAC-SHA256 Credential=AKID/2026-03-04/eu-test-1/dbproxy/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=" + strings.Repeat("a", 64),
		"AWS4-HMAC-SHA256 Credential=AKID/20260304/eu-test-1/dbproxy, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=" + strings.Repeat("a", 64),
		"AWS4-HMAC-SHA256 Credential=AKID/20260304/eu-test-1/dbproxy/aws4_request, SignedHeaders=x-amz-date;host, Signature=" + strings.Repeat("a", 64),
		"AWS4-HMAC-SHA256 Credential=AKID/20260304/eu-test-1/dbproxy/aws4_request, SignedHeaders=Host;x-amz-date, Signature=" + strings.Repeat("a", 64),
		"AWS4-HMAC-SHA256 Credential=AKID/20260304/eu-test-1/dbproxy/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + strings.Repeat("a", 64) + ", Extra=1",
		"AWS4-HMAC-SHA256 Credential=AKID/20260304/eu-test-1/dbproxy/aws4_request, Credential=AKID/20260304/eu-test-1/dbproxy/aws4_request, Signature=" + strings.Repeat("a", 64),
		"AWS4-HMAC-SHA256 Credential=AKID/20260304/eu-test-1/dbproxy/aws4_request, SignedHeaders=host, Signature=" + strings.Repeat("a", 64),
		"\x00\xff garbage",
	} {
		cases = append(cases, tc{name: "garbage Authorization " + garbage, now: t0, want: sigv4.ErrMalformed, build: tamper(func(r *http.Request, b []byte) []byte {
			r.Header.Set("Authorization", garbage)
			return b
		})})
	}

	for _, kind := range verifierKinds {
		t.Run(kind.name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					req, b := c.build(t)
					id, err := kind.make(c.now).VerifyRequest(context.Background(), req, b)
					if c.want == nil {
						if err != nil {
							t.Fatalf("VerifyRequest: %v", err)
						}
						if id != activeID {
							t.Fatalf("access key id = %q, want %q", id, activeID)
						}
						return
					}
					if !errors.Is(err, c.want) {
						t.Fatalf("VerifyRequest error = %v, want %v", err, c.want)
					}
					if id != "" {
						t.Fatalf("access key id = %q on error", id)
					}
					assertNoSecrets(t, err)
				})
			}
		})
	}
}

// assertNoSecrets fails when an error message contains a secret or a
// signature-sized hex string.
func assertNoSecrets(t *testing.T, err error) {
	t.Helper()
	msg := err.Error()
	for _, s := range []string{activeSecret, inactiveSec, wrongSecret.SecretAccessKey} {
		if strings.Contains(msg, s) {
			t.Fatalf("error %q leaks a secret", msg)
		}
	}
	run := 0
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') {
			run++
			if run >= 32 {
				t.Fatalf("error %q contains a long hex string", msg)
			}
		} else {
			run = 0
		}
	}
}

func TestVerifyRequestDefaults(t *testing.T) {
	req, body := signedRequest(t, http.MethodGet, "http://cp.example/v1/proxies", nil, activeCreds, "", t0)
	v := &sigv4.Verifier{Lookup: lookupSecret, Now: func() time.Time { return t0 }}
	if _, err := v.VerifyRequest(context.Background(), req, body); err != nil {
		t.Fatalf("default region: %v", err)
	}
	v.Region = region
	if _, err := v.VerifyRequest(context.Background(), req, body); !errors.Is(err, sigv4.ErrWrongRegion) {
		t.Fatalf("region %q: got %v, want ErrWrongRegion", region, err)
	}
	if _, err := (&sigv4.Verifier{Now: func() time.Time { return t0 }}).VerifyRequest(context.Background(), req, body); err == nil {
		t.Fatal("verifier without keys accepted a request")
	}
	v = &sigv4.Verifier{Lookup: lookupSecret, Now: func() time.Time { return t0.Add(time.Hour) }, Skew: 2 * time.Hour}
	if _, err := v.VerifyRequest(context.Background(), req, body); err != nil {
		t.Fatalf("custom skew: %v", err)
	}
}

func TestSignRequestRejectsBadCredentials(t *testing.T) {
	for _, creds := range []sigv4.Credentials{{}, {AccessKeyID: "A"}, {SecretAccessKey: "s"}, {AccessKeyID: "A/B", SecretAccessKey: "s"}} {
		req := httptest.NewRequest(http.MethodGet, "http://cp.example/", nil)
		if err := sigv4.SignRequest(context.Background(), req, nil, creds, region, t0); err == nil {
			t.Errorf("SignRequest(%q) succeeded", creds.AccessKeyID)
		}
	}
}

// TestSignedOverHTTP sends signed requests through a real HTTP server, so that
// whatever the client transport adds after signing is exercised.
func TestSignedOverHTTP(t *testing.T) {
	v := &sigv4.Verifier{Lookup: lookupSecret, Region: region, Now: func() time.Time { return t0 }}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		id, err := v.VerifyRequest(r.Context(), r, body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		_, _ = io.WriteString(w, id+" "+string(body))
	}))
	defer srv.Close()

	cases := []struct {
		name   string
		creds  sigv4.Credentials
		method string
		path   string
		body   string
		status int
	}{
		{"get", activeCreds, http.MethodGet, "/v1/proxies?prefix=a%2Fb", "", http.StatusOK},
		{"put with body", activeCreds, http.MethodPut, "/v1/proxies/p%C3%A9", `{"name":"pé"}`, http.StatusOK},
		{"delete", activeCreds, http.MethodDelete, "/v1/secrets/s1", "", http.StatusOK},
		{"wrong secret", wrongSecret, http.MethodGet, "/v1/proxies", "", http.StatusForbidden},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			client := srv.Client()
			req, err := http.NewRequest(c.method, srv.URL+c.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := sigv4.SignRequest(context.Background(), req, []byte(c.body), c.creds, region, t0); err != nil {
				t.Fatal(err)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			defer resp.Body.Close()
			got, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, got, c.status)
			}
			if c.status == http.StatusOK && string(got) != activeID+" "+c.body {
				t.Fatalf("response %q", got)
			}
			client.CloseIdleConnections()
		})
	}
}

// TestVerifyRequestWithoutContentHashHeader: clients such as curl
// --aws-sigv4 sign without X-Amz-Content-Sha256; the body hash is still
// part of the canonical request, so such requests verify and a changed
// body does not.
func TestVerifyRequestWithoutContentHashHeader(t *testing.T) {
	t0 := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	creds := aws.Credentials{AccessKeyID: "AKIDCURL", SecretAccessKey: "curl-secret"}
	v := &sigv4.Verifier{
		Lookup: func(_ context.Context, id string) (string, error) {
			if id != creds.AccessKeyID {
				return "", sigv4.ErrUnknownKey
			}
			return creds.SecretAccessKey, nil
		},
		Region: "local",
		Now:    func() time.Time { return t0 },
	}
	body := []byte(`{"username":"u","password":"p"}`)
	sign := func() *http.Request {
		req, err := http.NewRequest("PUT", "https://127.0.0.1:8443/v1/secrets/s1", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		sum := sha256.Sum256(body)
		if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), sigv4.ServiceAPI, "local", t0); err != nil {
			t.Fatal(err)
		}
		if req.Header.Get("X-Amz-Content-Sha256") != "" {
			t.Fatal("the test meant to sign without X-Amz-Content-Sha256")
		}
		return req
	}
	if id, err := v.VerifyRequest(context.Background(), sign(), body); err != nil || id != creds.AccessKeyID {
		t.Fatalf("VerifyRequest = %q, %v", id, err)
	}
	if _, err := v.VerifyRequest(context.Background(), sign(), []byte(`{"username":"u","password":"q"}`)); !errors.Is(err, sigv4.ErrBadSignature) {
		t.Fatalf("changed body: %v, want ErrBadSignature", err)
	}
}
