package backend

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"regexp"
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
	case mysql.ComQuery:
		return "QUERY " + string(cmd[1:])
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
			st, err := c.PrepareIn(StmtContext{Schema: tc.schema}, q, nil)
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

// TestPrepareInParseState: a statement is prepared under the sql_mode and
// character set of its prepare, and the connection takes its own back
// right after, so that the execute runs under the session's; Vars say the
// connection's own afterwards, whatever session tracking reported.
func TestPrepareInParseState(t *testing.T) {
	const q = "SELECT \"v\" FROM t"
	// setPair matches one assignment of the SET statements PrepareIn sends.
	setPair := regexp.MustCompile("`([a-z_]+)`='([^']*)'")
	own := StmtContext{Schema: "pb", SQLMode: "", Charset: "utf8mb4", Collation: "utf8mb4_general_ci"}
	ansi := own
	ansi.SQLMode = "ANSI_QUOTES"
	latin := own
	latin.Schema, latin.Charset, latin.Collation = "pa", "latin1", "latin1_bin"
	for _, tc := range []struct {
		name string
		ctx  StmtContext
		// failSet is the SET statement (by its number, from 1) that fails.
		failSet    int
		wantSeen   string
		wantErr    bool
		wantBroken bool
	}{
		{name: "same state", ctx: own, wantSeen: "[PREPARE " + q + "]"},
		{name: "another sql_mode", ctx: ansi,
			wantSeen: "[QUERY SET SESSION `sql_mode`='ANSI_QUOTES' PREPARE " + q + " QUERY SET SESSION `sql_mode`='']"},
		{name: "another database and character set", ctx: latin,
			wantSeen: "[INIT_DB pa QUERY SET SESSION `character_set_client`='latin1', `collation_connection`='latin1_bin' PREPARE " + q +
				" QUERY SET SESSION `character_set_client`='utf8mb4', `collation_connection`='utf8mb4_general_ci' INIT_DB pb]"},
		{name: "the statement's state is refused", ctx: ansi, failSet: 1, wantErr: true,
			wantSeen: "[QUERY SET SESSION `sql_mode`='ANSI_QUOTES']"},
		{name: "the way back fails", ctx: ansi, failSet: 2, wantErr: true, wantBroken: true,
			wantSeen: "[QUERY SET SESSION `sql_mode`='ANSI_QUOTES' PREPARE " + q + " QUERY SET SESSION `sql_mode`='']"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sets := 0
			c, f := startFakeServer(t, func(cmd []byte) [][]byte {
				switch cmd[0] {
				case mysql.ComInitDB:
					return [][]byte{mysql.AppendOK(nil, mysql.OKPacket, mysql.OK{}, BaseCaps)}
				case mysql.ComQuery:
					if sets++; sets == tc.failSet {
						return [][]byte{mysql.AppendErr(nil, mysql.NewSQLError(1231, "refused"))}
					}
					// Like MariaDB, report what the SET named, and not the
					// character_set_connection a collation implies.
					var reports [][]byte
					for _, m := range setPair.FindAllStringSubmatch(string(cmd[1:]), -1) {
						reports = append(reports, sysvar(m[1], m[2]))
					}
					return [][]byte{mysql.AppendOK(nil, mysql.OKPacket, mysql.OK{Status: mysql.StatusSessionStateChanged,
						SessionState: sessionState(reports...)}, BaseCaps)}
				case mysql.ComStmtPrepare:
					return [][]byte{mysql.AppendPrepareOK(nil, mysql.PrepareOK{StmtID: 9})}
				}
				return [][]byte{mysql.AppendErr(nil, mysql.NewSQLError(1047, "unexpected"))}
			})
			c.Schema = own.Schema
			c.Vars = map[string]string{"sql_mode": own.SQLMode, "character_set_client": own.Charset,
				"character_set_connection": "utf8mb4", "collation_connection": own.Collation, "time_zone": "+01:00"}
			want := maps.Clone(c.Vars)
			st, err := c.PrepareIn(tc.ctx, q, nil)
			switch {
			case tc.wantErr && err == nil:
				t.Fatal("PrepareIn succeeded")
			case !tc.wantErr && err != nil:
				t.Fatalf("PrepareIn: %v", err)
			case tc.wantBroken && !errors.Is(err, ErrBroken):
				t.Errorf("error %v does not say the connection broke", err)
			}
			if !tc.wantErr {
				if st.ID != 9 {
					t.Errorf("statement %d", st.ID)
				}
				// Cached under the statement's context, not the connection's.
				if again, err := c.PrepareIn(tc.ctx, q, nil); err != nil || again != st {
					t.Errorf("prepared again: %v, %v", again, err)
				}
				if _, ok := c.LookupStmt(q); ok != (tc.ctx == own) {
					t.Errorf("found under the connection's own context: %v", ok)
				}
			}
			c.Close()
			<-f.done
			if got := fmt.Sprint(f.seen); got != tc.wantSeen {
				t.Errorf("sent %s\nwant %s", got, tc.wantSeen)
			}
			if c.Broken != tc.wantBroken {
				t.Errorf("broken %v, want %v", c.Broken, tc.wantBroken)
			}
			if !tc.wantBroken && (!maps.Equal(c.Vars, want) || c.Schema != own.Schema || c.ConnCharsetUnknown) {
				t.Errorf("afterwards in %q with %v (character set unknown %v), want %q with %v", c.Schema, c.Vars, c.ConnCharsetUnknown, own.Schema, want)
			}
		})
	}
}

// TestConnCharsetUnknown: session tracking reports what a statement named,
// so a report of one of character_set_connection and collation_connection
// leaves the other unknown.
func TestConnCharsetUnknown(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state []byte
		want  bool
	}{
		{"SET NAMES", sessionState(sysvar("character_set_client", "latin1"), sysvar("character_set_connection", "latin1"), sysvar("character_set_results", "latin1")), true},
		{"SET collation_connection", sessionState(sysvar("collation_connection", "latin1_bin")), true},
		{"both", sessionState(sysvar("character_set_connection", "latin1"), sysvar("collation_connection", "latin1_bin")), false},
		{"neither", sessionState(sysvar("character_set_client", "latin1")), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Conn{Vars: map[string]string{}}
			c.ApplyOK(mysql.OK{Status: mysql.StatusSessionStateChanged, SessionState: tc.state})
			if c.ConnCharsetUnknown != tc.want {
				t.Errorf("ConnCharsetUnknown = %v, want %v", c.ConnCharsetUnknown, tc.want)
			}
		})
	}
}
