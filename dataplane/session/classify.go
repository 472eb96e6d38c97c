// Package session classifies client statements by the session state they
// create, so that the node knows when a client must stay pinned to its
// database connection, and names the reason for the pin metrics.
package session

import (
	"fmt"
	"strings"
)

// Reason is why a client session is pinned to one database connection.
type Reason string

// Pin reasons.
const (
	PinUserVariable      Reason = "user_variable"
	PinTemporaryTable    Reason = "temporary_table"
	PinTableLock         Reason = "table_lock"
	PinNamedLock         Reason = "named_lock"
	PinFoundRows         Reason = "sql_calc_found_rows"
	PinTextPrepare       Reason = "text_prepared_statement"
	PinHandler           Reason = "handler"
	PinXA                Reason = "xa_transaction"
	PinNextTransaction   Reason = "next_transaction_characteristics"
	PinSessionTracking   Reason = "session_tracking_changed"
	PinLastInsertIDSet   Reason = "last_insert_id_argument"
	PinStateChange       Reason = "other_session_state"
	PinNoSessionTracking Reason = "no_session_tracking"
	PinLocalInfile       Reason = "load_data_local"
)

// Class is what the node needs to know of one text statement.
type Class struct {
	// Pin lists the reasons the statement pins the session (nil: none).
	Pin []Reason
	// IsSet is true for SET statements (EXCLUDE_VARIABLE_SETS applies).
	IsSet bool
	// UsesPrevious is true when the statement reads what the previous
	// statement left (FOUND_ROWS(), ROW_COUNT()).
	UsesPrevious bool
	// ChangesSchema is true for USE statements.
	ChangesSchema bool
	// MayChangeState is true for statements whose effect on session state
	// only session tracking can tell (CALL, EXECUTE of a text prepared
	// statement); without tracking they pin.
	MayChangeState bool
	// Rerunnable is true for a single SELECT, SHOW or DESCRIBE that
	// writes nothing (no INTO, no sequence functions): when the database
	// connection breaks before any of its response arrives, running it
	// again on another connection only produces its result. Like other
	// proxies, this assumes the stored functions a SELECT calls write
	// nothing.
	Rerunnable bool
}

// Classify inspects a text statement (or several, separated by ';').
func Classify(sql string) Class {
	n := normalize(sql)
	var c Class
	add := func(r Reason) {
		for _, x := range c.Pin {
			if x == r {
				return
			}
		}
		c.Pin = append(c.Pin, r)
	}
	statements := 0
	for _, st := range strings.Split(n, ";") {
		st = strings.TrimSpace(st)
		if st == "" {
			continue
		}
		statements++
		first, rest := firstWord(st)
		switch first {
		case "set":
			c.IsSet = true
			if hasUserVar(st) {
				add(PinUserVariable)
			}
			r := strings.TrimSpace(rest)
			if r == "transaction" || strings.HasPrefix(r, "transaction ") || setsNextTransaction(st) {
				add(PinNextTransaction)
			}
			if strings.Contains(st, "session_track_") {
				add(PinSessionTracking)
			}
		case "use":
			c.ChangesSchema = true
		case "call", "execute":
			c.MayChangeState = true
		case "create":
			if strings.Contains(st, " temporary ") && (strings.Contains(st, " table") || strings.Contains(st, " sequence")) {
				add(PinTemporaryTable)
			}
		case "lock", "backup":
			// BACKUP LOCK and BACKUP STAGE hold MariaDB backup locks in the
			// session.
			add(PinTableLock)
		case "flush":
			if strings.Contains(st, "read lock") || strings.Contains(st, " for export") {
				add(PinTableLock)
			}
		case "prepare":
			add(PinTextPrepare)
		case "handler":
			add(PinHandler)
		case "xa":
			add(PinXA)
		case "load":
			if strings.Contains(st, " local ") {
				add(PinLocalInfile)
			}
		}
		if first != "set" && hasUserVarAssignment(st) {
			add(PinUserVariable)
		}
		// Outside IGNORE_SPACE's list, a function name may be followed by
		// white space (or a comment) before its parenthesis.
		fn := strings.ReplaceAll(st, " (", "(")
		c.Rerunnable = statements == 1 && rerunnable(first, fn)
		if strings.Contains(fn, "get_lock(") {
			add(PinNamedLock)
		}
		if strings.Contains(st, "sql_calc_found_rows") {
			add(PinFoundRows)
		}
		for rest := fn; ; {
			i := strings.Index(rest, "last_insert_id(")
			if i < 0 {
				break
			}
			rest = rest[i+len("last_insert_id("):]
			if !strings.HasPrefix(strings.TrimSpace(rest), ")") {
				add(PinLastInsertIDSet)
				break
			}
		}
		if strings.Contains(fn, "found_rows(") || strings.Contains(fn, "row_count(") {
			c.UsesPrevious = true
		}
	}
	return c
}

