package mysql

import (
	"bytes"
	"crypto/rsa"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// Credential is what the server side knows of a user: the password in
// clear (the proxy must log in to the database with it anyway) and the
// authentication method clients must use.
type Credential struct {
	Password string
	Method   string
	// Token, when set, makes the user log in with a token instead of
	// the password: the client sends it with mysql_clear_password over
	// TLS, and Token checks it. Its error, which must not contain the
	// token, is told to the client.
	Token func(token string) error
}

// ServerConfig drives the server side of the handshake.
type ServerConfig struct {
	Version   string
	Caps      uint32
	Collation byte
	// TLS, when set, is offered to clients.
	TLS *tls.Config
	// RequireTLS refuses clients that do not upgrade.
	RequireTLS bool
	// RSAKey serves caching_sha2_password full authentication without TLS.
	RSAKey       *rsa.PrivateKey
	RSAPublicPEM []byte
	// Lookup finds the credential of a user; ok is false for unknown users.
	Lookup func(user string) (cred Credential, ok bool)
	// FastAuth remembers users that completed caching_sha2_password full
	// authentication, as MySQL's server-side cache does.
	FastAuth *FastAuthCache
	// GreetingPlugin is the method named in the greeting (default
	// mysql_native_password); clients that answer with another get an
	// auth switch.
	GreetingPlugin string
}

// FastAuthCache remembers which (user, password) pairs completed a full
// caching_sha2_password authentication since start.
type FastAuthCache struct {
	mu   sync.Mutex
	seen map[[32]byte]struct{}
}

// NewFastAuthCache returns an empty cache.
func NewFastAuthCache() *FastAuthCache {
	return &FastAuthCache{seen: map[[32]byte]struct{}{}}
}

func fastAuthKey(user, password string) [32]byte {
	return sha256Sum(user + "\x00" + password)
}

func (f *FastAuthCache) has(user, password string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.seen[fastAuthKey(user, password)]
	return ok
}

func (f *FastAuthCache) add(user, password string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen[fastAuthKey(user, password)] = struct{}{}
}

// HandshakeResult is what a logged-in client negotiated.
type HandshakeResult struct {
	User      string
	DB        string
	Caps      uint32
	Collation byte
	TLS       bool
	Attrs     map[string]string
}

// ErrAccessDenied is wrapped when a client fails authentication.
var ErrAccessDenied = errors.New("access denied")

// ServerHandshake runs the server side of the connection phase on c: it
// sends the greeting, upgrades to TLS when asked, authenticates the user and
// sends the final OK. On failure it sends the client an ERR packet when the
// connection still allows it and returns the error.
func ServerHandshake(c *Conn, connID uint32, cfg *ServerConfig) (*HandshakeResult, error) {
	scramble, err := NewScramble()
	if err != nil {
		return nil, err
	}
	caps := cfg.Caps
	if cfg.TLS != nil {
		caps |= ClientSSL
	} else {
		caps &^= ClientSSL
	}
	c.Seq = 0
	plugin := cfg.GreetingPlugin
	if plugin == "" {
		plugin = AuthNativePassword
	}
	if err := c.WritePacket(appendGreeting(nil, connID, cfg.Version, scramble, caps, cfg.Collation, plugin)); err != nil {
		return nil, fmt.Errorf("write greeting: %w", err)
	}
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("write greeting: %w", err)
	}
	pkt, err := c.ReadPacket()
	if err != nil {
		return nil, fmt.Errorf("read handshake response: %w", err)
	}
	res := &HandshakeResult{}
	if len(pkt) >= 4 {
		clientCaps := binary.LittleEndian.Uint32(pkt)
		if clientCaps&ClientSSL != 0 && len(pkt) == 32 {
			if cfg.TLS == nil {
				return nil, failHandshake(c, NewSQLError(ERHandshakeError, "TLS is not offered by this endpoint"))
			}
			tc := tls.Server(c.DetachNetConn(), cfg.TLS)
			if err := tc.Handshake(); err != nil {
				return nil, fmt.Errorf("TLS handshake: %w", err)
			}
			c.SetNetConn(tc)
			res.TLS = true
			if pkt, err = c.ReadPacket(); err != nil {
				return nil, fmt.Errorf("read handshake response after TLS: %w", err)
			}
		}
	}
	hr, err := ParseHandshakeResponse(pkt)
	if err != nil {
		return nil, failHandshake(c, NewSQLError(ERHandshakeError, "Bad handshake"), err)
	}
	if hr.Caps&ClientProtocol41 == 0 {
		return nil, failHandshake(c, NewSQLError(ERNotSupportedAuthMode, "Client does not support protocol 4.1; please upgrade the MySQL client"))
	}
	if cfg.RequireTLS && !res.TLS {
		return nil, failHandshake(c, NewSQLError(ERSecureTransportRequired, "Connections using insecure transport are prohibited: this proxy requires TLS"))
	}
	res.User, res.DB, res.Collation, res.Attrs = hr.User, hr.DB, hr.Collation, hr.Attrs
	res.Caps = hr.Caps & caps
	if err := authenticate(c, cfg, res, hr.Plugin, hr.AuthResponse, scramble); err != nil {
		return nil, err
	}
	if err := writeOKNow(c, res.Caps); err != nil {
		return nil, err
	}
	return res, nil
}

