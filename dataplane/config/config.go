// Package config defines the data-plane node's configuration model: the
// proxies it serves, their endpoints, database targets, credentials and pool
// settings. The same model is loaded from a static file in standalone mode and
// (later) assembled from xDS resources pushed by the control plane.
package config

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/dbproxy/dbproxy/internal/vocab"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// Duration is a time.Duration that reads and writes as a Go duration string
// ("30s", "15m") in JSON.
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON accepts a duration string or a number of seconds; null
// leaves the value unset.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var secs float64
		if err2 := json.Unmarshal(b, &secs); err2 != nil || math.Abs(secs) > math.MaxInt64/float64(time.Second) {
			return durationError(string(b))
		}
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return durationError(strconv.Quote(s))
	}
	*d = Duration(v)
	return nil
}

// durationError is a json.UnmarshalTypeError so that the decoder adds the
// path of the field to it.
func durationError(value string) error {
	if len(value) > 40 {
		value = value[:40] + "..."
	}
	return &json.UnmarshalTypeError{
		Value: value + ` (want a duration such as "30s" or a number of seconds)`,
		Type:  reflect.TypeFor[Duration](),
	}
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Config is everything one node serves.
type Config struct {
	// Version identifies this configuration (a content hash when pushed by
	// the control plane; free text in a static file).
	Version string `json:"version,omitempty"`
	// Node holds node-local settings that are not part of the pushed model.
	Node Node `json:"node"`
	// Secrets are database credentials referenced by proxies.
	Secrets []Secret `json:"secrets"`
	// Proxies are the proxies this node serves.
	Proxies []Proxy `json:"proxies"`
	// Connect is what the node verifies connect tokens with: the users of
	// auth blocks with iam_auth REQUIRED log in with tokens signed by
	// these keys. The control plane pushes it; without it, such users
	// cannot log in.
	Connect *xdsapi.ConnectKeys `json:"connect,omitempty"`
}

// Node holds settings of the node process itself.
type Node struct {
	// Zone is the node's zone; READ_ONLY endpoints prefer readers here.
	Zone string `json:"zone,omitempty"`
	// AdminAddress serves /metrics and /healthz ("127.0.0.1:9100").
	AdminAddress string `json:"admin_address,omitempty"`
	// TLS is the server certificate presented to clients. When empty, a
	// self-signed pair is generated at start.
	TLS TLS `json:"tls,omitempty"`
	// HandshakeTimeout bounds how long a new client may take to log in.
	HandshakeTimeout Duration `json:"handshake_timeout,omitempty"`
	// MaxPacketSize bounds one client command (default 1 GiB, as MariaDB's
	// max_allowed_packet upper bound).
	MaxPacketSize int `json:"max_packet_size,omitempty"`
}

// TLS is a certificate and key in PEM, either in files (CertFile, KeyFile)
// or inline (CertPEM, KeyPEM, as the control plane pushes them); the two
// ways exclude each other.
type TLS struct {
	CertFile string `json:"cert_file,omitempty"`
	KeyFile  string `json:"key_file,omitempty"`
	CertPEM  string `json:"cert_pem,omitempty"`
	KeyPEM   string `json:"key_pem,omitempty"`
}

// String hides the private key.
func (t TLS) String() string {
	switch {
	case t.Inline():
		return fmt.Sprintf("inline TLS certificate (%d bytes, key hidden)", len(t.CertPEM))
	case t.Files():
		return fmt.Sprintf("TLS certificate %s, key %s", t.CertFile, t.KeyFile)
	}
	return "self-signed TLS certificate"
}

// Inline reports whether the certificate and key are given inline.
func (t TLS) Inline() bool { return t.CertPEM != "" || t.KeyPEM != "" }

// Files reports whether the certificate and key are given as files.
func (t TLS) Files() bool { return t.CertFile != "" || t.KeyFile != "" }

// validate checks that the files and the inline PEM are not mixed, that
// each comes as a pair, and that an inline pair parses.
func (t TLS) validate(bad func(field, format string, a ...any)) {
	const f = "node.tls"
	files := t.Files()
	switch {
	case files && t.Inline():
		bad(f, "give cert_file and key_file or cert_pem and key_pem, not both")
	case files && (t.CertFile == "" || t.KeyFile == ""):
		bad(f, "cert_file and key_file go together")
	case t.Inline() && t.CertPEM == "":
		bad(f+".cert_pem", "is required with key_pem")
	case t.Inline() && t.KeyPEM == "":
		bad(f+".key_pem", "is required with cert_pem")
	case t.Inline():
		// The parse error names no key material.
		if _, err := tls.X509KeyPair([]byte(t.CertPEM), []byte(t.KeyPEM)); err != nil {
			bad(f+".cert_pem", "not a valid certificate and key pair: %v", err)
		}
	}
}

// Secret is a set of database credentials.
type Secret struct {
	Name     string `json:"name"`
	Username string `json:"username"`
	Password string `json:"password"`
}

// String hides the password.
func (s Secret) String() string { return fmt.Sprintf("secret %s (user %s)", s.Name, s.Username) }

// Proxy is one proxy: its endpoints, targets, auth and pool settings.
type Proxy struct {
	Name                 string     `json:"name"`
	EngineFamily         string     `json:"engine_family,omitempty"`
	Zones                []string   `json:"zones,omitempty"`
	Auth                 []Auth     `json:"auth"`
	RequireTLS           bool       `json:"require_tls,omitempty"`
	IdleClientTimeout    Duration   `json:"idle_client_timeout,omitempty"`
	MaxClientConnections int        `json:"max_client_connections,omitempty"`
	DebugLogging         bool       `json:"debug_logging,omitempty"`
	Endpoints            []Endpoint `json:"endpoints"`
	Targets              []Target   `json:"targets"`
	Pool                 PoolConfig `json:"connection_pool_config"`
}

// Auth lets the users of one secret connect to a proxy.
type Auth struct {
	Secret                 string `json:"secret"`
	IAMAuth                string `json:"iam_auth,omitempty"`
	ClientPasswordAuthType string `json:"client_password_auth_type,omitempty"`
}

// Endpoint is one listening address of a proxy.
type Endpoint struct {
	Name       string `json:"name"`
	Address    string `json:"address"`
	TargetRole string `json:"target_role,omitempty"`
}

// Target is one database server behind a proxy.
type Target struct {
	Name string `json:"name"`
	Host string `json:"host"`
	Port int    `json:"port"`
	Zone string `json:"zone,omitempty"`
	Role string `json:"role,omitempty"`
}

// Addr is host:port.
func (t Target) Addr() string { return net.JoinHostPort(t.Host, strconv.Itoa(t.Port)) }

// PoolConfig mirrors RDS Proxy's connection_pool_config plus a few pool
// hygiene knobs.
type PoolConfig struct {
	MaxConnectionsPercent     int      `json:"max_connections_percent,omitempty"`
	MaxIdleConnectionsPercent int      `json:"max_idle_connections_percent,omitempty"`
	ConnectionBorrowTimeout   Duration `json:"connection_borrow_timeout,omitempty"`
	InitQuery                 string   `json:"init_query,omitempty"`
	// DisableSessionTracking makes the node treat targets as servers
	// without session tracking (as MySQL 5.6): every statement that may
	// change session state pins. For old servers and for testing.
	DisableSessionTracking bool     `json:"disable_session_tracking,omitempty"`
	SessionPinningFilters  []string `json:"session_pinning_filters,omitempty"`
	// MaxLifetime closes database connections older than this (default 1h).
	MaxLifetime Duration `json:"max_lifetime,omitempty"`
	// IdleCheckAfter validates an idle connection with a ping before reuse
	// when it has been idle longer than this (default 30s).
	IdleCheckAfter Duration `json:"idle_check_after,omitempty"`
}

// Defaults applied by ApplyDefaults.
const (
	DefaultMaxConnectionsPercent     = 100
	DefaultMaxIdleConnectionsPercent = 50
	DefaultBorrowTimeout             = 120 * time.Second
	DefaultIdleClientTimeout         = 30 * time.Minute
	DefaultMaxClientConnections      = 20000
	DefaultHandshakeTimeout          = 10 * time.Second
	DefaultMaxLifetime               = time.Hour
	DefaultIdleCheckAfter            = 30 * time.Second
	DefaultMaxPacketSize             = 1 << 30
)

// Load reads, defaults and validates a JSON config file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(b)
}