// rerunnable reports whether the normalized statement fn (with "name ("
// written "name("), whose first word is first, only reads.
func rerunnable(first, fn string) bool {
	switch first {
	case "select", "show", "desc", "describe":
	default:
		return false
	}
	if hasWord(fn, "into") {
		return false
	}
	for _, w := range []string{"nextval(", "setval(", "next value for", "get_lock(", "release_lock(", "release_all_locks("} {
		if strings.Contains(fn, w) {
			return false
		}
	}
	return true
}

// hasWord reports whether the normalized statement s holds w as a word:
// not inside a longer identifier ("into" in "select `x`into" counts, in
// "intone" it does not).
func hasWord(s, w string) bool {
	for i := 0; ; {
		j := strings.Index(s[i:], w)
		if j < 0 {
			return false
		}
		j += i
		before := j == 0 || !isIdent(s[j-1])
		after := j+len(w) == len(s) || !isIdent(s[j+len(w)])
		if before && after {
			return true
		}
		i = j + 1
	}
}

func firstWord(s string) (string, string) {
	// A keyword ends at anything but a letter: "set@a=1", "use`db`".
	i := strings.IndexFunc(s, func(r rune) bool { return (r < 'a' || r > 'z') && r != '_' })
	if i < 0 {
		return s, ""
	}
	return s[:i], s[i:]
}

// hasUserVar reports a reference to @name (not @@name).
func hasUserVar(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '@' {
			continue
		}
		if i+1 < len(s) && s[i+1] == '@' {
			i++
			for i+1 < len(s) && isIdent(s[i+1]) || i+1 < len(s) && s[i+1] == '.' {
				i++
			}
			continue
		}
		if i > 0 && (s[i-1] == '?' || s[i-1] == '`') {
			// 'user'@'host' in account names, not a variable.
			continue
		}
		if i+1 < len(s) && (isIdent(s[i+1]) || s[i+1] == '?' || s[i+1] == '`') {
			return true
		}
	}
	return false
}

// hasUserVarAssignment reports @name := ... or INTO @name.
func hasUserVarAssignment(s string) bool {
	if !hasUserVar(s) {
		return false
	}
	if strings.Contains(s, ":=") {
		return true
	}
	for i := strings.Index(s, "into"); i >= 0; {
		j := i + 4
		for j < len(s) && s[j] == ' ' {
			j++
		}
		if j < len(s) && s[j] == '@' && (j+1 >= len(s) || s[j+1] != '@') {
			return true
		}
		k := strings.Index(s[i+4:], "into")
		if k < 0 {
			break
		}
		i += 4 + k
	}
	return false
}

func isIdent(c byte) bool {
	return c == '_' || c == '$' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}

