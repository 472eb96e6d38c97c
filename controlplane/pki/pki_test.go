package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dbproxy/dbproxy/internal/cpident"
)

func TestNodeCertIsDeterministicAndVerifies(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	seed := []byte("0123456789abcdef0123456789abcdef")
	ca, created, err := LoadOrCreate(dir, seed, now)
	if err != nil || !created {
		t.Fatalf("LoadOrCreate = %v, created %v", err, created)
	}
	st, err := os.Stat(filepath.Join(dir, CAKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode = %v, %v; want 0600", st.Mode().Perm(), err)
	}
	a, err := ca.NodeCert("127.0.1.1", now)
	if err != nil {
		t.Fatal(err)
	}
	// A second CA object from the same files (another replica, or a
	// restart) derives the same bytes.
	ca2, created, err := LoadOrCreate(dir, seed, now.Add(time.Hour))
	if err != nil || created {
		t.Fatalf("reload = %v, created %v", err, created)
	}
	b, err := ca2.NodeCert("127.0.1.1", now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.CertPEM, b.CertPEM) || !bytes.Equal(a.KeyPEM, b.KeyPEM) {
		t.Fatal("node certificate differs between two loads of the same CA")
	}
	other, err := ca.NodeCert("127.0.2.1", now)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(other.KeyPEM, a.KeyPEM) {
		t.Fatal("two addresses got the same key")
	}
	// A different seed gives a different key.
	ca3, err := Parse(ca.CertPEM(), mustRead(t, filepath.Join(dir, CAKeyFile)), []byte("another seed"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca3.NodeCert("127.0.1.1", now)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(c.KeyPEM, a.KeyPEM) {
		t.Fatal("the seed does not change the node key")
	}

	pair, err := tls.X509KeyPair(a.CertPEM, a.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(a.CertPEM)
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: now}); err != nil {
		t.Fatalf("node certificate does not verify against the CA: %v", err)
	}
	if err := leaf.VerifyHostname("127.0.1.1"); err != nil {
		t.Fatal(err)
	}
	handshake(t, pair, ca.Pool(), "127.0.1.1")
}

func TestServerCertHandshake(t *testing.T) {
	ca, _, err := LoadOrCreate(t.TempDir(), []byte("seed"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ServerCert([]string{"cp.example"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	handshake(t, cert, ca.Pool(), "cp.example")
}

func TestParseRejectsMismatchedKey(t *testing.T) {
	d1, d2 := t.TempDir(), t.TempDir()
	if _, _, err := LoadOrCreate(d1, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreate(d2, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(mustRead(t, filepath.Join(d1, CAFile)), mustRead(t, filepath.Join(d2, CAKeyFile)), nil); err == nil {
		t.Fatal("a CA certificate with another CA's key was accepted")
	}
}

func handshake(t *testing.T, cert tls.Certificate, roots *x509.CertPool, name string) {
	t.Helper()
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	errc := make(chan error, 1)
	go func() {
		s := tls.Server(c1, &tls.Config{Certificates: []tls.Certificate{cert}})
		errc <- s.Handshake()
	}()
	cl := tls.Client(c2, &tls.Config{RootCAs: roots, ServerName: name})
	if err := cl.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNodeCertRefusesAddressesThatAreNotHosts(t *testing.T) {
	ca, _, err := LoadOrCreate(t.TempDir(), []byte("seed"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"", "*.example.com", "*", "a b", "host/x", "-x.example", "x..example", "host:1"} {
		if _, err := ca.NodeCert(addr, time.Now()); !errors.Is(err, ErrNodeAddress) {
			t.Errorf("NodeCert(%q) = %v, want ErrNodeAddress", addr, err)
		}
	}
	for _, addr := range []string{"127.0.1.1", "::1", "node-a.example.com", "localhost"} {
		if _, err := ca.NodeCert(addr, time.Now()); err != nil {
			t.Errorf("NodeCert(%q): %v", addr, err)
		}
	}
}

func TestNodeAndServerCertsAreMarked(t *testing.T) {
	ca, _, err := LoadOrCreate(t.TempDir(), []byte("seed"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := ca.NodeCert("127.0.0.1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(nc.CertPEM)
	node, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ca.ServerCert(nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	server, err := x509.ParseCertificate(sc.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if !cpident.Has(node, cpident.NodeURI) || cpident.Has(node, cpident.ControlPlaneURI) {
		t.Errorf("node certificate URIs = %v", node.URIs)
	}
	if !cpident.Has(server, cpident.ControlPlaneURI) || cpident.Has(server, cpident.NodeURI) {
		t.Errorf("server certificate URIs = %v", server.URIs)
	}
}

// TestNodeCertRenewsEachPeriod: the next period gives a new certificate,
// valid before the previous one expires, so nodes never hold an expired one
// while the control plane refreshes them.
func TestNodeCertRenewsEachPeriod(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	ca, _, err := LoadOrCreate(t.TempDir(), []byte("seed"), now)
	if err != nil {
		t.Fatal(err)
	}
	next := now.Add(nodeCertPeriod)
	if NodeCertPeriod(next) == NodeCertPeriod(now) {
		t.Fatal("a period later is the same period")
	}
	a, err := ca.NodeCert("127.0.1.1", now)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ca.NodeCert("127.0.1.1", next)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.CertPEM, b.CertPEM) {
		t.Fatal("the next period kept the old certificate")
	}
	parse := func(p []byte) *x509.Certificate {
		blk, _ := pem.Decode(p)
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	old, renewed := parse(a.CertPEM), parse(b.CertPEM)
	if !renewed.NotBefore.Before(old.NotAfter) || !next.Before(old.NotAfter) {
		t.Fatalf("old certificate valid until %s, renewed from %s, renewal at %s: a gap", old.NotAfter, renewed.NotBefore, next)
	}
}
