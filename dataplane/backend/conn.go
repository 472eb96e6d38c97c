// Package backend holds the data plane's side towards database servers: a
// logged-in connection with the session state the node knows it carries,
// the targets (pool plus health monitor) and the routing of endpoints to
// targets.
package backend

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dbproxy/dbproxy/dataplane/mysql"
)

// BaseCaps are the capabilities every backend connection asks for. Result
// sets always end in an OK packet (CLIENT_DEPRECATE_EOF) so that their
// session state changes are visible; the node translates for clients that
// want classic EOF packets.
const BaseCaps = mysql.ClientLongPassword | mysql.ClientLongFlag | mysql.ClientProtocol41 |
	mysql.ClientTransactions | mysql.ClientSecureConnection | mysql.ClientMultiStatements |
	mysql.ClientMultiResults | mysql.ClientPSMultiResults | mysql.ClientPluginAuth |
	mysql.ClientPluginAuthLenencClientData | mysql.ClientSessionTrack | mysql.ClientDeprecateEOF |
	mysql.ClientLocalFiles

// FlavorCaps are client capabilities that change what the server does on a
// connection for its whole life; connections are pooled separately by them.
const FlavorCaps = mysql.ClientFoundRows | mysql.ClientIgnoreSpace

// Key selects connections in a target's pool.
type Key struct {
	User   string
	Flavor uint32
	// NoSchema selects connections with no current database: MySQL cannot
	// leave a database once one is selected, so clients without one get
	// connections that never had one.
	NoSchema bool
}

// Stmt is a statement prepared on one backend connection.
type Stmt struct {
	ID      uint32
	Params  uint16
	Columns uint16
	// ctx is what the server bound the statement to when it was prepared.
	ctx StmtContext
}

// StmtContext is what a prepared statement depends on besides its text:
// the server binds it to the database current at its prepare and parses
// it once, under the sql_mode (ANSI_QUOTES, PIPES_AS_CONCAT,
// NO_BACKSLASH_ESCAPES, ...) and the character set and collation of that
// moment (the text arrives in character_set_client, its literals take
// collation_connection). A later change of any of them leaves the
// statement as it was parsed.
type StmtContext struct {
	Schema, SQLMode, Charset, Collation string
}

// ParseVarNames are the session variables a statement is parsed under:
// those of StmtContext and character_set_connection, which follows
// collation_connection.
func ParseVarNames() []string {
	return []string{"sql_mode", "character_set_client", "character_set_connection", "collation_connection"}
}

// parseVars are the session variables a statement is parsed under, with
// their values in x; collation_connection comes last since setting it also
// sets character_set_connection.
func (x StmtContext) parseVars() [3][2]string {
	return [3][2]string{{"sql_mode", x.SQLMode}, {"character_set_client", x.Charset}, {"collation_connection", x.Collation}}
}

// Conn is one logged-in connection to a database server together with the
// session state the node knows it carries.
type Conn struct {
	*mysql.Conn
	Info   mysql.ServerInfo
	Key    Key
	Target *Target
	// Vars are the session variables as last set or reported by session
	// tracking; Schema the current database.
	Vars   map[string]string
	Schema string
	// MultiStatements is the state of COM_SET_OPTION.
	MultiStatements bool
	// LastInsertID is what LAST_INSERT_ID() returns on this connection.
	LastInsertID uint64
	// Stmts are the statements prepared here, by query text.
	Stmts map[string][]*Stmt
	// nstmts counts the statements in Stmts.
	nstmts int
	// Scratch is a small buffer for packets consumed at once (terminals).
	Scratch []byte
	// Status are the server status flags of the last OK/EOF.
	Status uint16
	// Tracking is true when session tracking is on for this connection.
	Tracking bool
	// ConnCharsetUnknown is set when session tracking reported one of
	// character_set_connection and collation_connection without the
	// other: the server changes both together (SET NAMES ... COLLATE, a
	// SET of either) but reports only what the statement named, so the
	// other's value in Vars is out of date until LearnConnCharset.
	ConnCharsetUnknown bool
	// Broken marks a connection whose protocol state is unknown.
	Broken bool
	// Dirty marks a connection that carried state the node cannot undo by
	// SET statements (user variables, temporary tables, locks): it is reset
	// before reuse.
	Dirty bool
	// VarsFP fingerprints Vars as the client session that last synced the
	// connection computed it (0: unknown).
	VarsFP uint64
	// SyncedWith and SyncedGen identify the client session state the
	// connection was last brought in line with (a cheap check that skips
	// the comparison).
	SyncedWith uint64
	SyncedGen  uint64
	// LastClient is the client session that last used the connection and
	// Uses counts borrows, so a client can reclaim it for FOUND_ROWS().
	LastClient uint64
	Uses       uint64
}

