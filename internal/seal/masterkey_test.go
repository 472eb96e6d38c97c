package seal

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

const testEnv = "DBPROXY_TEST_MASTER_KEY"

func writeFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	// WriteFile's mode is filtered by the umask; set it exactly.
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func TestLoadFromEnv(t *testing.T) {
	key := testKey(7)
	tests := []struct {
		name    string
		value   string
		want    []byte
		wantErr error
	}{
		{"padded base64", base64.StdEncoding.EncodeToString(key), key, nil},
		{"unpadded base64 with whitespace", " " + base64.RawStdEncoding.EncodeToString(key) + "\n", key, nil},
		{"too short", base64.StdEncoding.EncodeToString(key[:16]), nil, ErrKeySize},
		{"not base64", "not*base64*at*all*but*a*secret*value*xx", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(testEnv, tt.value)
			// A key file exists too: the environment wins over it.
			file := filepath.Join(t.TempDir(), "master.key")
			writeFile(t, file, []byte(base64.StdEncoding.EncodeToString(testKey(8))), 0o600)

			got, created, err := LoadOrCreateMasterKey(testEnv, file)
			if tt.want == nil {
				if err == nil {
					t.Fatalf("LoadOrCreateMasterKey = %x, want an error", got)
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Errorf("error = %v, want %v", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), strings.TrimSpace(tt.value)) {
					t.Errorf("error %q contains the variable's value", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadOrCreateMasterKey: %v", err)
			}
			if created {
				t.Error("created = true for a key from the environment")
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("key = %x, want %x", got, tt.want)
			}
		})
	}
}

func TestLoadFromFile(t *testing.T) {
	key := testKey(9)
	tests := []struct {
		name    string
		data    []byte
		mode    os.FileMode
		wantErr error // nil: success; errAny: some error
	}{
		{"base64 with newline", []byte(base64.StdEncoding.EncodeToString(key) + "\n"), 0o600, nil},
		{"raw bytes", key, 0o600, nil},
		{"owner read only", []byte(base64.StdEncoding.EncodeToString(key)), 0o400, nil},
		{"group readable", []byte(base64.StdEncoding.EncodeToString(key)), 0o640, ErrKeyFileMode},
		{"world readable", key, 0o604, ErrKeyFileMode},
		{"group writable", key, 0o620, ErrKeyFileMode},
		{"wrong length", []byte(base64.StdEncoding.EncodeToString(key[:20])), 0o600, ErrKeySize},
		{"garbage", []byte("this is not a key file\n"), 0o600, errAny},
		{"empty", nil, 0o600, errAny},
		{"too long", bytes.Repeat([]byte("A"), 4096), 0o600, errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(testEnv, "") // set but empty counts as unset
			file := filepath.Join(t.TempDir(), "master.key")
			writeFile(t, file, tt.data, tt.mode)

			got, created, err := LoadOrCreateMasterKey(testEnv, file)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("LoadOrCreateMasterKey: %v", err)
			case tt.wantErr != nil && err == nil:
				t.Fatalf("LoadOrCreateMasterKey = %x, want an error", got)
			case tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			case tt.wantErr != nil:
				// A refused file is left alone, never replaced by a new key.
				if after, _ := os.ReadFile(file); !bytes.Equal(after, tt.data) {
					t.Error("refused key file was modified")
				}
				return
			}
			if created {
				t.Error("created = true for an existing file")
			}
			if !bytes.Equal(got, key) {
				t.Errorf("key = %x, want %x", got, key)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	file := filepath.Join(dir, "master.key")

	key, created, err := LoadOrCreateMasterKey("", file)
	if err != nil {
		t.Fatalf("LoadOrCreateMasterKey: %v", err)
	}
	if !created {
		t.Error("created = false for a new key")
	}
	if len(key) != KeySize || bytes.Equal(key, make([]byte, KeySize)) {
		t.Fatalf("generated key %x is not 32 random bytes", key)
	}
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode = %04o, want 0600", perm)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if decoded, err := decodeKey(data); err != nil || !bytes.Equal(decoded, key) {
		t.Errorf("key file holds %q, want base64 of the returned key", data)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("data directory holds %d entries, want only the key file (no temporary files)", len(entries))
	}

	again, created, err := LoadOrCreateMasterKey("", file)
	if err != nil {
		t.Fatalf("second LoadOrCreateMasterKey: %v", err)
	}
	if created || !bytes.Equal(again, key) {
		t.Errorf("second call = %x, created %v; want the same key, not created", again, created)
	}
	if _, err := New(key); err != nil {
		t.Errorf("generated key is not usable: %v", err)
	}
}

func TestCreateRace(t *testing.T) {
	file := filepath.Join(t.TempDir(), "master.key")
	const n = 8
	keys := make([][]byte, n)
	createdBy := make([]bool, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { keys[i], createdBy[i], errs[i] = LoadOrCreateMasterKey("", file) })
	}
	wg.Wait()
	creators := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if !bytes.Equal(keys[i], keys[0]) {
			t.Errorf("caller %d got another key than caller 0", i)
		}
		if createdBy[i] {
			creators++
		}
	}
	if creators != 1 {
		t.Errorf("%d callers report creating the key, want 1", creators)
	}
}

func TestNoSource(t *testing.T) {
	t.Setenv(testEnv, "")
	if _, _, err := LoadOrCreateMasterKey(testEnv, ""); err == nil {
		t.Fatal("no environment variable and no file: want an error")
	}
	if _, _, err := LoadOrCreateMasterKey("", ""); err == nil {
		t.Fatal("nothing given: want an error")
	}
}

func TestNotRegularFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateMasterKey("", dir); err == nil {
		t.Fatal("a directory as key file: want an error")
	}
}
