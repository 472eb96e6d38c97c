package iam_test

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dbproxy/dbproxy/controlplane/iam"
)

func TestMatch(t *testing.T) {
	cases := []struct {
		pattern, s string
		ci, want   bool
	}{
		{"", "", false, true},
		{"", "a", false, false},
		{"*", "", false, true},
		{"*", "anything/at/all", false, true},
		{"**", "x", false, true},
		{"?", "", false, false},
		{"?", "a", false, true},
		{"?", "é", false, true},
		{"?", "ab", false, false},
		{"??", "é1", false, true},
		{"proxy/*", "proxy/a/dbuser/b", false, true},
		{"proxy/*/dbuser/admin", "proxy/a/b/dbuser/admin", false, true},
		{"proxy/*/dbuser/admin", "proxy/a/dbuser/admin2", false, false},
		{"proxy/a*b", "proxy/ab", false, true},
		{"proxy/a*b", "proxy/axxbxxb", false, true},
		{"proxy/a*b", "proxy/axxbxxc", false, false},
		{"a*b*c", "abbbc", false, true},
		{"a*b*c", "acb", false, false},
		{"*a", "bab", false, false},
		{"*a", "bba", false, true},
		{"a?c", "abc", false, true},
		{"a?c", "ac", false, false},
		{"dbproxy:Get*", "DBPROXY:getproxy", true, true},
		{"dbproxy:Get*", "DBPROXY:getproxy", false, false},
		{"DBPROXY:GETPROXY", "dbproxy:getproxy", true, true},
		{"proxy/App", "proxy/app", false, false},
		{"k", "\u212a", true, true}, // Kelvin sign folds to k, as in strings.EqualFold
		{"k", "\u212a", false, false},
		{"straße", "STRASSE", true, false}, // simple folding only
		{"é", "É", true, true},
		{"*", "\xff", false, true},
		{"?", "\xff", false, true},
		{"a\\*", "a\\b", false, true}, // no escapes: \ is a literal
	}
	for _, c := range cases {
		t.Run(c.pattern+" "+c.s, func(t *testing.T) {
			if got := iam.Match(c.pattern, c.s, c.ci); got != c.want {
				t.Fatalf("Match(%q, %q, %v) = %v, want %v", c.pattern, c.s, c.ci, got, c.want)
			}
			if got := refMatch(t, c.pattern, c.s, c.ci); got != c.want {
				t.Fatalf("reference matcher disagrees with the table for (%q, %q, %v)", c.pattern, c.s, c.ci)
			}
		})
	}
}

// TestMatchPathological runs patterns that make a backtracking matcher
// exponential (or a naive one quadratic in the number of stars) on long
// inputs. A matcher that is not linear-ish does not finish in time.
func TestMatchPathological(t *testing.T) {
	long := strings.Repeat("a", 200_000)
	cases := []struct {
		pattern, s string
		ci, want   bool
	}{
		{"a*a*a*a*a*a*a*a*a*a*a*a*b", long, false, false},
		{"a*a*a*a*a*a*a*a*a*a*a*a*b", long + "b", false, true},
		{"A*A*A*A*A*A*A*A*A*A*A*A*B", long, true, false},
		{"*?*?*?*?*?*?*?*?*?*?*?*b", long, false, false},
		{"*aaaaaaaaaaaaaaaaaaaaaaaab", long, false, false},
		{strings.Repeat("*a", 50) + "*b", long[:20_000], false, false},
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, c := range cases {
			if got := iam.Match(c.pattern, c.s, c.ci); got != c.want {
				t.Errorf("Match(%q, <%d bytes>) = %v, want %v", c.pattern, len(c.s), got, c.want)
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Match did not finish pathological inputs within 30s: it backtracks too much")
	}
}

// refMatch is the reference semantics of Match: the pattern translated to
// a regular expression (Go's regexp runs in linear time and folds case
// like strings.EqualFold).
func refMatch(t testing.TB, pattern, s string, ci bool) bool {
	t.Helper()
	var b strings.Builder
	b.WriteString(`(?s)`)
	if ci {
		b.WriteString(`(?i)`)
	}
	b.WriteString(`\A`)
	for _, r := range pattern {
		switch r {
		case '*':
			b.WriteString(`.*`)
		case '?':
			b.WriteString(`.`)
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString(`\z`)
	re, err := regexp.Compile(b.String())
	if err != nil {
		t.Fatalf("compile reference for %q: %v", pattern, err)
	}
	return re.MatchString(s)
}
