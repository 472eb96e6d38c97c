package seal

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testKey(b byte) []byte {
	return bytes.Repeat([]byte{b}, KeySize)
}

func newSealer(t *testing.T, key []byte) *Sealer {
	t.Helper()
	s, err := New(key)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func TestNewKeySize(t *testing.T) {
	for _, n := range []int{0, 16, 24, 31, 33, 64} {
		t.Run(fmt.Sprintf("%d bytes", n), func(t *testing.T) {
			if _, err := New(make([]byte, n)); !errors.Is(err, ErrKeySize) {
				t.Fatalf("New(%d bytes) = %v, want ErrKeySize", n, err)
			}
		})
	}
	if _, err := New(make([]byte, KeySize)); err != nil {
		t.Fatalf("New(32 bytes): %v", err)
	}
}

func TestRoundTrip(t *testing.T) {
	s := newSealer(t, testKey(1))
	tests := []struct {
		name      string
		plaintext []byte
		ad        []byte
	}{
		{"empty", nil, nil},
		{"short", []byte("hunter2"), []byte("secrets/app")},
		{"no additional data", []byte(`{"password":"p"}`), nil},
		{"large", bytes.Repeat([]byte("0123456789"), 10_000), []byte("k")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sealed, err := s.Seal(tt.plaintext, tt.ad)
			if err != nil {
				t.Fatalf("Seal: %v", err)
			}
			if sealed[0] != formatV1 {
				t.Errorf("format version byte = %d, want %d", sealed[0], formatV1)
			}
			if want := len(tt.plaintext) + headerSize + 12 + 16; len(sealed) != want {
				t.Errorf("sealed length = %d, want %d", len(sealed), want)
			}
			if len(tt.plaintext) > 0 && bytes.Contains(sealed, tt.plaintext) {
				t.Error("sealed value contains the plaintext")
			}
			got, err := s.Open(sealed, tt.ad)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(got, tt.plaintext) {
				t.Errorf("Open = %q, want %q", got, tt.plaintext)
			}
			again, err := s.Seal(tt.plaintext, tt.ad)
			if err != nil {
				t.Fatalf("Seal: %v", err)
			}
			if bytes.Equal(again, sealed) {
				t.Error("two seals of the same plaintext are equal: nonce not random")
			}
		})
	}
}

func TestOpenRejects(t *testing.T) {
	s := newSealer(t, testKey(1))
	other := newSealer(t, testKey(2))
	plaintext := []byte("the password")
	ad := []byte("secrets/app")
	sealed, err := s.Seal(plaintext, ad)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	// The same key bytes in a new Sealer open it: the key id is stable.
	if _, err := newSealer(t, testKey(1)).Open(sealed, ad); err != nil {
		t.Fatalf("Open with a second Sealer of the same key: %v", err)
	}

	check := func(t *testing.T, s *Sealer, ciphertext, ad []byte) {
		t.Helper()
		got, err := s.Open(ciphertext, ad)
		if !errors.Is(err, ErrDecrypt) {
			t.Fatalf("Open = %q, %v; want ErrDecrypt", got, err)
		}
		if got != nil {
			t.Errorf("Open returned data %q with an error", got)
		}
		if strings.Contains(err.Error(), string(plaintext)) {
			t.Errorf("error %q leaks the plaintext", err)
		}
	}
	t.Run("wrong key", func(t *testing.T) { check(t, other, sealed, ad) })
	t.Run("wrong additional data", func(t *testing.T) { check(t, s, sealed, []byte("secrets/other")) })
	t.Run("missing additional data", func(t *testing.T) { check(t, s, sealed, nil) })
	t.Run("every byte flipped", func(t *testing.T) {
		for i := range sealed {
			bad := bytes.Clone(sealed)
			bad[i] ^= 0x01
			check(t, s, bad, ad)
		}
	})
	t.Run("every truncation", func(t *testing.T) {
		for n := range len(sealed) {
			check(t, s, sealed[:n], ad)
		}
	})
	t.Run("extended", func(t *testing.T) { check(t, s, append(bytes.Clone(sealed), 0), ad) })
	t.Run("plaintext passed as ciphertext", func(t *testing.T) { check(t, s, plaintext, ad) })
	t.Run("unknown format version", func(t *testing.T) {
		bad := bytes.Clone(sealed)
		bad[0] = 2
		check(t, s, bad, ad)
	})
}

func TestConcurrentUse(t *testing.T) {
	s := newSealer(t, testKey(3))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			for j := range 200 {
				pt := []byte{byte(i), byte(j)}
				sealed, err := s.Seal(pt, nil)
				if err != nil {
					errs <- err
					return
				}
				got, err := s.Open(sealed, nil)
				if err != nil || !bytes.Equal(got, pt) {
					errs <- errors.New("round trip failed under concurrency")
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
