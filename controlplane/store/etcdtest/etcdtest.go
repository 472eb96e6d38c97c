// Package etcdtest runs a real, single-member etcd server inside the test
// process (go.etcd.io/etcd/server/v3/embed) on free loopback ports, for the
// tests of the etcd store backend and of what runs on it. Only tests
// import it, so the etcd server never links into the dbproxy binary.
package etcdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Options configure New.
type Options struct {
	// TLS serves clients over TLS and requires a client certificate
	// signed by the test CA (CAFile, CertFile, KeyFile).
	TLS bool
}

// Server is a running etcd member.
type Server struct {
	// Endpoints are the client URLs.
	Endpoints []string
	// CAFile, CertFile and KeyFile are, with Options.TLS, the CA that
	// signs the server certificate and a client certificate and key it
	// accepts.
	CAFile, CertFile, KeyFile string

	etcd *embed.Etcd
	dir  string
}

// Start starts a server that stops at the end of the test.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// New starts a server in a new temporary directory; Close stops it and
// removes the directory. Its data is not fsynced: a test server outlives
// no crash of its own machine, and fsync on a shared CI disk would make
// every commit slow.
func New(opts Options) (_ *Server, err error) {
	dir, err := os.MkdirTemp("", "dbproxy-etcd-*")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = filepath.Join(dir, "data")
	cfg.UnsafeNoFsync = true
	// A single member elects itself after the election timeout: keep it
	// short, so that a server is ready in tens of milliseconds.
	cfg.TickMs, cfg.ElectionMs = 10, 100
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// Port 0: the listeners pick free ports, read back below. The peer
	// URL is only this member's own; nothing dials it.
	scheme := "http"
	if opts.TLS {
		scheme = "https"
		if err := s.writeCerts(); err != nil {
			return nil, fmt.Errorf("make certificates: %w", err)
		}
		cfg.ClientTLSInfo = transport.TLSInfo{
			CertFile:       filepath.Join(dir, "server.pem"),
			KeyFile:        filepath.Join(dir, "server-key.pem"),
			TrustedCAFile:  s.CAFile,
			ClientCertAuth: true,
		}
	}
	client := url.URL{Scheme: scheme, Host: "127.0.0.1:0"}
	peer := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	s.etcd = e
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return nil, fmt.Errorf("etcd failed while starting: %w", err)
	case <-time.After(30 * time.Second):
		return nil, errors.New("etcd not ready within 30s")
	}
	for _, l := range e.Clients {
		s.Endpoints = append(s.Endpoints, scheme+"://"+l.Addr().String())
	}
	return s, nil
}

// Close stops the server and removes its directory.
func (s *Server) Close() {
	if s.etcd != nil {
		s.etcd.Close()
		s.etcd = nil
	}
	_ = os.RemoveAll(s.dir)
}

// writeCerts writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, all signed by the CA.
func (s *Server) writeCerts() error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "etcdtest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	s.CAFile = filepath.Join(s.dir, "ca.pem")
	if err := writePEM(s.CAFile, "CERTIFICATE", caDER); err != nil {
		return err
	}
	leaf := func(serial int64, name string, usage x509.ExtKeyUsage) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		if err := writePEM(filepath.Join(s.dir, name+".pem"), "CERTIFICATE", der); err != nil {
			return err
		}
		return writePEM(filepath.Join(s.dir, name+"-key.pem"), "PRIVATE KEY", keyDER)
	}
	if err := leaf(2, "server", x509.ExtKeyUsageServerAuth); err != nil {
		return err
	}
	if err := leaf(3, "client", x509.ExtKeyUsageClientAuth); err != nil {
		return err
	}
	s.CertFile, s.KeyFile = filepath.Join(s.dir, "client.pem"), filepath.Join(s.dir, "client-key.pem")
	return nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}
