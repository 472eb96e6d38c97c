package seal

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/dbproxy/dbproxy/internal/atomicfile"
)

// ErrKeyFileMode means a master key file can be read or written by group or
// others; it must be mode 0600 (or stricter).
var ErrKeyFileMode = errors.New("master key file is accessible by group or others")

// LoadOrCreateMasterKey returns the master key: from the environment
// variable named envVar (base64, 32 bytes) if it is set and not empty, else
// from file (base64 or raw 32 bytes) if file != "" and exists, else it
// generates a new key into file with mode 0600 and reports created = true.
// A new key file is written atomically (temporary file, fsync, link into
// place, directory fsync), so a crash never leaves a partial key behind and
// two processes starting together end up with the same key. It refuses a
// key file that group or others may access (ErrKeyFileMode). Errors never
// contain key material.
func LoadOrCreateMasterKey(envVar, file string) (key []byte, created bool, err error) {
	if envVar != "" {
		if v := os.Getenv(envVar); v != "" {
			key, err := decodeKey([]byte(v))
			if err != nil {
				return nil, false, fmt.Errorf("master key from $%s: %w", envVar, err)
			}
			return key, false, nil
		}
	}
	if file == "" {
		if envVar == "" {
			return nil, false, errors.New("master key: no key file given")
		}
		return nil, false, fmt.Errorf("master key: neither $%s nor a key file is set", envVar)
	}
	key, err = readKeyFile(file)
	if err == nil {
		return key, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	key, created, err = createKeyFile(file)
	if err != nil {
		return nil, false, err
	}
	return key, created, nil
}

// decodeKey accepts standard base64 (padded or not) around optional
// whitespace, decoding to exactly KeySize bytes.
func decodeKey(text []byte) ([]byte, error) {
	text = bytes.TrimSpace(text)
	enc := base64.StdEncoding
	if len(text)%4 != 0 {
		enc = base64.RawStdEncoding
	}
	key := make([]byte, enc.DecodedLen(len(text)))
	n, err := enc.Decode(key, text)
	if err != nil {
		// The decoder's error quotes an offset only, never the input.
		return nil, fmt.Errorf("not valid base64: %w", err)
	}
	if n != KeySize {
		return nil, fmt.Errorf("decodes to %d bytes: %w", n, ErrKeySize)
	}
	return key[:n], nil
}

// readKeyFile reads an existing key file; the error wraps fs.ErrNotExist
// when there is none.
func readKeyFile(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("master key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("master key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("master key file %s: not a regular file", file)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("master key file %s has mode %04o, want 0600 (chmod 600 it): %w", file, perm, ErrKeyFileMode)
	}
	data, err := readAll(f, 1<<10)
	if err != nil {
		return nil, fmt.Errorf("master key file %s: %w", file, err)
	}
	if len(data) == KeySize {
		return data, nil
	}
	key, err := decodeKey(data)
	if err != nil {
		return nil, fmt.Errorf("master key file %s: want base64 or %d raw bytes: %w", file, KeySize, err)
	}
	return key, nil
}

// readAll reads f up to limit bytes; a longer file is an error (it cannot
// be a key).
func readAll(f *os.File, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("longer than %d bytes, not a key", limit)
	}
	return data, nil
}

// createKeyFile generates a key and publishes it as file. When another
// process published one first, that one wins and is returned.
func createKeyFile(file string) ([]byte, bool, error) {
	dir := filepath.Dir(file)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("create master key file: %w", err)
	}
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, false, fmt.Errorf("generate master key: %w", err)
	}
	text := make([]byte, base64.StdEncoding.EncodedLen(KeySize), base64.StdEncoding.EncodedLen(KeySize)+1)
	base64.StdEncoding.Encode(text, key)
	text = append(text, '\n')

	if err := atomicfile.Create(file, text, 0o600); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Another process published a key first; that one may
			// already protect data.
			key, err := readKeyFile(file)
			return key, false, err
		}
		return nil, false, fmt.Errorf("create master key file: %w", err)
	}
	return key, true, nil
}
