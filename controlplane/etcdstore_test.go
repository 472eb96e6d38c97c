package controlplane_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/dbproxy/dbproxy/controlplane"
	"github.com/dbproxy/dbproxy/controlplane/snapshot"
	"github.com/dbproxy/dbproxy/controlplane/store"
	"github.com/dbproxy/dbproxy/controlplane/store/etcdtest"
	"github.com/dbproxy/dbproxy/internal/apiclient"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/sigv4"
	"github.com/dbproxy/dbproxy/internal/testing/testutil"
)

// startOnEtcd starts a control plane on dir whose store is under prefix on
// srv (over TLS with a client certificate).
func startOnEtcd(t *testing.T, srv *etcdtest.Server, dir, prefix string) *controlplane.Server {
	t.Helper()
	s, err := controlplane.Start(context.Background(), controlplane.Options{
		DataDir: dir, APIAddress: "127.0.0.1:0", XDSAddress: "127.0.0.1:0", PortMin: 20000, PortMax: 20099,
		Store: controlplane.StoreEtcd,
		Etcd: store.EtcdOptions{Endpoints: srv.Endpoints, Prefix: prefix,
			CAFile: srv.CAFile, CertFile: srv.CertFile, KeyFile: srv.KeyFile},
	})
	if err != nil {
		t.Fatalf("start a control plane on etcd: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func rootClient(t *testing.T, s *controlplane.Server, root controlplane.RootCredentials) *apiclient.Client {
	t.Helper()
	c, err := apiclient.New(apiclient.Options{Endpoint: "https://" + s.APIAddr(), CAPEM: s.CAPEM(),
		Credentials: sigv4.Credentials{AccessKeyID: root.AccessKeyID, SecretAccessKey: root.SecretAccessKey}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// copyFile copies name from one data directory to another.
func copyFile(t *testing.T, from, to, name string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(from, name))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(to, name), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestControlPlaneOnEtcd runs the control plane on the etcd backend: a
// write and a read through the API, the secret sealed in etcd, a second
// control plane with the same master key on the same prefix reading and
// writing the same state (and the first hearing of its write), and a
// backup through the API that restores into a bbolt data directory.
func TestControlPlaneOnEtcd(t *testing.T) {
	ctx := context.Background()
	srv := etcdtest.Start(t, etcdtest.Options{TLS: true})
	const prefix = "/cp-test/"
	dir1 := t.TempDir()
	s1 := startOnEtcd(t, srv, dir1, prefix)
	c1 := rootClient(t, s1, s1.Root())

	const password = "etcd-secret-pw-42"
	if err := c1.Do(ctx, "PUT", "/v1/secrets/app", map[string]any{"username": "app", "password": password}, nil); err != nil {
		t.Fatal(err)
	}
	var created model.Proxy
	if err := c1.Do(ctx, "PUT", "/v1/proxies/main", map[string]any{"zones": []string{"a"}, "auth": []map[string]any{{"secret": "app"}}}, &created); err != nil {
		t.Fatal(err)
	}
	var read model.Proxy
	if err := c1.Do(ctx, "GET", "/v1/proxies/main", nil, &read); err != nil {
		t.Fatal(err)
	}
	if read.Name != "main" || read.Revision != created.Revision || read.Revision != s1.Store().Revision() {
		t.Fatalf("read back %q at revision %d; written at %d, store at %d", read.Name, read.Revision, created.Revision, s1.Store().Revision())
	}

	t.Run("sealed in etcd", func(t *testing.T) {
		var raw bytes.Buffer
		if _, err := s1.Store().Backup(ctx, &raw); err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(raw.Bytes(), []byte(password)) {
			t.Fatal("the password is stored in plaintext")
		}
	})

	t.Run("second replica", func(t *testing.T) {
		dir2 := t.TempDir()
		copyFile(t, dir1, dir2, controlplane.MasterKeyFile)
		s2 := startOnEtcd(t, srv, dir2, prefix)
		// The root key lives in the shared store; its file, only in the
		// first replica's data directory.
		c2 := rootClient(t, s2, s1.Root())
		var p model.Proxy
		if err := c2.Do(ctx, "GET", "/v1/proxies/main", nil, &p); err != nil || p.Revision != read.Revision {
			t.Fatalf("replica 2 reads %+v, %v", p, err)
		}
		st, err := snapshot.ReadState(ctx, s2.Store())
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Secrets) != 1 || st.Secrets[0].Password != password {
			t.Fatalf("replica 2 does not open the secret: %+v", st.Secrets)
		}
		var again model.Proxy
		if err := c2.Do(ctx, "PUT", "/v1/proxies/main", map[string]any{"zones": []string{"a", "b"}, "auth": []map[string]any{{"secret": "app"}}}, &again); err != nil {
			t.Fatal(err)
		}
		if again.Revision != read.Revision+1 {
			t.Fatalf("write through replica 2 at revision %d, want %d", again.Revision, read.Revision+1)
		}
		testutil.Eventually(t, 5*time.Second, "replica 1 at replica 2's revision", func() bool {
			return s1.Store().Revision() == again.Revision
		})
		if err := c1.Do(ctx, "GET", "/v1/proxies/main", nil, &p); err != nil || len(p.Zones) != 2 {
			t.Fatalf("replica 1 reads %+v, %v", p, err)
		}
	})

	t.Run("backup restores into bbolt", func(t *testing.T) {
		var raw apiclient.RawResponse
		if err := c1.Do(ctx, "GET", "/v1/backup", nil, &raw); err != nil {
			t.Fatal(err)
		}
		rev, err := strconv.ParseUint(raw.Header.Get(model.RevisionHeader), 10, 64)
		if err != nil || rev != s1.Store().Revision() {
			t.Fatalf("backup at revision %q, store at %d", raw.Header.Get(model.RevisionHeader), s1.Store().Revision())
		}
		dir := t.TempDir()
		for _, name := range []string{controlplane.MasterKeyFile, controlplane.RootCredentialsFile} {
			copyFile(t, dir1, dir, name)
		}
		if err := os.WriteFile(filepath.Join(dir, controlplane.StateFile), raw.Body, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := controlplane.Start(ctx, controlplane.Options{DataDir: dir, APIAddress: "127.0.0.1:0", XDSAddress: "127.0.0.1:0"})
		if err != nil {
			t.Fatalf("start on the restored bbolt file: %v", err)
		}
		defer s.Close()
		if s.Store().Revision() != rev {
			t.Fatalf("restored at revision %d, want %d", s.Store().Revision(), rev)
		}
		var p model.Proxy
		if err := rootClient(t, s, s1.Root()).Do(ctx, "GET", "/v1/proxies/main", nil, &p); err != nil || p.Name != "main" {
			t.Fatalf("restored control plane reads %+v, %v", p, err)
		}
	})
}
