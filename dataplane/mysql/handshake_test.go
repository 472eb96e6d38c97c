package mysql

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testCaps = ClientLongPassword | ClientFoundRows | ClientLongFlag | ClientConnectWithDB | ClientProtocol41 |
	ClientTransactions | ClientSecureConnection | ClientMultiStatements | ClientMultiResults | ClientPSMultiResults |
	ClientPluginAuth | ClientPluginAuthLenencClientData | ClientSessionTrack | ClientDeprecateEOF

// testKeys holds the key material of the handshake tests, generated once:
// an RSA key for caching_sha2_password's key exchange and a self-signed
// certificate for 127.0.0.1.
type testKeys struct {
	rsaKey    *rsa.PrivateKey
	rsaPubPEM []byte
	serverTLS *tls.Config
	clientTLS *tls.Config
}

var loadTestKeys = sync.OnceValues(func() (*testKeys, error) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	if err != nil {
		return nil, err
	}
	ck, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "dbproxy test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ck.PublicKey, ck)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	return &testKeys{
		rsaKey:    rk,
		rsaPubPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}),
		serverTLS: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{certDER}, PrivateKey: ck}}, MinVersion: tls.VersionTLS12},
		clientTLS: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12},
	}, nil
})

func keys(t *testing.T) *testKeys {
	t.Helper()
	k, err := loadTestKeys()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// users is the credential store of the test server.
var users = map[string]Credential{
	"native": {Password: "n@tive pw", Method: AuthNativePassword},
	"sha2":   {Password: "sha2 pässword", Method: AuthCachingSHA2Password},
	"empty":  {Password: "", Method: AuthCachingSHA2Password},
	"other":  {Password: "other pw", Method: AuthNativePassword},
}

func testServerConfig() *ServerConfig {
	return &ServerConfig{
		Version:   "8.0.36-dbproxy",
		Caps:      testCaps,
		Collation: 45,
		Lookup: func(user string) (Credential, bool) {
			c, ok := users[user]
			return c, ok
		},
	}
}

type serverResult struct {
	res *HandshakeResult
	err error
	// after is what the follow-up function returned.
	after error
}

// serveOnce listens on a loopback port and runs the server side of one
// connection: ServerHandshake, then after (when the handshake succeeded).
// The result arrives on the returned channel once the connection is done.
func serveOnce(t *testing.T, cfg *ServerConfig, after func(c *Conn, res *HandshakeResult) error) (string, <-chan serverResult) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan serverResult, 1)
	go func() {
		defer ln.Close()
		nc, err := ln.Accept()
		if err != nil {
			out <- serverResult{err: err}
			return
		}
		_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
		c := NewConn(nc, NewBufferPool(0))
		defer c.Close()
		var r serverResult
		r.res, r.err = ServerHandshake(c, 42, cfg)
		if r.err == nil && after != nil {
			r.after = after(c, r.res)
		}
		out <- r
	}()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String(), out
}

func dial(t *testing.T, addr string, cfg DialConfig) (*Conn, ServerInfo, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c, info, err := Dial(ctx, addr, cfg, NewBufferPool(0))
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, info, err
}

// pingPong checks that both ends are at a command boundary: the client
// sends COM_PING, the server answers OK.
func serverAnswerPing(c *Conn, res *HandshakeResult) error {
	c.Seq = 0
	pkt, err := c.ReadPacket()
	if err != nil {
		return err
	}
	if len(pkt) != 1 || pkt[0] != ComPing {
		return errors.New("expected COM_PING")
	}
	return writeOKNow(c, res.Caps)
}

func clientPing(t *testing.T, c *Conn, caps uint32) {
	t.Helper()
	if err := c.WriteCommand([]byte{ComPing}); err != nil {
		t.Fatal(err)
	}
	pkt, err := c.ReadPacket()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseOK(pkt, caps); err != nil {
		t.Fatalf("ping answer % x: %v", pkt, err)
	}
}

// wantSQLError checks that err carries a server error with code num and
// returns it (as a value, so that callers need not check it as an error).
func wantSQLError(t *testing.T, err error, num uint16) SQLError {
	t.Helper()
	var se *SQLError
	if !errors.As(err, &se) {
		t.Fatalf("error %v is not an SQLError", err)
	}
	if se.Num != num {
		t.Fatalf("error %d (%s), want %d", se.Num, se.Message, num)
	}
	return *se
}

