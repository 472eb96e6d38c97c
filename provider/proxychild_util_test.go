package provider

import (
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/dbproxy/dbproxy/internal/cptest"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/nodetest"
)

// Test helpers of the resources under a proxy (targets, endpoints) and the
// data sources that report on nodes.

// apiProxy makes a proxy through the API, with a secret "app" of nodetest's
// user (made when missing): the tests of a proxy's children need one
// before Terraform runs. The control plane goes with the test, and the
// proxy with it.
func (e *testEnv) apiProxy(name string, zones ...string) model.Proxy {
	e.t.Helper()
	if found, err := e.apiGet("/v1/secrets/app", &model.Secret{}); err != nil {
		e.t.Fatal(err)
	} else if !found {
		e.apiDo("PUT", "/v1/secrets/app", map[string]any{"username": nodetest.User, "password": nodetest.Password})
	}
	var p model.Proxy
	e.cp.Do("PUT", "/v1/proxies/"+name, map[string]any{"zones": zones, "auth": []map[string]any{{"secret": "app"}}}, &p)
	// Zones without a node of the test are not waited for.
	var served []string
	for _, n := range e.nodes {
		if slices.Contains(zones, n.Zone) {
			served = append(served, n.Zone)
		}
	}
	if len(served) > 0 {
		e.cp.WaitRollout(p.Revision, served...)
	}
	return p
}

// startNode starts a node in zone z after the environment is up (a zone
// that had none) and waits until it has a configuration.
func (e *testEnv) startNode(z string) *cptest.Node {
	e.t.Helper()
	i := int(z[0] - 'a')
	n := e.cp.StartNode(cptest.NodeOptions{
		ID: "node-" + z, Zone: z, Host: cptest.ZoneHost(i), Credentials: e.cp.NodeCredentials("node-"+z, z),
	})
	n.WaitSynced(e.t)
	e.nodes = append(e.nodes, n)
	return n
}

// node returns the node of zone z.
func (e *testEnv) node(z string) *cptest.Node {
	e.t.Helper()
	for _, n := range e.nodes {
		if n.Zone == z {
			return n
		}
	}
	e.t.Fatalf("no node in zone %s", z)
	return nil
}

// apiTarget reads a target through the API.
func (e *testEnv) apiTarget(proxy, name string) (model.Target, error) {
	var t model.Target
	found, err := e.apiGet("/v1/proxies/"+proxy+"/targets/"+name, &t)
	if err == nil && !found {
		err = fmt.Errorf("target %s/%s does not exist", proxy, name)
	}
	return t, err
}

// apiEndpoint reads an endpoint through the API.
func (e *testEnv) apiEndpoint(proxy, name string) (model.Endpoint, error) {
	var ep model.Endpoint
	found, err := e.apiGet("/v1/proxies/"+proxy+"/endpoints/"+name, &ep)
	if err == nil && !found {
		err = fmt.Errorf("endpoint %s/%s does not exist", proxy, name)
	}
	return ep, err
}

// checkGoneAll is a CheckDestroy for several objects.
func (e *testEnv) checkGoneAll(paths ...string) func(*terraform.State) error {
	return func(s *terraform.State) error {
		var errs []error
		for _, p := range paths {
			errs = append(errs, e.checkGone(p)(s))
		}
		return errors.Join(errs...)
	}
}

// pollFor polls cond until it returns nil or the deadline passes, and
// returns its last error then.
func pollFor(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// unusedPort returns a TCP port nothing listens on at host now.
func unusedPort(t *testing.T, host string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// forwarder relays TCP connections from a listener to a database server:
// a database that "comes up" at an address while a test runs.
type forwarder struct {
	ln   net.Listener
	to   string
	wg   sync.WaitGroup
	mu   sync.Mutex
	open map[net.Conn]bool
}

// startForwarder listens on addr and relays to to until close.
func startForwarder(addr, to string) (*forwarder, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	f := &forwarder{ln: ln, to: to, open: map[net.Conn]bool{}}
	f.wg.Add(1)
	go f.serve()
	return f, nil
}

func (f *forwarder) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.wg.Add(1)
		go f.relay(c)
	}
}

func (f *forwarder) track(c net.Conn, add bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if add {
		if f.open == nil {
			return false
		}
		f.open[c] = true
	} else if f.open != nil {
		delete(f.open, c)
	}
	return true
}

func (f *forwarder) relay(c net.Conn) {
	defer f.wg.Done()
	defer c.Close()
	d, err := net.DialTimeout("tcp", f.to, 5*time.Second)
	if err != nil {
		return
	}
	defer d.Close()
	if !f.track(c, true) || !f.track(d, true) {
		return
	}
	defer f.track(c, false)
	defer f.track(d, false)
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(d, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, d); done <- struct{}{} }()
	<-done
	// One direction ended: end the other.
	c.Close()
	d.Close()
	<-done
}

func (f *forwarder) close() {
	f.ln.Close()
	f.mu.Lock()
	for c := range f.open {
		c.Close()
	}
	f.open = nil
	f.mu.Unlock()
	f.wg.Wait()
}

// joinAddr joins a host and a port.
func joinAddr(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

// wrapRE compiles an expected diagnostic: Terraform wraps long lines, so
// every space of pattern matches any run of white space.
func wrapRE(pattern string) *regexp.Regexp {
	return regexp.MustCompile(strings.ReplaceAll(pattern, " ", `\s+`))
}
