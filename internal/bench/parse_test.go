package main

import "testing"

func TestParseSysbench(t *testing.T) {
	out := `
Ignoring error 1213 Deadlock found when trying to get lock; try restarting transaction, 
SQL statistics:
    transactions:                        1309   (255.94 per sec.)
    queries:                             26196  (5121.85 per sec.)
    ignored errors:                      2      (0.20 per sec.)
    reconnects:                          0      (0.00 per sec.)

General statistics:
    total time:                          5.1107s

Latency (ms):
         min:                                    6.86
         avg:                                   61.35
         max:                                  357.04
         95th percentile:                       97.55
`
	var r sbResult
	parseSysbench(out, &r)
	if r.Transactions != 1309 || r.TPS != 255.94 || r.Queries != 26196 || r.IgnoredErrors != 2 ||
		r.Seconds != 5.1107 || r.LatencyAvgMs != 61.35 || r.LatencyP95Ms != 97.55 || r.IgnoredByCode["1213"] != 1 {
		t.Fatalf("parsed %+v", r)
	}
	if r.errors() != 2 || r.unexpectedErrors() != 0 {
		t.Fatalf("errors %d, unexpected %d", r.errors(), r.unexpectedErrors())
	}
	r.IgnoredByCode["1062"] = 1
	if r.unexpectedErrors() != 1 {
		t.Fatalf("a duplicate-key error must count: unexpected %d", r.unexpectedErrors())
	}
}

func TestParseMetrics(t *testing.T) {
	m := parseMetrics(`# HELP dbproxy_database_connections x
# TYPE dbproxy_database_connections gauge
dbproxy_database_connections{proxy="bench",state="idle",target="db"} 3
dbproxy_database_connections{proxy="bench",state="borrowed",target="db"} 5
dbproxy_database_connections{proxy="bench",state="max",target="db"} 64
dbproxy_session_pins_total{proxy="bench",reason="user_variable, \"x\""} 2
dbproxy_client_connections{endpoint="rw",proxy="bench",tls="false"} 10000
up 1
`)
	if got := m.backendConns(); got != 8 {
		t.Errorf("backendConns = %d", got)
	}
	if got := m.sum("dbproxy_database_connections", "state", "max"); got != 64 {
		t.Errorf("max = %v", got)
	}
	if got := m.byLabel("dbproxy_session_pins_total", "reason"); got[`user_variable, "x"`] != 2 {
		t.Errorf("pins = %v", got)
	}
	if got := m.sum("up"); got != 1 {
		t.Errorf("up = %v", got)
	}
}