func TestHandshakeSuccess(t *testing.T) {
	k := keys(t)
	tests := []struct {
		name      string
		user, db  string
		serverTLS bool
		clientTLS bool
		rsa       bool
		cache     *FastAuthCache
		greeting  string
	}{
		{name: "native password", user: "native", db: "shop"},
		{name: "native password over TLS", user: "native", serverTLS: true, clientTLS: true},
		{name: "native password, TLS offered but not used", user: "native", serverTLS: true},
		{name: "caching_sha2 full auth by RSA key exchange", user: "sha2", db: "shop", rsa: true, cache: NewFastAuthCache()},
		{name: "caching_sha2 full auth over TLS", user: "sha2", serverTLS: true, clientTLS: true, cache: NewFastAuthCache()},
		{name: "caching_sha2 full auth without a cache", user: "sha2", rsa: true},
		{name: "caching_sha2 empty password", user: "empty"},
		{name: "caching_sha2 named in the greeting", user: "sha2", rsa: true, greeting: AuthCachingSHA2Password},
		{name: "native user, caching_sha2 greeting", user: "native", greeting: AuthCachingSHA2Password},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testServerConfig()
			cfg.FastAuth, cfg.GreetingPlugin = tt.cache, tt.greeting
			if tt.serverTLS {
				cfg.TLS = k.serverTLS
			}
			if tt.rsa {
				cfg.RSAKey, cfg.RSAPublicPEM = k.rsaKey, k.rsaPubPEM
			}
			addr, done := serveOnce(t, cfg, serverAnswerPing)
			dc := DialConfig{User: tt.user, Password: users[tt.user].Password, DB: tt.db, Caps: testCaps, Collation: 45}
			if tt.clientTLS {
				dc.TLS = k.clientTLS
			}
			c, info, err := dial(t, addr, dc)
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			if info.ConnID != 42 || info.Version != cfg.Version {
				t.Errorf("server info %+v", info)
			}
			if _, isTLS := c.NetConn().(*tls.Conn); isTLS != tt.clientTLS {
				t.Errorf("client connection TLS = %v, want %v", isTLS, tt.clientTLS)
			}
			clientPing(t, c, info.Caps)
			r := <-done
			if r.err != nil || r.after != nil {
				t.Fatalf("server: %v, after: %v", r.err, r.after)
			}
			if r.res.User != tt.user || r.res.DB != tt.db || r.res.TLS != tt.clientTLS || r.res.Collation != 45 {
				t.Errorf("server result %+v", r.res)
			}
			if r.res.Caps&^(cfg.Caps|ClientSSL) != 0 {
				t.Errorf("negotiated caps %#x beyond the server's %#x", r.res.Caps, cfg.Caps)
			}
			if tt.cache != nil && !tt.cache.has(tt.user, users[tt.user].Password) {
				t.Error("full authentication did not fill the fast-auth cache")
			}
		})
	}
}

func TestCachingSHA2FastPath(t *testing.T) {
	k := keys(t)
	cache := NewFastAuthCache()
	dc := DialConfig{User: "sha2", Password: users["sha2"].Password, Caps: testCaps}

	// Without TLS, an RSA key or a cache entry the server has no way to
	// receive the password.
	bare := testServerConfig()
	bare.FastAuth = cache
	addr, done := serveOnce(t, bare, nil)
	_, _, err := dial(t, addr, dc)
	wantSQLError(t, err, ERAccessDenied)
	<-done

	// A full authentication by key exchange fills the cache...
	full := testServerConfig()
	full.FastAuth, full.RSAKey, full.RSAPublicPEM = cache, k.rsaKey, k.rsaPubPEM
	addr, done = serveOnce(t, full, nil)
	if _, _, err := dial(t, addr, dc); err != nil {
		t.Fatalf("full authentication: %v", err)
	}
	if r := <-done; r.err != nil {
		t.Fatal(r.err)
	}

	// ...so the next login takes the fast path: no key, no TLS needed.
	addr, done = serveOnce(t, bare, serverAnswerPing)
	c, info, err := dial(t, addr, dc)
	if err != nil {
		t.Fatalf("fast path: %v", err)
	}
	clientPing(t, c, info.Caps)
	if r := <-done; r.err != nil || r.after != nil {
		t.Fatalf("server: %v, after: %v", r.err, r.after)
	}

	// The cache is per password: a wrong one is refused on the fast path.
	addr, done = serveOnce(t, bare, nil)
	_, _, err = dial(t, addr, DialConfig{User: "sha2", Password: "guess", Caps: testCaps})
	wantSQLError(t, err, ERAccessDenied)
	if r := <-done; !errors.Is(r.err, ErrAccessDenied) {
		t.Fatalf("server error %v, want ErrAccessDenied", r.err)
	}
}

