package node

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"sync/atomic"
	"time"

	"github.com/dbproxy/dbproxy/dataplane/config"
)

// nodeTLS serves the node's current certificate to every endpoint through
// GetCertificate, so that a certificate pushed later (or other file paths
// on reload; the same paths are not read again) takes effect for new
// connections without restarting proxies.
type nodeTLS struct {
	config *tls.Config
	cert   atomic.Pointer[tls.Certificate]
	// source is what the current certificate was loaded from.
	source config.TLS
	loaded bool
}

func newNodeTLS() *nodeTLS {
	t := &nodeTLS{}
	t.config = &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return t.cert.Load(), nil
		},
	}
	return t
}

// update loads the certificate c names when it differs from the current
// source. Until a certificate is configured, a self-signed one is used.
// undo puts the previous certificate back, for an Apply that fails after
// the update: a rejected configuration must leave the node as it was.
func (t *nodeTLS) update(c config.TLS) (undo func(), err error) {
	if t.loaded && t.source == c {
		return func() {}, nil
	}
	cert, err := loadCert(c)
	if err != nil {
		return nil, err
	}
	prevCert, prevSource, prevLoaded := t.cert.Load(), t.source, t.loaded
	t.cert.Store(&cert)
	t.source, t.loaded = c, true
	return func() {
		t.cert.Store(prevCert)
		t.source, t.loaded = prevSource, prevLoaded
	}, nil
}

// loadCert loads the configured certificate (inline PEM, as the control
// plane pushes it, or files) or generates a self-signed one.
func loadCert(c config.TLS) (tls.Certificate, error) {
	switch {
	case c.Inline():
		cert, err := tls.X509KeyPair([]byte(c.CertPEM), []byte(c.KeyPEM))
		if err != nil {
			return cert, fmt.Errorf("load inline TLS key pair: %w", err)
		}
		return cert, nil
	case c.Files():
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return cert, fmt.Errorf("load TLS key pair: %w", err)
		}
		return cert, nil
	default:
		return selfSigned()
	}
}

func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generate TLS key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "dbproxy node (self-signed)"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("create certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// rsaKey generates the key for caching_sha2_password's RSA exchange.
func rsaKey() (*rsa.PrivateKey, []byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, fmt.Errorf("generate RSA key: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal RSA key: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}
