package sigv4_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/feature/rds/auth"

	"github.com/dbproxy/dbproxy/internal/sigv4"
)

const hostPort = "proxy-1.db.example:3306"

// sdkPresign signs https://host<path>?rawQuery with the SDK signer
// directly, to build tokens Presign refuses to make.
func sdkPresign(t *testing.T, host, path, rawQuery, service, reg string, creds sigv4.Credentials, at time.Time) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "https://"+host+path+"?"+rawQuery, nil)
	if err != nil {
		t.Fatal(err)
	}
	signed, _, err := v4.NewSigner().PresignHTTP(context.Background(),
		aws.Credentials{AccessKeyID: creds.AccessKeyID, SecretAccessKey: creds.SecretAccessKey},
		req, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", service, reg, at)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(signed, "https://")
}

func presign(t *testing.T, action string, params url.Values, service, reg string, expires time.Duration, creds sigv4.Credentials, at time.Time) string {
	t.Helper()
	tok, err := sigv4.Presign(context.Background(), hostPort, action, params, service, reg, expires, creds, at)
	if err != nil {
		t.Fatalf("Presign: %v", err)
	}
	return tok
}

func TestVerifyToken(t *testing.T) {
	connect := url.Values{"DBUser": {"app user+1@x/é"}}
	node := url.Values{"NodeId": {"node-a-1"}, "Zone": {"zone-a"}}
	rdsToken := func(creds sigv4.Credentials, reg string, at time.Time) func(t *testing.T) string {
		return func(t *testing.T) string {
			return presign(t, "connect", connect, sigv4.ServiceRDS, reg, 15*time.Minute, creds, at)
		}
	}
	edit := func(fn func(tok string) string) func(t *testing.T) string {
		return func(t *testing.T) string {
			return fn(presign(t, "connect", connect, sigv4.ServiceRDS, region, 15*time.Minute, activeCreds, t0))
		}
	}
	sdk := func(path, rawQuery, service string) func(t *testing.T) string {
		return func(t *testing.T) string {
			return sdkPresign(t, hostPort, path, rawQuery, service, region, activeCreds, t0)
		}
	}
	cases := []struct {
		name       string
		token      func(t *testing.T) string
		service    string
		now        time.Time
		want       error
		wantAction string
		wantParams url.Values
		wantExpiry time.Duration
	}{
		{name: "connect token", token: rdsToken(activeCreds, region, t0), service: sigv4.ServiceRDS, now: t0,
			wantAction: "connect", wantParams: connect, wantExpiry: 15 * time.Minute},
		{name: "connect token just before expiry", token: rdsToken(activeCreds, region, t0), service: sigv4.ServiceRDS, now: t0.Add(15*time.Minute - time.Nanosecond),
			wantAction: "connect", wantParams: connect, wantExpiry: 15 * time.Minute},
		{name: "node token", service: sigv4.ServiceAPI, now: t0.Add(30 * time.Second), wantAction: "ReceiveConfig", wantParams: node, wantExpiry: time.Minute,
			token: func(t *testing.T) string {
				return presign(t, "ReceiveConfig", node, sigv4.ServiceAPI, region, time.Minute+999*time.Millisecond, activeCreds, t0)
			}},
		{name: "slash form", service: sigv4.ServiceRDS, now: t0, wantAction: "connect", wantParams: url.Values{"DBUser": {"u"}}, wantExpiry: 900 * time.Second,
			token: sdk("/", "Action=connect&DBUser=u&X-Amz-Expires=900", sigv4.ServiceRDS)},
		{name: "token within skew in the future", token: rdsToken(activeCreds, region, t0), service: sigv4.ServiceRDS, now: t0.Add(-5 * time.Minute),
			wantAction: "connect", wantParams: connect, wantExpiry: 15 * time.Minute},

		{name: "expired", token: rdsToken(activeCreds, region, t0), service: sigv4.ServiceRDS, now: t0.Add(15 * time.Minute), want: sigv4.ErrExpired},
		{name: "long expired", token: rdsToken(activeCreds, region, t0), service: sigv4.ServiceRDS, now: t0.Add(48 * time.Hour), want: sigv4.ErrExpired},
		{name: "from the future", token: rdsToken(activeCreds, region, t0), service: sigv4.ServiceRDS, now: t0.Add(-5*time.Minute - time.Second), want: sigv4.ErrClockSkew},
		{name: "wrong service", token: rdsToken(activeCreds, region, t0), service: sigv4.ServiceAPI, now: t0, want: sigv4.ErrWrongService},
		{name: "unsupported service", token: rdsToken(activeCreds, region, t0), service: "s3", now: t0, want: sigv4.ErrWrongService},
		{name: "wrong region", token: rdsToken(activeCreds, "other-1", t0), service: sigv4.ServiceRDS, now: t0, want: sigv4.ErrWrongRegion},
		{name: "wrong secret", token: rdsToken(wrongSecret, region, t0), service: sigv4.ServiceRDS, now: t0, want: sigv4.ErrBadSignature},
		{name: "unknown key", token: rdsToken(unknownCreds, region, t0), service: sigv4.ServiceRDS, now: t0, want: sigv4.ErrUnknownKey},
		{name: "inactive key", token: rdsToken(inactiveCreds, region, t0), service: sigv4.ServiceRDS, now: t0, want: sigv4.ErrInactiveKey},
		{name: "empty", token: func(*testing.T) string { return "" }, service: sigv4.ServiceRDS, now: t0, want: sigv4.ErrMissingAuth},
		{name: "tampered signature", service: sigv4.ServiceRDS, now: t0, want: sigv4.ErrBadSignature, token: edit(func(tok string) string {
			last := tok[len(tok)-1]
			if last == '0' {
				return tok[:len(tok)-1] + "1"
			}
			return tok[:len(tok)-1] + "0"
		})},
		{name: "tampered user", service: sigv4.ServiceRDS, now: t0, want: sigv4.ErrBadSignature, token: edit(func(tok string) string {
			return strings.Replace(tok, "DBUser=app", "DBUser=admin", 1)
		})},
		{name: "added parameter", service: sigv4.ServiceRDS, now: t0, want: sigv4.ErrBadSignature, token: edit(func(tok string) string {
			return strings.Replace(tok, "?Action", "?Zone=a&Action", 1)
		})},
		{name: "tampered host", service: sigv4.ServiceRDS, now: t0, want: sigv4.ErrBadSignature, token: edit(func(tok string) string {
			return strings.Replace(tok, "proxy-1", "proxy-2", 1)
		})},
		{name: "tampered port", service: sigv4.ServiceRDS, now: t0, want: sigv4.ErrBadSignature, token: edit(func(tok string) string {
			return strings.Replace(tok, ":3306", ":3307", 1)
		})},
		{name: "shortened expiry", service: sigv4.ServiceRDS, now: t0, want: sigv4.ErrBadSignature, token: edit(func(tok string) string {
			return strings.Replace(tok, "X-Amz-Expires=900", "X-Amz-Expires=899", 1)
		})},
		{name: "tampered date", service: sigv4.ServiceRDS, now: t0, want: sigv4.ErrBadSignature, token: edit(func(tok string) string {
			return strings.Replace(tok, "T050607Z", "T050608Z", 1)
		})},
		{name: "expires over 900", service: sigv4.ServiceRDS, now: t0, want: sigv4.ErrMalformed,
			token: sdk("", "Action=connect&DBUser=u&X-Amz-Expires=901", sigv4.ServiceRDS)},
		{name: "expires zero", service: sigv4.ServiceRDS, now: t0, want: sigv4.ErrMalformed,
			token: sdk("", "Action=connect&DBUser=u&X-Amz-Expires=0", sigv4.ServiceRDS)},
		{name: "expires not a number", service: sigv4.ServiceRDS, now: t0, want: sigv4.ErrMalformed,
			token: sdk("", "Action=connect&DBUser=u&X-Amz-Expires=1e2", sigv4.ServiceRDS)},
		{name: "expires missing", service: sigv4.ServiceRDS, now: t0, want: sigv4.ErrMalformed,
			token: sdk("", "Action=connect&DBUser=u", sigv4.ServiceRDS)},
		{name: "action missing", service: sigv4.ServiceRDS, now: t0, want: sigv4.ErrMalformed,
			token: sdk("", "DBUser=u&X-Amz-Expires=900", sigv4.ServiceRDS)},
		{name: "action twice", service: sigv4.ServiceRDS, now: t0, want: sigv4.ErrMalformed,
			token: sdk("", "Action=connect&Action=other&DBUser=u&X-Amz-Expires=900", sigv4.ServiceRDS)},
		{name: "session token", service: sigv4.ServiceRDS, now: t0, want: sigv4.ErrMalformed,
			token: sdk("", "Action=connect&DBUser=u&X-Amz-Expires=900&X-Amz-Security-Token=x", sigv4.ServiceRDS)},
		{name: "other path", service: sigv4.ServiceRDS, now: t0, want: sigv4.ErrMalformed,
			token: sdk("/x", "Action=connect&DBUser=u&X-Amz-Expires=900", sigv4.ServiceRDS)},
		{name: "duplicate signature", service: sigv4.ServiceRDS, now: t0, want: sigv4.ErrMalformed, token: edit(func(tok string) string {
			i := strings.Index(tok, "&X-Amz-Signature=")
			return tok + tok[i:]
		})},
		{name: "more signed headers", service: sigv4.ServiceRDS, now: t0, want: sigv4.ErrMalformed, token: edit(func(tok string) string {
			return strings.Replace(tok, "X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=host%3Bx-amz-date", 1)
		})},
		{name: "other algorithm", service: sigv4.ServiceRDS, now: t0, want: sigv4.ErrMalformed, token: edit(func(tok string) string {
			return strings.Replace(tok, "AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256", 1)
		})},
		{name: "with scheme", service: sigv4.ServiceRDS, now: t0, want: sigv4.ErrMalformed, token: edit(func(tok string) string {
			return "https://" + tok
		})},
		{name: "with user info", service: sigv4.ServiceRDS, now: t0, want: sigv4.ErrMalformed, token: edit(func(tok string) string {
			return "me@" + tok
		})},
	}
	for _, garbage := range []string{"x", "password", "::::", "host:3306", "host:3306?", "host:3306?Action=connect", "%zz", "host:3306?a=%zz", "\x00\x01", strings.Repeat("A", 4096)} {
		cases = append(cases, struct {
			name       string
			token      func(t *testing.T) string
			service    string
			now        time.Time
			want       error
			wantAction string
			wantParams url.Values
			wantExpiry time.Duration
		}{name: "garbage " + garbage[:min(len(garbage), 20)], token: func(*testing.T) string { return garbage }, service: sigv4.ServiceRDS, now: t0, want: sigv4.ErrMalformed})
	}

	for _, kind := range verifierKinds {
		t.Run(kind.name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					tok, err := kind.make(c.now).VerifyToken(context.Background(), c.token(t), c.service)
					if c.want != nil {
						if !errors.Is(err, c.want) {
							t.Fatalf("VerifyToken error = %v, want %v", err, c.want)
						}
						if tok != nil {
							t.Fatalf("token %+v returned with error", tok)
						}
						assertNoSecrets(t, err)
						return
					}
					if err != nil {
						t.Fatalf("VerifyToken: %v", err)
					}
					want := &sigv4.Token{
						AccessKeyID: activeID,
						HostPort:    hostPort,
						Action:      c.wantAction,
						Params:      c.wantParams,
						SignedAt:    t0,
						Expires:     t0.Add(c.wantExpiry),
					}
					if !reflect.DeepEqual(tok, want) {
						t.Fatalf("token = %+v\nwant    %+v", tok, want)
					}
				})
			}
		})
	}
}

