package node

import (
	dto "github.com/prometheus/client_model/go"
)

// gatherPools reports database connections by state from the pools at
// scrape time.
func (n *Node) gatherPools() ([]*dto.MetricFamily, error) {
	n.mu.Lock()
	var ms []*dto.Metric
	for name, rp := range n.mu.proxies {
		for _, t := range rp.targets {
			st := t.Pool.Stats()
			for state, v := range map[string]int{"idle": st.Idle, "borrowed": st.Borrowed, "pinned": int(t.Pinned.Load()), "waiting_clients": st.Waiting, "max": st.Max} {
				ms = append(ms, &dto.Metric{
					Label: []*dto.LabelPair{label("proxy", name), label("target", t.Name()), label("state", state)},
					Gauge: &dto.Gauge{Value: float64ptr(float64(v))},
				})
			}
		}
	}
	n.mu.Unlock()
	if len(ms) == 0 {
		return nil, nil
	}
	name, help := "dbproxy_database_connections", "Database connections by state (idle, borrowed; pinned counts the borrowed ones pinned to a client), clients waiting for one (waiting_clients), and the pool limit (max)."
	typ := dto.MetricType_GAUGE
	return []*dto.MetricFamily{{Name: &name, Help: &help, Type: &typ, Metric: ms}}, nil
}

func label(k, v string) *dto.LabelPair { return &dto.LabelPair{Name: &k, Value: &v} }

func float64ptr(f float64) *float64 { return &f }
