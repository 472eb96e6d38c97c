package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dbproxy/dbproxy/internal/vocab"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

const minimal = `{
  "secrets": [{"name": "app", "username": "app", "password": "pw"}],
  "proxies": [{
    "name": "main",
    "auth": [{"secret": "app"}],
    "endpoints": [{"name": "rw", "address": "127.0.0.1:6033"}],
    "targets": [{"host": "db1.internal", "port": 3306}]
  }]
}`

func mustParse(t *testing.T, s string) *Config {
	t.Helper()
	c, err := Parse([]byte(s))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

func TestParseAppliesDefaults(t *testing.T) {
	c := mustParse(t, minimal)
	if c.Node.HandshakeTimeout.D() != DefaultHandshakeTimeout || c.Node.MaxPacketSize != DefaultMaxPacketSize {
		t.Errorf("node defaults: %+v", c.Node)
	}
	p := c.Proxies[0]
	if p.EngineFamily != "MYSQL" || p.IdleClientTimeout.D() != DefaultIdleClientTimeout || p.MaxClientConnections != DefaultMaxClientConnections {
		t.Errorf("proxy defaults: engine %q idle %v max clients %d", p.EngineFamily, p.IdleClientTimeout.D(), p.MaxClientConnections)
	}
	if a := p.Auth[0]; a.IAMAuth != vocab.IAMAuthDisabled || a.ClientPasswordAuthType != vocab.AuthNativePassword {
		t.Errorf("auth defaults: %+v", a)
	}
	if e := p.Endpoints[0]; e.TargetRole != vocab.TargetRoleReadWrite {
		t.Errorf("endpoint defaults: %+v", e)
	}
	if tg := p.Targets[0]; tg.Role != vocab.RoleAuto || tg.Name != "db1.internal:3306" || tg.Addr() != "db1.internal:3306" {
		t.Errorf("target defaults: %+v", tg)
	}
	pc := p.Pool
	if pc.MaxConnectionsPercent != DefaultMaxConnectionsPercent || pc.MaxIdleConnectionsPercent != DefaultMaxIdleConnectionsPercent ||
		pc.ConnectionBorrowTimeout.D() != DefaultBorrowTimeout || pc.MaxLifetime.D() != DefaultMaxLifetime || pc.IdleCheckAfter.D() != DefaultIdleCheckAfter {
		t.Errorf("pool defaults: %+v", pc)
	}
	if pc.HasPinningFilter(vocab.PinningFilterExcludeVariableSets) {
		t.Error("pinning filter set by default")
	}
}

func TestParseKeepsExplicitValues(t *testing.T) {
	c := mustParse(t, `{
  "version": "v7",
  "node": {"zone": "b", "handshake_timeout": "3s", "max_packet_size": 65536, "tls": {"cert_file": "c.pem", "key_file": "k.pem"}},
  "secrets": [{"name": "app", "username": "app", "password": "pw"}],
  "proxies": [{
    "name": "main",
    "engine_family": "MYSQL",
    "auth": [{"secret": "app", "iam_auth": "REQUIRED", "client_password_auth_type": "MYSQL_CACHING_SHA2_PASSWORD"}],
    "require_tls": true,
    "idle_client_timeout": 90,
    "max_client_connections": 10,
    "endpoints": [{"name": "ro", "address": "[::1]:6034", "target_role": "READ_ONLY"}],
    "targets": [{"name": "r1", "host": "10.0.0.2", "port": 3307, "zone": "b", "role": "READER"}],
    "connection_pool_config": {
      "max_connections_percent": 20,
      "connection_borrow_timeout": "1m30s",
      "session_pinning_filters": ["EXCLUDE_VARIABLE_SETS"],
      "init_query": "SET time_zone = '+00:00'"
    }
  }]
}`)
	if c.Version != "v7" || c.Node.HandshakeTimeout.D() != 3*time.Second || c.Node.MaxPacketSize != 65536 || c.Node.TLS.CertFile != "c.pem" {
		t.Errorf("node: %+v", c.Node)
	}
	p := c.Proxies[0]
	if !p.RequireTLS || p.IdleClientTimeout.D() != 90*time.Second || p.MaxClientConnections != 10 {
		t.Errorf("proxy: %+v", p)
	}
	if p.Auth[0].IAMAuth != vocab.IAMAuthRequired || p.Auth[0].ClientPasswordAuthType != vocab.AuthCachingSHA2Password {
		t.Errorf("auth: %+v", p.Auth[0])
	}
	if p.Targets[0].Name != "r1" || p.Targets[0].Role != vocab.RoleReader || p.Targets[0].Addr() != "10.0.0.2:3307" {
		t.Errorf("target: %+v", p.Targets[0])
	}
	pc := p.Pool
	// Below 50%, the idle limit defaults to the connection limit.
	if pc.MaxConnectionsPercent != 20 || pc.MaxIdleConnectionsPercent != 20 || pc.ConnectionBorrowTimeout.D() != 90*time.Second {
		t.Errorf("pool: %+v", pc)
	}
	if !pc.HasPinningFilter(vocab.PinningFilterExcludeVariableSets) || pc.InitQuery != "SET time_zone = '+00:00'" {
		t.Errorf("pool: %+v", pc)
	}
	if s, ok := c.SecretByName("app"); !ok || s.Password != "pw" {
		t.Errorf("SecretByName: %+v, %v", s, ok)
	}
	if _, ok := c.SecretByName("nope"); ok {
		t.Error("SecretByName found a missing secret")
	}
}

func TestParseRejectsUnknownFields(t *testing.T) {
	tests := []struct {
		name, json, field string
	}{
		{"top level", `{"secrets": [], "proxies": [], "extra": 1}`, "extra"},
		{"node", `{"node": {"admin_addr": "x"}}`, "admin_addr"},
		{"node tls", `{"node": {"tls": {"cert": "x"}}}`, "cert"},
		{"secret", `{"secrets": [{"name": "a", "username": "u", "passwd": "x"}]}`, "passwd"},
		{"pool", `{"proxies": [{"connection_pool_config": {"max_connections": 5}}]}`, "max_connections"},
		{"target", `{"proxies": [{"targets": [{"hostname": "x"}]}]}`, "hostname"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.json))
			if err == nil || !strings.Contains(err.Error(), `unknown field "`+tt.field+`"`) {
				t.Fatalf("Parse: %v, want unknown field %q", err, tt.field)
			}
		})
	}
}

