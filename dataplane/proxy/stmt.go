package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dbproxy/dbproxy/dataplane/backend"
	"github.com/dbproxy/dbproxy/dataplane/mysql"
	"github.com/dbproxy/dbproxy/dataplane/session"
)

// stmtID reads the statement id of a COM_STMT_* packet; 0xffffffff means
// the statement prepared last (a MariaDB convention).
func (s *clientConn) stmtID(pkt []byte) (uint32, *clientStmt, bool) {
	if len(pkt) < 5 {
		return 0, nil, false
	}
	id := binary.LittleEndian.Uint32(pkt[1:])
	if id == 0xffffffff {
		id = s.lastStmtID
	}
	st, ok := s.stmts[id]
	return id, st, ok
}

func unknownStmt(id uint32, cmd string) *mysql.SQLError {
	return mysql.NewSQLError(mysql.ERUnknownStmtHandler, "Unknown prepared statement handler (%d) given to %s", id, cmd)
}

// prepare prepares the statement on a borrowed connection to learn its
// metadata, which goes to the client under an id the node owns.
func (s *clientConn) prepare(pkt []byte) error {
	query := string(pkt[1:])
	be, serr := s.acquire(session.Class{})
	if serr != nil {
		s.countErr()
		return s.sendErr(serr)
	}
	if err := s.learnState(); err != nil {
		s.dropBackend()
		return s.lostBackend(false)
	}
	if err := be.WriteCommand(pkt); err != nil {
		be.Broken = true
		s.dropBackend()
		return s.lostBackend(false)
	}
	r := relayer{s: s, be: be}
	err := s.relayPrepare(&r, query)
	if err != nil {
		return s.relayFailed(be, &r, err)
	}
	if r.staleStmt != 0 {
		be.CloseStmt(r.staleStmt)
	}
	if err := r.flush(); err != nil {
		return err
	}
	s.afterCommand()
	return nil
}

func (s *clientConn) relayPrepare(r *relayer, query string) error {
	be := r.be
	p, err := be.ReadPacket()
	if err != nil {
		return err
	}
	if len(p) > 0 && p[0] == mysql.ErrPacket {
		r.failed = true
		s.countErr()
		s.lastStmtID = 0
		return r.writeLogical(p)
	}
	pok, err := mysql.ParsePrepareOK(p)
	if err != nil {
		return err
	}
	old := be.AddStmt(query, &backend.Stmt{ID: pok.StmtID, Params: pok.Params, Columns: pok.Columns})
	if old != nil && old.ID != pok.StmtID && !s.stmtInUse(old.ID) {
		// Closed once the response is read: the command has no reply.
		r.staleStmt = old.ID
	}
	s.nextStmtID++
	id := s.nextStmtID
	if s.stmts == nil {
		s.stmts = map[uint32]*clientStmt{}
	}
	// The server bound the statement to the connection's database and
	// parsed it under its variables (the session's, as acquire made them),
	// and keeps it so after a USE or a SET.
	s.stmts[id] = &clientStmt{query: query, ctx: be.StmtContext(), params: pok.Params, columns: pok.Columns, cls: session.Classify(query)}
	s.lastStmtID = id
	out := pok
	out.StmtID = id
	if err := r.write(mysql.AppendPrepareOK(nil, out)); err != nil {
		return err
	}
	classic := s.caps&mysql.ClientDeprecateEOF == 0
	for _, n := range []uint16{pok.Params, pok.Columns} {
		for range n {
			if err := r.copyPacket(); err != nil {
				return err
			}
		}
		if n > 0 && classic {
			if err := r.write(mysql.AppendEOF(nil, 0, be.Status)); err != nil {
				return err
			}
		}
	}
	return nil
}

// acquireStmt returns the connection to run st on: the one acquire
// returns, except that a statement prepared without a database, for a
// session that selected one since, gets a connection that never had one
// when the session holds none. A server runs such a statement without a
// database (DATABASE() is NULL), and no connection can leave a database
// once it selected one.
func (s *clientConn) acquireStmt(st *clientStmt) (*backend.Conn, *mysql.SQLError) {
	return s.acquireAs(session.Class{}, st.ctx.Schema == "" && s.schema != "")
}