func writeOKNow(c *Conn, caps uint32) error {
	if err := c.WritePacket(AppendOK(nil, OKPacket, OK{Status: StatusAutocommit}, caps)); err != nil {
		return fmt.Errorf("write OK: %w", err)
	}
	return c.Flush()
}

// failHandshake sends e to the client and returns an error wrapping cause
// (or e).
func failHandshake(c *Conn, e *SQLError, cause ...error) error {
	_ = c.WritePacket(AppendErr(nil, e))
	_ = c.Flush()
	if len(cause) > 0 && cause[0] != nil {
		return fmt.Errorf("%s: %w", e.Message, cause[0])
	}
	return e
}

// authenticate checks the client's proof for res.User with the method of
// its credential, switching the client to that method when needed.
func authenticate(c *Conn, cfg *ServerConfig, res *HandshakeResult, clientPlugin string, resp, scramble []byte) error {
	cred, known := cfg.Lookup(res.User)
	method := cred.Method
	if cred.Token != nil {
		method = AuthClearPassword
	}
	if !known || method == "" {
		method = AuthNativePassword
	}
	if method == AuthClearPassword && !res.TLS {
		return failHandshake(c, NewSQLError(ERSecureTransportRequired, "Token authentication requires TLS"))
	}
	if clientPlugin != method || (method == AuthClearPassword && len(resp) == 0) {
		sw := append([]byte{AuthSwitchRequest}, method...)
		sw = append(sw, 0)
		if method != AuthClearPassword {
			sw = append(sw, scramble...)
			sw = append(sw, 0)
		}
		if err := c.WritePacket(sw); err != nil {
			return fmt.Errorf("write auth switch: %w", err)
		}
		if err := c.Flush(); err != nil {
			return fmt.Errorf("write auth switch: %w", err)
		}
		var err error
		if resp, err = c.ReadPacket(); err != nil {
			return fmt.Errorf("read auth switch response: %w", err)
		}
	}
	denied := func() error {
		using := "YES"
		if len(resp) == 0 {
			using = "NO"
		}
		e := NewSQLError(ERAccessDenied, "Access denied for user '%s' (using password: %s)", res.User, using)
		_ = c.WritePacket(AppendErr(nil, e))
		_ = c.Flush()
		return fmt.Errorf("%w: user %q", ErrAccessDenied, res.User)
	}
	switch method {
	case AuthNativePassword:
		if !known || !VerifyScramble(resp, ScrambleNative(scramble, cred.Password)) {
			return denied()
		}
		return nil
	case AuthClearPassword:
		pw := string(bytes.TrimRight(resp, "\x00"))
		if known && cred.Token != nil {
			if err := cred.Token(pw); err != nil {
				e := NewSQLError(ERAccessDenied, "Access denied for user '%s': %s", res.User, err.Error())
				_ = c.WritePacket(AppendErr(nil, e))
				_ = c.Flush()
				return fmt.Errorf("%w: user %q: %w", ErrAccessDenied, res.User, err)
			}
			return nil
		}
		if !known || !VerifyScramble([]byte(sha256Hex(pw)), []byte(sha256Hex(cred.Password))) {
			return denied()
		}
		return nil
	case AuthCachingSHA2Password:
		if !known || !VerifyScramble(resp, ScrambleCachingSHA2(scramble, cred.Password)) {
			return denied()
		}
		if cred.Password == "" || (cfg.FastAuth != nil && cfg.FastAuth.has(res.User, cred.Password)) {
			if cred.Password != "" {
				if err := c.WritePacket([]byte{AuthMoreData, cachingSHA2FastAuthOK}); err != nil {
					return fmt.Errorf("write fast auth: %w", err)
				}
			}
			return nil
		}
		return fullAuthSHA2(c, cfg, res, cred, scramble, denied)
	default:
		return failHandshake(c, NewSQLError(ERNotSupportedAuthMode, "Authentication method %s is not supported", method))
	}
}