func TestPresignRejects(t *testing.T) {
	cases := []struct {
		name     string
		hostPort string
		action   string
		params   url.Values
		service  string
		expires  time.Duration
		creds    sigv4.Credentials
	}{
		{"no port", "db.example", "connect", nil, sigv4.ServiceRDS, time.Minute, activeCreds},
		{"bad port", "db.example:x", "connect", nil, sigv4.ServiceRDS, time.Minute, activeCreds},
		{"path in host", "db.example:3306/x", "connect", nil, sigv4.ServiceRDS, time.Minute, activeCreds},
		{"no action", hostPort, "", nil, sigv4.ServiceRDS, time.Minute, activeCreds},
		{"reserved Action param", hostPort, "connect", url.Values{"Action": {"x"}}, sigv4.ServiceRDS, time.Minute, activeCreds},
		{"reserved X-Amz param", hostPort, "connect", url.Values{"x-amz-date": {"x"}}, sigv4.ServiceRDS, time.Minute, activeCreds},
		{"unknown service", hostPort, "connect", nil, "s3", time.Minute, activeCreds},
		{"expires too long", hostPort, "connect", nil, sigv4.ServiceRDS, 15*time.Minute + time.Second, activeCreds},
		{"expires under a second", hostPort, "connect", nil, sigv4.ServiceRDS, 999 * time.Millisecond, activeCreds},
		{"no secret", hostPort, "connect", nil, sigv4.ServiceRDS, time.Minute, sigv4.Credentials{AccessKeyID: "A"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok, err := sigv4.Presign(context.Background(), c.hostPort, c.action, c.params, c.service, region, c.expires, c.creds, t0)
			if err == nil {
				t.Fatalf("Presign succeeded: %q", tok)
			}
			assertNoSecrets(t, err)
		})
	}
}

