// Package metrics defines the node's Prometheus metrics, modelled on what
// RDS Proxy publishes: client and database connections, borrows, pins by
// reason, borrow and query latency, setup failures. A Metrics value owns its
// registry; nothing is registered globally.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds every collector of one node.
type Metrics struct {
	Registry *prometheus.Registry

	ClientConnections        *prometheus.GaugeVec   // proxy, endpoint, tls
	ClientConnectionsTotal   *prometheus.CounterVec // proxy, endpoint, tls
	ClientSetupFailures      *prometheus.CounterVec // proxy, endpoint, reason
	ClientsInTransaction     *prometheus.GaugeVec   // proxy
	ClientsPinned            *prometheus.GaugeVec   // proxy
	Pins                     *prometheus.CounterVec // proxy, reason
	Queries                  *prometheus.CounterVec // proxy, endpoint
	QueryErrors              *prometheus.CounterVec // proxy, endpoint
	QueryDuration            *prometheus.HistogramVec
	BorrowWait               *prometheus.HistogramVec // proxy, target
	BorrowTimeouts           *prometheus.CounterVec   // proxy, target
	DatabaseConnectionsTotal *prometheus.CounterVec   // proxy, target
	DatabaseSetupFailures    *prometheus.CounterVec   // proxy, target
	DatabaseResets           *prometheus.CounterVec   // proxy, target
	TargetHealthy            *prometheus.GaugeVec     // proxy, target, role
	HealthChecks             *prometheus.CounterVec   // proxy, target
	WriterDiscovery          *prometheus.GaugeVec     // proxy
	WriterConflict           *prometheus.GaugeVec     // proxy
	WriterConflicts          *prometheus.CounterVec   // proxy
}

// New creates the collectors in a fresh registry (with Go and process
// collectors).
func New() *Metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m := &Metrics{Registry: r}
	m.ClientConnections = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "dbproxy_client_connections", Help: "Open client connections."}, []string{"proxy", "endpoint", "tls"})
	m.ClientConnectionsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dbproxy_client_connections_total", Help: "Client connections accepted and logged in."}, []string{"proxy", "endpoint", "tls"})
	m.ClientSetupFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dbproxy_client_connection_setup_failures_total", Help: "Client connections that failed to log in, by reason."}, []string{"proxy", "endpoint", "reason"})
	m.ClientsInTransaction = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "dbproxy_client_connections_in_transaction", Help: "Client connections inside a transaction."}, []string{"proxy"})
	m.ClientsPinned = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "dbproxy_client_connections_pinned", Help: "Client connections pinned to a database connection."}, []string{"proxy"})
	m.Pins = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dbproxy_session_pins_total", Help: "Client sessions pinned to a database connection, by reason."}, []string{"proxy", "reason"})
	m.Queries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dbproxy_queries_total", Help: "Commands relayed to databases."}, []string{"proxy", "endpoint"})
	m.QueryErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dbproxy_query_errors_total", Help: "Commands that ended in an error packet."}, []string{"proxy", "endpoint"})
	m.QueryDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "dbproxy_query_duration_seconds", Help: "Time from a client command to the end of its response, borrow included.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10}}, []string{"proxy", "endpoint"})
	m.BorrowWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "dbproxy_database_connection_borrow_seconds", Help: "Time to borrow a database connection from the pool.",
		Buckets: []float64{.00001, .0001, .001, .01, .1, 1, 10, 60}}, []string{"proxy", "target"})
	m.BorrowTimeouts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dbproxy_database_connection_borrow_timeouts_total", Help: "Borrows that hit connection_borrow_timeout."}, []string{"proxy", "target"})
	m.DatabaseConnectionsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dbproxy_database_connections_opened_total", Help: "Database connections opened."}, []string{"proxy", "target"})
	m.DatabaseSetupFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dbproxy_database_connection_setup_failures_total", Help: "Database connections that failed to open or initialise."}, []string{"proxy", "target"})
	m.DatabaseResets = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dbproxy_database_connection_resets_total", Help: "Database connections reset (COM_RESET_CONNECTION) before reuse."}, []string{"proxy", "target"})
	m.TargetHealthy = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "dbproxy_target_healthy", Help: "1 when the target answers health checks, by discovered role."}, []string{"proxy", "target", "role"})
	m.HealthChecks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dbproxy_target_health_checks_total", Help: "Health checks of a target (connect + @@read_only), failed ones included."}, []string{"proxy", "target"})
	m.WriterDiscovery = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "dbproxy_writer_discovery", Help: "1 while the proxy has no usable writer and checks every target at the fast discovery interval."}, []string{"proxy"})
	m.WriterConflict = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "dbproxy_writer_conflict_targets", Help: "Targets that accept writes while more than one does (writes are refused then); 0 without a conflict."}, []string{"proxy"})
	m.WriterConflicts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dbproxy_writer_conflicts_total", Help: "Times more than one target of the proxy was found accepting writes."}, []string{"proxy"})
	for _, c := range []prometheus.Collector{m.ClientConnections, m.ClientConnectionsTotal, m.ClientSetupFailures,
		m.ClientsInTransaction, m.ClientsPinned, m.Pins, m.Queries, m.QueryErrors, m.QueryDuration, m.BorrowWait,
		m.BorrowTimeouts, m.DatabaseConnectionsTotal, m.DatabaseSetupFailures,
		m.DatabaseResets, m.TargetHealthy, m.HealthChecks, m.WriterDiscovery, m.WriterConflict, m.WriterConflicts} {
		f(c)
	}
	return m
}
