// Package pki is the control plane's certificate authority: a CA generated
// at first start in the data directory signs the certificates of the admin
// API, the xDS server and the data-plane nodes' client-facing listeners.
//
// The CA key is Ed25519, whose signatures are deterministic, and node keys
// are derived from the master key and the node's address, so that the node
// certificate pushed over xDS is the same bytes on every control-plane
// replica and across restarts: the content-hash config version stays
// stable. Node and server leaf keys are ECDSA P-256, which every MySQL
// client's TLS stack supports.
package pki

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/dbproxy/dbproxy/internal/atomicfile"
	"github.com/dbproxy/dbproxy/internal/cpident"
)

// File names in the data directory.
const (
	CAFile    = "ca.pem"
	CAKeyFile = "ca-key.pem"
)

// nodeCertLifetime is how long a node certificate is valid. Node
// certificates are re-derived (with a new validity window) every
// nodeCertPeriod so they never expire while the control plane runs.
const (
	nodeCertLifetime = 400 * 24 * time.Hour
	nodeCertPeriod   = 180 * 24 * time.Hour
)

// CA signs certificates.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     ed25519.PrivateKey
	// seed derives node keys; it comes from the master key.
	seed []byte

	mu struct {
		sync.Mutex
		nodes map[string]NodeCert
	}
}

// NodeCert is a node's certificate and key in PEM.
type NodeCert struct {
	CertPEM, KeyPEM []byte
	period          int64
}

// LoadOrCreate loads the CA from dir or creates one there (the key file
// mode 0600). seed must be secret and the same on every replica (derive it
// from the master key).
func LoadOrCreate(dir string, seed []byte, now time.Time) (*CA, bool, error) {
	certPath, keyPath := filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	created := false
	if _, err := os.Stat(keyPath); errors.Is(err, os.ErrNotExist) {
		if err := create(certPath, keyPath, now); err != nil {
			return nil, false, err
		}
		created = true
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, false, fmt.Errorf("read CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, false, fmt.Errorf("read CA key: %w", err)
	}
	ca, err := Parse(certPEM, keyPEM, seed)
	return ca, created, err
}

// Parse builds a CA from PEM.
func Parse(certPEM, keyPEM, seed []byte) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, errors.New("CA certificate: no PEM CERTIFICATE block")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, errors.New("CA key: no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("CA key: want an Ed25519 key, got %T", k)
	}
	if !key.Public().(ed25519.PublicKey).Equal(cert.PublicKey) {
		return nil, errors.New("CA key does not match the CA certificate")
	}
	ca := &CA{cert: cert, certPEM: certPEM, key: key, seed: append([]byte(nil), seed...)}
	ca.mu.nodes = map[string]NodeCert{}
	return ca, nil
}