// ErrBroken is wrapped when a backend connection failed mid-exchange.
var ErrBroken = errors.New("backend connection broken")

// pingTimeout bounds a validation ping without a deadline of its own.
const pingTimeout = 5 * time.Second

// maxStmtsPerConn bounds the statements cached per backend connection.
const maxStmtsPerConn = 1024

// Close closes the connection.
func (c *Conn) Close() error { return c.Conn.Close() }

// Exec runs a statement that returns no rows (a SET, say) and returns its
// OK; an ERR comes back as *mysql.SQLError. Session tracking is applied.
func (c *Conn) Exec(sql string) (mysql.OK, error) {
	if err := c.WriteCommand(append([]byte{mysql.ComQuery}, sql...)); err != nil {
		c.Broken = true
		return mysql.OK{}, fmt.Errorf("%w: write: %v", ErrBroken, err)
	}
	return c.readOK()
}

// readOK reads a single OK or ERR packet (draining any result sets a
// multi-statement produced).
func (c *Conn) readOK() (mysql.OK, error) {
	for {
		pkt, err := c.ReadPacket()
		if err != nil {
			c.Broken = true
			return mysql.OK{}, fmt.Errorf("%w: read: %v", ErrBroken, err)
		}
		switch {
		case len(pkt) > 0 && pkt[0] == mysql.OKPacket:
			ok, err := mysql.ParseOK(pkt, c.Info.Caps)
			if err != nil {
				c.Broken = true
				return ok, err
			}
			c.ApplyOK(ok)
			if ok.Status&mysql.StatusMoreResultsExists != 0 {
				continue
			}
			return ok, nil
		case len(pkt) > 0 && pkt[0] == mysql.ErrPacket:
			return mysql.OK{}, errPacket(pkt)
		default:
			// A result set: skip it.
			if _, err := c.skipResultSet(pkt); err != nil {
				return mysql.OK{}, err
			}
			if c.Status&mysql.StatusMoreResultsExists == 0 {
				return mysql.OK{Status: c.Status}, nil
			}
		}
	}
}

// request sends a command and reads the first packet of its response; an
// ERR packet comes back as *mysql.SQLError, a failed exchange as ErrBroken.
func (c *Conn) request(cmd []byte) ([]byte, error) {
	if err := c.WriteCommand(cmd); err != nil {
		c.Broken = true
		return nil, fmt.Errorf("%w: write: %v", ErrBroken, err)
	}
	pkt, err := c.ReadPacket()
	if err != nil {
		c.Broken = true
		return nil, fmt.Errorf("%w: read: %v", ErrBroken, err)
	}
	if len(pkt) > 0 && pkt[0] == mysql.ErrPacket {
		return nil, errPacket(pkt)
	}
	return pkt, nil
}

// errPacket turns an ERR packet into a *mysql.SQLError.
func errPacket(pkt []byte) error {
	e, err := mysql.ParseErr(pkt)
	if err != nil {
		return err
	}
	return e
}

// Query runs a statement and returns the rows of its first result set as
// strings (NULL as nil). For the node's own small queries only.
func (c *Conn) Query(sql string) ([][]*string, error) {
	pkt, err := c.request(append([]byte{mysql.ComQuery}, sql...))
	if err != nil {
		return nil, err
	}
	if len(pkt) > 0 && pkt[0] == mysql.OKPacket {
		ok, err := mysql.ParseOK(pkt, c.Info.Caps)
		if err != nil {
			return nil, err
		}
		c.ApplyOK(ok)
		return nil, nil
	}
	return c.skipResultSet(pkt)
}

// skipResultSet reads a text result set whose column count packet is pkt
// and returns its rows.
func (c *Conn) skipResultSet(pkt []byte) ([][]*string, error) {
	n, _, _, err := mysql.ReadLenEncInt(pkt)
	if err != nil {
		c.Broken = true
		return nil, err
	}
	for range n {
		if _, err := c.ReadPacket(); err != nil {
			c.Broken = true
			return nil, fmt.Errorf("%w: read column: %v", ErrBroken, err)
		}
	}
	var rows [][]*string
	for {
		p, err := c.ReadPacket()
		if err != nil {
			c.Broken = true
			return nil, fmt.Errorf("%w: read row: %v", ErrBroken, err)
		}
		if len(p) > 0 && p[0] == mysql.EOFPacket && len(p) < 0xffffff {
			ok, err := mysql.ParseOK(p, c.Info.Caps)
			if err != nil {
				c.Broken = true
				return nil, err
			}
			c.ApplyOK(ok)
			return rows, nil
		}
		if len(p) > 0 && p[0] == mysql.ErrPacket {
			return nil, errPacket(p)
		}
		row := make([]*string, 0, n)
		for pos := 0; pos < len(p); {
			s, m, err := mysql.ReadLenEncString(p[pos:])
			if err != nil {
				c.Broken = true
				return nil, err
			}
			if s == nil && p[pos] == 0xfb {
				row = append(row, nil)
			} else {
				v := string(s)
				row = append(row, &v)
			}
			pos += m
		}
		rows = append(rows, row)
	}
}

