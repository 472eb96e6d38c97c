package sigv4

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// SignRequest signs req (client side) with SigV4, service ServiceAPI, at
// now. body is the exact request body (may be nil); SignRequest sets
// X-Amz-Content-Sha256 to its hash and req.ContentLength to its length, and
// when req.Body is nil it installs body as the request body. An empty region
// means DefaultRegion.
func SignRequest(ctx context.Context, req *http.Request, body []byte, creds Credentials, region string, now time.Time) error {
	if err := creds.validate(); err != nil {
		return err
	}
	if region == "" {
		region = DefaultRegion
	}
	sum := sha256.Sum256(body)
	payloadHash := hex.EncodeToString(sum[:])
	req.Header.Set(headerContentSHA256, payloadHash)
	req.ContentLength = int64(len(body))
	if req.Body == nil && len(body) > 0 {
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	// A fresh signer per call: the SDK signer caches derived keys by access
	// key id and day, not by secret, so a shared one could sign with a stale
	// secret.
	if err := v4.NewSigner().SignHTTP(ctx, creds.aws(), req, payloadHash, ServiceAPI, region, now.UTC()); err != nil {
		return fmt.Errorf("sign request: %w", err)
	}
	return nil
}

// Presign returns a token in the RDS IAM token format: a SigV4 presigned
// query string "host:port?Action=<action>&<params>&X-Amz-Algorithm=...&X-Amz-Expires=<secs>&X-Amz-Signature=..."
// without the scheme, for service (ServiceAPI or ServiceRDS). With service
// ServiceRDS, action "connect" and params DBUser=<user> the token is the
// one aws-sdk-go-v2's rds/auth BuildAuthToken makes for the same clock.
// expires must be between one second and MaxExpires (whole seconds count);
// params must not contain Action or X-Amz-* keys. An empty region means
// DefaultRegion.
func Presign(ctx context.Context, hostPort, action string, params url.Values, service, region string, expires time.Duration, creds Credentials, now time.Time) (string, error) {
	if err := creds.validate(); err != nil {
		return "", err
	}
	if err := validateHostPort(hostPort); err != nil {
		return "", err
	}
	if action == "" {
		return "", errors.New("presign: empty action")
	}
	if err := validateService(service); err != nil {
		return "", err
	}
	if region == "" {
		region = DefaultRegion
	}
	secs := int64(expires / time.Second)
	if secs < 1 || secs > int64(MaxExpires/time.Second) {
		return "", fmt.Errorf("presign: expires %s: must be between 1s and %s", expires, MaxExpires)
	}
	query := url.Values{}
	for k, vs := range params {
		if k == queryAction || hasAmzPrefix(k) {
			return "", fmt.Errorf("presign: parameter %q is reserved", k)
		}
		query[k] = append([]string(nil), vs...)
	}
	query.Set(queryAction, action)
	query.Set(queryExpires, strconv.FormatInt(secs, 10))
	signed, err := presign(ctx, hostPort, "", query, service, region, creds.aws(), now, nil)
	if err != nil {
		return "", err
	}
	return signed, nil
}

// SigningKey derives the date-scoped SigV4 signing key of secret for scope:
// what a verifier needs instead of the secret to check signatures made in
// that scope (Verifier.SigningKeys). The key is as sensitive as a password
// for that day, region and service, but reveals nothing about the secret
// or other scopes.
func SigningKey(secret string, scope Scope) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), scope.Date)
	k = hmacSHA256(k, scope.Region)
	k = hmacSHA256(k, scope.Service)
	return hmacSHA256(k, scopeTerminator)
}

// presign signs a GET https://hostPort+path?query with the SDK signer the
// way rds/auth BuildAuthToken does and returns the URL without its scheme.
// When opt is not nil it is applied to the signer options.
func presign(ctx context.Context, hostPort, path string, query url.Values, service, region string, creds aws.Credentials, now time.Time, opt func(*v4.SignerOptions)) (string, error) {
	u := &url.URL{Scheme: "https", Host: hostPort, Path: path, RawQuery: query.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", fmt.Errorf("presign: build request: %w", err)
	}
	var opts []func(*v4.SignerOptions)
	if opt != nil {
		opts = append(opts, opt)
	}
	signedURI, _, err := v4.NewSigner().PresignHTTP(ctx, creds, req, emptySHA256, service, region, now.UTC(), opts...)
	if err != nil {
		return "", fmt.Errorf("presign: %w", err)
	}
	return strings.TrimPrefix(signedURI, "https://"), nil
}

func (c Credentials) validate() error {
	if c.AccessKeyID == "" || c.SecretAccessKey == "" {
		return errors.New("credentials: access key id and secret access key are required")
	}
	if strings.ContainsAny(c.AccessKeyID, "/ ,=") {
		return errors.New("credentials: access key id contains a reserved character")
	}
	return nil
}

func (c Credentials) aws() aws.Credentials {
	return aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, Source: "dbproxy"}
}

func validateService(service string) error {
	switch service {
	case ServiceAPI, ServiceRDS:
		return nil
	}
	return fmt.Errorf("service %q: must be %q or %q: %w", service, ServiceAPI, ServiceRDS, ErrWrongService)
}

// validateHostPort accepts host:port with a numeric port and nothing that
// would change the URL's structure.
func validateHostPort(hostPort string) error {
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		return fmt.Errorf("host %q: %w", hostPort, err)
	}
	if host == "" || strings.ContainsAny(hostPort, "/?#@ \t\r\n") {
		return fmt.Errorf("host %q: must be host:port", hostPort)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("host %q: invalid port", hostPort)
	}
	return nil
}

func hasAmzPrefix(k string) bool {
	return len(k) >= 6 && strings.EqualFold(k[:6], "x-amz-")
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}
