package store

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/dbproxy/dbproxy/controlplane/store/etcdtest"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/seal"
)

// Environment of the child process of TestDurabilityUnderKill.
const (
	crashChildEnv   = "DBPROXY_STORE_CRASH_CHILD"   // the store file, or etcd endpoint|prefix
	crashBackendEnv = "DBPROXY_STORE_CRASH_BACKEND" // "bbolt" or "etcd"
	crashModeEnv    = "DBPROXY_STORE_CRASH_MODE"    // "plain" or "encrypted"
	crashKeyEnv     = "DBPROXY_STORE_CRASH_KEY"     // base64 master key
)

// Each transaction of the child writes one item and the counter, so after a
// crash the counter says exactly which items must exist.
const (
	crashItemKind    = model.KindSecret // sensitive: sealed in encrypted mode
	crashCounterKind = "meta_test"
	crashCounterKey  = "counter"
)

func crashItemKey(i int) string { return fmt.Sprintf("item/%06d", i) }

func crashItemValue(i int) []byte {
	return fmt.Appendf(nil, `{"n":%d,"password":"pw-%d-%s"}`, i, i, strings.Repeat("x", 100))
}

// openCrashStore opens the store the way the child and the parent share:
// where is the bbolt file, or "endpoint|prefix" for etcd. It returns the
// store and the backend under it.
func openCrashStore(backend, where, mode string) (Store, Store, error) {
	var inner Store
	switch backend {
	case "bbolt":
		b, err := OpenBolt(where, BoltOptions{LockTimeout: 5 * time.Second})
		if err != nil {
			return nil, nil, err
		}
		inner = b
	case "etcd":
		endpoint, prefix, _ := strings.Cut(where, "|")
		e, err := OpenEtcd(context.Background(), EtcdOptions{Endpoints: []string{endpoint}, Prefix: prefix})
		if err != nil {
			return nil, nil, err
		}
		inner = e
	default:
		return nil, nil, fmt.Errorf("backend %q", backend)
	}
	if mode != "encrypted" {
		return inner, inner, nil
	}
	key, _, err := seal.LoadOrCreateMasterKey(crashKeyEnv, "")
	if err != nil {
		inner.Close()
		return nil, nil, err
	}
	s, err := seal.New(key)
	if err != nil {
		inner.Close()
		return nil, nil, err
	}
	return Encrypted(inner, s, model.SensitiveKinds...), inner, nil
}

// runCrashChild writes as fast as it can and prints the number of each
// write only after Update returned it, until it is killed. It gives up on
// its own after a while so that a broken parent leaves nothing behind.
func runCrashChild() int {
	st, _, err := openCrashStore(os.Getenv(crashBackendEnv), os.Getenv(crashChildEnv), os.Getenv(crashModeEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: open:", err)
		return 2
	}
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		_, err := st.Update(context.Background(), func(tx Tx) error {
			if err := tx.Put(crashItemKind, crashItemKey(i), crashItemValue(i)); err != nil {
				return err
			}
			return tx.Put(crashCounterKind, crashCounterKey, []byte(strconv.Itoa(i)))
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "child: update:", err)
			return 2
		}
		// One write of a short line: atomic on a pipe.
		fmt.Fprintf(os.Stdout, "%d\n", i)
	}
	fmt.Fprintln(os.Stderr, "child: not killed within 60s")
	return 3
}

// TestDurabilityUnderKill kills the writing process with SIGKILL in the
// middle of a stream of writes and checks that every write it acknowledged
// survives, that transactions are atomic, and that the store is sound. On
// etcd the writer is the process killed (etcd runs in the test): what is
// tested is that an acknowledged Update is committed, and that a commit
// cut off half way is all or nothing.
func TestDurabilityUnderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	const killAfter = 300
	for _, backend := range []string{"bbolt", "etcd"} {
		t.Run(backend, func(t *testing.T) {
			var srv *etcdtest.Server
			if backend == "etcd" {
				srv = etcdtest.Start(t, etcdtest.Options{})
			}
			for _, mode := range []string{"plain", "encrypted"} {
				t.Run(mode, func(t *testing.T) {
					where := filepath.Join(t.TempDir(), "store.db")
					if srv != nil {
						where = srv.Endpoints[0] + "|/crash-" + mode + "/"
					}
					killWriter(t, backend, where, mode, killAfter)
				})
			}
		})
	}
}