// staticProvider is an aws.CredentialsProvider for fixed credentials.
type staticProvider sigv4.Credentials

func (p staticProvider) Retrieve(context.Context) (aws.Credentials, error) {
	return aws.Credentials{AccessKeyID: p.AccessKeyID, SecretAccessKey: p.SecretAccessKey}, nil
}

// TestBuildAuthTokenCompatibility checks that tokens made by aws-sdk-go-v2's
// rds/auth verify, and that Presign makes the very same bytes for the same
// clock. BuildAuthToken reads the real clock, so the test reads its signing
// time back from the token.
func TestBuildAuthTokenCompatibility(t *testing.T) {
	for _, c := range []struct{ endpoint, user string }{
		{"proxy-1.db.example:3306", "app"},
		{"127.0.0.1:13306", "user with spaces+plus/slash@é"},
		{"[::1]:3306", "ipv6"},
		{"proxy.example:443", "default-https-port"},
	} {
		t.Run(c.endpoint+" "+c.user, func(t *testing.T) {
			ctx := context.Background()
			sdkToken, err := auth.BuildAuthToken(ctx, c.endpoint, region, c.user, staticProvider(activeCreds))
			if err != nil {
				t.Fatalf("BuildAuthToken: %v", err)
			}
			u, err := url.Parse("https://" + sdkToken)
			if err != nil {
				t.Fatal(err)
			}
			signedAt, err := time.Parse("20060102T150405Z", u.Query().Get("X-Amz-Date"))
			if err != nil {
				t.Fatalf("X-Amz-Date: %v", err)
			}

			ours, err := sigv4.Presign(ctx, c.endpoint, "connect", url.Values{"DBUser": {c.user}}, sigv4.ServiceRDS, region, 15*time.Minute, activeCreds, signedAt)
			if err != nil {
				t.Fatalf("Presign: %v", err)
			}
			if ours != sdkToken {
				t.Fatalf("Presign token differs from BuildAuthToken:\n got %s\nwant %s", ours, sdkToken)
			}

			for _, kind := range verifierKinds {
				tok, err := kind.make(signedAt.Add(time.Minute)).VerifyToken(ctx, sdkToken, sigv4.ServiceRDS)
				if err != nil {
					t.Fatalf("%s: VerifyToken(BuildAuthToken): %v", kind.name, err)
				}
				if tok.HostPort != c.endpoint || tok.Action != "connect" || tok.Params.Get("DBUser") != c.user || tok.AccessKeyID != activeID {
					t.Fatalf("%s: token %+v", kind.name, tok)
				}
				if got := tok.Expires.Sub(tok.SignedAt); got != 15*time.Minute {
					t.Fatalf("%s: lifetime %s", kind.name, got)
				}
			}
		})
	}
}

