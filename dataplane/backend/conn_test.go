package backend

import (
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/dbproxy/dbproxy/dataplane/mysql"
)

func TestFormatValue(t *testing.T) {
	for in, want := range map[string]string{
		"":                       "''",
		"0":                      "0",
		"18446744073709551615":   "18446744073709551615",
		"10.000000":              "10.000000",
		"-5":                     "-5",
		"+01:00":                 "'+01:00'",
		"ON":                     "'ON'",
		"NaN":                    "'NaN'",
		"Inf":                    "'Inf'",
		"STRICT_TRANS_TABLES":    "'STRICT_TRANS_TABLES'",
		`it's`:                   `'it\'s'`,
		`back\slash`:             `'back\\slash'`,
		"REAL_AS_FLOAT,ANSI,X_Y": "'REAL_AS_FLOAT,ANSI,X_Y'",
	} {
		if got := FormatValue(in); got != want {
			t.Errorf("FormatValue(%q) = %s, want %s", in, got, want)
		}
	}
}

func sessionState(entries ...[]byte) []byte {
	var b []byte
	for _, e := range entries {
		b = append(b, e...)
	}
	return b
}

func sysvar(name, value string) []byte {
	var data []byte
	data = mysql.AppendLenEncString(data, []byte(name))
	data = mysql.AppendLenEncString(data, []byte(value))
	return mysql.AppendLenEncString([]byte{mysql.SessionTrackSystemVariables}, data)
}

func schema(name string) []byte {
	return mysql.AppendLenEncString([]byte{mysql.SessionTrackSchema}, mysql.AppendLenEncString(nil, []byte(name)))
}

// stateChanged is the flag as MariaDB sends it.
var stateChanged = []byte{mysql.SessionTrackStateChange, 0x01, '1'}

func TestApplyOK(t *testing.T) {
	tests := []struct {
		name          string
		state         []byte
		wantVars      map[string]string
		wantSchema    string
		wantChanged   bool
		wantUnmovable bool
	}{
		{"nothing", nil, nil, "", false, false},
		{"variables", sessionState(sysvar("time_zone", "+01:00"), sysvar("sql_mode", ""), stateChanged),
			map[string]string{"time_zone": "+01:00", "sql_mode": ""}, "", true, false},
		{"schema", sessionState(schema("app"), stateChanged), nil, "app", true, false},
		{"user variable", sessionState(stateChanged), nil, "", true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &Conn{Vars: map[string]string{}, Stmts: map[string][]*Stmt{}}
			ok := mysql.OK{Status: mysql.StatusAutocommit, LastInsertID: 7, SessionState: tc.state}
			sc := c.ApplyOK(ok)
			if sc.Changed != tc.wantChanged || sc.Unmovable != tc.wantUnmovable {
				t.Errorf("changed=%v unmovable=%v, want %v %v", sc.Changed, sc.Unmovable, tc.wantChanged, tc.wantUnmovable)
			}
			for k, v := range tc.wantVars {
				if sc.Vars[k] != v || c.Vars[k] != v {
					t.Errorf("%s: change %q, connection %q, want %q", k, sc.Vars[k], c.Vars[k], v)
				}
			}
			if len(sc.Vars) != len(tc.wantVars) {
				t.Errorf("vars %v, want %v", sc.Vars, tc.wantVars)
			}
			if tc.wantSchema != "" && (sc.Schema == nil || *sc.Schema != tc.wantSchema || c.Schema != tc.wantSchema) {
				t.Errorf("schema %v / %q, want %q", sc.Schema, c.Schema, tc.wantSchema)
			}
			if c.LastInsertID != 7 || c.Status != mysql.StatusAutocommit {
				t.Errorf("last insert id %d, status %x", c.LastInsertID, c.Status)
			}
		})
	}
}

// TestStmtContext: the same text prepared under another database or
// sql_mode is another statement.
func TestStmtContext(t *testing.T) {
	c := &Conn{Vars: map[string]string{"sql_mode": "ANSI"}, Stmts: map[string][]*Stmt{}, Schema: "a"}
	q := "SELECT * FROM t WHERE id = ?"
	if old := c.AddStmt(q, &Stmt{ID: 1}); old != nil {
		t.Fatalf("replaced %v in an empty cache", old)
	}
	if st, ok := c.LookupStmt(q); !ok || st.ID != 1 {
		t.Fatalf("lookup in the same context: %v %v", st, ok)
	}
	c.Schema = "b"
	if _, ok := c.LookupStmt(q); ok {
		t.Fatal("statement prepared in database a found in database b")
	}
	c.AddStmt(q, &Stmt{ID: 2})
	c.Schema = "a"
	c.Vars["sql_mode"] = "ANSI_QUOTES"
	if _, ok := c.LookupStmt(q); ok {
		t.Fatal("statement prepared under sql_mode ANSI found under ANSI_QUOTES")
	}
	c.Vars["sql_mode"] = "ANSI"
	if old := c.AddStmt(q, &Stmt{ID: 3}); old == nil || old.ID != 1 {
		t.Fatalf("re-prepare in the first context replaced %v, want statement 1", old)
	}
	if c.nstmts != 2 {
		t.Fatalf("cache counts %d statements, want 2", c.nstmts)
	}
}

// TestEvictStmtsSparesStatementsInUse fills the cache past its bound and
// checks that eviction frees half of it but never a statement in use.
func TestEvictStmtsSparesStatementsInUse(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	done := make(chan struct{})
	go func() { // the "server" side: swallow COM_STMT_CLOSE packets
		defer close(done)
		_, _ = io.Copy(io.Discard, b)
	}()
	defer func() { b.Close(); <-done }()
	c := &Conn{Conn: mysql.NewConn(a, mysql.NewBufferPool(0)), Vars: map[string]string{}, Stmts: map[string][]*Stmt{}}
	for i := range maxStmtsPerConn {
		c.AddStmt(fmt.Sprintf("SELECT %d", i), &Stmt{ID: uint32(i + 1)})
	}
	inUse := map[uint32]bool{7: true, 300: true, 1000: true}
	c.evictStmts(func(id uint32) bool { return inUse[id] })
	if c.nstmts >= maxStmtsPerConn/2 {
		t.Fatalf("%d statements left after eviction, want under %d", c.nstmts, maxStmtsPerConn/2)
	}
	for id := range inUse {
		if _, ok := c.LookupStmt(fmt.Sprintf("SELECT %d", id-1)); !ok {
			t.Errorf("statement %d in use was evicted", id)
		}
	}
	n := 0
	for _, list := range c.Stmts {
		n += len(list)
	}
	if n != c.nstmts {
		t.Errorf("cache holds %d statements, counter says %d", n, c.nstmts)
	}
}
