package controlplane_test

import (
	"context"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/dbproxy/dbproxy/dataplane/healthreport"
	"github.com/dbproxy/dbproxy/internal/cpident"
	"github.com/dbproxy/dbproxy/internal/cptest"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/sigv4"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// TestTargetHealthBelievesOnlyNodesServingTheTarget: a node whose key
// allows zone b reports, in one message, about a proxy of zone b (counted)
// and about a proxy that only zone a serves (ignored: it cannot know, and
// must not decide the health others see), and about a target of its own
// proxy at an address the target no longer has (ignored: stale).
func TestTargetHealthBelievesOnlyNodesServingTheTarget(t *testing.T) {
	cp := cptest.Start(t)
	cp.Do("PUT", "/v1/secrets/app", map[string]any{"username": "u", "password": "p"}, nil)
	auth := []map[string]any{{"secret": "app"}}
	cp.Do("PUT", "/v1/proxies/main", map[string]any{"zones": []string{"a"}, "auth": auth}, nil)
	cp.Do("PUT", "/v1/proxies/other", map[string]any{"zones": []string{"b"}, "auth": auth}, nil)
	cp.Do("PUT", "/v1/proxies/main/targets/db1", map[string]any{"host": "127.0.0.1", "port": 3306, "zone": "a"}, nil)
	cp.Do("PUT", "/v1/proxies/other/targets/db2", map[string]any{"host": "127.0.0.1", "port": 3307, "zone": "b"}, nil)
	cp.Do("PUT", "/v1/proxies/other/targets/db3", map[string]any{"host": "127.0.0.1", "port": 3308, "zone": "b"}, nil)
	cp.Do("PUT", "/v1/proxies/other/targets/db4", map[string]any{"host": "127.0.0.1", "port": 3309, "zone": "b"}, nil)

	creds := cp.NodeCredentials("node-b", "b")
	root := cp.Root()
	host, _, _ := net.SplitHostPort(cp.XDSAddr())
	tlsCfg, err := cpident.ClientConfig(cp.CA, host)
	if err != nil {
		t.Fatal(err)
	}
	info := xdsapi.NodeInfo{ID: "node-b", Zone: "b"}
	r, err := healthreport.New(healthreport.Options{
		Target: cp.XDSAddr(), TLS: tlsCfg, Node: info,
		Token: func(ctx context.Context) (string, error) {
			params := url.Values{}
			params.Set("NodeId", info.ID)
			params.Set("Zone", info.Zone)
			return sigv4.Presign(ctx, cp.XDSAddr(), "ReceiveConfig", params, sigv4.ServiceAPI, root.Region, 15*time.Minute,
				sigv4.Credentials{AccessKeyID: creds.AccessKeyID, SecretAccessKey: creds.SecretAccessKey}, time.Now())
		},
		Snapshot: func() []healthreport.ProxyHealth {
			return []healthreport.ProxyHealth{
				{Proxy: "main", Targets: []healthreport.TargetHealth{
					{Name: "db1", Host: "127.0.0.1", Port: 3306, Zone: "a", Role: "READER", Reason: "forged"},
				}},
				{Proxy: "other", Targets: []healthreport.TargetHealth{
					{Name: "db2", Host: "127.0.0.1", Port: 3307, Zone: "b", Role: "WRITER", Healthy: true},
					{Name: "db3", Host: "127.0.0.1", Port: 9999, Zone: "b", Role: "WRITER", Healthy: true},
					{Name: "db4", Host: "127.0.0.1", Port: 3309, Zone: "b", Reason: "dial tcp 127.0.0.1:3309: connection refused"},
				}},
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	defer func() { cancel(); <-done }()

	get := func(path string) model.Target {
		var v model.Target
		cp.Do("GET", path, nil, &v)
		return v
	}
	// The report is one message: once db2 counts, so would the rest.
	deadline := time.Now().Add(20 * time.Second)
	for get("/v1/proxies/other/targets/db2").Health != "AVAILABLE" {
		if time.Now().After(deadline) {
			t.Fatalf("db2 never became AVAILABLE; reporter %+v", r.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if v := get("/v1/proxies/other/targets/db2"); v.DiscoveredRole != "WRITER" {
		t.Errorf("db2 discovered role %q, want WRITER", v.DiscoveredRole)
	}
	if v := get("/v1/proxies/main/targets/db1"); v.Health != "UNKNOWN" || v.DiscoveredRole != "" || v.HealthReason != "" {
		t.Errorf("a zone-b node decided the health of zone a's proxy: %q / %q / %q", v.Health, v.DiscoveredRole, v.HealthReason)
	}
	// The API says why a target is down, and which node says so.
	if v := get("/v1/proxies/other/targets/db4"); v.Health != "UNAVAILABLE" || v.HealthReason != "node-b: dial tcp 127.0.0.1:3309: connection refused" {
		t.Errorf("db4: health %q, reason %q", v.Health, v.HealthReason)
	}
	if v := get("/v1/proxies/other/targets/db2"); v.HealthReason != "" {
		t.Errorf("healthy db2 has a health reason: %q", v.HealthReason)
	}
	if v := get("/v1/proxies/other/targets/db3"); v.Health != "UNKNOWN" {
		t.Errorf("a report about another address counted for db3: %q", v.Health)
	}
}