// StateChange summarises the session state block of one OK packet.
type StateChange struct {
	Vars   map[string]string
	Schema *string
	// Changed is the server's "session state changed" flag; Unmovable is
	// set when it came without any variable or schema to explain it.
	Changed   bool
	Unmovable bool
}

// ApplyOK records status, last insert id and tracked session state of an
// OK packet on the connection and returns what changed.
func (c *Conn) ApplyOK(ok mysql.OK) StateChange {
	c.Status = ok.Status
	if ok.LastInsertID != 0 {
		c.LastInsertID = ok.LastInsertID
	}
	var sc StateChange
	if ok.SessionState == nil {
		return sc
	}
	stateFlag := false
	_ = mysql.ParseSessionState(ok.SessionState, func(ch mysql.SessionChange) {
		switch ch.Type {
		case mysql.SessionTrackSystemVariables:
			if sc.Vars == nil {
				sc.Vars = map[string]string{}
			}
			sc.Vars[ch.Name] = ch.Value
			c.Vars[ch.Name] = ch.Value
		case mysql.SessionTrackSchema:
			s := ch.Name
			sc.Schema = &s
			c.Schema = s
		case mysql.SessionTrackStateChange:
			stateFlag = ch.Value == "1"
		}
	})
	sc.Changed = stateFlag
	sc.Unmovable = stateFlag && sc.Vars == nil && sc.Schema == nil
	if sc.Vars != nil {
		_, cs := sc.Vars["character_set_connection"]
		_, coll := sc.Vars["collation_connection"]
		if cs != coll {
			c.ConnCharsetUnknown = true
		}
	}
	return sc
}

// LearnConnCharset asks the server for character_set_connection and
// collation_connection after session tracking reported only one of them
// (see ConnCharsetUnknown), records both in Vars and returns them.
func (c *Conn) LearnConnCharset() (charset, collation string, err error) {
	rows, err := c.Query("SELECT @@session.character_set_connection, @@session.collation_connection")
	if err != nil {
		return "", "", fmt.Errorf("ask the connection for its character set: %w", err)
	}
	if len(rows) != 1 || len(rows[0]) != 2 || rows[0][0] == nil || rows[0][1] == nil {
		return "", "", fmt.Errorf("ask the connection for its character set: %d rows", len(rows))
	}
	charset, collation = *rows[0][0], *rows[0][1]
	c.Vars["character_set_connection"], c.Vars["collation_connection"] = charset, collation
	c.ConnCharsetUnknown = false
	return charset, collation, nil
}

// InitDB changes the current database.
func (c *Conn) InitDB(db string) error {
	if err := c.WriteCommand(append([]byte{mysql.ComInitDB}, db...)); err != nil {
		c.Broken = true
		return fmt.Errorf("%w: write: %v", ErrBroken, err)
	}
	if _, err := c.readOK(); err != nil {
		return err
	}
	c.Schema = db
	return nil
}

// SetMultiStatements switches CLIENT_MULTI_STATEMENTS with COM_SET_OPTION.
func (c *Conn) SetMultiStatements(on bool) error {
	opt := mysql.OptionMultiStatementsOff
	if on {
		opt = mysql.OptionMultiStatementsOn
	}
	if _, err := c.request([]byte{mysql.ComSetOption, byte(opt), byte(opt >> 8)}); err != nil {
		return err
	}
	c.MultiStatements = on
	return nil
}

// Ping checks the connection with COM_PING.
func (c *Conn) Ping(ctx context.Context) error {
	dl, ok := ctx.Deadline()
	if !ok {
		// A server that vanished without a reset must not hold a borrower
		// for the TCP retransmission timeout.
		dl = time.Now().Add(pingTimeout)
	}
	_ = c.NetConn().SetDeadline(dl)
	defer func() { _ = c.NetConn().SetDeadline(time.Time{}) }()
	if err := c.WriteCommand([]byte{mysql.ComPing}); err != nil {
		c.Broken = true
		return err
	}
	_, err := c.readOK()
	return err
}

