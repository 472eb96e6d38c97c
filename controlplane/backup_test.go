package controlplane_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/dbproxy/dbproxy/controlplane"
	"github.com/dbproxy/dbproxy/controlplane/snapshot"
	"github.com/dbproxy/dbproxy/internal/apiclient"
	"github.com/dbproxy/dbproxy/internal/cptest"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/sigv4"
)

// TestBackupAndRestore takes GET /v1/backup while writers run, restores it
// into another data directory with the same master key, and finds every
// object written before the backup, the database password still sealed and
// readable, and the IAM keys still signing. Without the master key the
// restored store refuses to start, and a user without dbproxy:GetBackup
// gets 403.
func TestBackupAndRestore(t *testing.T) {
	cp := cptest.Start(t)
	ctx := context.Background()
	cp.Do("PUT", "/v1/secrets/app", map[string]any{"username": "app", "password": "backup-pw-123"}, nil)
	cp.Do("PUT", "/v1/proxies/main", map[string]any{"zones": []string{"a"}, "auth": []map[string]any{{"secret": "app"}}}, nil)
	alice := cp.NodeCredentials("alice", "a")

	// Writers keep committing while the backup is taken.
	var wg sync.WaitGroup
	var stop atomic.Bool
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				_ = cp.Client.Do(ctx, "PUT", fmt.Sprintf("/v1/secrets/w%d-%d", w, i), map[string]any{"username": "u", "password": "p"}, nil)
			}
		}()
	}
	var raw apiclient.RawResponse
	err := cp.Client.Do(ctx, "GET", "/v1/backup", nil, &raw)
	stop.Store(true)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	rev, err := strconv.ParseUint(raw.Header.Get(model.RevisionHeader), 10, 64)
	if err != nil || rev == 0 || len(raw.Body) == 0 {
		t.Fatalf("backup: revision %q, %d bytes", raw.Header.Get(model.RevisionHeader), len(raw.Body))
	}
	if strings.Contains(string(raw.Body), "backup-pw-123") || strings.Contains(string(raw.Body), alice.SecretAccessKey) {
		t.Fatal("the backup holds a password or secret key in plain text")
	}

	// A user without dbproxy:GetBackup is refused.
	ac, err := apiclient.New(apiclient.Options{Endpoint: "https://" + cp.APIAddr(), CAPEM: cp.CA,
		Credentials: sigv4.Credentials{AccessKeyID: alice.AccessKeyID, SecretAccessKey: alice.SecretAccessKey}})
	if err != nil {
		t.Fatal(err)
	}
	var ae *model.Error
	if err := ac.Do(ctx, "GET", "/v1/backup", nil, &apiclient.RawResponse{}); !errors.As(err, &ae) || ae.Status != 403 {
		t.Fatalf("backup by a user without the permission: %v", err)
	}
	cp.Stop()

	// Restore: the data directory's other files (master key, CA, root
	// credentials) and the backup as state.db.
	restore := func(t *testing.T, withKey bool) string {
		dir := t.TempDir()
		ents, err := os.ReadDir(cp.Dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if e.IsDir() || e.Name() == controlplane.StateFile || (!withKey && e.Name() == controlplane.MasterKeyFile) {
				continue
			}
			b, err := os.ReadFile(filepath.Join(cp.Dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, controlplane.StateFile), raw.Body, 0o600); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	t.Run("restored", func(t *testing.T) {
		s, err := controlplane.Start(ctx, controlplane.Options{DataDir: restore(t, true), APIAddress: "127.0.0.1:0", XDSAddress: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if got := s.Store().Revision(); got != rev {
			t.Fatalf("restored revision %d, want the backup's %d", got, rev)
		}
		st, err := snapshot.ReadState(ctx, s.Store())
		if err != nil {
			t.Fatal(err)
		}
		var pw string
		for _, sec := range st.Secrets {
			if sec.Name == "app" {
				pw = sec.Password
			}
		}
		if pw != "backup-pw-123" || len(st.Proxies) != 1 {
			t.Fatalf("restored: secret app's password %q, %d proxies", pw, len(st.Proxies))
		}
		// alice's key signs requests to the restored control plane.
		c, err := apiclient.New(apiclient.Options{Endpoint: "https://" + s.APIAddr(), CAPEM: s.CAPEM(),
			Credentials: sigv4.Credentials{AccessKeyID: alice.AccessKeyID, SecretAccessKey: alice.SecretAccessKey}})
		if err != nil {
			t.Fatal(err)
		}
		var id struct {
			User string `json:"user"`
		}
		if err := c.Do(ctx, "GET", "/v1/identity", nil, &id); err != nil || id.User != "alice" {
			t.Fatalf("alice on the restored control plane: %+v, %v", id, err)
		}
		var p model.Proxy
		if err := c.Do(ctx, "GET", "/v1/proxies/main", nil, &p); !errors.As(err, &ae) || ae.Status != 403 {
			t.Fatalf("alice's policies are restored too (no GetProxy): %v", err)
		}
	})
	t.Run("without the master key", func(t *testing.T) {
		_, err := controlplane.Start(ctx, controlplane.Options{DataDir: restore(t, false), APIAddress: "127.0.0.1:0", XDSAddress: "127.0.0.1:0"})
		if err == nil || !strings.Contains(err.Error(), "master key") {
			t.Fatalf("restored without the master key: %v; want a refusal naming the master key", err)
		}
	})
}
