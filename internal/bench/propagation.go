package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/dbproxy/dbproxy/controlplane"
	"github.com/dbproxy/dbproxy/controlplane/pki"
	"github.com/dbproxy/dbproxy/dataplane/config"
	"github.com/dbproxy/dbproxy/dataplane/managed"
	"github.com/dbproxy/dbproxy/dataplane/xdsclient"
	"github.com/dbproxy/dbproxy/dataplane/xdsconfig"
	"github.com/dbproxy/dbproxy/internal/apiclient"
	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/sigv4"
	"github.com/dbproxy/dbproxy/internal/xdsapi"
)

// Settings of the propagation phase.
const (
	// propTarget is the goal for a change to reach every node at 100 nodes.
	propTarget = 500 * time.Millisecond
	// propRolloutWait is the ?wait= of each rollout request.
	propRolloutWait = 30 * time.Second
	// propMaxIncomplete ends a stage early: a control plane that misses
	// the wait repeatedly would otherwise keep the bench for N×30s.
	propMaxIncomplete = 3
	// propWaitTimeoutBase is the first wait_timeout the changes' init_query
	// sets; change k sets base+k, so every change alters every zone's
	// configuration and the last one is visible through the nodes.
	propWaitTimeoutBase = 20000
	// propPortBlock is how many proxy ports the control plane may allocate.
	propPortBlock = 10
)

// propZones are the zones of the propagation phase; node i of zone z binds
// zoneHost(i).
func propZones() []string { return []string{"a", "b", "c"} }

// zoneHost is the loopback address of the nodes of the i-th zone:
// 127.0.1.1, 127.0.2.1, ...
func zoneHost(i int) string { return fmt.Sprintf("127.0.%d.1", i+1) }

// propResult is the propagation phase's part of -out.
type propResult struct {
	Changes int `json:"changes_per_stage"`
	// StartSeconds runs from starting the control plane to the first
	// rollout over the three node processes.
	StartSeconds float64 `json:"start_seconds"`
	// Processes is the stage with the three node processes only.
	Processes *propStage `json:"node_processes,omitempty"`
	// Terraform is terraform apply of a changed pool setting, on the
	// fleet of Processes.
	Terraform *tfStage `json:"terraform_apply,omitempty"`
	// Clients is the stage with the in-process ADS clients added.
	Clients *propStage `json:"with_in_process_clients,omitempty"`
	// InProcessClients is how many ADS clients the bench ran itself;
	// ClientsConnectSeconds is how long until all of them were connected.
	InProcessClients      int     `json:"in_process_clients,omitempty"`
	ClientsConnectSeconds float64 `json:"clients_connect_seconds,omitempty"`
	// ClientApplies and ClientDecodeErrors count the in-process clients'
	// decoded resource sets.
	ClientApplies      int64       `json:"client_applies,omitempty"`
	ClientDecodeErrors int64       `json:"client_decode_errors,omitempty"`
	NodeQueries        []nodeQuery `json:"node_queries,omitempty"`
	ControlPlaneRSSKiB int64       `json:"control_plane_rss_kib,omitempty"`
	ControlPlaneHWMKiB int64       `json:"control_plane_hwm_kib,omitempty"`
}

// propStage is one timed series of changes.
type propStage struct {
	// Nodes is how many connected nodes each rollout had to cover.
	Nodes int `json:"nodes"`
	// NodesMin is the fewest nodes a completed rollout reported; below
	// Nodes means some node was disconnected at the time.
	NodesMin   int      `json:"nodes_min"`
	Changes    int      `json:"changes"`
	Completed  int      `json:"completed"`
	Incomplete []string `json:"incomplete,omitempty"`
	// Total runs from just before the PUT until the rollout request
	// returned complete; Put is the PUT alone.
	Total     latencyStats `json:"write_to_all_acked_ms"`
	Put       latencyStats `json:"put_ms"`
	SamplesMs []float64    `json:"samples_ms"`
	// CPU time per change of the control-plane process and of the bench
	// process (which runs the in-process clients), from /proc.
	ControlPlaneCPUMsPerChange float64 `json:"control_plane_cpu_ms_per_change"`
	BenchCPUMsPerChange        float64 `json:"bench_cpu_ms_per_change"`
}