func create(certPath, keyPath string, now time.Time) error {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return fmt.Errorf("CA serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "dbproxy control plane CA", Organization: []string{"dbproxy"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return fmt.Errorf("create CA certificate: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode CA key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(certPath), 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	if err := atomicfile.Write(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	return atomicfile.Write(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// CertPEM returns the CA certificate, which clients and nodes trust.
func (ca *CA) CertPEM() []byte { return ca.certPEM }

// Pool returns a pool holding the CA certificate.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// ServerCert issues a certificate for the control plane's own listeners,
// valid for hosts (names or IP addresses) plus localhost and 127.0.0.1. It
// carries cpident.ControlPlaneURI.
func (ca *CA) ServerCert(hosts []string, now time.Time) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(ecdhCurve(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generate server key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server serial: %w", err)
	}
	tmpl := leafTemplate(serial, "dbproxy control plane", append([]string{"localhost", "127.0.0.1"}, hosts...), now.Add(-time.Hour), now.Add(nodeCertLifetime))
	tmpl.URIs = []*url.URL{cpident.MustURL(cpident.ControlPlaneURI)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("create server certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// ErrNodeAddress means a node address is neither an IP address nor a host
// name, so no certificate is issued for it.
var ErrNodeAddress = errors.New("a node address must be an IP address or a host name (letters, digits, hyphens and dots; no wildcards)")

// hostnameRE matches a DNS host name: dot-separated labels of letters,
// digits and inner hyphens. It excludes wildcards ("*.example.com"), which a
// node must not obtain a certificate for.
var hostnameRE = regexp.MustCompile(`^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)

// ValidNodeAddress reports whether a node may get a certificate for
// address: an IP address or a host name, without wildcards.
func ValidNodeAddress(address string) bool {
	if net.ParseIP(address) != nil {
		return true
	}
	return len(address) <= 253 && hostnameRE.MatchString(address)
}

// NodeCertPeriod numbers the validity period of the node certificates
// issued at now: a certificate issued in one period is replaced by a new one
// in the next, well before it expires.
func NodeCertPeriod(now time.Time) int64 { return now.Unix() / int64(nodeCertPeriod/time.Second) }

// NodeCert returns the certificate a node at address presents to MySQL
// clients. It is a pure function of the CA, the seed, the address and the
// current period, so replicas agree on its bytes. The address is what the
// node claims, so the certificate carries cpident.NodeURI, which clients of
// the control plane refuse, and an address that is not a plain IP address
// or host name is refused with ErrNodeAddress.
func (ca *CA) NodeCert(address string, now time.Time) (NodeCert, error) {
	if !ValidNodeAddress(address) {
		return NodeCert{}, fmt.Errorf("node certificate for %q: %w", address, ErrNodeAddress)
	}
	period := NodeCertPeriod(now)
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if c, ok := ca.mu.nodes[address]; ok && c.period == period {
		return c, nil
	}
	key, err := ca.nodeKey(address)
	if err != nil {
		return NodeCert{}, err
	}
	start := time.Unix(period*int64(nodeCertPeriod/time.Second), 0).UTC()
	mac := ca.mac("serial", address, period)
	serial := new(big.Int).SetBytes(mac[:15])
	hosts := []string{address}
	if address != "localhost" {
		hosts = append(hosts, "localhost")
	}
	tmpl := leafTemplate(serial, "dbproxy node "+address, hosts, start.Add(-time.Hour), start.Add(nodeCertLifetime))
	tmpl.URIs = []*url.URL{cpident.MustURL(cpident.NodeURI)}
	// Ed25519 signing ignores the random source: the bytes are fixed.
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, crypto.Signer(ca.key))
	if err != nil {
		return NodeCert{}, fmt.Errorf("create node certificate: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return NodeCert{}, fmt.Errorf("encode node key: %w", err)
	}
	c := NodeCert{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		period:  period,
	}
	ca.mu.nodes[address] = c
	return c, nil
}

// nodeKey derives a P-256 key from the seed and the address.
func (ca *CA) nodeKey(address string) (*ecdsa.PrivateKey, error) {
	for i := int64(0); i < 16; i++ {
		mac := ca.mac("node-key", address, i)
		k, err := ecdh.P256().NewPrivateKey(mac)
		if err != nil {
			continue // the scalar is out of range; try the next counter
		}
		return ecdsa.ParseRawPrivateKey(ecdhCurve(), k.Bytes())
	}
	return nil, errors.New("derive node key: no valid scalar")
}

func (ca *CA) mac(label, address string, n int64) []byte {
	h := hmac.New(sha256.New, ca.seed)
	h.Write([]byte(label))
	h.Write([]byte{0})
	h.Write([]byte(address))
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	h.Write(b[:])
	return h.Sum(nil)
}

func leafTemplate(serial *big.Int, cn string, hosts []string, from, until time.Time) *x509.Certificate {
	t := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"dbproxy"}},
		NotBefore:    from,
		NotAfter:     until,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			t.IPAddresses = append(t.IPAddresses, ip)
		} else if h != "" {
			t.DNSNames = append(t.DNSNames, h)
		}
	}
	return t
}

func ecdhCurve() elliptic.Curve { return elliptic.P256() }
