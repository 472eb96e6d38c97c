package controlplane_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dbproxy/dbproxy/controlplane"
	"github.com/dbproxy/dbproxy/internal/apiclient"
	"github.com/dbproxy/dbproxy/internal/mysqltest"
	"github.com/dbproxy/dbproxy/internal/sigv4"
)

// TestRootKeyIsNeverCommittedWithoutItsFile: the root secret is shown only
// in root-credentials.json. When that file cannot be written at first
// start (a crash at that moment is the same), the root key must not exist
// in the store either, so that the next start creates a usable one instead
// of keeping a key whose secret nobody has.
func TestRootKeyIsNeverCommittedWithoutItsFile(t *testing.T) {
	dir := t.TempDir()
	opts := controlplane.Options{DataDir: dir, APIAddress: "127.0.0.1:0", XDSAddress: "127.0.0.1:0", Logger: mysqltest.TestLogger(t)}
	// A directory where the credentials file goes makes the write fail
	// (the rename of the written file onto it).
	blocker := filepath.Join(dir, controlplane.RootCredentialsFile)
	if err := os.MkdirAll(blocker, 0o700); err != nil {
		t.Fatal(err)
	}
	if s, err := controlplane.Start(context.Background(), opts); err == nil {
		s.Close()
		t.Fatal("Start succeeded without writing the root credentials")
	}
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}

	s, err := controlplane.Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	root := s.Root()
	if root.AccessKeyID == "" || root.SecretAccessKey == "" {
		t.Fatalf("no usable root credentials after the failed first start: %+v", root)
	}
	st, err := os.Stat(filepath.Join(dir, controlplane.RootCredentialsFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v, mode %v", err, st.Mode().Perm())
	}
	c, err := apiclient.New(apiclient.Options{Endpoint: "https://" + s.APIAddr(), CAPEM: s.CAPEM(),
		Credentials: sigv4.Credentials{AccessKeyID: root.AccessKeyID, SecretAccessKey: root.SecretAccessKey}})
	if err != nil {
		t.Fatal(err)
	}
	var id struct{ User string }
	if err := c.Do(context.Background(), "GET", "/v1/identity", nil, &id); err != nil || id.User != "root" {
		t.Fatalf("the root key from the file: %v, user %q", err, id.User)
	}
}

// TestLostMasterKeyStopsTheStart: with the master key file gone, a fresh
// key must not be generated over a store whose secrets were sealed with
// the old one; the start fails with a clear error, leaves no new key file
// behind, and succeeds once the old key is back.
func TestLostMasterKeyStopsTheStart(t *testing.T) {
	dir := t.TempDir()
	opts := controlplane.Options{DataDir: dir, APIAddress: "127.0.0.1:0", XDSAddress: "127.0.0.1:0", Logger: mysqltest.TestLogger(t)}
	s, err := controlplane.Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	keyPath := filepath.Join(dir, controlplane.MasterKeyFile)
	key, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(keyPath); err != nil {
		t.Fatal(err)
	}

	for range 2 { // and again: the first failure must not have "fixed" it
		s, err = controlplane.Start(context.Background(), opts)
		if err == nil {
			s.Close()
			t.Fatal("started over sealed secrets with a freshly generated master key")
		}
		if !strings.Contains(err.Error(), "master key") {
			t.Fatalf("error does not name the master key: %v", err)
		}
		if _, serr := os.Stat(keyPath); !os.IsNotExist(serr) {
			t.Fatalf("a new master key file was left behind: %v", serr)
		}
	}

	if err := os.WriteFile(keyPath, key, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = controlplane.Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("start with the restored key: %v", err)
	}
	s.Close()
}