func TestParseRejectsMalformedJSON(t *testing.T) {
	for _, in := range []string{``, `{`, `[]`, minimal + `{"secrets": []}`, minimal + ` x`} {
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("Parse(%.40q...) accepted", in)
		}
	}
}

func TestValidationErrorsNameTheirField(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *Config)
		field  string
	}{
		{"secret without name", func(c *Config) { c.Secrets[0].Name = "" }, "secrets[0].name"},
		{"duplicate secret", func(c *Config) { c.Secrets = append(c.Secrets, c.Secrets[0]) }, "secrets[1].name"},
		{"secret without username", func(c *Config) { c.Secrets[0].Username = "" }, "secrets[0].username"},
		{"proxy without name", func(c *Config) { c.Proxies[0].Name = "" }, "proxies[0].name"},
		{"duplicate proxy", func(c *Config) {
			p := c.Proxies[0]
			p.Endpoints = []Endpoint{{Name: "rw", Address: "127.0.0.1:6034", TargetRole: vocab.TargetRoleReadWrite}}
			c.Proxies = append(c.Proxies, p)
		}, "proxies[1].name"},
		{"engine family", func(c *Config) { c.Proxies[0].EngineFamily = "POSTGRESQL" }, "proxies[0].engine_family"},
		{"no auth", func(c *Config) { c.Proxies[0].Auth = nil }, "proxies[0].auth"},
		{"unknown secret", func(c *Config) { c.Proxies[0].Auth[0].Secret = "nope" }, "proxies[0].auth[0].secret"},
		{"iam auth", func(c *Config) { c.Proxies[0].Auth[0].IAMAuth = "MAYBE" }, "proxies[0].auth[0].iam_auth"},
		{"password auth type", func(c *Config) { c.Proxies[0].Auth[0].ClientPasswordAuthType = "PLAIN" }, "proxies[0].auth[0].client_password_auth_type"},
		{"two auth blocks for one username", func(c *Config) {
			c.Secrets = append(c.Secrets, Secret{Name: "twin", Username: c.Secrets[0].Username, Password: "pw2"})
			c.Proxies[0].Auth = append(c.Proxies[0].Auth, Auth{Secret: "twin", IAMAuth: vocab.IAMAuthRequired, ClientPasswordAuthType: vocab.AuthNativePassword})
		}, "proxies[0].auth[1].secret"},
		{"connect key id", func(c *Config) {
			c.Connect = &xdsapi.ConnectKeys{Keys: []xdsapi.ConnectKey{{SigningKeys: map[string]string{"20261201": strings.Repeat("ab", 32)}}}}
		}, "connect.keys[0].access_key_id"},
		{"connect signing key", func(c *Config) {
			c.Connect = &xdsapi.ConnectKeys{Keys: []xdsapi.ConnectKey{{AccessKeyID: "AK", SigningKeys: map[string]string{"20261201": "pw-not-hex"}}}}
		}, "connect.keys[0].signing_keys"},
		{"connect signing key date", func(c *Config) {
			c.Connect = &xdsapi.ConnectKeys{Keys: []xdsapi.ConnectKey{{AccessKeyID: "AK", SigningKeys: map[string]string{"2026-12-01": strings.Repeat("ab", 32)}}}}
		}, "connect.keys[0].signing_keys"},
		{"connect grant", func(c *Config) {
			c.Connect = &xdsapi.ConnectKeys{Keys: []xdsapi.ConnectKey{{AccessKeyID: "AK", SigningKeys: map[string]string{"20261201": strings.Repeat("ab", 32)},
				Allow: []xdsapi.ConnectGrant{{Proxy: "main"}}}}}
		}, "connect.keys[0].allow[0]"},
		{"no endpoints", func(c *Config) { c.Proxies[0].Endpoints = nil }, "proxies[0].endpoints"},
		{"endpoint address", func(c *Config) { c.Proxies[0].Endpoints[0].Address = "6033" }, "proxies[0].endpoints[0].address"},
		{"duplicate address", func(c *Config) {
			c.Proxies[0].Endpoints = append(c.Proxies[0].Endpoints, Endpoint{Name: "b", Address: "127.0.0.1:6033", TargetRole: vocab.TargetRoleReadOnly})
		}, "proxies[0].endpoints[1].address"},
		{"target role of endpoint", func(c *Config) { c.Proxies[0].Endpoints[0].TargetRole = "ANY" }, "proxies[0].endpoints[0].target_role"},
		{"target host", func(c *Config) { c.Proxies[0].Targets[0].Host = "" }, "proxies[0].targets[0].host"},
		{"target port zero", func(c *Config) { c.Proxies[0].Targets[0].Port = 0 }, "proxies[0].targets[0].port"},
		{"target port too high", func(c *Config) { c.Proxies[0].Targets[0].Port = 70000 }, "proxies[0].targets[0].port"},
		{"target role", func(c *Config) { c.Proxies[0].Targets[0].Role = "PRIMARY" }, "proxies[0].targets[0].role"},
		{"max connections percent", func(c *Config) { c.Proxies[0].Pool.MaxConnectionsPercent = 101 }, "proxies[0].connection_pool_config.max_connections_percent"},
		{"idle percent over max", func(c *Config) {
			c.Proxies[0].Pool.MaxIdleConnectionsPercent = 100
			c.Proxies[0].Pool.MaxConnectionsPercent = 50
		},
			"proxies[0].connection_pool_config.max_idle_connections_percent"},
		{"negative idle percent", func(c *Config) { c.Proxies[0].Pool.MaxIdleConnectionsPercent = -1 }, "proxies[0].connection_pool_config.max_idle_connections_percent"},
		{"negative borrow timeout", func(c *Config) { c.Proxies[0].Pool.ConnectionBorrowTimeout = Duration(-time.Second) },
			"proxies[0].connection_pool_config.connection_borrow_timeout"},
		{"pinning filter", func(c *Config) { c.Proxies[0].Pool.SessionPinningFilters = []string{"EXCLUDE_VARIABLE_SETS", "NONE"} },
			"proxies[0].connection_pool_config.session_pinning_filters[1]"},
		{"negative max packet size", func(c *Config) { c.Node.MaxPacketSize = -1 }, "node.max_packet_size"},
		{"negative handshake timeout", func(c *Config) { c.Node.HandshakeTimeout = Duration(-time.Second) }, "node.handshake_timeout"},
		{"negative idle client timeout", func(c *Config) { c.Proxies[0].IdleClientTimeout = Duration(-time.Second) }, "proxies[0].idle_client_timeout"},
		{"negative max client connections", func(c *Config) { c.Proxies[0].MaxClientConnections = -1 }, "proxies[0].max_client_connections"},
		{"tls files and inline", func(c *Config) {
			c.Node.TLS = TLS{CertFile: "c.pem", KeyFile: "k.pem", CertPEM: testCert.cert, KeyPEM: testCert.key}
		}, "node.tls"},
		{"tls cert file without key file", func(c *Config) { c.Node.TLS = TLS{CertFile: "c.pem"} }, "node.tls"},
		{"tls cert pem without key", func(c *Config) { c.Node.TLS = TLS{CertPEM: testCert.cert} }, "node.tls.key_pem"},
		{"tls key pem without cert", func(c *Config) { c.Node.TLS = TLS{KeyPEM: testCert.key} }, "node.tls.cert_pem"},
		{"tls pem garbage", func(c *Config) { c.Node.TLS = TLS{CertPEM: "not a certificate", KeyPEM: testCert.key} }, "node.tls.cert_pem"},
		{"tls key of another certificate", func(c *Config) { c.Node.TLS = TLS{CertPEM: testCert.cert, KeyPEM: otherCert.key} }, "node.tls.cert_pem"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, minimal)
			tt.mutate(c)
			err := c.Validate()
			if err == nil {
				t.Fatal("Validate accepted the config")
			}
			if !strings.Contains(err.Error(), tt.field+": ") {
				t.Fatalf("error %q does not name %s", err, tt.field)
			}
			if strings.Contains(err.Error(), "pw") {
				t.Fatalf("error %q shows a password", err)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") || strings.Contains(err.Error(), keyBody(testCert.key)) || strings.Contains(err.Error(), keyBody(otherCert.key)) {
				t.Fatalf("error %q shows a private key", err)
			}
			// Parse reports the same problem from the file.
			b, merr := json.Marshal(c)
			if merr != nil {
				t.Fatal(merr)
			}
			if _, perr := Parse(b); perr == nil || !strings.Contains(perr.Error(), tt.field+": ") {
				t.Fatalf("Parse error %v does not name %s", perr, tt.field)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := mustParse(t, minimal)
	c.Secrets[0].Username = ""
	c.Proxies[0].Targets[0].Port = 0
	err := c.Validate()
	for _, f := range []string{"secrets[0].username", "proxies[0].targets[0].port"} {
		if err == nil || !strings.Contains(err.Error(), f) {
			t.Errorf("error %v does not name %s", err, f)
		}
	}
}

func TestSharedPortZeroAddresses(t *testing.T) {
	// Several endpoints may ask for a free port (":0"), as tests do.
	c := mustParse(t, minimal)
	c.Proxies[0].Endpoints = []Endpoint{
		{Name: "a", Address: "127.0.0.1:0", TargetRole: vocab.TargetRoleReadWrite},
		{Name: "b", Address: "127.0.0.1:0", TargetRole: vocab.TargetRoleReadOnly},
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		err  bool
	}{
		{`"30s"`, 30 * time.Second, false},
		{`"1m30s"`, 90 * time.Second, false},
		{`"250ms"`, 250 * time.Millisecond, false},
		{`"0s"`, 0, false},
		{`30`, 30 * time.Second, false},
		{`1.5`, 1500 * time.Millisecond, false},
		{`0`, 0, false},
		{`null`, 0, false},
		{`"30"`, 0, true},
		{`"soon"`, 0, true},
		{`""`, 0, true},
		{`true`, 0, true},
		{`{}`, 0, true},
		{`1e300`, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var d Duration
			err := json.Unmarshal([]byte(tt.in), &d)
			if tt.err {
				if err == nil {
					t.Fatalf("accepted, got %v", d.D())
				}
				return
			}
			if err != nil || d.D() != tt.want {
				t.Fatalf("got %v, %v; want %v", d.D(), err, tt.want)
			}
		})
	}

	b, err := json.Marshal(Duration(90 * time.Second))
	if err != nil || string(b) != `"1m30s"` {
		t.Fatalf("Marshal = %s, %v", b, err)
	}
	var back Duration
	if err := json.Unmarshal(b, &back); err != nil || back.D() != 90*time.Second {
		t.Fatalf("round trip: %v, %v", back.D(), err)
	}
}

