package sigv4_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/dbproxy/dbproxy/internal/sigv4"
)

// t0 is the fixed signing time of the tests.
var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

const (
	activeID     = "AKIDACTIVE0001"
	activeSecret = "s3cr3t/ACTIVE+key"
	inactiveID   = "AKIDINACTIVE001"
	inactiveSec  = "s3cr3t/INACTIVE+key"
	region       = "eu-test-1"
)

var (
	activeCreds   = sigv4.Credentials{AccessKeyID: activeID, SecretAccessKey: activeSecret}
	inactiveCreds = sigv4.Credentials{AccessKeyID: inactiveID, SecretAccessKey: inactiveSec}
	unknownCreds  = sigv4.Credentials{AccessKeyID: "AKIDUNKNOWN0001", SecretAccessKey: "whatever"}
	wrongSecret   = sigv4.Credentials{AccessKeyID: activeID, SecretAccessKey: "not-the-secret"}
)

func lookupSecret(_ context.Context, id string) (string, error) {
	switch id {
	case activeID:
		return activeSecret, nil
	case inactiveID:
		return "", fmt.Errorf("key %s: %w", id, sigv4.ErrInactiveKey)
	}
	return "", fmt.Errorf("key %s: %w", id, sigv4.ErrUnknownKey)
}

func lookupSigningKey(ctx context.Context, id string, scope sigv4.Scope) ([]byte, error) {
	secret, err := lookupSecret(ctx, id)
	if err != nil {
		return nil, err
	}
	return sigv4.SigningKey(secret, scope), nil
}

// verifierKind is one way of configuring a Verifier's keys; every
// verification test runs with each.
type verifierKind struct {
	name string
	make func(now time.Time) *sigv4.Verifier
}

var verifierKinds = []verifierKind{
	{"secrets", func(now time.Time) *sigv4.Verifier {
		return &sigv4.Verifier{Lookup: lookupSecret, Region: region, Now: func() time.Time { return now }}
	}},
	{"signing keys", func(now time.Time) *sigv4.Verifier {
		return &sigv4.Verifier{SigningKeys: lookupSigningKey, Region: region, Now: func() time.Time { return now }}
	}},
}

// overTheWire writes req as a client would and reads it back as a server
// sees it, returning the server-side request and its body.
func overTheWire(t *testing.T, req *http.Request) (*http.Request, []byte) {
	t.Helper()
	var buf bytes.Buffer
	if err := req.Write(&buf); err != nil {
		t.Fatalf("write request: %v", err)
	}
	got, err := http.ReadRequest(bufio.NewReader(&buf))
	if err != nil {
		t.Fatalf("read request: %v", err)
	}
	body, err := io.ReadAll(got.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return got, body
}

// signedRequest builds and signs a request to the admin API and returns it
// as the server receives it.
func signedRequest(t *testing.T, method, target string, body []byte, creds sigv4.Credentials, reg string, at time.Time) (*http.Request, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Dbproxy-Request", "one")
	if err := sigv4.SignRequest(context.Background(), req, body, creds, reg, at); err != nil {
		t.Fatalf("SignRequest: %v", err)
	}
	return overTheWire(t, req)
}
