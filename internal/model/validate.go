package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/dbproxy/dbproxy/internal/vocab"
)

// FieldError is one invalid field. Field is the JSON path of the field
// ("auth[0].secret").
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

// FieldErrors collects the problems of one object.
type FieldErrors []*FieldError

func (es FieldErrors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// Err returns nil when es is empty.
func (es FieldErrors) Err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

func (es *FieldErrors) add(field, format string, a ...any) {
	*es = append(*es, &FieldError{Field: field, Message: fmt.Sprintf(format, a...)})
}

var (
	// Proxy and endpoint names follow RDS: a letter, then letters, digits
	// and hyphens, no two hyphens in a row and none at the end.
	proxyNameRE = regexp.MustCompile(`^[A-Za-z](?:[A-Za-z0-9]|-[A-Za-z0-9]){0,62}$`)
	// Secret, target and policy names.
	objectNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
	// IAM user names as in AWS.
	userNameRE = regexp.MustCompile(`^[A-Za-z0-9+=,.@_-]{1,64}$`)
	zoneRE     = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$`)
	hostRE     = regexp.MustCompile(`^[A-Za-z0-9.:_-]{1,253}$`)
)

func checkName(es *FieldErrors, field, v string, re *regexp.Regexp, what string) {
	switch {
	case v == "":
		es.add(field, "is required")
	case v == "." || v == "..":
		// User and policy names allow dots, but the API's paths could
		// not name these two: the path would mean another object.
		es.add(field, "%q is not a valid %s: it cannot be used in a path", v, what)
	case !re.MatchString(v):
		es.add(field, "%q is not a valid %s", v, what)
	}
}

func checkZones(es *FieldErrors, field string, zones []string, required bool) {
	if required && len(zones) == 0 {
		es.add(field, "at least one zone is required")
	}
	seen := map[string]bool{}
	for i, z := range zones {
		f := fmt.Sprintf("%s[%d]", field, i)
		if !zoneRE.MatchString(z) {
			es.add(f, "%q is not a valid zone name (lower-case letters, digits and hyphens)", z)
		}
		if seen[z] {
			es.add(f, "zone %q is listed twice", z)
		}
		seen[z] = true
	}
}

func checkPort(es *FieldErrors, field string, port int) {
	if port < 0 || port > 65535 {
		es.add(field, "must be 1-65535 (or 0 to allocate one), got %d", port)
	}
}

// Validate checks a secret. requirePassword is true on create.
func (s *Secret) Validate(requirePassword bool) error {
	var es FieldErrors
	checkName(&es, "name", s.Name, objectNameRE, "secret name (letters, digits, '.', '_', '-')")
	if s.Username == "" {
		es.add("username", "is required")
	} else if len(s.Username) > 80 || strings.ContainsAny(s.Username, "\x00'\"\\") {
		es.add("username", "must be 1-80 characters without quotes, backslashes or NUL")
	}
	if requirePassword && s.Password == "" {
		es.add("password", "is required when the secret is created")
	}
	if len(s.Password) > 1024 {
		es.add("password", "must be at most 1024 bytes")
	}
	return es.Err()
}

// Normalize applies defaults to unset fields.
func (p *Proxy) Normalize() {
	if p.EngineFamily == "" {
		p.EngineFamily = vocab.EngineMySQL
	}
	if p.IdleClientTimeout == 0 {
		p.IdleClientTimeout = 1800
	}
	for i := range p.Auth {
		a := &p.Auth[i]
		if a.IAMAuth == "" {
			a.IAMAuth = vocab.IAMAuthDisabled
		}
		if a.ClientPasswordAuthType == "" {
			a.ClientPasswordAuthType = vocab.AuthNativePassword
		}
	}
	if p.Zones == nil {
		p.Zones = []string{}
	}
}

// Validate checks a normalised proxy.
func (p *Proxy) Validate() error {
	var es FieldErrors
	checkName(&es, "name", p.Name, proxyNameRE, "proxy name (a letter, then letters, digits and single hyphens, at most 63)")
	if p.EngineFamily != vocab.EngineMySQL {
		es.add("engine_family", "must be MYSQL, got %q", p.EngineFamily)
	}
	checkZones(&es, "zones", p.Zones, true)
	if len(p.Auth) == 0 {
		es.add("auth", "at least one auth block is required")
	}
	seen := map[string]bool{}
	for i, a := range p.Auth {
		f := fmt.Sprintf("auth[%d]", i)
		if a.Secret == "" {
			es.add(f+".secret", "is required")
		} else if seen[a.Secret] {
			es.add(f+".secret", "secret %q is listed twice", a.Secret)
		}
		seen[a.Secret] = true
		if a.IAMAuth != vocab.IAMAuthDisabled && a.IAMAuth != vocab.IAMAuthRequired {
			es.add(f+".iam_auth", "must be DISABLED or REQUIRED, got %q", a.IAMAuth)
		}
		if a.ClientPasswordAuthType != vocab.AuthNativePassword && a.ClientPasswordAuthType != vocab.AuthCachingSHA2Password {
			es.add(f+".client_password_auth_type", "must be %s or %s, got %q", vocab.AuthNativePassword, vocab.AuthCachingSHA2Password, a.ClientPasswordAuthType)
		}
	}
	// RDS Proxy allows 1 second to 8 hours.
	if p.IdleClientTimeout < 1 || p.IdleClientTimeout > 28800 {
		es.add("idle_client_timeout", "must be 1-28800 seconds, got %d", p.IdleClientTimeout)
	}
	if p.MaxClientConnections < 0 {
		es.add("max_client_connections", "must not be negative, got %d", p.MaxClientConnections)
	}
	checkPort(&es, "port", p.Port)
	return es.Err()
}

// Normalize applies defaults to unset fields.
func (g *TargetGroup) Normalize() {
	g.Name = DefaultTargetGroup
	pc := &g.ConnectionPoolConfig
	if pc.MaxConnectionsPercent == 0 {
		pc.MaxConnectionsPercent = 100
	}
	if pc.MaxIdleConnectionsPercent == 0 {
		pc.MaxIdleConnectionsPercent = min(50, pc.MaxConnectionsPercent)
	}
	if pc.ConnectionBorrowTimeout == 0 {
		pc.ConnectionBorrowTimeout = 120
	}
	if pc.SessionPinningFilters == nil {
		pc.SessionPinningFilters = []string{}
	}
}

// Validate checks a normalised target group.
func (g *TargetGroup) Validate() error {
	var es FieldErrors
	checkName(&es, "proxy", g.Proxy, proxyNameRE, "proxy name")
	pc := g.ConnectionPoolConfig
	const f = "connection_pool_config."
	for _, p := range vocab.PoolProblems(pc.MaxConnectionsPercent, pc.MaxIdleConnectionsPercent, pc.SessionPinningFilters) {
		es.add(f+p.Field, "%s", p.Message)
	}
	// RDS Proxy allows up to 3600 seconds.
	if pc.ConnectionBorrowTimeout < 1 || pc.ConnectionBorrowTimeout > 3600 {
		es.add(f+"connection_borrow_timeout", "must be 1-3600 seconds, got %d", pc.ConnectionBorrowTimeout)
	}
	if len(pc.InitQuery) > 4096 {
		es.add(f+"init_query", "must be at most 4096 bytes")
	}
	return es.Err()
}

// Normalize applies defaults to unset fields.
func (t *Target) Normalize() {
	if t.Role == "" {
		t.Role = vocab.RoleAuto
	}
	if t.Port == 0 {
		t.Port = 3306
	}
}

// Validate checks a normalised target.
func (t *Target) Validate() error {
	var es FieldErrors
	checkName(&es, "proxy", t.Proxy, proxyNameRE, "proxy name")
	checkName(&es, "name", t.Name, objectNameRE, "target name (letters, digits, '.', '_', '-')")
	checkName(&es, "host", t.Host, hostRE, "host name or IP address")
	if t.Port < 1 || t.Port > 65535 {
		es.add("port", "must be 1-65535, got %d", t.Port)
	}
	if t.Zone != "" {
		checkZones(&es, "zone", []string{t.Zone}, false)
	}
	switch t.Role {
	case vocab.RoleAuto, vocab.RoleWriter, vocab.RoleReader:
	default:
		es.add("role", "must be AUTO, WRITER or READER, got %q", t.Role)
	}
	return es.Err()
}

// Normalize applies defaults to unset fields.
func (e *Endpoint) Normalize() {
	if e.TargetRole == "" {
		e.TargetRole = vocab.TargetRoleReadWrite
	}
	if e.Zones == nil {
		e.Zones = []string{}
	}
}

// Validate checks a normalised endpoint.
func (e *Endpoint) Validate() error {
	var es FieldErrors
	checkName(&es, "proxy", e.Proxy, proxyNameRE, "proxy name")
	checkName(&es, "name", e.Name, proxyNameRE, "endpoint name (a letter, then letters, digits and single hyphens)")
	if e.Name == DefaultEndpoint {
		es.add("name", "%q is the proxy's own endpoint; choose another name", DefaultEndpoint)
	}
	if e.TargetRole != vocab.TargetRoleReadWrite && e.TargetRole != vocab.TargetRoleReadOnly {
		es.add("target_role", "must be READ_WRITE or READ_ONLY, got %q", e.TargetRole)
	}
	checkZones(&es, "zones", e.Zones, false)
	checkPort(&es, "port", e.Port)
	return es.Err()
}

// Normalize applies defaults to unset fields.
func (u *User) Normalize() {
	if u.Path == "" {
		u.Path = "/"
	}
}

// Validate checks a user.
func (u *User) Validate() error {
	var es FieldErrors
	checkName(&es, "name", u.Name, userNameRE, "user name (1-64 of letters, digits and +=,.@_-)")
	if !strings.HasPrefix(u.Path, "/") || !strings.HasSuffix(u.Path, "/") || len(u.Path) > 512 {
		es.add("path", "must begin and end with '/', at most 512 characters, got %q", u.Path)
	}
	return es.Err()
}

// Validate checks a policy's name; the document is checked by the IAM
// parser.
func (p *Policy) Validate() error {
	var es FieldErrors
	checkName(&es, "name", p.Name, userNameRE, "policy name (1-64 of letters, digits and +=,.@_-)")
	if p.Document == "" {
		es.add("policy", "is required")
	} else if !json.Valid([]byte(p.Document)) {
		es.add("policy", "is not valid JSON")
	} else if len(p.Document) > 6144 {
		es.add("policy", "must be at most 6144 characters")
	}
	return es.Err()
}

// ZonesOf returns the zones an endpoint serves: its own, or its proxy's.
func (e *Endpoint) ZonesOf(p *Proxy) []string {
	if len(e.Zones) > 0 {
		return e.Zones
	}
	return p.Zones
}

// AsFieldErrors returns err's field errors, if it has any.
func AsFieldErrors(err error) (FieldErrors, bool) {
	var es FieldErrors
	if errors.As(err, &es) {
		return es, true
	}
	var fe *FieldError
	if errors.As(err, &fe) {
		return FieldErrors{fe}, true
	}
	return nil, false
}

// ValidZone reports whether z is a well-formed zone name.
func ValidZone(z string) bool { return zoneRE.MatchString(z) }

// HasZone reports whether zones contains z.
func HasZone(zones []string, z string) bool { return slices.Contains(zones, z) }
