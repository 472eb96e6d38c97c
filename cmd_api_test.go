package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dbproxy/dbproxy/controlplane"
	"github.com/dbproxy/dbproxy/internal/cptest"
)

// TestAPICommandWritesABackup runs dbproxy api --out GET /v1/backup against
// a control plane: the file is a bbolt store the control plane could open,
// mode 0600.
func TestAPICommandWritesABackup(t *testing.T) {
	cp := cptest.Start(t)
	creds := filepath.Join(cp.Dir, controlplane.RootCredentialsFile)
	out := filepath.Join(t.TempDir(), "backup.db")
	var stdout, stderr bytes.Buffer
	if code := runAPI([]string{"--credentials", creds, "--out", out, "GET", "/v1/backup"}, strings.NewReader(""), &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	st, err := os.Stat(out)
	if err != nil || st.Mode().Perm() != 0o600 || st.Size() == 0 {
		t.Fatalf("backup file: %v, %v", st, err)
	}
	if !strings.Contains(stderr.String(), "(revision ") {
		t.Fatalf("stderr %q does not name the revision", stderr.String())
	}
	b, _ := os.ReadFile(out)
	// bbolt's magic number, little-endian, in the first page's meta.
	if !bytes.Contains(b[:4096], []byte{0xED, 0xDA, 0x0C, 0xED}) {
		t.Fatal("the backup is not a bbolt file")
	}
}