// Parse decodes, defaults and validates a JSON config.
func Parse(b []byte) (*Config, error) {
	var c Config
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("parse config: unexpected data after the top-level object")
	}
	c.ApplyDefaults()
	if err := errors.Join(c.Validate(), c.requireTargets()); err != nil {
		return nil, err
	}
	return &c, nil
}

// requireTargets rejects proxies without targets. A file that declares
// such a proxy has a mistake in it; a configuration pushed by the control
// plane may carry one (a proxy whose targets are not registered yet), and
// the node serves it, answering clients that no target is available.
func (c *Config) requireTargets() error {
	var errs []error
	for i, p := range c.Proxies {
		if len(p.Targets) == 0 {
			errs = append(errs, fmt.Errorf("proxies[%d].targets: at least one target is required", i))
		}
	}
	return errors.Join(errs...)
}

// ApplyDefaults fills in unset fields.
func (c *Config) ApplyDefaults() {
	if c.Node.HandshakeTimeout == 0 {
		c.Node.HandshakeTimeout = Duration(DefaultHandshakeTimeout)
	}
	if c.Node.MaxPacketSize == 0 {
		c.Node.MaxPacketSize = DefaultMaxPacketSize
	}
	for i := range c.Proxies {
		p := &c.Proxies[i]
		if p.EngineFamily == "" {
			p.EngineFamily = vocab.EngineMySQL
		}
		if p.IdleClientTimeout == 0 {
			p.IdleClientTimeout = Duration(DefaultIdleClientTimeout)
		}
		if p.MaxClientConnections == 0 {
			p.MaxClientConnections = DefaultMaxClientConnections
		}
		for j := range p.Auth {
			if p.Auth[j].IAMAuth == "" {
				p.Auth[j].IAMAuth = vocab.IAMAuthDisabled
			}
			if p.Auth[j].ClientPasswordAuthType == "" {
				p.Auth[j].ClientPasswordAuthType = vocab.AuthNativePassword
			}
		}
		for j := range p.Endpoints {
			if p.Endpoints[j].TargetRole == "" {
				p.Endpoints[j].TargetRole = vocab.TargetRoleReadWrite
			}
		}
		for j := range p.Targets {
			if p.Targets[j].Role == "" {
				p.Targets[j].Role = vocab.RoleAuto
			}
			if p.Targets[j].Name == "" {
				p.Targets[j].Name = p.Targets[j].Addr()
			}
		}
		pc := &p.Pool
		if pc.MaxConnectionsPercent == 0 {
			pc.MaxConnectionsPercent = DefaultMaxConnectionsPercent
		}
		if pc.MaxIdleConnectionsPercent == 0 {
			// As RDS Proxy: half of the connections, or all of them when
			// the limit is below 50%.
			pc.MaxIdleConnectionsPercent = min(DefaultMaxIdleConnectionsPercent, pc.MaxConnectionsPercent)
		}
		if pc.ConnectionBorrowTimeout == 0 {
			pc.ConnectionBorrowTimeout = Duration(DefaultBorrowTimeout)
		}
		if pc.MaxLifetime == 0 {
			pc.MaxLifetime = Duration(DefaultMaxLifetime)
		}
		if pc.IdleCheckAfter == 0 {
			pc.IdleCheckAfter = Duration(DefaultIdleCheckAfter)
		}
	}
}

