package main

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// sample is one Prometheus text-format sample.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// metricSet is one scrape of a node's /metrics.
type metricSet []sample

// scrape fetches and parses http://admin/metrics.
func scrape(ctx context.Context, admin string) (metricSet, error) {
	code, body, err := fetch(ctx, "http://"+admin+"/metrics", 5*time.Second)
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("GET /metrics: HTTP %d", code)
	}
	return parseMetrics(string(body)), nil
}

// parseMetrics parses the Prometheus text exposition format (enough of it
// for the node's output: no escaped quotes inside label values matter here).
func parseMetrics(text string) metricSet {
	var ms metricSet
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		s := sample{labels: map[string]string{}}
		var rest string
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				continue
			}
			s.name = line[:i]
			for _, kv := range splitLabels(line[i+1 : j]) {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					continue
				}
				if uq, err := strconv.Unquote(v); err == nil {
					v = uq
				}
				s.labels[strings.TrimSpace(k)] = v
			}
			rest = strings.TrimSpace(line[j+1:])
		} else {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			s.name, rest = f[0], f[1]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		s.value = v
		ms = append(ms, s)
	}
	return ms
}

// splitLabels splits `a="x",b="y,z"` at commas outside quotes.
func splitLabels(s string) []string {
	var out []string
	inQ, esc, start := false, false, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case esc:
			esc = false
		case c == '\\':
			esc = true
		case c == '"':
			inQ = !inQ
		case c == ',' && !inQ:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// sum adds the samples of name whose labels match the given key/value pairs.
func (m metricSet) sum(name string, kv ...string) float64 {
	var t float64
next:
	for _, s := range m {
		if s.name != name {
			continue
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if s.labels[kv[i]] != kv[i+1] {
				continue next
			}
		}
		t += s.value
	}
	return t
}

// byLabel sums name by the value of one label.
func (m metricSet) byLabel(name, label string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range m {
		if s.name == name {
			out[s.labels[label]] += s.value
		}
	}
	return out
}

// backendConns is what the pool reports as open (idle + borrowed).
func (m metricSet) backendConns() int {
	return int(m.sum("dbproxy_database_connections", "state", "idle") + m.sum("dbproxy_database_connections", "state", "borrowed"))
}

// watch polls backend connection counts every 100ms: the node's own gauge
// (idle+borrowed) and the server's process list for the bench user (which
// also counts the node's health-check connection).
type watch struct {
	stop chan struct{}
	done chan struct{}

	mu          sync.Mutex
	peakPool    int // idle+borrowed from /metrics
	peakServer  int // server-side sessions of the bench user
	peakWaiting int // clients waiting for a pool connection
	samples     int
	scrapeErrs  int
	lastErr     string
}

// startWatch polls admin (when not "") and the server's process list (when
// db is not nil) until stopWatch.
func startWatch(ctx context.Context, admin string, db *sql.DB) *watch {
	w := &watch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			w.poll(ctx, admin, db)
			select {
			case <-w.stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return w
}

func (w *watch) poll(ctx context.Context, admin string, db *sql.DB) {
	var pool, waiting, server = -1, -1, -1
	var errs []string
	if admin != "" {
		m, err := scrape(ctx, admin)
		if err != nil {
			errs = append(errs, err.Error())
		} else {
			pool = m.backendConns()
			waiting = int(m.sum("dbproxy_database_connections", "state", "waiting_clients"))
		}
	}
	if db != nil {
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := db.QueryRowContext(qctx, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = ?", benchUser).Scan(&server)
		cancel()
		if err != nil {
			errs = append(errs, err.Error())
			server = -1
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.samples++
	if len(errs) > 0 {
		w.scrapeErrs++
		w.lastErr = strings.Join(errs, "; ")
	}
	w.peakPool = max(w.peakPool, pool)
	w.peakServer = max(w.peakServer, server)
	w.peakWaiting = max(w.peakWaiting, waiting)
}

// result stops the watch and returns the peaks.
func (w *watch) result() (pool, server, waiting int) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peakPool, w.peakServer, w.peakWaiting
}
