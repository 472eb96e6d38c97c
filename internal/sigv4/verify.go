package sigv4

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/smithy-go/logging"
)

// KeyLookup returns the secret of an active access key, or an error
// wrapping ErrUnknownKey or ErrInactiveKey.
type KeyLookup func(ctx context.Context, accessKeyID string) (secret string, err error)

// SigningKeyLookup returns the derived signing key (see SigningKey) of an
// active access key for scope, or an error wrapping ErrUnknownKey or
// ErrInactiveKey. It lets a verifier check signatures without holding the
// secret access keys.
type SigningKeyLookup func(ctx context.Context, accessKeyID string, scope Scope) (signingKey []byte, err error)

// Verifier checks signed requests and presigned tokens. Set Lookup (with
// the secrets) or SigningKeys (with derived keys only); Lookup wins when
// both are set. A Verifier is safe for concurrent use.
type Verifier struct {
	// Lookup returns the secret of an access key.
	Lookup KeyLookup
	// SigningKeys returns the derived signing key of an access key; used
	// when Lookup is nil.
	SigningKeys SigningKeyLookup
	// Region is the region the credential scope must name; empty means
	// DefaultRegion.
	Region string
	// Now is the injected clock; nil means time.Now.
	Now func() time.Time
	// Skew is the allowed distance between a request's signing time and
	// Now, and how far in the future a token may be signed; zero means
	// DefaultSkew.
	Skew time.Duration
}

// VerifyRequest checks a SigV4-signed HTTP request (Authorization header
// form): the signature over the method, path, query and signed headers,
// the body hash (body is the exact request body the server read), service
// ServiceAPI, the region, and that X-Amz-Date is within Skew of Now. It
// returns the access key id.
func (v *Verifier) VerifyRequest(ctx context.Context, req *http.Request, body []byte) (accessKeyID string, err error) {
	auths := req.Header.Values(headerAuthorization)
	if len(auths) == 0 || (len(auths) == 1 && strings.TrimSpace(auths[0]) == "") {
		return "", fmt.Errorf("no Authorization header: %w", ErrMissingAuth)
	}
	if len(auths) > 1 {
		return "", fmt.Errorf("more than one Authorization header: %w", ErrMalformed)
	}
	a, err := parseAuthorization(auths[0])
	if err != nil {
		return "", err
	}
	amzDates := req.Header.Values(headerAmzDate)
	if len(amzDates) != 1 {
		return "", fmt.Errorf("want exactly one %s header: %w", headerAmzDate, ErrMalformed)
	}
	signedAt, err := parseAmzDate(amzDates[0])
	if err != nil {
		return "", err
	}
	if err := v.checkScope(a.cred, signedAt, ServiceAPI); err != nil {
		return "", err
	}
	now := v.now()
	if d := now.Sub(signedAt); d > v.skew() || d < -v.skew() {
		return "", fmt.Errorf("request signed at %s, %s from now: %w", signedAt.Format(time.RFC3339), d.Round(time.Second), ErrClockSkew)
	}
	if !containsHeader(a.signedHeaders, "host") || !containsHeader(a.signedHeaders, "x-amz-date") {
		return "", fmt.Errorf("SignedHeaders must include host and x-amz-date: %w", ErrMalformed)
	}
	// The body's hash is part of the canonical request, so the signature
	// covers the body whether or not the client also sent it as
	// X-Amz-Content-Sha256 (curl --aws-sigv4 does not); when it did, the
	// header must match.
	sum := sha256.Sum256(body)
	payloadHash := hex.EncodeToString(sum[:])
	if got := req.Header.Values(headerContentSHA256); len(got) > 1 || (len(got) == 1 && !hmac.Equal([]byte(strings.TrimSpace(got[0])), []byte(payloadHash))) {
		return "", fmt.Errorf("%s does not match the body: %w", headerContentSHA256, ErrBadSignature)
	}

	// Rebuild the request from its signed parts only, so that headers a
	// client or an intermediary added after signing do not count.
	rebuilt := &http.Request{
		Method: req.Method,
		URL:    &url.URL{Host: req.Host, Path: req.URL.Path, RawPath: req.URL.RawPath, RawQuery: req.URL.RawQuery},
		Host:   req.Host,
		Header: make(http.Header),
	}
	for _, h := range a.signedHeaders {
		switch h {
		case "host":
			continue
		case "content-length":
			rebuilt.ContentLength = int64(len(body))
			continue
		}
		vals := req.Header.Values(h)
		if len(vals) == 0 {
			return "", fmt.Errorf("signed header %q is missing: %w", h, ErrBadSignature)
		}
		rebuilt.Header[http.CanonicalHeaderKey(h)] = append([]string(nil), vals...)
	}
	rebuilt = rebuilt.WithContext(ctx)

	want, err := v.signature(ctx, a.cred, signedAt, func(creds aws.Credentials, opt func(*v4.SignerOptions)) (string, error) {
		var opts []func(*v4.SignerOptions)
		if opt != nil {
			opts = append(opts, opt)
		}
		if err := v4.NewSigner().SignHTTP(ctx, creds, rebuilt, payloadHash, ServiceAPI, a.cred.region, signedAt, opts...); err != nil {
			return "", fmt.Errorf("sign: %w", err)
		}
		again, err := parseAuthorization(rebuilt.Header.Get(headerAuthorization))
		if err != nil {
			return "", fmt.Errorf("parse recomputed authorization: %w", err)
		}
		if strings.Join(again.signedHeaders, ";") != strings.Join(a.signedHeaders, ";") {
			// The signer would not sign the claimed header set (for
			// example it includes an ignored header); the signature
			// cannot match.
			return "", fmt.Errorf("SignedHeaders %q cannot be reproduced: %w", strings.Join(a.signedHeaders, ";"), ErrBadSignature)
		}
		return again.signature, nil
	})
	if err != nil {
		return "", err
	}
	if !hmac.Equal([]byte(want), []byte(a.signature)) {
		return "", fmt.Errorf("access key %s: %w", a.cred.accessKeyID, ErrBadSignature)
	}
	return a.cred.accessKeyID, nil
}

