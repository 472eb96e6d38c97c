package iam

import (
	"unicode"
	"unicode/utf8"
)

// Match reports whether pattern matches all of s. In pattern, "*" matches
// any run of characters (including none and including "/") and "?" exactly
// one character; every other character matches itself, ignoring case (as
// strings.EqualFold does) when caseInsensitive is set. There is no escape:
// a literal "*" or "?" in s is matched by a wildcard.
//
// Match works on UTF-8 characters (an invalid byte counts as one) and
// takes time proportional to len(pattern)*len(s) at worst: it only ever
// backtracks to the most recent "*", never exponentially.
func Match(pattern, s string, caseInsensitive bool) bool {
	pi, si := 0, 0
	star, mark := -1, 0 // position after the last '*' and where its run ends in s
	for si < len(s) {
		if pi < len(pattern) {
			pr, pw := utf8.DecodeRuneInString(pattern[pi:])
			if pr == '*' {
				pi += pw
				star, mark = pi, si
				continue
			}
			sr, sw := utf8.DecodeRuneInString(s[si:])
			if pr == '?' || pr == sr || (caseInsensitive && equalFold(pr, sr)) {
				pi += pw
				si += sw
				continue
			}
		}
		if star < 0 {
			return false
		}
		// Let the last '*' swallow one more character and retry from there.
		_, w := utf8.DecodeRuneInString(s[mark:])
		mark += w
		pi, si = star, mark
	}
	for pi < len(pattern) && pattern[pi] == '*' {
		pi++
	}
	return pi == len(pattern)
}

// equalFold reports whether a and b are equal under simple Unicode case
// folding, as strings.EqualFold decides for single characters.
func equalFold(a, b rune) bool {
	if a < utf8.RuneSelf && b < utf8.RuneSelf {
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		return a == b
	}
	for r := unicode.SimpleFold(a); r != a; r = unicode.SimpleFold(r) {
		if r == b {
			return true
		}
	}
	return false
}
