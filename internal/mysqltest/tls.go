package mysqltest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// tlsFiles are the PEM files of a server started with Options.TLS.
type tlsFiles struct {
	ca, cert, key string
}

func (s *Server) tlsFiles() tlsFiles {
	dir := filepath.Join(s.Dir, "tls")
	return tlsFiles{
		ca:   filepath.Join(dir, "ca.pem"),
		cert: filepath.Join(dir, "server-cert.pem"),
		key:  filepath.Join(dir, "server-key.pem"),
	}
}

// ensureTLS creates a throwaway CA and a server certificate for s.Host,
// unless a reused Dir already has them, and loads the CA for TLSConfig.
func (s *Server) ensureTLS() error {
	f := s.tlsFiles()
	if _, err := os.Stat(f.ca); errors.Is(err, os.ErrNotExist) {
		if err := writeTLSFiles(f, s.Host); err != nil {
			return fmt.Errorf("generate TLS certificates: %w", err)
		}
	}
	caPEM, err := os.ReadFile(f.ca)
	if err != nil {
		return fmt.Errorf("read CA certificate: %w", err)
	}
	s.caPEM = caPEM
	return nil
}

func writeTLSFiles(f tlsFiles, host string) error {
	if err := os.MkdirAll(filepath.Dir(f.ca), 0o700); err != nil {
		return err
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mysqltest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	} else {
		tmpl.DNSNames = append(tmpl.DNSNames, host)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	for _, w := range []struct {
		path, typ string
		der       []byte
	}{
		{f.key, "PRIVATE KEY", keyDER},
		{f.cert, "CERTIFICATE", der},
		{f.ca, "CERTIFICATE", caDER}, // last: its presence marks the set complete
	} {
		if err := os.WriteFile(w.path, pem.EncodeToMemory(&pem.Block{Type: w.typ, Bytes: w.der}), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// CACertPEM returns the PEM certificate of the CA that signed the server's
// certificate, or nil when the server was started without Options.TLS.
func (s *Server) CACertPEM() []byte { return s.caPEM }

// TLSConfig returns a client TLS configuration that verifies the server's
// certificate, or nil when the server was started without Options.TLS.
func (s *Server) TLSConfig() *tls.Config {
	if s.caPEM == nil {
		return nil
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.caPEM)
	return &tls.Config{RootCAs: pool, ServerName: s.Host, MinVersion: tls.VersionTLS12}
}
