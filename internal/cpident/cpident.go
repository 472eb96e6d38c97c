// Package cpident tells the control plane's TLS certificate from a
// data-plane node's. One CA signs both the control plane's certificate
// (admin API and xDS) and the certificates pushed to nodes, whose addresses
// the nodes claim themselves; a client that only checked the chain and the
// host name would accept a node's certificate for the control plane's name,
// and anyone holding a node's credentials could then impersonate the
// control plane. Node certificates therefore carry NodeURI, and clients of
// the control plane refuse a server certificate that carries it. The
// control plane's own certificate carries ControlPlaneURI; an operator's
// certificate carries neither and is accepted on its chain alone.
package cpident

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/url"
)

// URIs in the subject alternative names of dbproxy certificates.
const (
	// ControlPlaneURI marks a control-plane certificate from the CA.
	ControlPlaneURI = "urn:dbproxy:control-plane"
	// NodeURI marks a data-plane node certificate from the CA.
	NodeURI = "urn:dbproxy:node"
)

// ErrNodeCertificate means the server presented a data-plane node's
// certificate where the control plane was expected.
var ErrNodeCertificate = errors.New("the server presented a dbproxy node certificate, not the control plane's")

// MustURL parses one of the URIs above for a certificate template.
func MustURL(uri string) *url.URL {
	u, err := url.Parse(uri)
	if err != nil {
		panic(err)
	}
	return u
}

// Has reports whether cert carries uri.
func Has(cert *x509.Certificate, uri string) bool {
	if cert == nil {
		return false
	}
	for _, u := range cert.URIs {
		if u.String() == uri {
			return true
		}
	}
	return false
}

// VerifyConnection is a tls.Config.VerifyConnection for clients of the
// control plane: it refuses a server whose leaf certificate is a node
// certificate. It runs after the usual chain and host name checks.
func VerifyConnection(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) > 0 && Has(cs.PeerCertificates[0], NodeURI) {
		return ErrNodeCertificate
	}
	return nil
}

// ClientConfig returns the TLS configuration of a client of the control
// plane: it trusts the CA in caPEM (the system roots when caPEM is empty)
// and refuses node certificates. serverName may be empty (the host dialled
// is used).
func ClientConfig(caPEM []byte, serverName string) (*tls.Config, error) {
	cfg := &tls.Config{ServerName: serverName, MinVersion: tls.VersionTLS12, VerifyConnection: VerifyConnection}
	if len(caPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("the CA bundle holds no PEM certificate")
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}
