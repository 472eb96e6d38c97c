package backend

import (
	"errors"
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

// fakeServer answers commands on the other end of a pipe: answer returns
// the response packets for one command. It records what it was sent.
type fakeServer struct {
	answer func(cmd []byte) [][]byte
	seen   []string
	done   chan struct{}
}

func startFakeServer(t *testing.T, answer func(cmd []byte) [][]byte) (*Conn, *fakeServer) {
	t.Helper()
	a, b := net.Pipe()
	f := &fakeServer{answer: answer, done: make(chan struct{})}
	srv := mysql.NewConn(b, mysql.NewBufferPool(0))
	go func() {
		defer close(f.done)
		for {
			srv.Seq = 0
			cmd, err := srv.ReadPacket()
			if err != nil {
				return
			}
			f.seen = append(f.seen, describeCommand(cmd))
			for _, p := range f.answer(cmd) {
				if err := srv.WritePacket(p); err != nil {
					return
				}
			}
			if err := srv.Flush(); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { a.Close(); b.Close(); <-f.done })
	c := &Conn{Conn: mysql.NewConn(a, mysql.NewBufferPool(0)), Info: mysql.ServerInfo{Caps: BaseCaps},
		Vars: map[string]string{}, Stmts: map[string][]*Stmt{}}
	return c, f
}

func describeCommand(cmd []byte) string {
	switch cmd[0] {
	case mysql.ComInitDB:
		return "INIT_DB " + string(cmd[1:])
	case mysql.ComStmtPrepare:
		return "PREPARE " + string(cmd[1:])
	}
	return fmt.Sprintf("command 0x%02x", cmd[0])
}

// TestPrepareIn: a statement is prepared in the database it belongs to and
// the connection goes back to its own; Schema always says where the
// connection is, also when a database is gone.
func TestPrepareIn(t *testing.T) {
	const q = "SELECT v FROM t"
	for _, tc := range []struct {
		name string
		// home is the connection's database, schema the statement's;
		// cached is the database the statement is cached in ("-": not).
		home, schema, cached string
		// gone lists databases that no longer exist.
		gone       []string
		wantSeen   string
		wantErr    uint16
		wantSchema string
	}{
		{name: "cached in its database", home: "pb", schema: "pa", cached: "pa", wantSchema: "pb"},
		{name: "same database", home: "pa", schema: "pa", cached: "-", wantSeen: "[PREPARE " + q + "]", wantSchema: "pa"},
		{name: "another database", home: "pb", schema: "pa", cached: "pb",
			wantSeen: "[INIT_DB pa PREPARE " + q + " INIT_DB pb]", wantSchema: "pb"},
		{name: "its database is gone", home: "pb", schema: "pa", cached: "-", gone: []string{"pa"},
			wantSeen: "[INIT_DB pa]", wantErr: 1049, wantSchema: "pb"},
		{name: "the connection's database is gone", home: "pb", schema: "pa", cached: "-", gone: []string{"pb"},
			wantSeen: "[INIT_DB pa PREPARE " + q + " INIT_DB pb]", wantSchema: "pa"},
		{name: "no database on a connection that has one", home: "pb", schema: "", cached: "-",
			wantSeen: "[PREPARE " + q + "]", wantSchema: "pb"},
		{name: "a database on a connection that has none", home: "", schema: "pa", cached: "-",
			wantSeen: "[INIT_DB pa PREPARE " + q + "]", wantSchema: "pa"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, f := startFakeServer(t, func(cmd []byte) [][]byte {
				switch cmd[0] {
				case mysql.ComInitDB:
					for _, g := range tc.gone {
						if string(cmd[1:]) == g {
							return [][]byte{mysql.AppendErr(nil, mysql.NewSQLError(1049, "Unknown database '%s'", g))}
						}
					}
					return [][]byte{mysql.AppendOK(nil, mysql.OKPacket, mysql.OK{}, BaseCaps)}
				case mysql.ComStmtPrepare:
					return [][]byte{mysql.AppendPrepareOK(nil, mysql.PrepareOK{StmtID: 9})}
				}
				return [][]byte{mysql.AppendErr(nil, mysql.NewSQLError(1047, "unexpected"))}
			})
			if tc.cached != "-" {
				c.Schema = tc.cached
				c.AddStmt(q, &Stmt{ID: 5})
			}
			c.Schema = tc.home
			st, err := c.PrepareIn(tc.schema, q, nil)
			var se *mysql.SQLError
			switch {
			case tc.wantErr != 0:
				if !errors.As(err, &se) || se.Num != tc.wantErr {
					t.Fatalf("PrepareIn: %v, want error %d", err, tc.wantErr)
				}
			case err != nil:
				t.Fatalf("PrepareIn: %v", err)
			case tc.cached == tc.schema && st.ID != 5, tc.cached != tc.schema && st.ID != 9:
				t.Fatalf("statement %d", st.ID)
			}
			c.Close()
			<-f.done
			if got := fmt.Sprint(f.seen); tc.wantSeen != "" && got != tc.wantSeen || tc.wantSeen == "" && len(f.seen) != 0 {
				t.Errorf("sent %s, want %s", got, tc.wantSeen)
			}
			if c.Schema != tc.wantSchema || c.Broken {
				t.Errorf("connection in %q (broken %v), want %q", c.Schema, c.Broken, tc.wantSchema)
			}
		})
	}
}