// killWriter runs the child on the store at where, kills it after n
// acknowledged writes and checks the store.
func killWriter(t *testing.T, backend, where, mode string, n int) {
	t.Helper()
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x5a}, seal.KeySize))
	t.Setenv(crashKeyEnv, key) // the parent reopens with the same key

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+where, crashBackendEnv+"="+backend, crashModeEnv+"="+mode, crashKeyEnv+"="+key)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// A child that stalls is killed too; the test then fails on too few
	// acknowledgements.
	watchdog := time.AfterFunc(30*time.Second, func() { _ = cmd.Process.Kill() })
	defer watchdog.Stop()

	acks := readAcks(t, stdout, n, func() {
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Errorf("kill: %v", err)
		}
	})
	err = cmd.Wait()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want killed by SIGKILL; stderr:\n%s", err, stderr.String())
	}
	if len(acks) < n {
		t.Fatalf("only %d acknowledged writes before the kill; stderr:\n%s", len(acks), stderr.String())
	}
	t.Logf("%d writes acknowledged before SIGKILL", len(acks))

	if backend == "bbolt" {
		rawCheck(t, where)
	}
	st, inner, err := openCrashStore(backend, where, mode)
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer st.Close()
	checkStore(t, inner)
	verifyAfterCrash(t, st, acks)
	// Plaintext must never have been stored in encrypted mode: not in
	// the bbolt file (free pages included), not in any value sent to etcd.
	if mode == "encrypted" {
		var raw []byte
		if backend == "bbolt" {
			if raw, err = os.ReadFile(where); err != nil {
				t.Fatal(err)
			}
		} else {
			var buf bytes.Buffer
			if _, err := inner.Backup(context.Background(), &buf); err != nil {
				t.Fatal(err)
			}
			raw = buf.Bytes()
		}
		if bytes.Contains(raw, []byte(`"password":"pw-`)) {
			t.Error("the store holds a plaintext password")
		}
	}
}

// readAcks reads acknowledged write numbers from the child until EOF,
// calling kill once after n of them. Acknowledgements that arrive after the
// kill was sent count too: they were printed after their Update returned.
func readAcks(t *testing.T, r io.Reader, n int, kill func()) []int {
	t.Helper()
	var acks []int
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			// EOF; a last line without its newline was cut by the kill
			// before it was fully written and is not an acknowledgement.
			return acks
		}
		i, perr := strconv.Atoi(strings.TrimSuffix(line, "\n"))
		if perr != nil || i != len(acks) {
			t.Fatalf("child printed %q after %d acknowledgements", line, len(acks))
		}
		acks = append(acks, i)
		if len(acks) == n {
			kill()
		}
	}
}

func verifyAfterCrash(t *testing.T, st Store, acks []int) {
	t.Helper()
	rev, err := st.View(context.Background(), func(r Reader) error {
		c, err := r.Get(crashCounterKind, crashCounterKey)
		if err != nil {
			return fmt.Errorf("counter: %w", err)
		}
		last, err := strconv.Atoi(string(c.Value))
		if err != nil {
			return err
		}
		if last < acks[len(acks)-1] {
			return fmt.Errorf("counter %d is behind the last acknowledged write %d", last, acks[len(acks)-1])
		}
		// The counter's write and its item's are one transaction: items
		// 0..last exist with their values, and nothing after.
		items, err := r.List(crashItemKind, "item/")
		if err != nil {
			return err
		}
		if len(items) != last+1 {
			return fmt.Errorf("%d items, counter says %d", len(items), last+1)
		}
		for i, obj := range items {
			if obj.Key != crashItemKey(i) || !bytes.Equal(obj.Value, crashItemValue(i)) {
				return fmt.Errorf("item %d: %s = %q", i, obj.Key, obj.Value)
			}
			if obj.ModRevision != uint64(i+1) {
				return fmt.Errorf("item %d at revision %d, want %d", i, obj.ModRevision, i+1)
			}
		}
		if c.ModRevision != uint64(last+1) {
			return fmt.Errorf("counter at revision %d, want %d", c.ModRevision, last+1)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("after kill: %v", err)
	}
	if rev < uint64(len(acks)) || st.Revision() != rev {
		t.Fatalf("revision %d (View %d) after %d acknowledged writes", st.Revision(), rev, len(acks))
	}
}

// rawCheck runs bbolt's own consistency check on the file.
func rawCheck(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, ReadOnly: true})
	if err != nil {
		t.Fatalf("bolt open %s: %v", path, err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
	if err != nil {
		t.Fatalf("bbolt check: %v", err)
	}
}

// rawUpdate changes the file under the store's feet (it must be closed).
func rawUpdate(t *testing.T, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func rawWrite(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