// Validate reports the first problem found, naming the field.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, a...)))
	}
	secrets := map[string]bool{}
	for i, s := range c.Secrets {
		f := fmt.Sprintf("secrets[%d]", i)
		if s.Name == "" {
			bad(f+".name", "is required")
		}
		if secrets[s.Name] {
			bad(f+".name", "duplicate secret %q", s.Name)
		}
		secrets[s.Name] = true
		if s.Username == "" {
			bad(f+".username", "is required")
		}
	}
	// Zero means the default to the consumers of these two.
	if c.Node.MaxPacketSize < 0 {
		bad("node.max_packet_size", "must not be negative, got %d", c.Node.MaxPacketSize)
	}
	if c.Node.HandshakeTimeout < 0 {
		bad("node.handshake_timeout", "must not be negative")
	}
	c.Node.TLS.validate(bad)
	validateConnect(c.Connect, bad)
	addrs := map[string]string{}
	names := map[string]bool{}
	for i, p := range c.Proxies {
		f := fmt.Sprintf("proxies[%d]", i)
		if p.Name == "" {
			bad(f+".name", "is required")
		}
		if names[p.Name] {
			bad(f+".name", "duplicate proxy %q", p.Name)
		}
		names[p.Name] = true
		if p.EngineFamily != "MYSQL" {
			bad(f+".engine_family", "must be MYSQL, got %q", p.EngineFamily)
		}
		if p.IdleClientTimeout < 0 {
			bad(f+".idle_client_timeout", "must not be negative")
		}
		if p.MaxClientConnections < 0 {
			bad(f+".max_client_connections", "must not be negative, got %d", p.MaxClientConnections)
		}
		if len(p.Auth) == 0 {
			bad(f+".auth", "at least one auth block is required")
		}
		users := make([]string, len(p.Auth))
		for j, a := range p.Auth {
			af := fmt.Sprintf("%s.auth[%d]", f, j)
			if !secrets[a.Secret] {
				bad(af+".secret", "unknown secret %q", a.Secret)
			}
			if sec, ok := c.SecretByName(a.Secret); ok {
				users[j] = sec.Username
			}
			if a.IAMAuth != vocab.IAMAuthDisabled && a.IAMAuth != vocab.IAMAuthRequired {
				bad(af+".iam_auth", "must be DISABLED or REQUIRED, got %q", a.IAMAuth)
			}
			if a.ClientPasswordAuthType != vocab.AuthNativePassword && a.ClientPasswordAuthType != vocab.AuthCachingSHA2Password {
				bad(af+".client_password_auth_type", "must be %s or %s, got %q", vocab.AuthNativePassword, vocab.AuthCachingSHA2Password, a.ClientPasswordAuthType)
			}
		}
		if k, j, dup := vocab.DuplicateUsername(users); dup {
			bad(fmt.Sprintf("%s.auth[%d].secret", f, j), "secret %q has username %q, as the secret of auth[%d] does; auth blocks need distinct usernames", p.Auth[j].Secret, users[j], k)
		}
		if len(p.Endpoints) == 0 {
			bad(f+".endpoints", "at least one endpoint is required")
		}
		for j, e := range p.Endpoints {
			ef := fmt.Sprintf("%s.endpoints[%d]", f, j)
			if _, _, err := net.SplitHostPort(e.Address); err != nil {
				bad(ef+".address", "must be host:port: %v", err)
			}
			if prev, ok := addrs[e.Address]; ok && !strings.HasSuffix(e.Address, ":0") {
				bad(ef+".address", "%s is already used by %s", e.Address, prev)
			}
			addrs[e.Address] = p.Name + "/" + e.Name
			if e.TargetRole != vocab.TargetRoleReadWrite && e.TargetRole != vocab.TargetRoleReadOnly {
				bad(ef+".target_role", "must be READ_WRITE or READ_ONLY, got %q", e.TargetRole)
			}
		}
		for j, t := range p.Targets {
			tf := fmt.Sprintf("%s.targets[%d]", f, j)
			if t.Host == "" {
				bad(tf+".host", "is required")
			}
			if t.Port <= 0 || t.Port > 65535 {
				bad(tf+".port", "must be 1-65535, got %d", t.Port)
			}
			switch t.Role {
			case vocab.RoleAuto, vocab.RoleWriter, vocab.RoleReader:
			default:
				bad(tf+".role", "must be AUTO, WRITER or READER, got %q", t.Role)
			}
		}
		pc := p.Pool
		pf := f + ".connection_pool_config"
		for _, p := range vocab.PoolProblems(pc.MaxConnectionsPercent, pc.MaxIdleConnectionsPercent, pc.SessionPinningFilters) {
			bad(pf+"."+p.Field, "%s", p.Message)
		}
		if pc.ConnectionBorrowTimeout < 0 {
			bad(pf+".connection_borrow_timeout", "must not be negative")
		}
	}
	return errors.Join(errs...)
}

