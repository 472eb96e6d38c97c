package vocab

import (
	"reflect"
	"testing"
)

func TestPoolProblems(t *testing.T) {
	tests := []struct {
		name         string
		maxPct, idle int
		filters      []string
		wantFields   []string
	}{
		{"defaults", 100, 50, nil, nil},
		{"idle zero", 1, 0, []string{PinningFilterExcludeVariableSets}, nil},
		{"idle equal", 40, 40, nil, nil},
		{"zero", 0, 0, nil, []string{"max_connections_percent"}},
		{"over 100", 101, 50, nil, []string{"max_connections_percent"}},
		{"idle over max", 20, 21, nil, []string{"max_idle_connections_percent"}},
		{"idle negative", 20, -1, nil, []string{"max_idle_connections_percent"}},
		{"unknown filter", 100, 50, []string{PinningFilterExcludeVariableSets, "NOPE"}, []string{"session_pinning_filters[1]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, p := range PoolProblems(tt.maxPct, tt.idle, tt.filters) {
				if p.Message == "" {
					t.Errorf("%s has no message", p.Field)
				}
				got = append(got, p.Field)
			}
			if !reflect.DeepEqual(got, tt.wantFields) {
				t.Fatalf("fields %v, want %v", got, tt.wantFields)
			}
		})
	}
}

func TestDuplicateUsername(t *testing.T) {
	tests := []struct {
		users       []string
		first, next int
		dup         bool
	}{
		{nil, 0, 0, false},
		{[]string{"a", "b"}, 0, 0, false},
		{[]string{"a", "b", "a"}, 0, 2, true},
		{[]string{"a", "b", "b", "a"}, 1, 2, true},
		// Blocks whose secret is unknown never collide.
		{[]string{"", ""}, 0, 0, false},
	}
	for _, tt := range tests {
		i, j, dup := DuplicateUsername(tt.users)
		if i != tt.first || j != tt.next || dup != tt.dup {
			t.Errorf("DuplicateUsername(%q) = %d, %d, %v; want %d, %d, %v", tt.users, i, j, dup, tt.first, tt.next, tt.dup)
		}
	}
}