// Prepare prepares query on this connection (reusing a cached statement)
// and discards the metadata.
func (c *Conn) Prepare(query string, inUse func(id uint32) bool) (*Stmt, error) {
	if st, ok := c.LookupStmt(query); ok {
		return st, nil
	}
	if c.nstmts >= maxStmtsPerConn {
		c.evictStmts(inUse)
	}
	pkt, err := c.request(append([]byte{mysql.ComStmtPrepare}, query...))
	if err != nil {
		return nil, err
	}
	pok, err := mysql.ParsePrepareOK(pkt)
	if err != nil {
		c.Broken = true
		return nil, err
	}
	for range int(pok.Params) + int(pok.Columns) {
		if _, err := c.ReadPacket(); err != nil {
			c.Broken = true
			return nil, fmt.Errorf("%w: read metadata: %v", ErrBroken, err)
		}
	}
	st := &Stmt{ID: pok.StmtID, Params: pok.Params, Columns: pok.Columns}
	c.AddStmt(query, st)
	return st, nil
}

// evictStmts closes cached statements until half the cache is free,
// sparing those inUse reports (an open cursor or pending long data).
func (c *Conn) evictStmts(inUse func(id uint32) bool) {
	for q, list := range c.Stmts {
		kept := list[:0]
		for _, st := range list {
			if inUse != nil && inUse(st.ID) {
				kept = append(kept, st)
				continue
			}
			c.CloseStmt(st.ID)
			c.nstmts--
		}
		if len(kept) == 0 {
			delete(c.Stmts, q)
		} else {
			c.Stmts[q] = kept
		}
		if c.nstmts < maxStmtsPerConn/2 {
			return
		}
	}
}

// PrepareIn makes sure query is prepared on this connection as the client
// prepared it: bound to the database of ctx ("" for none) and parsed under
// its sql_mode and character set. It returns the statement.
//
// A server binds a prepared statement to the database current at its
// COM_STMT_PREPARE: its tables resolve there and DATABASE() names it,
// whatever the session selects later. A connection that is in another
// database switches with COM_INIT_DB for the prepare and back afterwards.
// Likewise a connection whose sql_mode or character set differs from the
// statement's takes the statement's for the prepare (one SET) and its own
// back right after (another): the execute must run under the session's
// current variables, as it does on a direct connection, where strict mode,
// say, is the one in force at the execute.
//
// Schema always says where the connection is: when the way back fails
// with a server error (its database was dropped meanwhile), the
// connection stays in schema and the statement is returned all the same,
// since it runs in its own database anyway; callers compare Schema with
// what they want next. When the statement's database itself is gone the
// server's error for COM_INIT_DB comes back and nothing changed. Vars
// likewise: they are the connection's own again afterwards, and when the
// way back fails the connection is marked broken, since what it would run
// next under is not what the node believes.
//
// No connection can leave a database once it selected one, so a statement
// prepared without a database can only be prepared again on a connection
// that never had one; on any other it is prepared in the connection's
// current database.
func (c *Conn) PrepareIn(ctx StmtContext, query string, inUse func(id uint32) bool) (*Stmt, error) {
	if ctx.Schema == "" {
		ctx.Schema = c.Schema
	}
	if st, ok := c.lookupStmt(query, ctx); ok {
		return st, nil
	}
	home := c.Schema
	if ctx.Schema != home {
		if err := c.InitDB(ctx.Schema); err != nil {
			return nil, fmt.Errorf("select database %s of the statement: %w", ctx.Schema, err)
		}
	}
	st, err := c.prepareUnder(ctx, query, inUse)
	if home != "" && home != c.Schema && !c.Broken {
		if rerr := c.InitDB(home); rerr != nil && c.Broken && err == nil {
			err = fmt.Errorf("select database %s again after a prepare: %w", home, rerr)
		}
	}
	return st, err
}

