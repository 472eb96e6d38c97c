package mysql

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // mysql_native_password is defined with SHA-1.
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

// NewScramble returns a 20-byte random scramble of printable-safe bytes
// (no NUL, as the handshake packet NUL-terminates part of it).
func NewScramble() ([]byte, error) {
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("scramble: %w", err)
	}
	for i := range b {
		b[i] = b[i]&0x7f | 0x01
		if b[i] == '$' {
			b[i] = '#'
		}
	}
	return b, nil
}

// ScrambleNative computes the mysql_native_password response:
// SHA1(password) XOR SHA1(scramble + SHA1(SHA1(password))).
func ScrambleNative(scramble []byte, password string) []byte {
	if password == "" {
		return nil
	}
	h1 := sha1.Sum([]byte(password)) //nolint:gosec
	h2 := sha1.Sum(h1[:])            //nolint:gosec
	h := sha1.New()                  //nolint:gosec
	h.Write(scramble[:20])
	h.Write(h2[:])
	h3 := h.Sum(nil)
	for i := range h3 {
		h3[i] ^= h1[i]
	}
	return h3
}

// ScrambleCachingSHA2 computes the caching_sha2_password fast-path
// response: SHA256(password) XOR SHA256(SHA256(SHA256(password)) + scramble).
func ScrambleCachingSHA2(scramble []byte, password string) []byte {
	if password == "" {
		return nil
	}
	h1 := sha256.Sum256([]byte(password))
	h2 := sha256.Sum256(h1[:])
	h := sha256.New()
	h.Write(h2[:])
	h.Write(scramble[:20])
	h3 := h.Sum(nil)
	for i := range h3 {
		h3[i] ^= h1[i]
	}
	return h3
}

// VerifyScramble compares a client's response with the expected one in
// constant time. An empty password matches only an empty response.
func VerifyScramble(got, want []byte) bool {
	if len(want) == 0 {
		return len(got) == 0
	}
	return subtle.ConstantTimeCompare(got, want) == 1
}

// EncryptPassword encrypts password (NUL-terminated, XORed with the
// scramble) with the server's RSA public key, for caching_sha2_password
// full authentication without TLS.
func EncryptPassword(password string, scramble []byte, pubPEM []byte) ([]byte, error) {
	block, _ := pem.Decode(pubPEM)
	if block == nil {
		return nil, fmt.Errorf("server public key: no PEM block")
	}
	pkix, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("server public key: %w", err)
	}
	pub, ok := pkix.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("server public key is not RSA")
	}
	plain := xorScramble(append([]byte(password), 0), scramble)
	out, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, plain, nil) //nolint:gosec
	if err != nil {
		return nil, fmt.Errorf("encrypt password: %w", err)
	}
	return out, nil
}

// DecryptPassword reverses EncryptPassword on the server side.
func DecryptPassword(ciphertext []byte, scramble []byte, key *rsa.PrivateKey) (string, error) {
	plain, err := rsa.DecryptOAEP(sha1.New(), rand.Reader, key, ciphertext, nil) //nolint:gosec
	if err != nil {
		return "", fmt.Errorf("decrypt password: %w", err)
	}
	plain = xorScramble(plain, scramble)
	if n := len(plain); n > 0 && plain[n-1] == 0 {
		plain = plain[:n-1]
	}
	return string(plain), nil
}

func xorScramble(b, scramble []byte) []byte {
	out := make([]byte, len(b))
	for i := range b {
		out[i] = b[i] ^ scramble[i%len(scramble)]
	}
	return out
}

func sha256Sum(s string) [32]byte { return sha256.Sum256([]byte(s)) }

func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return fmt.Sprintf("%x", h)
}