// SecretByName returns the named secret.
func (c *Config) SecretByName(name string) (Secret, bool) {
	for _, s := range c.Secrets {
		if s.Name == name {
			return s, true
		}
	}
	return Secret{}, false
}

// HasPinningFilter reports whether the pool config lists filter f.
func (pc PoolConfig) HasPinningFilter(f string) bool {
	for _, s := range pc.SessionPinningFilters {
		if s == f {
			return true
		}
	}
	return false
}

// validateConnect checks the shape of the connect keys. Messages name
// fields and key ids, never key material.
func validateConnect(ck *xdsapi.ConnectKeys, bad func(field, format string, a ...any)) {
	if ck == nil {
		return
	}
	seen := map[string]bool{}
	for i, k := range ck.Keys {
		f := fmt.Sprintf("connect.keys[%d]", i)
		if k.AccessKeyID == "" {
			bad(f+".access_key_id", "is required")
		}
		if seen[k.AccessKeyID] {
			bad(f+".access_key_id", "duplicate key %q", k.AccessKeyID)
		}
		seen[k.AccessKeyID] = true
		if len(k.SigningKeys) == 0 {
			bad(f+".signing_keys", "at least one is required")
		}
		for date, hexKey := range k.SigningKeys {
			if _, err := time.Parse("20060102", date); err != nil {
				bad(f+".signing_keys", "date %q is not YYYYMMDD", date)
			}
			if b, err := hex.DecodeString(hexKey); err != nil || len(b) != sha256.Size {
				bad(f+".signing_keys", "the key for %s is not %d hex-encoded bytes", date, sha256.Size)
			}
		}
		for j, g := range k.Allow {
			if g.Proxy == "" || g.DBUser == "" {
				bad(fmt.Sprintf("%s.allow[%d]", f, j), "proxy and db_user are required")
			}
		}
	}
}