func TestDurationErrorNamesField(t *testing.T) {
	tests := []struct {
		json, field string
	}{
		{`{"node": {"handshake_timeout": "soon"}}`, "node.handshake_timeout"},
		{`{"proxies": [{"idle_client_timeout": true}]}`, "proxies.idle_client_timeout"},
		{`{"proxies": [{"connection_pool_config": {"connection_borrow_timeout": "10"}}]}`, "proxies.connection_pool_config.connection_borrow_timeout"},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.json))
		var te *json.UnmarshalTypeError
		if err == nil || !strings.Contains(err.Error(), tt.field) || !errors.As(err, &te) {
			t.Errorf("Parse(%s): %v; want an error naming %s", tt.json, err, tt.field)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "node.json")
	if err := os.WriteFile(path, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil || c.Proxies[0].Name != "main" {
		t.Fatalf("Load: %+v, %v", c, err)
	}
	if _, err := Load(filepath.Join(dir, "missing.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load of a missing file: %v", err)
	}
}

func TestExampleConfigsParse(t *testing.T) {
	files, err := filepath.Glob("../../examples/dataplane/*.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if _, err := Load(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestSecretStringHidesPassword(t *testing.T) {
	s := Secret{Name: "app", Username: "u", Password: "hunter2"}
	if strings.Contains(s.String(), "hunter2") {
		t.Fatalf("String() = %q", s.String())
	}
}

func TestTargetsRequiredInFilesOnly(t *testing.T) {
	// A pushed proxy may have no targets yet: the node serves it and tells
	// clients that no target is available. A file without targets has a
	// mistake in it.
	c := mustParse(t, minimal)
	c.Proxies[0].Targets = nil
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate rejected a proxy without targets: %v", err)
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(b); err == nil || !strings.Contains(err.Error(), "proxies[0].targets: ") {
		t.Fatalf("Parse of a file without targets: %v", err)
	}
}

func TestInlineTLS(t *testing.T) {
	tests := []struct {
		name string
		tls  TLS
	}{
		{"inline pair", TLS{CertPEM: testCert.cert, KeyPEM: testCert.key}},
		{"files", TLS{CertFile: "c.pem", KeyFile: "k.pem"}},
		{"none", TLS{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, minimal)
			c.Node.TLS = tt.tls
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			// The inline pair survives a trip through the file format.
			b, err := json.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			back, err := Parse(b)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if back.Node.TLS != tt.tls {
				t.Fatalf("TLS after a round trip = %v, want %v", back.Node.TLS, tt.tls)
			}
			if tt.tls.Inline() != (tt.tls.CertPEM != "") {
				t.Fatalf("Inline() = %v", tt.tls.Inline())
			}
		})
	}
}

func TestTLSStringHidesKey(t *testing.T) {
	tl := TLS{CertPEM: testCert.cert, KeyPEM: testCert.key}
	for _, s := range []string{tl.String(), fmt.Sprintf("%v", tl), fmt.Sprintf("%+v", Node{TLS: tl})} {
		if strings.Contains(s, keyBody(testCert.key)) {
			t.Fatalf("formatted TLS shows the key: %q", s)
		}
	}
}

type pemPair struct{ cert, key string }

// The pairs are made once: generating them is pure computation, and two
// distinct pairs let a test mix a certificate with the wrong key.
var testCert, otherCert = newPEMPair(), newPEMPair()

func newPEMPair() pemPair {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "config test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		panic(err)
	}
	return pemPair{
		cert: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		key:  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})),
	}
}

// keyBody returns a line of a PEM key's base64 body.
func keyBody(keyPEM string) string { return strings.Split(keyPEM, "\n")[1] }