// backendStmt makes sure the client's statement is prepared on be, in the
// database and under the sql_mode and character set it was prepared in,
// and returns its id there. Afterwards the connection has the session's
// variables again, and is where it was, unless that database was dropped
// meanwhile or the statement needed a database on a connection that had
// none: then be.Schema differs from the session's (see executeIn).
func (s *clientConn) backendStmt(be *backend.Conn, st *clientStmt) (*backend.Stmt, error) {
	if err := s.learnState(); err != nil {
		return nil, err
	}
	return be.PrepareIn(st.ctx, st.query, s.stmtInUse)
}

// execute rewrites the statement id (and, when the client relies on
// types bound earlier, adds them) and relays the result.
func (s *clientConn) execute(pkt []byte) error {
	id, st, ok := s.stmtID(pkt)
	if !ok {
		s.countErr()
		return s.sendErr(unknownStmt(id, "mysqld_stmt_execute"))
	}
	if len(pkt) < 10 {
		return s.sendErr(mysql.NewSQLError(mysql.ERWrongArguments, "Incorrect arguments to mysqld_stmt_execute"))
	}
	if st.longDataLost {
		// Parameter data sent with COM_STMT_SEND_LONG_DATA never reached a
		// server: executing now would bind NULL or empty values.
		st.longDataLost, st.longData = false, false
		s.countErr()
		return s.sendErr(mysql.NewSQLError(mysql.ERLostConnectionToBackend,
			"dbproxy: the long data sent for this statement was lost with its database connection; send it again"))
	}
	pkt, err := s.bindTypes(pkt, st)
	if err != nil {
		return s.sendErr(mysql.NewSQLError(mysql.ERWrongArguments, "Incorrect arguments to mysqld_stmt_execute: %v", err))
	}
	be, serr := s.acquireStmt(st)
	if serr != nil {
		s.countErr()
		return s.sendErr(serr)
	}
	bst, err := s.backendStmt(be, st)
	if err != nil {
		return s.stmtFailed(err)
	}
	binary.LittleEndian.PutUint32(pkt[1:], bst.ID)
	st.heldID = bst.ID
	cursor := pkt[5]&mysql.CursorTypeReadOnly != 0
	if err := be.WriteCommand(pkt); err != nil {
		be.Broken = true
		s.dropBackend()
		return s.lostBackend(false)
	}
	st.longData = false
	r := relayer{s: s, be: be, cls: st.cls}
	if err := s.executeIn(be, &r); err != nil {
		return s.relayFailed(be, &r, err)
	}
	if r.failed {
		s.countErr()
	}
	s.recordCounts(&r)
	s.holdAfterError(&r)
	st.cursor = cursor && r.status&mysql.StatusCursorExists != 0
	s.pinFor(st.cls, r.failed)
	s.afterCommand()
	// A prepared SET (or CALL) changes variables just as a query does.
	s.noteUntracked(st.cls)
	return nil
}

// executeIn relays the response of an execute. On a connection that is
// not in the session's database (see backendStmt) a database the server
// reports is that connection's, which its Schema records: the session's
// database did not change. (A server switches to the statement's database
// for the execute and back, and reports the one it went back to.)
func (s *clientConn) executeIn(be *backend.Conn, r *relayer) error {
	schema := s.schema
	foreign := be.Schema != schema
	err := r.run(relayExecute)
	if foreign && s.schema != schema {
		s.schema = schema
		s.gen++
	}
	return err
}

// stmtFailed reports a failure to prepare a statement on a borrowed
// connection.
func (s *clientConn) stmtFailed(err error) error {
	s.countErr()
	var se *mysql.SQLError
	if errors.As(err, &se) {
		s.afterCommand()
		return s.sendErr(se)
	}
	s.be.Broken = true
	s.dropBackend()
	return s.lostBackend(false)
}

// bindTypes makes the execute packet carry parameter types: a client that
// sent them before sends new_params_bound_flag=0 later, but the connection
// the node borrows now may never have seen them.
func (s *clientConn) bindTypes(pkt []byte, st *clientStmt) ([]byte, error) {
	if st.params == 0 {
		return pkt, nil
	}
	pos := 10 + (int(st.params)+7)/8
	if len(pkt) < pos+1 {
		return nil, fmt.Errorf("packet too short for %d parameters", st.params)
	}
	n := 2 * int(st.params)
	if pkt[pos] == 1 {
		if len(pkt) < pos+1+n {
			return nil, fmt.Errorf("packet too short for parameter types")
		}
		st.paramTypes = append(st.paramTypes[:0], pkt[pos+1:pos+1+n]...)
		return pkt, nil
	}
	if st.paramTypes == nil {
		return pkt, nil
	}
	out := make([]byte, 0, len(pkt)+n)
	out = append(out, pkt[:pos]...)
	out = append(out, 1)
	out = append(out, st.paramTypes...)
	return append(out, pkt[pos+1:]...), nil
}

