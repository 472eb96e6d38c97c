package controlplane_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dbproxy/dbproxy/internal/apiclient"
	"github.com/dbproxy/dbproxy/internal/cptest"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/sigv4"
)

// TestMetrics scrapes the control plane's /metrics: the fleet by zone, the
// store revision, and the API's requests by kind, method and status.
func TestMetrics(t *testing.T) {
	cp := cptest.StartOptions(t, cptest.Options{Metrics: true})
	var nodes []*cptest.Node
	for i, z := range []string{"a", "b"} {
		nodes = append(nodes, cp.StartNode(cptest.NodeOptions{ID: "node-" + z, Zone: z, Host: cptest.ZoneHost(i), Credentials: cp.NodeCredentials("node-"+z, z)}))
	}
	for _, n := range nodes {
		n.WaitSynced(t) // rollouts wait for connected nodes only
	}
	cp.Do("PUT", "/v1/secrets/app", map[string]any{"username": "app", "password": "pw"}, nil)
	var p model.Proxy
	cp.Do("PUT", "/v1/proxies/main", map[string]any{"zones": []string{"a", "b"}, "auth": []map[string]any{{"secret": "app"}}}, &p)
	cp.WaitRollout(p.Revision, "a", "b")
	bad, err := apiclient.New(apiclient.Options{Endpoint: "https://" + cp.APIAddr(), CAPEM: cp.CA,
		Credentials: sigv4.Credentials{AccessKeyID: cp.Root().AccessKeyID, SecretAccessKey: "wrong"}})
	if err != nil {
		t.Fatal(err)
	}
	var ae *model.Error
	if err := bad.Do(context.Background(), "GET", "/v1/proxies", nil, nil); !errors.As(err, &ae) || ae.Status != 401 {
		t.Fatalf("wrong secret: %v", err)
	}
	var st struct {
		Revision uint64 `json:"revision"`
	}
	cp.Do("GET", "/v1/status", nil, &st)

	scrape := func(path string) string {
		t.Helper()
		resp, err := http.Get("http://" + cp.MetricsAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d, %v", path, resp.StatusCode, err)
		}
		return string(b)
	}
	if got := scrape("/healthz"); got != "ok\n" {
		t.Fatalf("/healthz: %q", got)
	}
	want := []string{
		`dbproxy_controlplane_nodes{state="connected",zone="a"} 1`,
		`dbproxy_controlplane_nodes{state="connected",zone="b"} 1`,
		`dbproxy_controlplane_nodes{state="disconnected",zone="a"} 0`,
		`dbproxy_controlplane_nodes_rejecting{zone="a"} 0`,
		`dbproxy_controlplane_nodes_build_errors{zone="b"} 0`,
		fmt.Sprintf("dbproxy_controlplane_store_revision %d", st.Revision),
		`dbproxy_controlplane_api_requests_total{code="201",kind="proxies",method="PUT"} 1`,
		`dbproxy_controlplane_api_requests_total{code="401",kind="proxies",method="GET"} 1`,
		`dbproxy_controlplane_api_requests_total{code="200",kind="rollout",method="GET"} 1`,
		`dbproxy_controlplane_api_request_duration_seconds_count{method="PUT"}`,
		`go_goroutines `,
	}
	// The nodes ack on their own time; behind goes to 0 once they did.
	waitFor := func(what string, lines ...string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			body := scrape("/metrics")
			missing := ""
			for _, w := range lines {
				if !strings.Contains(body, w) {
					missing = w
					break
				}
			}
			if missing == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: /metrics lacks %q:\n%s", what, missing, grepPrefix(body, "dbproxy_"))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("two nodes serving", append(want, `dbproxy_controlplane_nodes_behind{zone="a"} 0`)...)
	nodes[1].Stop()
	waitFor("node b stopped", `dbproxy_controlplane_nodes{state="disconnected",zone="b"} 1`, `dbproxy_controlplane_nodes{state="connected",zone="b"} 0`)
}

func grepPrefix(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