// ok reports whether every change of the stage reached every node.
func (s *propStage) ok() bool {
	return s != nil && s.Completed == s.Changes && len(s.Incomplete) == 0 && s.NodesMin == s.Nodes
}

// nodeQuery is the final check through one node process.
type nodeQuery struct {
	Node  string `json:"node"`
	Addr  string `json:"addr"`
	Value string `json:"wait_timeout,omitempty"`
	Want  string `json:"want"`
	Error string `json:"error,omitempty"`
}

// latencyStats summarises durations in milliseconds.
type latencyStats struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50"`
	P95  float64 `json:"p95"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted: the smallest sample that at least p% of the samples do not
// exceed. With fewer than 100 samples p99 is therefore the maximum.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// summarize computes latencyStats of ds (in any order).
func summarize(ds []time.Duration) latencyStats {
	if len(ds) == 0 {
		return latencyStats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return latencyStats{N: len(s), P50: ms(percentile(s, 50)), P95: ms(percentile(s, 95)), P99: ms(percentile(s, 99)),
		Max: ms(s[len(s)-1]), Mean: ms(sum / time.Duration(len(s)))}
}

// ms converts d to milliseconds, rounded to the microsecond.
func ms(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Microsecond)) / 1000 }

// poolChange is the k-th target-group change: it alters every zone's
// configuration (the pool config is part of each zone's cluster).
func poolChange(k int) map[string]any {
	return map[string]any{"connection_pool_config": map[string]any{
		"max_connections_percent":   10,
		"connection_borrow_timeout": 60,
		"init_query":                "SET @@session.wait_timeout=" + strconv.Itoa(propWaitTimeoutBase+k),
	}}
}

// cpProc is the control plane running as a child process.
type cpProc struct {
	*nodeProc
	dataDir, apiAddr, xdsAddr string
	credsFile, caFile         string
	creds                     managed.Credentials
	caPEM                     []byte
	client                    *apiclient.Client
}

// phasePropagation measures API write → every node acked, first with three
// node processes, then with in-process ADS clients added.
func (b *bench) phasePropagation(ctx context.Context) error {
	if b.o.skip["propagation"] {
		return nil
	}
	pr := &propResult{Changes: b.o.propChanges}
	b.res.Propagation = pr
	begin := time.Now()
	cp, err := b.startControlPlane(ctx)
	if err != nil {
		return err
	}
	defer cp.stop()

	zones := propZones()
	var procs []*nodeProc
	for i, z := range zones {
		n, err := b.startProc("zone-"+z, "node-zone-"+z+".log", "dataplane",
			"--control-plane", cp.xdsAddr, "--zone", z, "--node-id", "node-"+z,
			"--credentials", cp.credsFile, "--ca-file", cp.caFile, "--listen-host", zoneHost(i), "--log-level", "warn")
		if err != nil {
			return err
		}
		defer n.stop()
		procs = append(procs, n)
	}
	alive := func() error {
		if err := cp.alive(); err != nil {
			return err
		}
		for _, n := range procs {
			if err := n.alive(); err != nil {
				return err
			}
		}
		return nil
	}

	// Declare the proxy while the nodes connect.
	cl := cp.client
	if err := cl.Do(ctx, http.MethodPut, "/v1/secrets/"+proxyName, map[string]any{"username": benchUser, "password": benchPassword}, nil); err != nil {
		return fmt.Errorf("declare the secret: %w", err)
	}
	var p model.Proxy
	if err := cl.Do(ctx, http.MethodPut, "/v1/proxies/"+proxyName, map[string]any{"zones": zones, "auth": []map[string]any{{"secret": proxyName}}}, &p); err != nil {
		return fmt.Errorf("declare the proxy: %w", err)
	}
	seq := 0
	if err := cl.Do(ctx, http.MethodPut, "/v1/proxies/"+proxyName+"/target-group", poolChange(seq), nil); err != nil {
		return fmt.Errorf("declare the target group: %w", err)
	}
	var tg model.Target
	if err := cl.Do(ctx, http.MethodPut, "/v1/proxies/"+proxyName+"/targets/db",
		map[string]any{"host": b.server.Host, "port": b.server.Port, "zone": "a"}, &tg); err != nil {
		return fmt.Errorf("declare the target: %w", err)
	}
	if err := waitConnected(ctx, cl, len(procs), time.Minute, alive); err != nil {
		return err
	}
	r, err := cl.WaitRollout(ctx, tg.Revision, zones, time.Minute)
	if err != nil {
		return fmt.Errorf("first rollout: %w", err)
	}
	if !r.Complete {
		return fmt.Errorf("first rollout of revision %d incomplete: %s\n%s", tg.Revision, r.Message, tailFile(procs[0].logPath, 20))
	}
	pr.StartSeconds = time.Since(begin).Seconds()
	b.logf("propagation: control plane pid %d (API %s, xDS %s), nodes %s serving proxy port %d after %.1fs",
		cp.cmd.Process.Pid, cp.apiAddr, cp.xdsAddr, strings.Join(zones, ","), p.Port, pr.StartSeconds)

	pr.Processes = &propStage{Nodes: len(procs)}
	if seq, err = b.propagate(ctx, cp, pr.Processes, seq, alive); err != nil {
		return err
	}
	b.logStage("3 node processes", pr.Processes)

	if b.o.tfChanges > 0 {
		pr.Terraform = &tfStage{}
		if seq, err = b.propagateTerraform(ctx, cp, pr.Terraform, seq); err != nil {
			return fmt.Errorf("terraform apply stage: %w", err)
		}
		if err := alive(); err != nil {
			return err
		}
		if st := pr.Terraform; st.Skipped == "" {
			b.logf("propagation, terraform apply of a changed init_query, 3 node processes: %d/%d acked by all nodes: p50 %.0f ms, p95 %.0f ms, max %.0f ms from the command's start; an apply with nothing to change p50 %.0f ms",
				st.Completed, st.Changes, st.Total.P50, st.Total.P95, st.Total.Max, st.NoChange.P50)
		}
	}

	if n := b.o.propClients; n > 0 {
		t0 := time.Now()
		fc, err := startClients(ctx, n, cp, filepath.Join(b.tmp, "xds-clients.log"))
		if err != nil {
			return err
		}
		stopClients := sync.OnceFunc(func() {
			fc.stop()
			b.keepFile(fc.logPath)
		})
		defer stopClients()
		pr.InProcessClients = n
		if err := waitConnected(ctx, cl, len(procs)+n, time.Minute, alive); err != nil {
			return err
		}
		pr.ClientsConnectSeconds = time.Since(t0).Seconds()
		b.logf("propagation: %d in-process ADS clients connected in %.1fs (%d nodes in all)", n, pr.ClientsConnectSeconds, len(procs)+n)
		pr.Clients = &propStage{Nodes: len(procs) + n}
		if seq, err = b.propagate(ctx, cp, pr.Clients, seq, alive); err != nil {
			return err
		}
		b.logStage(fmt.Sprintf("3 node processes + %d in-process clients", n), pr.Clients)
		stopClients()
		pr.ClientApplies, pr.ClientDecodeErrors = fc.applies.Load(), fc.decodeErrors.Load()
		if msg := fc.firstError(); msg != "" {
			b.fail("propagation: %d in-process client decode errors, first: %s", pr.ClientDecodeErrors, msg)
		}
	}

	// The nodes really serve, with the last change applied.
	want := strconv.Itoa(propWaitTimeoutBase + seq)
	for i, z := range zones {
		q := nodeQuery{Node: "node-" + z, Addr: net.JoinHostPort(zoneHost(i), strconv.Itoa(p.Port)), Want: want}
		q.Value, err = b.queryValue(ctx, q.Addr, "SELECT @@session.wait_timeout")
		switch {
		case err != nil:
			q.Error = err.Error()
			b.fail("propagation: query through %s (%s): %v", q.Node, q.Addr, err)
		case q.Value != want:
			b.fail("propagation: through %s, wait_timeout is %s: the last change (init_query wait_timeout=%s) is not served", q.Node, q.Value, want)
		}
		pr.NodeQueries = append(pr.NodeQueries, q)
	}
	if err := alive(); err != nil {
		b.fail("propagation: %v", err)
	}
	pr.ControlPlaneRSSKiB, pr.ControlPlaneHWMKiB, _ = procStatus(cp.cmd.Process.Pid)
	return nil
}

// propagate runs the timed changes of one stage, numbering them after seq,
// and returns the number of the last change made.
func (b *bench) propagate(ctx context.Context, cp *cpProc, st *propStage, seq int, alive func() error) (int, error) {
	zones := propZones()
	cl := cp.client
	var totals, puts []time.Duration
	st.NodesMin = st.Nodes
	cpBefore, cpErr := readCounters(cp.cmd.Process.Pid)
	selfBefore, selfErr := readCounters(os.Getpid())
	defer func() {
		if st.Changes == 0 {
			return
		}
		if after, err := readCounters(cp.cmd.Process.Pid); err == nil && cpErr == nil {
			st.ControlPlaneCPUMsPerChange = cpuMs(after.cpuTicks-cpBefore.cpuTicks) / float64(st.Changes)
		}
		if after, err := readCounters(os.Getpid()); err == nil && selfErr == nil {
			st.BenchCPUMsPerChange = cpuMs(after.cpuTicks-selfBefore.cpuTicks) / float64(st.Changes)
		}
	}()
	for range b.o.propChanges {
		seq++
		start := time.Now()
		var g model.TargetGroup
		if err := cl.Do(ctx, http.MethodPut, "/v1/proxies/"+proxyName+"/target-group", poolChange(seq), &g); err != nil {
			return seq, fmt.Errorf("change %d: %w", seq, err)
		}
		put := time.Since(start)
		r, err := cl.WaitRollout(ctx, g.Revision, zones, propRolloutWait)
		total := time.Since(start)
		if err != nil {
			return seq, fmt.Errorf("change %d: rollout of revision %d: %w", seq, g.Revision, err)
		}
		st.Changes++
		if !r.Complete {
			msg := fmt.Sprintf("revision %d after %s: %s", g.Revision, total.Round(time.Millisecond), r.Message)
			st.Incomplete = append(st.Incomplete, msg)
			b.fail("propagation: %d nodes: rollout of %s", st.Nodes, msg)
			if err := alive(); err != nil {
				return seq, err
			}
			if len(st.Incomplete) >= propMaxIncomplete {
				b.logf("propagation: %d incomplete rollouts, ending the stage after %d of %d changes", len(st.Incomplete), st.Changes, b.o.propChanges)
				break
			}
			continue
		}
		st.Completed++
		st.NodesMin = min(st.NodesMin, len(r.Nodes))
		totals, puts = append(totals, total), append(puts, put)
		st.SamplesMs = append(st.SamplesMs, ms(total))
	}
	st.Total, st.Put = summarize(totals), summarize(puts)
	if st.NodesMin < st.Nodes {
		b.fail("propagation: some rollouts covered only %d of %d nodes (a node was disconnected)", st.NodesMin, st.Nodes)
	}
	return seq, nil
}

// cpuMs converts clock ticks (USER_HZ = 100) to milliseconds.
func cpuMs(ticks int64) float64 { return float64(ticks) * 10 }

func (b *bench) logStage(what string, st *propStage) {
	b.logf("propagation, %s: %d/%d changes acked by all %d nodes: p50 %.1f ms, p95 %.1f ms, p99 %.1f ms, max %.1f ms (PUT p50 %.1f ms); CPU per change: control plane %.1f ms, bench process %.1f ms",
		what, st.Completed, st.Changes, st.Nodes, st.Total.P50, st.Total.P95, st.Total.P99, st.Total.Max, st.Put.P50,
		st.ControlPlaneCPUMsPerChange, st.BenchCPUMsPerChange)
}

// startControlPlane starts `dbproxy controlplane` on a fresh data
// directory and waits until its API answers with the root credentials.
func (b *bench) startControlPlane(ctx context.Context) (*cpProc, error) {
	apiPort, err := freePort()
	if err != nil {
		return nil, err
	}
	xdsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	lo, err := freePortBlock(propPortBlock, "127.0.0.1", zoneHost(0), zoneHost(1), zoneHost(2))
	if err != nil {
		return nil, err
	}
	cp := &cpProc{dataDir: filepath.Join(b.tmp, "controlplane"),
		apiAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(apiPort)),
		xdsAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(xdsPort))}
	cp.credsFile = filepath.Join(cp.dataDir, controlplane.RootCredentialsFile)
	cp.caFile = filepath.Join(cp.dataDir, pki.CAFile)
	cp.nodeProc, err = b.startProc("controlplane", "controlplane.log", "controlplane",
		"--data-dir", cp.dataDir, "--api-address", cp.apiAddr, "--xds-address", cp.xdsAddr,
		"--port-range", fmt.Sprintf("%d-%d", lo, lo+propPortBlock-1), "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	// root-credentials.json is written (by rename) once the listeners are
	// open; ca.pem before it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if cp.creds, err = managed.LoadCredentials(cp.credsFile); err == nil {
			if cp.caPEM, err = os.ReadFile(cp.caFile); err == nil {
				break
			}
		}
		if err := waitTick(ctx, cp.nodeProc, deadline, "the control plane's root credentials", err); err != nil {
			return nil, err
		}
	}
	region := cp.creds.Region
	if region == "" {
		region = sigv4.DefaultRegion
	}
	cp.creds.Region = region
	cp.client, err = apiclient.New(apiclient.Options{
		Endpoint:    "https://" + cp.apiAddr,
		Credentials: sigv4.Credentials{AccessKeyID: cp.creds.AccessKeyID, SecretAccessKey: cp.creds.SecretAccessKey},
		Region:      region, CAPEM: cp.caPEM,
	})
	if err != nil {
		return nil, fmt.Errorf("API client: %w", err)
	}
	for {
		err := cp.client.Do(ctx, http.MethodGet, "/v1/status", nil, nil)
		if err == nil {
			return cp, nil
		}
		if err := waitTick(ctx, cp.nodeProc, deadline, "the control plane's API", err); err != nil {
			return nil, err
		}
	}
}

// waitTick pauses one polling interval while waiting for what; it fails
// when p exits, ctx ends or the deadline passes (naming last).
func waitTick(ctx context.Context, p *nodeProc, deadline time.Time, what string, last error) error {
	if err := p.alive(); err != nil {
		return err
	}
	if time.Now().After(deadline) {
		return fmt.Errorf("waiting for %s: %w\n%s", what, last, tailFile(p.logPath, 20))
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(50 * time.Millisecond):
		return nil
	}
}

// waitConnected polls GET /v1/nodes until want nodes are connected.
func waitConnected(ctx context.Context, cl *apiclient.Client, want int, timeout time.Duration, alive func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		var nodes struct{ Items []model.Node }
		if err := cl.Do(ctx, http.MethodGet, "/v1/nodes", nil, &nodes); err != nil {
			return fmt.Errorf("list nodes: %w", err)
		}
		connected := 0
		for _, n := range nodes.Items {
			if n.Connected {
				connected++
			}
		}
		if connected >= want {
			return nil
		}
		if err := alive(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d nodes connected after %s", connected, want, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// freePortBlock finds n consecutive ports free on every host and returns
// the first. It looks below the kernel's ephemeral range (32768 and up by
// default): after the idle phase's thousands of connections, blocks next to
// a just-freed ephemeral port are rarely free.
func freePortBlock(n int, hosts ...string) (int, error) {
	for range 500 {
		base := 10000 + rand.IntN(22000-n)
		if portsFree(base, n, hosts) {
			return base, nil
		}
	}
	return 0, fmt.Errorf("no block of %d free ports on %s", n, strings.Join(hosts, ", "))
}

func portsFree(base, n int, hosts []string) bool {
	for p := base; p < base+n; p++ {
		for _, h := range hosts {
			ln, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(p)))
			if err != nil {
				return false
			}
			ln.Close()
		}
	}
	return true
}

// queryValue runs q through addr with the bench account and returns the
// first column of the first row.
func (b *bench) queryValue(ctx context.Context, addr, q string) (string, error) {
	c, err := b.connector(addr)
	if err != nil {
		return "", err
	}
	db := sql.OpenDB(c)
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var v string
	if err := db.QueryRowContext(ctx, q).Scan(&v); err != nil {
		return "", err
	}
	return v, nil
}

// xdsClients are ADS clients run inside the bench process: they connect
// and ACK like nodes, but only decode what they receive.
type xdsClients struct {
	cancel       context.CancelFunc
	wg           sync.WaitGroup
	logFile      *os.File
	logPath      string
	applies      atomic.Int64
	decodeErrors atomic.Int64
	mu           struct {
		sync.Mutex
		first string
	}
}

// startClients starts n ADS clients against cp, spread over the zones,
// with the root credentials; their logs (warnings and up) go to logPath.
func startClients(ctx context.Context, n int, cp *cpProc, logPath string) (*xdsClients, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cp.caPEM) {
		return nil, errors.New("the control plane's ca.pem holds no certificate")
	}
	host, _, err := net.SplitHostPort(cp.xdsAddr)
	if err != nil {
		return nil, err
	}
	tlsCfg := &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "bench-xds", Level: hclog.Warn, Output: lf})
	creds := sigv4.Credentials{AccessKeyID: cp.creds.AccessKeyID, SecretAccessKey: cp.creds.SecretAccessKey}
	cctx, cancel := context.WithCancel(ctx)
	fc := &xdsClients{cancel: cancel, logFile: lf, logPath: logPath}
	zones := propZones()
	var clients []*xdsclient.Client
	for i := range n {
		zi := i % len(zones)
		id, zone, addr := fmt.Sprintf("bench-client-%03d", i), zones[zi], zoneHost(zi)
		c, err := xdsclient.New(xdsclient.Options{
			Target: cp.xdsAddr,
			TLS:    tlsCfg.Clone(),
			Node:   xdsapi.NodeInfo{ID: id, Zone: zone, Address: addr, ListenHost: addr},
			Token: func(ctx context.Context) (string, error) {
				return xdsapi.NodeToken(ctx, cp.xdsAddr, xdsapi.NodeInfo{ID: id, Zone: zone}, cp.creds.Region, creds, time.Now())
			},
			Apply: func(_ context.Context, version string, res map[string][]*anypb.Any) error {
				fc.applies.Add(1)
				_, _, err := xdsconfig.Decode(version, res, xdsconfig.Options{ListenHost: addr, Node: config.Node{Zone: zone}})
				if err != nil {
					fc.noteError(id, err)
				}
				return err
			},
			Logger: log.Named(id),
		})
		if err != nil {
			cancel()
			lf.Close()
			return nil, fmt.Errorf("ADS client %s: %w", id, err)
		}
		clients = append(clients, c)
	}
	for _, c := range clients {
		fc.wg.Go(func() { _ = c.Run(cctx) })
	}
	return fc, nil
}

func (fc *xdsClients) noteError(id string, err error) {
	fc.decodeErrors.Add(1)
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.mu.first == "" {
		fc.mu.first = id + ": " + err.Error()
	}
}

func (fc *xdsClients) firstError() string {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.mu.first
}

// stop ends every client and waits for them.
func (fc *xdsClients) stop() {
	fc.cancel()
	fc.wg.Wait()
	fc.logFile.Close()
}
