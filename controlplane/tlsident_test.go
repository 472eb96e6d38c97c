package controlplane_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/dbproxy/dbproxy/controlplane/pki"
	"github.com/dbproxy/dbproxy/dataplane/xdsclient"
	"github.com/dbproxy/dbproxy/internal/apiclient"
	"github.com/dbproxy/dbproxy/internal/cpident"
	"github.com/dbproxy/dbproxy/internal/cptest"
	"github.com/dbproxy/dbproxy/internal/sigv4"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// TestClientsRefuseANodeCertificate: the CA that signs the control plane's
// certificate also signs node certificates for whatever address a node
// claims. A server presenting such a certificate for the control plane's
// own address must not pass for the control plane, with the API client or
// with the TLS configuration nodes use for xDS.
func TestClientsRefuseANodeCertificate(t *testing.T) {
	cp := cptest.Start(t)
	// Any seed: it only derives node keys; the signature is the CA's.
	ca, _, err := pki.LoadOrCreate(cp.Dir, []byte("any seed"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := ca.NodeCert("127.0.0.1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(nc.CertPEM, nc.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	impostor := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"user":"root"}`))
	}))
	impostor.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	impostor.StartTLS()
	t.Cleanup(impostor.Close)

	root := cp.Root()
	creds := sigv4.Credentials{AccessKeyID: root.AccessKeyID, SecretAccessKey: root.SecretAccessKey}
	for name, endpoint := range map[string]string{"control plane": "https://" + cp.APIAddr(), "impostor": impostor.URL} {
		c, err := apiclient.New(apiclient.Options{Endpoint: endpoint, Credentials: creds, CAPEM: cp.CA})
		if err != nil {
			t.Fatal(err)
		}
		err = c.Do(context.Background(), "GET", "/v1/identity", nil, nil)
		switch name {
		case "control plane":
			if err != nil {
				t.Fatalf("API client to the control plane: %v", err)
			}
		default:
			if !errors.Is(err, cpident.ErrNodeCertificate) {
				t.Fatalf("API client to a server with a node certificate: %v, want ErrNodeCertificate", err)
			}
		}
	}

	cfg, err := cpident.ClientConfig(cp.CA, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	grpcCfg := cfg.Clone()
	grpcCfg.NextProtos = []string{"h2"} // the gRPC server insists on ALPN
	conn, err := tls.Dial("tcp", cp.XDSAddr(), grpcCfg)
	if err != nil {
		t.Fatalf("node TLS to the xDS server: %v", err)
	}
	conn.Close()
	if conn, err := tls.Dial("tcp", impostor.Listener.Addr().String(), cfg); !errors.Is(err, cpident.ErrNodeCertificate) {
		if conn != nil {
			conn.Close()
		}
		t.Fatalf("node TLS to a server with a node certificate: %v, want ErrNodeCertificate", err)
	}
}

// TestNodeWithAWildcardAddressIsRefused: the control plane issues a node a
// certificate for the address it claims, so a claim that is not a plain
// host name or IP address (a wildcard) is refused with a clear reason.
func TestNodeWithAWildcardAddressIsRefused(t *testing.T) {
	cp := cptest.Start(t)
	creds := cp.NodeCredentials("node-a", "a")
	tlsCfg, err := cpident.ClientConfig(cp.CA, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	node := xdsapi.NodeInfo{ID: "n1", Zone: "a", Address: "*.example.com", ListenHost: "127.0.1.1"}
	c, err := xdsclient.New(xdsclient.Options{
		Target: cp.XDSAddr(), TLS: tlsCfg, Node: node,
		Token: func(ctx context.Context) (string, error) {
			return sigv4.Presign(ctx, cp.XDSAddr(), xdsapi.NodeTokenAction, url.Values{"NodeId": {node.ID}, "Zone": {node.Zone}},
				sigv4.ServiceAPI, "", 15*time.Minute, sigv4.Credentials{AccessKeyID: creds.AccessKeyID, SecretAccessKey: creds.SecretAccessKey}, time.Now())
		},
		Apply: func(context.Context, string, map[string][]*anypb.Any) error {
			t.Error("a node with a wildcard address got a configuration")
			return nil
		},
		Backoff: xdsclient.Backoff{Initial: 50 * time.Millisecond, Max: 50 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v", err)
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(c.Status().LastError, "is not an IP address or a host name") {
		if time.Now().After(deadline) {
			t.Fatalf("node not refused for its address; status %+v", c.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
