// Package seal encrypts small values at rest with AES-256-GCM under a master
// key. The control plane seals the sensitive objects of its store with it,
// and data-plane nodes seal the secrets of the configuration they cache on
// disk. The package also loads, or creates on first start, the master key.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"errors"
	"fmt"
)

// KeySize is the length in bytes of a master key (AES-256).
const KeySize = 32

// Errors returned by this package; callers test them with errors.Is.
var (
	// ErrKeySize means a master key is not KeySize bytes long.
	ErrKeySize = errors.New("master key must be 32 bytes")
	// ErrDecrypt means a sealed value could not be opened: it was altered,
	// sealed under another key or additional data, or is not a sealed value
	// at all. The error deliberately does not say which.
	ErrDecrypt = errors.New("cannot decrypt sealed value")
)

// Format of a sealed value (version 1):
//
//	version (1 byte) | key id (4 bytes) | nonce (12 bytes) | ciphertext | tag (16 bytes)
//
// The key id names the key the value was sealed under, so that a later
// version can rotate keys and pick the right one without trial decryption.
// The header (version and key id) is authenticated together with the
// caller's additional data, so it cannot be altered either.
const (
	formatV1   = 1
	keyIDSize  = 4
	headerSize = 1 + keyIDSize
)

// Sealer encrypts and decrypts small values with AES-256-GCM under a master
// key. It is safe for concurrent use.
type Sealer struct {
	aead  cipher.AEAD
	keyID [keyIDSize]byte
}

// New returns a Sealer for masterKey, which must be KeySize bytes long. The
// Sealer does not keep a reference to masterKey.
func New(masterKey []byte) (*Sealer, error) {
	if len(masterKey) != KeySize {
		return nil, fmt.Errorf("new sealer: got %d bytes: %w", len(masterKey), ErrKeySize)
	}
	block, err := aes.NewCipher(masterKey)
	if err != nil {
		return nil, fmt.Errorf("new sealer: %w", err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("new sealer: %w", err)
	}
	s := &Sealer{aead: aead}
	// A domain-separated hash: it identifies the key without revealing
	// anything usable about it.
	sum := sha256.Sum256(append([]byte("dbproxy seal key id v1\x00"), masterKey...))
	copy(s.keyID[:], sum[:keyIDSize])
	return s, nil
}

// Seal encrypts plaintext under a fresh random nonce and authenticates it
// together with additionalData, which Open must be given unchanged (it binds
// the value to where it is stored). The result starts with the format
// version.
func (s *Sealer) Seal(plaintext, additionalData []byte) ([]byte, error) {
	out := make([]byte, headerSize, headerSize+len(plaintext)+s.aead.Overhead())
	out[0] = formatV1
	copy(out[1:headerSize], s.keyID[:])
	out = s.aead.Seal(out, nil, plaintext, s.ad(out[:headerSize], additionalData))
	return out, nil
}

// Open decrypts a value made by Seal with the same key and additional data.
// Any mismatch or alteration returns an error that wraps ErrDecrypt and
// carries no detail about the value.
func (s *Sealer) Open(ciphertext, additionalData []byte) ([]byte, error) {
	if len(ciphertext) < headerSize+s.aead.Overhead() || ciphertext[0] != formatV1 {
		return nil, ErrDecrypt
	}
	header := ciphertext[:headerSize]
	if [keyIDSize]byte(header[1:]) != s.keyID {
		return nil, ErrDecrypt
	}
	plaintext, err := s.aead.Open(nil, nil, ciphertext[headerSize:], s.ad(header, additionalData))
	if err != nil {
		return nil, ErrDecrypt
	}
	return plaintext, nil
}

// ad is the data GCM authenticates: the header, then the caller's data.
func (s *Sealer) ad(header, additionalData []byte) []byte {
	ad := make([]byte, 0, len(header)+len(additionalData))
	ad = append(ad, header...)
	return append(ad, additionalData...)
}