// prepareUnder prepares query under the sql_mode and character set of ctx
// in the current database, and puts the connection's own back.
func (c *Conn) prepareUnder(ctx StmtContext, query string, inUse func(id uint32) bool) (*Stmt, error) {
	var to, back []string
	for _, v := range ctx.parseVars() {
		name, want := v[0], v[1]
		// As in StmtContext, a variable Vars lacks counts as "".
		have, ok := c.Vars[name]
		if have == want {
			continue
		}
		to = append(to, "`"+name+"`="+FormatValue(want))
		if ok {
			back = append(back, "`"+name+"`="+FormatValue(have))
		} else {
			back = append(back, "`"+name+"`=DEFAULT")
		}
	}
	if len(to) == 0 {
		return c.Prepare(query, inUse)
	}
	// Session tracking reports what the SETs change, and nothing without
	// it: either way Vars must say the statement's values for the prepare,
	// so that the statement is cached under its context, and the
	// connection's own afterwards, character_set_connection included.
	names := ParseVarNames()
	saved := make(map[string]string, len(names))
	for _, name := range names {
		if v, ok := c.Vars[name]; ok {
			saved[name] = v
		}
	}
	restoreVars := func() {
		for _, name := range names {
			if v, ok := saved[name]; ok {
				c.Vars[name] = v
			} else {
				delete(c.Vars, name)
			}
		}
	}
	unknown := c.ConnCharsetUnknown
	if _, err := c.Exec("SET SESSION " + strings.Join(to, ", ")); err != nil {
		// A SET that fails changes nothing.
		restoreVars()
		c.ConnCharsetUnknown = unknown
		return nil, fmt.Errorf("take the sql_mode and character set of the statement: %w", err)
	}
	for _, v := range ctx.parseVars() {
		c.Vars[v[0]] = v[1]
	}
	st, err := c.Prepare(query, inUse)
	if c.Broken {
		return nil, err
	}
	if _, rerr := c.Exec("SET SESSION " + strings.Join(back, ", ")); rerr != nil {
		// The next command would run under the statement's variables.
		c.Broken = true
		return nil, fmt.Errorf("%w: restore the sql_mode and character set after a prepare: %v", ErrBroken, rerr)
	}
	restoreVars()
	c.ConnCharsetUnknown = unknown
	return st, err
}

// StmtContext is the context of a statement prepared now.
func (c *Conn) StmtContext() StmtContext {
	return StmtContext{c.Schema, c.Vars["sql_mode"], c.Vars["character_set_client"], c.Vars["collation_connection"]}
}

// LookupStmt finds query prepared on this connection under the current
// database, sql_mode and character set.
func (c *Conn) LookupStmt(query string) (*Stmt, bool) {
	return c.lookupStmt(query, c.StmtContext())
}

func (c *Conn) lookupStmt(query string, ctx StmtContext) (*Stmt, bool) {
	list := c.Stmts[query]
	if len(list) == 0 {
		return nil, false
	}
	for _, st := range list {
		if st.ctx == ctx {
			return st, true
		}
	}
	return nil, false
}

// AddStmt records st as query prepared under the current context and
// returns the statement it replaces, if any.
func (c *Conn) AddStmt(query string, st *Stmt) (replaced *Stmt) {
	st.ctx = c.StmtContext()
	list := c.Stmts[query]
	for i, old := range list {
		if old.ctx == st.ctx {
			list[i] = st
			return old
		}
	}
	c.Stmts[query] = append(list, st)
	c.nstmts++
	return nil
}

// CloseStmt sends COM_STMT_CLOSE (no response).
func (c *Conn) CloseStmt(id uint32) {
	b := []byte{mysql.ComStmtClose, byte(id), byte(id >> 8), byte(id >> 16), byte(id >> 24)}
	if err := c.WriteCommand(b); err != nil {
		c.Broken = true
	}
}

// ResetConnection sends COM_RESET_CONNECTION and forgets the state the
// connection carried; the caller re-applies the pool's init state.
func (c *Conn) ResetConnection() error {
	if err := c.WriteCommand([]byte{mysql.ComResetConnection}); err != nil {
		c.Broken = true
		return fmt.Errorf("%w: write: %v", ErrBroken, err)
	}
	if _, err := c.readOK(); err != nil {
		c.Broken = true
		return err
	}
	c.Stmts = map[string][]*Stmt{}
	c.nstmts = 0
	c.LastInsertID = 0
	// Whether the reset restored the multi-statement option is not
	// documented: set it again.
	if err := c.SetMultiStatements(true); err != nil {
		c.Broken = true
		return err
	}
	c.Dirty = false
	c.SyncedWith, c.SyncedGen, c.VarsFP = 0, 0, 0
	return nil
}

// FormatValue renders a tracked variable value for a SET statement.
func FormatValue(v string) string {
	if v == "" {
		return "''"
	}
	if _, err := strconv.ParseFloat(v, 64); err == nil && v[0] != '+' && v != "Inf" && v != "NaN" {
		return v
	}
	b := make([]byte, 0, len(v)+2)
	b = append(b, '\'')
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '\'', '\\':
			b = append(b, '\\')
		}
		b = append(b, v[i])
	}
	return string(append(b, '\''))
}