// fullAuthSHA2 runs caching_sha2_password full authentication: the client
// sends its password in clear over TLS, or RSA-encrypted otherwise.
func fullAuthSHA2(c *Conn, cfg *ServerConfig, res *HandshakeResult, cred Credential, scramble []byte, denied func() error) error {
	if err := c.WritePacket([]byte{AuthMoreData, cachingSHA2FullAuth}); err != nil {
		return fmt.Errorf("write full auth request: %w", err)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("write full auth request: %w", err)
	}
	pkt, err := c.ReadPacket()
	if err != nil {
		return fmt.Errorf("read full auth: %w", err)
	}
	var pw string
	switch {
	case res.TLS:
		pw = string(bytes.TrimRight(pkt, "\x00"))
	case len(pkt) == 1 && pkt[0] == cachingSHA2RequestPublicKey:
		if cfg.RSAKey == nil {
			return failHandshake(c, NewSQLError(ERAccessDenied, "caching_sha2_password requires TLS or an RSA key on this endpoint"))
		}
		if err := c.WritePacket(append([]byte{AuthMoreData}, cfg.RSAPublicPEM...)); err != nil {
			return fmt.Errorf("write public key: %w", err)
		}
		if err := c.Flush(); err != nil {
			return fmt.Errorf("write public key: %w", err)
		}
		enc, err := c.ReadPacket()
		if err != nil {
			return fmt.Errorf("read encrypted password: %w", err)
		}
		if pw, err = DecryptPassword(enc, scramble, cfg.RSAKey); err != nil {
			return denied()
		}
	default:
		return failHandshake(c, NewSQLError(ERAccessDenied, "caching_sha2_password full authentication requires TLS or the RSA key exchange"))
	}
	if !VerifyScramble([]byte(sha256Hex(pw)), []byte(sha256Hex(cred.Password))) {
		return denied()
	}
	if cfg.FastAuth != nil {
		cfg.FastAuth.add(res.User, cred.Password)
	}
	return nil
}

// ChangeUser handles a COM_CHANGE_USER packet on the server side:
// authenticates the new user (always through an auth switch with a fresh
// scramble) and sends OK or ERR. The caller resets the session on success.
func ChangeUser(c *Conn, pkt []byte, caps uint32, isTLS bool, cfg *ServerConfig) (*HandshakeResult, error) {
	cu, err := ParseChangeUser(pkt, caps)
	if err != nil {
		return nil, failHandshake(c, NewSQLError(ERHandshakeError, "Bad COM_CHANGE_USER packet"), err)
	}
	scramble, err := NewScramble()
	if err != nil {
		return nil, err
	}
	res := &HandshakeResult{User: cu.User, DB: cu.DB, Caps: caps, Collation: cu.Collation, TLS: isTLS, Attrs: cu.Attrs}
	// An empty plugin name forces the switch, which carries our new scramble.
	if err := authenticate(c, cfg, res, "", nil, scramble); err != nil {
		return nil, err
	}
	if err := writeOKNow(c, caps); err != nil {
		return nil, err
	}
	return res, nil
}

func appendGreeting(b []byte, connID uint32, version string, scramble []byte, caps uint32, collation byte, plugin string) []byte {
	b = append(b, 10)
	b = append(b, version...)
	b = append(b, 0)
	b = binary.LittleEndian.AppendUint32(b, connID)
	b = append(b, scramble[:8]...)
	b = append(b, 0)
	b = binary.LittleEndian.AppendUint16(b, uint16(caps))
	b = append(b, collation)
	b = binary.LittleEndian.AppendUint16(b, StatusAutocommit)
	b = binary.LittleEndian.AppendUint16(b, uint16(caps>>16))
	b = append(b, 21)
	b = append(b, make([]byte, 10)...)
	b = append(b, scramble[8:20]...)
	b = append(b, 0)
	b = append(b, plugin...)
	return append(b, 0)
}

// HandshakeResponse is a decoded HandshakeResponse41.
type HandshakeResponse struct {
	Caps         uint32
	MaxPacket    uint32
	Collation    byte
	User         string
	AuthResponse []byte
	DB           string
	Plugin       string
	Attrs        map[string]string
}

