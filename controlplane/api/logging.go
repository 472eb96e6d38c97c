package api

import (
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// logPath is a request path as it goes into a log line. A path can hold
// any byte (%0A is a newline once decoded), and hclog writes a value with
// a newline as an indented block of lines, so a request could add lines of
// its choosing to the log. A path with a control character, a backslash
// or invalid UTF-8 is escaped as a Go string literal, without the quotes;
// the backslash is in the list so that an escaped path cannot be confused
// with one that spells out the escape. Every other path is logged as is.
func logPath(p string) string {
	if !utf8.ValidString(p) || strings.ContainsFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\\' }) {
		q := strconv.Quote(p)
		return q[1 : len(q)-1]
	}
	return p
}

// Refused requests are logged at most refusedLogBurst at once and then
// refusedLogEvery apart: they come from callers that hold no key, at
// whatever rate they like, and one line each would let them fill the disk
// (about 11 GB an hour at full speed). The line that is let through says
// how many were not logged since the last one.
const (
	refusedLogBurst = 10
	refusedLogEvery = time.Second
)

// logLimiter is a token bucket for log lines that counts what it drops.
type logLimiter struct {
	now   func() time.Time
	every time.Duration
	burst int

	mu struct {
		sync.Mutex
		tokens  float64
		last    time.Time
		dropped int
		started bool
	}
}

func newLogLimiter(now func() time.Time, burst int, every time.Duration) *logLimiter {
	return &logLimiter{now: now, burst: burst, every: every}
}

// allow reports whether a line may be written now and, when it may, how
// many were dropped since the last one that was.
func (l *logLimiter) allow() (ok bool, dropped int) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.mu.started {
		l.mu.started, l.mu.tokens, l.mu.last = true, float64(l.burst), now
	}
	if d := now.Sub(l.mu.last); d > 0 {
		l.mu.tokens = min(float64(l.burst), l.mu.tokens+float64(d)/float64(l.every))
		l.mu.last = now
	}
	if l.mu.tokens < 1 {
		l.mu.dropped++
		return false, 0
	}
	l.mu.tokens--
	dropped, l.mu.dropped = l.mu.dropped, 0
	return true, dropped
}
