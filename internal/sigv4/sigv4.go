// Package sigv4 signs and verifies dbproxy requests and tokens with AWS
// Signature Version 4.
//
// Two forms are supported:
//
//   - Signed HTTP requests (the Authorization header form), used by the
//     provider and other clients of the control plane's admin API, service
//     ServiceAPI.
//   - Presigned tokens in the RDS IAM token format
//     ("host:port?Action=connect&DBUser=u&X-Amz-Algorithm=...&X-Amz-Signature=..."),
//     used as connect tokens (service ServiceRDS) and as data-plane node
//     tokens (service ServiceAPI). Connect tokens are byte-compatible with
//     aws-sdk-go-v2's feature/rds/auth BuildAuthToken.
//
// All canonical-request computation is done by aws-sdk-go-v2's SigV4
// signer, on both sides: a verifier rebuilds the request from the signed
// parts only, signs it again at the claimed time and compares signatures in
// constant time. A verifier holds either the secret access keys
// (Verifier.Lookup, the control plane) or only derived, date-scoped signing
// keys (Verifier.SigningKeys, data-plane nodes; see SigningKey).
//
// Errors wrap the sentinel errors below; they name the access key id at
// most, never a secret, a signing key or a signature.
package sigv4

import (
	"errors"
	"net/url"
	"time"
)

// Credentials is an access key pair.
type Credentials struct{ AccessKeyID, SecretAccessKey string }

// Service names used in the credential scope.
const (
	// ServiceAPI is the service of admin API requests and node tokens.
	ServiceAPI = "dbproxy"
	// ServiceRDS is the service of connect tokens, as RDS IAM auth uses.
	ServiceRDS = "rds-db"
)

// DefaultRegion is the region used when none is configured.
const DefaultRegion = "local"

// DefaultSkew is the clock skew a Verifier allows when Verifier.Skew is zero.
const DefaultSkew = 5 * time.Minute

// MaxExpires is the longest lifetime a presigned token may declare.
const MaxExpires = 15 * time.Minute

// Algorithm is the only signing algorithm accepted.
const Algorithm = "AWS4-HMAC-SHA256"

// Sentinel errors. Verification errors wrap one of them; test with errors.Is.
var (
	// ErrMissingAuth means the request carries no Authorization header or
	// the token is empty.
	ErrMissingAuth = errors.New("missing authentication")
	// ErrMalformed means the Authorization header or token cannot be parsed
	// or declares something unsupported.
	ErrMalformed = errors.New("malformed authentication")
	// ErrUnknownKey means the access key id is not known.
	ErrUnknownKey = errors.New("unknown access key")
	// ErrInactiveKey means the access key exists but is not active.
	ErrInactiveKey = errors.New("inactive access key")
	// ErrBadSignature means the signature does not match the request.
	ErrBadSignature = errors.New("signature does not match")
	// ErrExpired means a presigned token's lifetime is over.
	ErrExpired = errors.New("token expired")
	// ErrClockSkew means the signing time is too far from the verifier's
	// clock (a request too old or too new, or a token from the future).
	ErrClockSkew = errors.New("signing time outside the allowed clock skew")
	// ErrWrongService means the credential scope names another service.
	ErrWrongService = errors.New("wrong service in credential scope")
	// ErrWrongRegion means the credential scope names another region.
	ErrWrongRegion = errors.New("wrong region in credential scope")
)

// Token is a verified presigned token.
type Token struct {
	// AccessKeyID is the key the token was signed with.
	AccessKeyID string
	// HostPort is the host and port the token was signed for.
	HostPort string
	// Action is the Action parameter, e.g. "connect".
	Action string
	// Params are the signed parameters other than Action and X-Amz-*
	// (e.g. DBUser, NodeId, Zone).
	Params url.Values
	// SignedAt is the signing time (X-Amz-Date).
	SignedAt time.Time
	// Expires is the end of the token's lifetime, SignedAt plus X-Amz-Expires.
	Expires time.Time
}

// Scope is the date-scoped part of a SigV4 credential scope that a signing
// key is derived for.
type Scope struct {
	// Date is the UTC day in the form 20060102.
	Date string
	// Region is the region, e.g. DefaultRegion.
	Region string
	// Service is ServiceAPI or ServiceRDS.
	Service string
}

// ScopeDate returns the credential-scope date (20060102, UTC) of t.
func ScopeDate(t time.Time) string { return t.UTC().Format(shortTimeFormat) }

const (
	amzTimeFormat   = "20060102T150405Z"
	shortTimeFormat = "20060102"
	scopeTerminator = "aws4_request"

	headerAuthorization = "Authorization"
	headerAmzDate       = "X-Amz-Date"
	headerContentSHA256 = "X-Amz-Content-Sha256"

	queryAlgorithm     = "X-Amz-Algorithm"
	queryCredential    = "X-Amz-Credential"
	queryDate          = "X-Amz-Date"
	queryExpires       = "X-Amz-Expires"
	querySignedHeaders = "X-Amz-SignedHeaders"
	querySignature     = "X-Amz-Signature"
	querySecurityToken = "X-Amz-Security-Token"
	queryAction        = "Action"

	// emptySHA256 is the hex SHA-256 of an empty payload, what presigned
	// tokens sign as their payload hash.
	emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)
