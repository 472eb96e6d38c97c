package controlplane_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dbproxy/dbproxy/controlplane"
	"github.com/dbproxy/dbproxy/internal/apiclient"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/sigv4"
)

// childEnv makes the test binary run a control plane instead of the tests
// (see TestMain): DIR|API|XDS.
const childEnv = "DBPROXY_TEST_CONTROLPLANE_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(runChild(spec))
	}
	os.Exit(m.Run())
}

// runChild serves a control plane until it is killed.
func runChild(spec string) int {
	parts := strings.Split(spec, "|")
	if len(parts) != 3 {
		fmt.Fprintln(os.Stderr, "bad child spec", spec)
		return 2
	}
	s, err := controlplane.Start(context.Background(), controlplane.Options{
		DataDir: parts[0], APIAddress: parts[1], XDSAddress: parts[2],
		Logger: hclog.New(&hclog.LoggerOptions{Output: os.Stderr, Level: hclog.Warn}),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start:", err)
		return 1
	}
	defer s.Close()
	fmt.Println("ready")
	// Serve until killed; stdin closing (the parent went away) also ends
	// it.
	_, _ = bufio.NewReader(os.Stdin).ReadByte()
	return 0
}

type child struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
}

func startChild(t *testing.T, dir, api, xds string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir+"|"+api+"|"+xds)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	// The child reads stdin until it closes: it ends with the test.
	if _, err := cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stderr: &stderr}
	t.Cleanup(c.kill)
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ok := sc.Scan() && sc.Text() == "ready"
		ready <- ok
		for sc.Scan() {
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("control plane child did not start: %s", stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("control plane child not ready after 30s: %s", stderr.String())
	}
	return c
}

func (c *child) kill() {
	if c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestKill9LosesNoAcknowledgedWrite streams API writes at a control plane
// process, kills it with SIGKILL in the middle, restarts it on the same data
// directory, and checks that every write the API acknowledged is there.
func TestKill9LosesNoAcknowledgedWrite(t *testing.T) {
	dir := t.TempDir()
	api, xds := freeAddr(t), freeAddr(t)
	first := startChild(t, dir, api, xds)

	var root controlplane.RootCredentials
	b, err := os.ReadFile(filepath.Join(dir, controlplane.RootCredentialsFile))
	if err == nil {
		err = json.Unmarshal(b, &root)
	}
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	client, err := apiclient.New(apiclient.Options{Endpoint: "https://" + api, CAPEM: ca, Timeout: 10 * time.Second,
		Credentials: sigv4.Credentials{AccessKeyID: root.AccessKeyID, SecretAccessKey: root.SecretAccessKey}})
	if err != nil {
		t.Fatal(err)
	}

	const writers = 4
	var mu sync.Mutex
	acked := map[string]string{}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				name := fmt.Sprintf("s-%d-%05d", w, i)
				pw := "pw-" + name
				if err := client.Do(ctx, "PUT", "/v1/secrets/"+name, map[string]string{"username": "u", "password": pw}, nil); err != nil {
					return // the server died under us: this write is not acknowledged
				}
				mu.Lock()
				acked[name] = pw
				mu.Unlock()
			}
		}()
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 300 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d writes acknowledged in 30s: %s", n, first.stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.cmd.Wait()
	stop()
	wg.Wait()

	startChild(t, dir, api, xds)
	var list struct{ Items []model.Secret }
	if err := client.Do(context.Background(), "GET", "/v1/secrets", nil, &list); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, s := range list.Items {
		have[s.Name] = true
	}
	for name := range acked {
		if !have[name] {
			t.Fatalf("acknowledged write %s is missing after kill -9 (%d acknowledged, %d present)", name, len(acked), len(have))
		}
	}
	// Passwords are sealed on disk.
	raw, err := os.ReadFile(filepath.Join(dir, controlplane.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, pw := range acked {
		if bytes.Contains(raw, []byte(pw)) {
			t.Fatalf("password %q is in state.db in plain text", pw)
		}
	}
	t.Logf("%d acknowledged writes, all present after kill -9 (%d secrets stored)", len(acked), len(have))
}