// VerifyToken checks a presigned token for service: the signature, the
// region, that it is not signed further than Skew in the future, that Now
// is before SignedAt+X-Amz-Expires, and that X-Amz-Expires is at most
// MaxExpires (900 s; larger values are rejected as ErrMalformed). It
// accepts both "host:port?..." (aws-sdk-go-v2) and "host:port/?..." (other
// SDKs) forms.
func (v *Verifier) VerifyToken(ctx context.Context, token, service string) (*Token, error) {
	if token == "" {
		return nil, fmt.Errorf("empty token: %w", ErrMissingAuth)
	}
	if err := validateService(service); err != nil {
		return nil, err
	}
	u, err := url.Parse("https://" + token)
	if err != nil {
		return nil, fmt.Errorf("token is not host:port?query: %w", ErrMalformed)
	}
	if u.Host == "" || u.User != nil || u.Fragment != "" || u.Opaque != "" || (u.Path != "" && u.Path != "/") || u.RawPath != "" {
		return nil, fmt.Errorf("token is not host:port?query: %w", ErrMalformed)
	}
	if err := validateHostPort(u.Host); err != nil {
		return nil, fmt.Errorf("token host: %w", ErrMalformed)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("token query: %w", ErrMalformed)
	}
	single := func(k string) (string, error) {
		vs := q[k]
		if len(vs) != 1 || vs[0] == "" {
			return "", fmt.Errorf("token needs exactly one %s: %w", k, ErrMalformed)
		}
		return vs[0], nil
	}
	fields := map[string]string{}
	for _, k := range []string{queryAction, queryAlgorithm, queryCredential, queryDate, queryExpires, querySignedHeaders, querySignature} {
		val, err := single(k)
		if err != nil {
			return nil, err
		}
		fields[k] = val
	}
	params := url.Values{}
	unsigned := url.Values{}
	for k, vs := range q {
		switch k {
		case queryAlgorithm, queryCredential, queryDate, querySignedHeaders, querySignature:
			continue // the signer sets these itself
		case queryAction, queryExpires:
		default:
			if hasAmzPrefix(k) {
				return nil, fmt.Errorf("token parameter %q is not supported: %w", k, ErrMalformed)
			}
			params[k] = vs
		}
		unsigned[k] = vs
	}
	if fields[queryAlgorithm] != Algorithm {
		return nil, fmt.Errorf("algorithm must be %s: %w", Algorithm, ErrMalformed)
	}
	if fields[querySignedHeaders] != "host" {
		return nil, fmt.Errorf("token must sign exactly the host header: %w", ErrMalformed)
	}
	if !isHexSignature(fields[querySignature]) {
		return nil, fmt.Errorf("signature is not 64 hex digits: %w", ErrMalformed)
	}
	cred, err := parseCredential(fields[queryCredential])
	if err != nil {
		return nil, err
	}
	signedAt, err := parseAmzDate(fields[queryDate])
	if err != nil {
		return nil, err
	}
	secs, err := strconv.ParseInt(fields[queryExpires], 10, 64)
	if err != nil || secs < 1 || strconv.FormatInt(secs, 10) != fields[queryExpires] {
		return nil, fmt.Errorf("X-Amz-Expires must be a positive number of seconds: %w", ErrMalformed)
	}
	if secs > int64(MaxExpires/time.Second) {
		return nil, fmt.Errorf("X-Amz-Expires %d exceeds %d seconds: %w", secs, int64(MaxExpires/time.Second), ErrMalformed)
	}
	if err := v.checkScope(cred, signedAt, service); err != nil {
		return nil, err
	}
	expires := signedAt.Add(time.Duration(secs) * time.Second)
	now := v.now()
	if signedAt.Sub(now) > v.skew() {
		return nil, fmt.Errorf("token signed at %s, in the future: %w", signedAt.Format(time.RFC3339), ErrClockSkew)
	}
	if !now.Before(expires) {
		return nil, fmt.Errorf("token expired at %s: %w", expires.Format(time.RFC3339), ErrExpired)
	}

	want, err := v.signature(ctx, cred, signedAt, func(creds aws.Credentials, opt func(*v4.SignerOptions)) (string, error) {
		signed, err := presign(ctx, u.Host, u.Path, unsigned, service, cred.region, creds, signedAt, opt)
		if err != nil {
			return "", err
		}
		su, err := url.Parse("https://" + signed)
		if err != nil {
			return "", fmt.Errorf("parse recomputed token: %w", err)
		}
		return su.Query().Get(querySignature), nil
	})
	if err != nil {
		return nil, err
	}
	if !hmac.Equal([]byte(want), []byte(fields[querySignature])) {
		return nil, fmt.Errorf("access key %s: %w", cred.accessKeyID, ErrBadSignature)
	}
	return &Token{
		AccessKeyID: cred.accessKeyID,
		HostPort:    u.Host,
		Action:      fields[queryAction],
		Params:      params,
		SignedAt:    signedAt,
		Expires:     expires,
	}, nil
}