// ParseHandshakeResponse decodes a HandshakeResponse41 packet.
func ParseHandshakeResponse(b []byte) (HandshakeResponse, error) {
	var hr HandshakeResponse
	if len(b) < 32 {
		return hr, malformed("handshake response: shorter than 32 bytes")
	}
	hr.Caps = binary.LittleEndian.Uint32(b)
	hr.MaxPacket = binary.LittleEndian.Uint32(b[4:])
	hr.Collation = b[8]
	pos := 32
	user, n, err := readNulString(b[pos:])
	if err != nil {
		return hr, fmt.Errorf("handshake response user: %w", err)
	}
	hr.User = string(user)
	pos += n
	switch {
	case hr.Caps&ClientPluginAuthLenencClientData != 0:
		s, n, err := ReadLenEncString(b[pos:])
		if err != nil {
			return hr, fmt.Errorf("handshake response auth data: %w", err)
		}
		hr.AuthResponse = s
		pos += n
	default:
		auth, n, err := readShortAuth(b[pos:], hr.Caps)
		if err != nil {
			return hr, fmt.Errorf("handshake response auth data: %w", err)
		}
		hr.AuthResponse = auth
		pos += n
	}
	if hr.Caps&ClientConnectWithDB != 0 && pos < len(b) {
		db, n, err := readNulString(b[pos:])
		if err != nil {
			return hr, fmt.Errorf("handshake response database: %w", err)
		}
		hr.DB = string(db)
		pos += n
	}
	if hr.Caps&ClientPluginAuth != 0 && pos < len(b) {
		p, n := readPluginName(b[pos:])
		hr.Plugin = p
		pos += n
	}
	if hr.Caps&ClientConnectAttrs != 0 && pos < len(b) {
		attrs, err := parseAttrs(b[pos:])
		if err != nil {
			return hr, err
		}
		hr.Attrs = attrs
	}
	return hr, nil
}

func parseAttrs(b []byte) (map[string]string, error) {
	total, _, n, err := ReadLenEncInt(b)
	if err != nil {
		return nil, fmt.Errorf("connect attributes: %w", err)
	}
	b = b[n:]
	if uint64(len(b)) < total {
		return nil, malformed("connect attributes: short")
	}
	b = b[:total]
	attrs := map[string]string{}
	for len(b) > 0 {
		k, n, err := ReadLenEncString(b)
		if err != nil {
			return nil, fmt.Errorf("connect attribute key: %w", err)
		}
		b = b[n:]
		v, n, err := ReadLenEncString(b)
		if err != nil {
			return nil, fmt.Errorf("connect attribute value: %w", err)
		}
		b = b[n:]
		if len(attrs) < 64 {
			attrs[string(k)] = string(v)
		}
	}
	return attrs, nil
}

// ChangeUserRequest is a decoded COM_CHANGE_USER packet.
type ChangeUserRequest struct {
	User         string
	AuthResponse []byte
	DB           string
	Collation    byte
	Plugin       string
	Attrs        map[string]string
}

// ParseChangeUser decodes a COM_CHANGE_USER packet (including the command
// byte) sent by a client with the given capabilities.
func ParseChangeUser(b []byte, caps uint32) (ChangeUserRequest, error) {
	var cu ChangeUserRequest
	if len(b) < 2 || b[0] != ComChangeUser {
		return cu, malformed("change user: bad header")
	}
	pos := 1
	user, n, err := readNulString(b[pos:])
	if err != nil {
		return cu, fmt.Errorf("change user name: %w", err)
	}
	cu.User = string(user)
	pos += n
	auth, n, err := readShortAuth(b[pos:], caps)
	if err != nil {
		return cu, fmt.Errorf("change user auth data: %w", err)
	}
	cu.AuthResponse = auth
	pos += n
	db, n, err := readNulString(b[pos:])
	if err != nil {
		return cu, fmt.Errorf("change user database: %w", err)
	}
	cu.DB = string(db)
	pos += n
	if pos+2 <= len(b) {
		cu.Collation = b[pos]
		pos += 2
	}
	if caps&ClientPluginAuth != 0 && pos < len(b) {
		p, n := readPluginName(b[pos:])
		cu.Plugin = p
		pos += n
	}
	if caps&ClientConnectAttrs != 0 && pos < len(b) {
		attrs, err := parseAttrs(b[pos:])
		if err != nil {
			return cu, err
		}
		cu.Attrs = attrs
	}
	return cu, nil
}

// WithVersion returns a copy of cfg announcing version.
func (cfg *ServerConfig) WithVersion(version string) *ServerConfig {
	c := *cfg
	c.Version = version
	return &c
}

// readShortAuth reads auth data that is length-prefixed by one byte
// (CLIENT_SECURE_CONNECTION) or NUL-terminated (older clients).
func readShortAuth(b []byte, caps uint32) ([]byte, int, error) {
	if caps&ClientSecureConnection == 0 {
		return readNulString(b)
	}
	if len(b) == 0 {
		return nil, 0, malformed("missing auth length")
	}
	l := int(b[0])
	if 1+l > len(b) {
		return nil, 0, malformed("short auth data")
	}
	return b[1 : 1+l], 1 + l, nil
}

// readPluginName reads a NUL-terminated plugin name; some clients omit
// the terminator at the end of the packet.
func readPluginName(b []byte) (string, int) {
	p, n, err := readNulString(b)
	if err != nil {
		return string(b), len(b)
	}
	return string(p), n
}
