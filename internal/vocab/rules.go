package vocab

import "fmt"

// The connection pool's percentages, as RDS Proxy bounds them.
const (
	MaxConnectionsPercentMin = 1
	MaxConnectionsPercentMax = 100
)

// Problem is one field that breaks a rule; Field is relative to the
// object checked ("max_connections_percent").
type Problem struct {
	Field, Message string
}

// PoolProblems checks the pool settings that the API, the node's
// configuration file and the node's xDS decoder all take, by the same
// rules: the percentages and the session pinning filters. (Timeouts are
// bounded by each layer: the API keeps RDS Proxy's range, a node accepts
// any it can represent.)
func PoolProblems(maxConnectionsPercent, maxIdleConnectionsPercent int, sessionPinningFilters []string) []Problem {
	var ps []Problem
	if maxConnectionsPercent < MaxConnectionsPercentMin || maxConnectionsPercent > MaxConnectionsPercentMax {
		ps = append(ps, Problem{"max_connections_percent", fmt.Sprintf("must be %d-%d, got %d",
			MaxConnectionsPercentMin, MaxConnectionsPercentMax, maxConnectionsPercent)})
	}
	if maxIdleConnectionsPercent < 0 || maxIdleConnectionsPercent > maxConnectionsPercent {
		ps = append(ps, Problem{"max_idle_connections_percent", fmt.Sprintf("must be 0-max_connections_percent (%d), got %d",
			maxConnectionsPercent, maxIdleConnectionsPercent)})
	}
	for i, f := range sessionPinningFilters {
		if f != PinningFilterExcludeVariableSets {
			ps = append(ps, Problem{fmt.Sprintf("session_pinning_filters[%d]", i),
				fmt.Sprintf("must be %s, got %q", PinningFilterExcludeVariableSets, f)})
		}
	}
	return ps
}

// DuplicateUsername reports the first pair of auth blocks whose users are
// the same: a login must belong to exactly one block, with its password or
// IAM authentication, so a proxy's blocks need distinct usernames.
// usernames[i] is the user of block i ("" for a block whose secret is
// unknown, which never collides).
func DuplicateUsername(usernames []string) (first, second int, dup bool) {
	seen := map[string]int{}
	for i, u := range usernames {
		if u == "" {
			continue
		}
		if j, ok := seen[u]; ok {
			return j, i, true
		}
		seen[u] = i
	}
	return 0, 0, false
}