// signFunc signs the rebuilt request with creds and returns the signature;
// opt, when not nil, must be passed to the SDK signer.
type signFunc func(creds aws.Credentials, opt func(*v4.SignerOptions)) (string, error)

// signature recomputes the expected signature with the SDK signer, from
// the secret (Lookup) or from a derived signing key (SigningKeys).
func (v *Verifier) signature(ctx context.Context, cred credential, signedAt time.Time, sign signFunc) (string, error) {
	switch {
	case v.Lookup != nil:
		secret, err := v.Lookup(ctx, cred.accessKeyID)
		if err != nil {
			return "", fmt.Errorf("access key %s: %w", cred.accessKeyID, err)
		}
		if secret == "" {
			return "", fmt.Errorf("access key %s: no secret: %w", cred.accessKeyID, ErrUnknownKey)
		}
		return sign(aws.Credentials{AccessKeyID: cred.accessKeyID, SecretAccessKey: secret}, nil)
	case v.SigningKeys != nil:
		scope := Scope{Date: cred.date, Region: cred.region, Service: cred.service}
		key, err := v.SigningKeys(ctx, cred.accessKeyID, scope)
		if err != nil {
			return "", fmt.Errorf("access key %s: %w", cred.accessKeyID, err)
		}
		if len(key) == 0 {
			return "", fmt.Errorf("access key %s: no signing key: %w", cred.accessKeyID, ErrUnknownKey)
		}
		// The SDK signer only derives keys from secrets. Let it build the
		// string to sign (with a placeholder secret, which only affects its
		// own signature) and take that string from its signing log, then
		// sign it with the derived key.
		capture := &stringToSignCapture{}
		opt := func(o *v4.SignerOptions) {
			o.LogSigning = true
			o.Logger = capture
		}
		if _, err := sign(aws.Credentials{AccessKeyID: cred.accessKeyID, SecretAccessKey: "placeholder"}, opt); err != nil {
			return "", err
		}
		prefix := Algorithm + "\n" + signedAt.Format(amzTimeFormat) + "\n" + cred.scopeString() + "\n"
		if !capture.ok || !strings.HasPrefix(capture.stringToSign, prefix) || len(capture.stringToSign) != len(prefix)+sha256.Size*2 {
			return "", errors.New("sigv4: the SDK signer did not report the expected string to sign")
		}
		return hex.EncodeToString(hmacSHA256(key, capture.stringToSign)), nil
	}
	return "", errors.New("sigv4: verifier has neither Lookup nor SigningKeys")
}

