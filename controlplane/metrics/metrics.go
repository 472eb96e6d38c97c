// Package metrics exposes the control plane to Prometheus: the fleet as the
// xDS server sees it and the store revision, read at scrape time, and the
// admin API's requests, counted as they are served.
package metrics

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dbproxy/dbproxy/controlplane/xds"
)

// Options say where the scrape-time values come from.
type Options struct {
	// Nodes returns the fleet (the xDS server's Nodes).
	Nodes func() []xds.NodeStatus
	// Revision returns the store's newest revision.
	Revision func() uint64
}

// Metrics is one control plane's registry.
type Metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// New returns the registry with the fleet collector, the API counters and
// the Go and process collectors.
func New(opts Options) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dbproxy_controlplane_api_requests_total",
			Help: "Admin API requests by object kind, method and HTTP status.",
		}, []string{"kind", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dbproxy_controlplane_api_request_duration_seconds",
			Help:    "Admin API request latency by method (rollout waits included).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10, 60},
		}, []string{"method"}),
	}
	m.reg.MustRegister(m.requests, m.duration, newFleet(opts),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// ObserveRequest counts one admin API request. Paths are reduced to the
// kind of object (/v1/<kind>/...), so that labels stay few.
func (m *Metrics) ObserveRequest(method, path string, status int, d time.Duration) {
	method = Method(method)
	m.requests.WithLabelValues(Kind(path), method, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(method).Observe(d.Seconds())
}

// Method returns an HTTP method as a label value: the methods the API
// serves, else "other", so that made-up methods cannot add series.
func Method(m string) string {
	switch m {
	case "GET", "HEAD", "PUT", "POST", "PATCH", "DELETE":
		return m
	}
	return "other"
}

// Kind returns the object kind of an API path: the segment after /v1/
// when the API serves it, else "other".
func Kind(path string) string {
	rest, ok := strings.CutPrefix(path, "/v1/")
	if !ok {
		return "other"
	}
	switch k, _, _ := strings.Cut(rest, "/"); k {
	case "secrets", "proxies", "iam", "nodes", "rollout", "status", "identity", "backup":
		return k
	}
	return "other"
}

// fleet reads the nodes and the revision when scraped.
type fleet struct {
	opts                                            Options
	nodes, behind, rejecting, buildErrors, revision *prometheus.Desc
}

func newFleet(opts Options) *fleet {
	return &fleet{
		opts: opts,
		nodes: prometheus.NewDesc("dbproxy_controlplane_nodes",
			"Data-plane nodes the control plane knows, by zone and whether they have an open stream.", []string{"zone", "state"}, nil),
		behind: prometheus.NewDesc("dbproxy_controlplane_nodes_behind",
			"Connected nodes that have not acked their newest configuration yet.", []string{"zone"}, nil),
		rejecting: prometheus.NewDesc("dbproxy_controlplane_nodes_rejecting",
			"Nodes whose most recent NACK is of their newest configuration.", []string{"zone"}, nil),
		buildErrors: prometheus.NewDesc("dbproxy_controlplane_nodes_build_errors",
			"Nodes whose configuration the control plane cannot build.", []string{"zone"}, nil),
		revision: prometheus.NewDesc("dbproxy_controlplane_store_revision",
			"The store's newest revision.", nil, nil),
	}
}

func (f *fleet) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{f.nodes, f.behind, f.rejecting, f.buildErrors, f.revision} {
		ch <- d
	}
}

func (f *fleet) Collect(ch chan<- prometheus.Metric) {
	type counts struct{ connected, disconnected, behind, rejecting, buildErrors int }
	byZone := map[string]*counts{}
	if f.opts.Nodes != nil {
		for _, n := range f.opts.Nodes() {
			c := byZone[n.Zone]
			if c == nil {
				c = &counts{}
				byZone[n.Zone] = c
			}
			if n.Connected {
				c.connected++
				if n.AckedRevision < n.CurrentRevision || n.AckedVersion != n.CurrentVersion {
					c.behind++
				}
			} else {
				c.disconnected++
			}
			if n.LastNack != nil && n.LastNack.Version == n.CurrentVersion {
				c.rejecting++
			}
			if n.BuildError != "" {
				c.buildErrors++
			}
		}
	}
	for zone, c := range byZone {
		ch <- prometheus.MustNewConstMetric(f.nodes, prometheus.GaugeValue, float64(c.connected), zone, "connected")
		ch <- prometheus.MustNewConstMetric(f.nodes, prometheus.GaugeValue, float64(c.disconnected), zone, "disconnected")
		ch <- prometheus.MustNewConstMetric(f.behind, prometheus.GaugeValue, float64(c.behind), zone)
		ch <- prometheus.MustNewConstMetric(f.rejecting, prometheus.GaugeValue, float64(c.rejecting), zone)
		ch <- prometheus.MustNewConstMetric(f.buildErrors, prometheus.GaugeValue, float64(c.buildErrors), zone)
	}
	if f.opts.Revision != nil {
		ch <- prometheus.MustNewConstMetric(f.revision, prometheus.GaugeValue, float64(f.opts.Revision()))
	}
}