// sendLongData forwards a parameter chunk to the connection the session
// now holds until the statement executes. The command has no response.
func (s *clientConn) sendLongData(pkt []byte) error {
	_, st, ok := s.stmtID(pkt)
	if !ok || len(pkt) < 7 {
		return nil
	}
	be, serr := s.acquireStmt(st)
	if serr != nil {
		// No response exists for this command; the execute reports it.
		st.longDataLost = true
		return nil
	}
	bst, err := s.backendStmt(be, st)
	if err != nil {
		st.longDataLost = true
		if be.Broken {
			s.dropBackend()
		} else {
			s.afterCommand()
		}
		return nil
	}
	binary.LittleEndian.PutUint32(pkt[1:], bst.ID)
	st.heldID = bst.ID
	if err := be.WriteCommand(pkt); err != nil {
		be.Broken = true
		s.dropBackend()
		st.longDataLost = true
		return nil
	}
	st.longData = true
	return nil
}

// closeStmt forgets a client statement. The backend statement stays cached
// on its connections for other clients; an open cursor is closed.
func (s *clientConn) closeStmt(pkt []byte) error {
	id, st, ok := s.stmtID(pkt)
	if !ok {
		return nil
	}
	delete(s.stmts, id)
	if (st.cursor || st.longData) && s.be != nil {
		if err := s.resetBackendStmt(st.heldID); err != nil {
			s.be.Broken = true
			s.dropBackend()
			return nil
		}
		s.afterCommand()
	}
	return nil
}

func (s *clientConn) resetBackendStmt(id uint32) error {
	b := []byte{mysql.ComStmtReset, byte(id), byte(id >> 8), byte(id >> 16), byte(id >> 24)}
	if err := s.be.WriteCommand(b); err != nil {
		return err
	}
	p, err := s.be.ReadPacket()
	if err != nil {
		return err
	}
	if len(p) > 0 && p[0] == mysql.ErrPacket {
		return nil
	}
	return nil
}

// resetStmt resets long data and cursors of a statement.
func (s *clientConn) resetStmt(pkt []byte) error {
	id, st, ok := s.stmtID(pkt)
	if !ok {
		s.countErr()
		return s.sendErr(unknownStmt(id, "mysqld_stmt_reset"))
	}
	_ = id
	if (st.cursor || st.longData) && s.be != nil {
		if err := s.resetBackendStmt(st.heldID); err != nil {
			s.be.Broken = true
			s.dropBackend()
			return s.lostBackend(false)
		}
	}
	st.cursor, st.longData = false, false
	s.afterCommand()
	return s.sendOK(mysql.OK{Status: s.status()})
}

// fetch reads rows from an open cursor on the held connection.
func (s *clientConn) fetch(pkt []byte) error {
	id, st, ok := s.stmtID(pkt)
	if !ok || !st.cursor || s.be == nil {
		s.countErr()
		return s.sendErr(mysql.NewSQLError(mysql.ERUnknownStmtHandler, "Unknown prepared statement handler or no open cursor (%d) given to mysqld_stmt_fetch", id))
	}
	binary.LittleEndian.PutUint32(pkt[1:], st.heldID)
	if err := s.be.WriteCommand(pkt); err != nil {
		s.be.Broken = true
		s.dropBackend()
		return s.lostBackend(false)
	}
	be := s.be
	r := relayer{s: s, be: be}
	if err := r.run(relayFetch); err != nil {
		return s.relayFailed(be, &r, err)
	}
	if r.failed || r.status&mysql.StatusLastRowSent != 0 || r.status&mysql.StatusCursorExists == 0 {
		st.cursor = false
	}
	s.afterCommand()
	return nil
}

// stmtInUse reports whether a backend statement on the held connection has
// an open cursor or pending long data of this session.
func (s *clientConn) stmtInUse(id uint32) bool {
	for _, st := range s.stmts {
		if (st.cursor || st.longData) && st.heldID == id {
			return true
		}
	}
	return false
}