// stringToSignCapture receives the SDK signer's signing log, whose second
// argument is the string to sign.
type stringToSignCapture struct {
	stringToSign string
	ok           bool
}

func (c *stringToSignCapture) Logf(_ logging.Classification, _ string, v ...interface{}) {
	if len(v) < 2 {
		return
	}
	if s, ok := v[1].(string); ok {
		c.stringToSign, c.ok = s, true
	}
}

func (v *Verifier) checkScope(cred credential, signedAt time.Time, service string) error {
	if cred.service != service {
		return fmt.Errorf("credential scope service %q, want %q: %w", cred.service, service, ErrWrongService)
	}
	region := v.Region
	if region == "" {
		region = DefaultRegion
	}
	if cred.region != region {
		return fmt.Errorf("credential scope region %q, want %q: %w", cred.region, region, ErrWrongRegion)
	}
	if cred.date != signedAt.Format(shortTimeFormat) {
		return fmt.Errorf("credential scope date %q does not match X-Amz-Date: %w", cred.date, ErrMalformed)
	}
	return nil
}

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

func (v *Verifier) skew() time.Duration {
	if v.Skew > 0 {
		return v.Skew
	}
	return DefaultSkew
}

// credential is a parsed "AKID/20060102/region/service/aws4_request".
type credential struct {
	accessKeyID, date, region, service string
}

func (c credential) scopeString() string {
	return c.date + "/" + c.region + "/" + c.service + "/" + scopeTerminator
}

func parseCredential(s string) (credential, error) {
	parts := strings.Split(s, "/")
	if len(parts) != 5 || parts[0] == "" || parts[2] == "" || parts[3] == "" || parts[4] != scopeTerminator {
		return credential{}, fmt.Errorf("credential is not key/date/region/service/aws4_request: %w", ErrMalformed)
	}
	if _, err := time.Parse(shortTimeFormat, parts[1]); err != nil || len(parts[1]) != len(shortTimeFormat) {
		return credential{}, fmt.Errorf("credential scope date: %w", ErrMalformed)
	}
	return credential{accessKeyID: parts[0], date: parts[1], region: parts[2], service: parts[3]}, nil
}

func parseAmzDate(s string) (time.Time, error) {
	t, err := time.Parse(amzTimeFormat, s)
	if err != nil || t.Format(amzTimeFormat) != s {
		return time.Time{}, fmt.Errorf("X-Amz-Date is not 20060102T150405Z: %w", ErrMalformed)
	}
	return t, nil
}

// authorization is a parsed Authorization header.
type authorization struct {
	cred          credential
	signedHeaders []string
	signature     string
}

func parseAuthorization(h string) (authorization, error) {
	rest, ok := strings.CutPrefix(h, Algorithm+" ")
	if !ok {
		return authorization{}, fmt.Errorf("authorization scheme must be %s: %w", Algorithm, ErrMalformed)
	}
	fields := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return authorization{}, fmt.Errorf("authorization header: %w", ErrMalformed)
		}
		if _, dup := fields[k]; dup {
			return authorization{}, fmt.Errorf("authorization header repeats %s: %w", k, ErrMalformed)
		}
		fields[k] = val
	}
	if len(fields) != 3 || fields["Credential"] == "" || fields["SignedHeaders"] == "" || fields["Signature"] == "" {
		return authorization{}, fmt.Errorf("authorization header needs exactly Credential, SignedHeaders and Signature: %w", ErrMalformed)
	}
	cred, err := parseCredential(fields["Credential"])
	if err != nil {
		return authorization{}, err
	}
	headers := strings.Split(fields["SignedHeaders"], ";")
	for i, name := range headers {
		if name == "" || name != strings.ToLower(name) || (i > 0 && headers[i-1] >= name) {
			return authorization{}, fmt.Errorf("SignedHeaders must be sorted, unique, lower-case names: %w", ErrMalformed)
		}
	}
	if !isHexSignature(fields["Signature"]) {
		return authorization{}, fmt.Errorf("signature is not 64 hex digits: %w", ErrMalformed)
	}
	return authorization{cred: cred, signedHeaders: headers, signature: fields["Signature"]}, nil
}

func containsHeader(sorted []string, name string) bool {
	for _, h := range sorted {
		if h == name {
			return true
		}
	}
	return false
}

func isHexSignature(s string) bool {
	if len(s) != sha256.Size*2 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