// TestSignerCacheDoesNotHideWrongSecret guards against reusing one SDK
// signer: its key cache is keyed by access key id, not by secret.
func TestSignerCacheDoesNotHideWrongSecret(t *testing.T) {
	v := verifierKinds[0].make(t0)
	good := presign(t, "connect", url.Values{"DBUser": {"u"}}, sigv4.ServiceRDS, region, time.Minute, activeCreds, t0)
	bad := presign(t, "connect", url.Values{"DBUser": {"u"}}, sigv4.ServiceRDS, region, time.Minute, wrongSecret, t0)
	if good == bad {
		t.Fatal("tokens signed with different secrets are equal")
	}
	if _, err := v.VerifyToken(context.Background(), good, sigv4.ServiceRDS); err != nil {
		t.Fatalf("good token: %v", err)
	}
	if _, err := v.VerifyToken(context.Background(), bad, sigv4.ServiceRDS); !errors.Is(err, sigv4.ErrBadSignature) {
		t.Fatalf("bad token: %v, want ErrBadSignature", err)
	}
}

func TestSigningKeyScopes(t *testing.T) {
	base := sigv4.Scope{Date: sigv4.ScopeDate(t0), Region: region, Service: sigv4.ServiceRDS}
	if base.Date != "20260304" {
		t.Fatalf("ScopeDate = %q", base.Date)
	}
	k := sigv4.SigningKey(activeSecret, base)
	if len(k) != 32 {
		t.Fatalf("key length %d", len(k))
	}
	for _, other := range []sigv4.Scope{
		{Date: "20260305", Region: region, Service: sigv4.ServiceRDS},
		{Date: base.Date, Region: "other-1", Service: sigv4.ServiceRDS},
		{Date: base.Date, Region: region, Service: sigv4.ServiceAPI},
	} {
		if string(sigv4.SigningKey(activeSecret, other)) == string(k) {
			t.Errorf("scope %+v has the same key as %+v", other, base)
		}
	}
	if string(sigv4.SigningKey(wrongSecret.SecretAccessKey, base)) == string(k) {
		t.Error("different secrets give the same key")
	}

	// A node holding only yesterday's key cannot verify today's token.
	yesterday := sigv4.Scope{Date: "20260303", Region: region, Service: sigv4.ServiceRDS}
	v := &sigv4.Verifier{
		Region: region,
		Now:    func() time.Time { return t0 },
		SigningKeys: func(_ context.Context, id string, scope sigv4.Scope) ([]byte, error) {
			return sigv4.SigningKey(activeSecret, yesterday), nil
		},
	}
	tok := presign(t, "connect", url.Values{"DBUser": {"u"}}, sigv4.ServiceRDS, region, time.Minute, activeCreds, t0)
	if _, err := v.VerifyToken(context.Background(), tok, sigv4.ServiceRDS); !errors.Is(err, sigv4.ErrBadSignature) {
		t.Fatalf("VerifyToken with another day's key: %v, want ErrBadSignature", err)
	}
}
