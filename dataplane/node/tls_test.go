package node

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dbproxy/dbproxy/dataplane/config"
)

// TestFailedApplyKeepsTheCertificate: a configuration that cannot be
// applied (here a port already in use) is rejected as a whole; the node's
// TLS certificate, like its proxies, stays the one it served before.
func TestFailedApplyKeepsTheCertificate(t *testing.T) {
	n, err := New(Options{Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n.Close(ctx)
	}()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	first, second := pemPair(t), pemPair(t)
	cfg := func(tlsPair config.TLS, extraAddr string) *config.Config {
		c := &config.Config{
			Node:    config.Node{Zone: "a", TLS: tlsPair},
			Secrets: []config.Secret{{Name: "app", Username: "u", Password: "p"}},
			Proxies: []config.Proxy{{
				Name: "main", Auth: []config.Auth{{Secret: "app"}},
				Endpoints: []config.Endpoint{{Name: "rw", Address: "127.0.0.1:0"}},
			}},
		}
		if extraAddr != "" {
			c.Proxies = append(c.Proxies, config.Proxy{
				Name: "other", Auth: []config.Auth{{Secret: "app"}},
				Endpoints: []config.Endpoint{{Name: "rw", Address: extraAddr}},
			})
		}
		c.ApplyDefaults()
		return c
	}
	if err := n.Apply(t.Context(), cfg(first, "")); err != nil {
		t.Fatal(err)
	}
	if err := n.Apply(t.Context(), cfg(second, busy.Addr().String())); err == nil {
		t.Fatal("applied a configuration whose port is in use")
	}
	got := n.tls.cert.Load()
	blk, _ := pem.Decode([]byte(first.CertPEM))
	if got == nil || !bytes.Equal(got.Certificate[0], blk.Bytes) {
		t.Fatal("the certificate of the rejected configuration is served")
	}
	if _, ok := n.Addr("main", "rw"); !ok {
		t.Fatal("the running proxy stopped")
	}
}

func pemPair(t *testing.T) config.TLS {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "t"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return config.TLS{
		CertPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		KeyPEM:  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})),
	}
}