func TestHandshakeAccessDenied(t *testing.T) {
	k := keys(t)
	tests := []struct {
		name, user, password string
		using                string
	}{
		{"native wrong password", "native", "wrong", "YES"},
		{"native empty password", "native", "", "NO"},
		{"caching_sha2 wrong password", "sha2", "wrong", "YES"},
		{"unknown user", "nobody", "x", "YES"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testServerConfig()
			cfg.RSAKey, cfg.RSAPublicPEM, cfg.FastAuth = k.rsaKey, k.rsaPubPEM, NewFastAuthCache()
			addr, done := serveOnce(t, cfg, nil)
			_, _, err := dial(t, addr, DialConfig{User: tt.user, Password: tt.password, Caps: testCaps})
			se := wantSQLError(t, err, ERAccessDenied)
			if se.State != "28000" || !strings.Contains(se.Message, "'"+tt.user+"'") || !strings.Contains(se.Message, "using password: "+tt.using) {
				t.Errorf("client saw %q (%s)", se.Message, se.State)
			}
			if tt.password != "" && strings.Contains(se.Message, tt.password) {
				t.Errorf("error message shows the password: %q", se.Message)
			}
			r := <-done
			if !errors.Is(r.err, ErrAccessDenied) {
				t.Fatalf("server error %v, want ErrAccessDenied", r.err)
			}
			if r.res != nil {
				t.Fatalf("server returned a result for a denied login")
			}
		})
	}
}

func TestRequireTLS(t *testing.T) {
	k := keys(t)
	cfg := testServerConfig()
	cfg.TLS, cfg.RequireTLS = k.serverTLS, true

	addr, done := serveOnce(t, cfg, nil)
	_, _, err := dial(t, addr, DialConfig{User: "native", Password: users["native"].Password, Caps: testCaps})
	wantSQLError(t, err, ERSecureTransportRequired)
	if r := <-done; r.err == nil || r.res != nil {
		t.Fatalf("plain client admitted: %+v, %v", r.res, r.err)
	}

	addr, done = serveOnce(t, cfg, nil)
	if _, _, err := dial(t, addr, DialConfig{User: "native", Password: users["native"].Password, Caps: testCaps, TLS: k.clientTLS}); err != nil {
		t.Fatalf("TLS client refused: %v", err)
	}
	if r := <-done; r.err != nil || !r.res.TLS {
		t.Fatalf("server: %+v, %v", r.res, r.err)
	}

	// A client asking for TLS where none is offered stops before sending
	// its credentials.
	plain := testServerConfig()
	addr, done = serveOnce(t, plain, nil)
	if _, _, err := dial(t, addr, DialConfig{User: "native", Password: "x", TLS: k.clientTLS}); err == nil || !strings.Contains(err.Error(), "does not support TLS") {
		t.Fatalf("Dial: %v", err)
	}
	<-done
}

// rawClient reads the greeting and sends resp as the handshake response.
func rawClient(t *testing.T, addr string, resp []byte) (*Conn, error) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := NewConn(nc, NewBufferPool(0))
	t.Cleanup(func() { c.Close() })
	if _, err := c.ReadPacket(); err != nil {
		t.Fatal(err)
	}
	if err := c.WritePacket(resp); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	pkt, err := c.ReadPacket()
	if err != nil {
		return c, err
	}
	if len(pkt) > 0 && pkt[0] == ErrPacket {
		e, err := ParseErr(pkt)
		if err != nil {
			t.Fatal(err)
		}
		return c, e
	}
	return c, nil
}

func TestHandshakeBadResponses(t *testing.T) {
	ssl := binary.LittleEndian.AppendUint32(nil, ClientProtocol41|ClientSecureConnection|ClientSSL)
	ssl = append(ssl, make([]byte, 28)...)
	tests := []struct {
		name string
		resp []byte
		want uint16
	}{
		{"too short", []byte{1, 2, 3, 4, 5}, ERHandshakeError},
		{"user without terminator", append(binary.LittleEndian.AppendUint32(nil, ClientProtocol41), append(make([]byte, 28), "root"...)...), ERHandshakeError},
		{"pre-4.1 client", handshakeResponse(HandshakeResponse{Caps: ClientSecureConnection, User: "native"}), ERNotSupportedAuthMode},
		{"SSL request where TLS is not offered", ssl, ERHandshakeError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, done := serveOnce(t, testServerConfig(), nil)
			_, err := rawClient(t, addr, tt.resp)
			wantSQLError(t, err, tt.want)
			if r := <-done; r.err == nil {
				t.Fatal("server accepted the response")
			}
		})
	}
}