// normalize lower-cases ASCII, drops comments (keeping the body of
// executable /*! */ comments), replaces string literals and quoted
// identifiers by a placeholder and folds white space.
func normalize(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	space := false
	inExec := false
	emit := func(c byte) {
		if c == ' ' || c == '\t' || c == '\n' || c == '\r' {
			if !space {
				b.WriteByte(' ')
			}
			space = true
			return
		}
		space = false
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		b.WriteByte(c)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'' || c == '"' || c == '`':
			q := c
			i++
			for i < len(s) {
				if s[i] == '\\' && q != '`' {
					i += 2
					continue
				}
				if s[i] == q {
					if i+1 < len(s) && s[i+1] == q {
						i += 2
						continue
					}
					break
				}
				i++
			}
			if q == '`' {
				// Not a letter, so that it never joins a keyword before it.
				emit('`')
			} else {
				emit('?')
			}
		case c == '#' || (c == '-' && i+2 < len(s) && s[i+1] == '-' && (s[i+2] == ' ' || s[i+2] == '\t')):
			for i < len(s) && s[i] != '\n' {
				i++
			}
			emit(' ')
		case c == '/' && i+1 < len(s) && s[i+1] == '*':
			if i+2 < len(s) && s[i+2] == '!' || i+3 < len(s) && s[i+2] == 'M' && s[i+3] == '!' {
				// Executable comment (MariaDB's /*M! too): skip the marker
				// and version, keep the body.
				if s[i+2] == 'M' {
					i++
				}
				i += 3
				inExec = true
				for i < len(s) && s[i] >= '0' && s[i] <= '9' {
					i++
				}
				i--
				emit(' ')
				continue
			}
			end := strings.Index(s[i+2:], "*/")
			if end < 0 {
				i = len(s)
			} else {
				i += 2 + end + 1
			}
			emit(' ')
		case inExec && c == '*' && i+1 < len(s) && s[i+1] == '/':
			// End of an executable comment.
			inExec = false
			i++
			emit(' ')
		default:
			emit(c)
		}
	}
	return " " + strings.TrimSpace(b.String()) + " "
}

// SubstitutePrevious replaces FOUND_ROWS() and ROW_COUNT() outside string
// literals, quoted identifiers and comments by the given values, so that a
// statement that reads them can run on a connection other than the one the
// previous statement ran on.
func SubstitutePrevious(sql string, foundRows, rowCount int64) string {
	var b strings.Builder
	b.Grow(len(sql))
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case c == '\'' || c == '"' || c == '`':
			j := i + 1
			for j < len(sql) {
				if sql[j] == '\\' && c != '`' {
					j += 2
					continue
				}
				if sql[j] == c {
					if j+1 < len(sql) && sql[j+1] == c {
						j += 2
						continue
					}
					break
				}
				j++
			}
			j = min(j+1, len(sql))
			b.WriteString(sql[i:j])
			i = j
			continue
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*' && (i+2 >= len(sql) || sql[i+2] != '!') &&
			(i+3 >= len(sql) || sql[i+2] != 'M' || sql[i+3] != '!'):
			end := strings.Index(sql[i+2:], "*/")
			j := len(sql)
			if end >= 0 {
				j = i + 2 + end + 2
			}
			b.WriteString(sql[i:j])
			i = j
			continue
		}
		if i == 0 || !isIdent(sql[i-1]) {
			if end := callEnd(sql, i, "found_rows"); end > 0 {
				fmt.Fprint(&b, foundRows)
				i = end
				continue
			}
			if end := callEnd(sql, i, "row_count"); end > 0 {
				fmt.Fprint(&b, rowCount)
				i = end
				continue
			}
		}
		b.WriteByte(c)
		i++
	}
	return b.String()
}

// callEnd reports where a call of the argument-less function name starting
// at sql[i] ends ("name()", "NAME ( )"), or 0 when there is none.
func callEnd(sql string, i int, name string) int {
	if len(sql)-i < len(name) || !strings.EqualFold(sql[i:i+len(name)], name) {
		return 0
	}
	j := i + len(name)
	skip := func() {
		for j < len(sql) && (sql[j] == ' ' || sql[j] == '\t' || sql[j] == '\r' || sql[j] == '\n') {
			j++
		}
	}
	skip()
	if j >= len(sql) || sql[j] != '(' {
		return 0
	}
	j++
	skip()
	if j >= len(sql) || sql[j] != ')' {
		return 0
	}
	return j + 1
}

// setsNextTransaction reports SET @@transaction_isolation = ... and the like
// without a scope: like SET TRANSACTION, they apply to the next transaction
// only, which session tracking does not report.
func setsNextTransaction(st string) bool {
	for _, v := range []string{"@@transaction_isolation", "@@tx_isolation", "@@transaction_read_only", "@@tx_read_only"} {
		if strings.Contains(st, v) {
			return true
		}
	}
	return false
}