func TestChangeUser(t *testing.T) {
	k := keys(t)
	tests := []struct {
		name, user, password, db string
		wantErr                  uint16
	}{
		{name: "native user", user: "other", password: users["other"].Password, db: "db2"},
		{name: "caching_sha2 user by key exchange", user: "sha2", password: users["sha2"].Password},
		{name: "wrong password", user: "other", password: "nope", wantErr: ERAccessDenied},
		{name: "unknown user", user: "ghost", password: "x", wantErr: ERAccessDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testServerConfig()
			cfg.RSAKey, cfg.RSAPublicPEM, cfg.FastAuth = k.rsaKey, k.rsaPubPEM, NewFastAuthCache()
			changed := make(chan *HandshakeResult, 1)
			addr, done := serveOnce(t, cfg, func(c *Conn, res *HandshakeResult) error {
				c.Seq = 0
				pkt, err := c.ReadPacket()
				if err != nil {
					changed <- nil
					return err
				}
				if len(pkt) == 0 || pkt[0] != ComChangeUser {
					changed <- nil
					return errors.New("expected COM_CHANGE_USER")
				}
				nr, err := ChangeUser(c, pkt, res.Caps, res.TLS, cfg)
				changed <- nr
				if err != nil {
					return err
				}
				// The session continues as the new user.
				return serverAnswerPing(c, nr)
			})
			c, info, err := dial(t, addr, DialConfig{User: "native", Password: users["native"].Password, DB: "shop", Caps: testCaps})
			if err != nil {
				t.Fatal(err)
			}
			err = ClientChangeUser(c, info.Caps, DialConfig{User: tt.user, Password: tt.password, DB: tt.db, Collation: 33})
			nr := <-changed
			if tt.wantErr != 0 {
				r := <-done
				wantSQLError(t, err, tt.wantErr)
				if nr != nil || !errors.Is(r.after, ErrAccessDenied) {
					t.Fatalf("server: result %+v, error %v", nr, r.after)
				}
				return
			}
			if err != nil {
				t.Fatalf("ClientChangeUser: %v", err)
			}
			clientPing(t, c, info.Caps)
			r := <-done
			if r.after != nil {
				t.Fatalf("server: %v", r.after)
			}
			if nr.User != tt.user || nr.DB != tt.db || nr.Collation != 33 || nr.Caps != r.res.Caps {
				t.Fatalf("change user result %+v", nr)
			}
		})
	}
}

func TestChangeUserMalformed(t *testing.T) {
	c := NewConn(newBytesConn(nil), NewBufferPool(0))
	c.Seq = 1
	_, err := ChangeUser(c, []byte{ComChangeUser, 'n', 'o', 'n', 'u', 'l'}, testCaps, false, testServerConfig())
	if !IsMalformed(err) {
		t.Fatalf("ChangeUser error %v, want malformed", err)
	}
	rc := NewConn(newBytesConn(c.NetConn().(*bytesConn).written()), NewBufferPool(0))
	rc.Seq = 1
	pkt, err := rc.ReadPacket()
	if err != nil {
		t.Fatal(err)
	}
	e, err := ParseErr(pkt)
	if err != nil || e.Num != ERHandshakeError {
		t.Fatalf("client got % x (%v)", pkt, err)
	}
}

func TestShortScrambleFailsLogin(t *testing.T) {
	// A server whose greeting carries only the first 8 scramble bytes must
	// get a login error, not crash the client.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan struct{})
	go func() {
		defer close(served)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		c := NewConn(nc, NewBufferPool(0))
		g := []byte{10, '5', 0, 1, 0, 0, 0, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 0, 0, 0x82}
		binary.LittleEndian.PutUint16(g[16:], uint16(ClientProtocol41|ClientSecureConnection))
		_ = c.WritePacket(g)
		_ = c.Flush()
		_, _ = c.ReadPacket()
	}()
	_, _, err = dial(t, ln.Addr().String(), DialConfig{User: "u", Password: "p"})
	if !IsMalformed(err) {
		t.Fatalf("Dial error %v, want malformed", err)
	}
	<-served
}
