package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"maps"
	"net"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dbproxy/dbproxy/dataplane/backend"
	"github.com/dbproxy/dbproxy/dataplane/mysql"
	"github.com/dbproxy/dbproxy/dataplane/pool"
	"github.com/dbproxy/dbproxy/dataplane/session"
	"github.com/dbproxy/dbproxy/internal/vocab"
)

// clientReadBuffer is the read buffer each client connection keeps.
const clientReadBuffer = 512

// handshakeMaxPacket bounds packets before authentication.
const handshakeMaxPacket = 64 << 10

// errClientGone ends a session without a log line at warning level.
var errClientGone = errors.New("client connection closed")

// clientStmt is a prepared statement as the client knows it; the node
// prepares it lazily on whatever database connection it borrows.
type clientStmt struct {
	query string
	// ctx is the database ("" for none), sql_mode and character set that
	// were current at the COM_STMT_PREPARE: the server bound the statement
	// to that database and parsed it under those, and every prepare on
	// another connection must do the same, whatever the session changed
	// since.
	ctx        backend.StmtContext
	params     uint16
	columns    uint16
	paramTypes []byte
	// cursor is true while a cursor opened by COM_STMT_EXECUTE is open on
	// the held connection; longData while COM_STMT_SEND_LONG_DATA data is
	// waiting there for the next execute.
	cursor, longData bool
	// cls is the classification of the query, applied on each execute.
	cls session.Class
	// heldID is the statement's id on the held connection while a cursor
	// or long data keeps it there.
	heldID uint32
	// longDataLost is set when long data could not reach a server; the
	// next execute fails instead of binding missing values.
	longDataLost bool
}

// clientConn is one client connection.
type clientConn struct {
	ep *Endpoint
	id uint64
	c  *mysql.Conn
	// raw is the accepted TCP connection; TLS wraps it inside c. Other
	// goroutines (sweeper, Close) touch only raw.
	raw net.Conn
	log hclog.Logger

	user      string
	caps      uint32
	tls       bool
	collation byte
	role      string

	// Desired session state, restored on every borrowed connection.
	stateReady   bool
	vars         map[string]string
	schema       string
	multiStmt    bool
	lastInsertID uint64
	gen          uint64
	// varsFP fingerprints vars (see fingerprint); 0 before initState.
	varsFP uint64
	// varsOwned is false while vars is the target's shared baseline.
	varsOwned bool
	// schemaUnknown is set when a USE ran on the held connection without
	// session tracking: the OK did not say where it went, so schema and
	// the connection's Schema may be out of date until learnState asks.
	// parseVarsUnknown is the same for a SET and the variables a prepared
	// statement is parsed under (sql_mode, character set).
	schemaUnknown, parseVarsUnknown bool

	// be is the database connection held between commands (transaction,
	// pin, open cursor, pending long data); nil when none is held.
	be   *backend.Conn
	pins []session.Reason
	// pinnedOn is the target whose pinned-connection count includes this
	// session.
	pinnedOn *backend.Target
	inTx     bool
	// prev remembers the connection of the previous command so that
	// FOUND_ROWS()/ROW_COUNT() can run where that command ran.
	prev      *backend.Conn
	prevKey   backend.Key
	prevUses  uint64
	reclaimed bool
	// lastOK and lastTracking describe the last relayed command: it
	// succeeded; its connection had session tracking.
	lastOK, lastTracking bool
	rowCount             int64
	foundRows            int64

	stmts      map[uint32]*clientStmt
	nextStmtID uint32
	lastStmtID uint32

	queries, errs prometheus.Counter
	latency       prometheus.Observer

	// waiting is true while the connection waits for a command, since
	// idleSince (unix nanoseconds); the endpoint's sweeper reads both.
	waiting   atomic.Bool
	idleSince atomic.Int64
	// expireMu orders the sweeper's deadline with the end of a wait;
	// expired is true while a deadline set by the sweeper is in place.
	expireMu sync.Mutex
	expired  bool
}

// endWait marks the end of waiting for a command and lifts a deadline the
// sweeper set just as the command arrived.
func (s *clientConn) endWait() {
	s.expireMu.Lock()
	s.waiting.Store(false)
	if s.expired {
		s.expired = false
		_ = s.raw.SetReadDeadline(time.Time{})
	}
	s.expireMu.Unlock()
}

// expire is the sweeper's side: it interrupts a client still waiting.
func (s *clientConn) expire(now time.Time) {
	s.expireMu.Lock()
	if s.waiting.Load() {
		s.expired = true
		_ = s.raw.SetReadDeadline(now)
	}
	s.expireMu.Unlock()
}

func newSession(e *Endpoint, nc net.Conn) *clientConn {
	id := e.opts.IDs.Add(1)
	c := mysql.NewConn(nc, e.opts.Buffers)
	// Until the client has logged in it may send only small packets.
	c.MaxPacket = handshakeMaxPacket
	c.UseOwnReader(clientReadBuffer)
	return &clientConn{ep: e, id: id, c: c, raw: nc, role: e.opts.Endpoint.TargetRole}
}

// logger returns the connection's logger, made on first use so that idle
// connections do not carry one.
func (s *clientConn) logger() hclog.Logger {
	if s.log == nil {
		args := []any{"conn", s.id, "remote", s.raw.RemoteAddr().String()}
		if s.user != "" {
			args = append(args, "user", s.user)
		}
		s.log = s.ep.log.With(args...)
	}
	return s.log
}

// serve runs the connection until the client leaves or fails.
func (s *clientConn) serve() {
	defer func() {
		if r := recover(); r != nil {
			if s.be != nil {
				// It may be halfway through a response.
				s.be.Broken = true
			}
			s.logger().Error("panic serving client; closing its connection", "panic", r, "stack", string(debug.Stack()))
		}
		s.close()
	}()
	e := s.ep
	_ = s.c.NetConn().SetDeadline(time.Now().Add(e.opts.HandshakeTimeout))
	res, err := mysql.ServerHandshake(s.c, uint32(s.id), e.opts.Server.WithVersion(e.opts.Version()))
	if err != nil {
		reason := "handshake"
		switch {
		case errors.Is(err, mysql.ErrAccessDenied):
			reason = "auth"
		case errors.Is(err, os.ErrDeadlineExceeded):
			reason = "timeout"
		}
		e.setupFailure(reason)
		if reason != "handshake" || !isEOF(err) {
			s.logger().Debug("client login failed", "reason", reason, "error", err)
		}
		return
	}
	_ = s.c.NetConn().SetDeadline(time.Time{})
	s.c.MaxPacket = e.opts.MaxPacket
	s.user, s.caps, s.tls, s.collation = res.User, res.Caps, res.TLS, res.Collation
	s.schema = res.DB
	s.multiStmt = res.Caps&mysql.ClientMultiStatements != 0
	s.log = nil
	if em := e.m; em != nil {
		i := 0
		if s.tls {
			i = 1
		}
		em.total[i].Inc()
		em.open[i].Inc()
		defer em.open[i].Dec()
		s.queries, s.errs, s.latency = em.queries, em.errs, em.latency
	}
	if e.opts.Proxy.DebugLogging {
		s.logger().Debug("client logged in", "tls", s.tls, "db", s.schema)
	}
	s.c.ReleaseBuffers()
	// The endpoint's sweeper enforces idle_client_timeout (see sweep): no
	// timer is touched per command.
	s.idleSince.Store(time.Now().UnixNano())
	for {
		s.c.Seq = 0
		s.waiting.Store(true)
		pkt, err := s.c.ReadPacket()
		s.endWait()
		if err != nil {
			s.readFailed(err)
			return
		}
		if len(pkt) == 0 {
			_ = s.sendErr(mysql.NewSQLError(mysql.ERNetReadError, "Empty command packet")) // closing anyway
			return
		}
		start := time.Now()
		err = s.dispatch(pkt)
		if s.latency != nil && pkt[0] != mysql.ComQuit {
			s.latency.Observe(time.Since(start).Seconds())
			s.queries.Inc()
		}
		if err != nil {
			if !errors.Is(err, errClientGone) && !isEOF(err) {
				s.logger().Debug("closing client connection", "error", err)
			}
			return
		}
		s.c.ReleaseBuffers()
		s.idleSince.Store(time.Now().UnixNano())
	}
}

// connectionBroke reports an error of a connection the peer closed or
// reset, as opposed to a timeout or a protocol error.
func connectionBroke(err error) bool {
	return isEOF(err) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}

// readFailed reports why reading a command failed, when the client can
// still hear it.
func (s *clientConn) readFailed(err error) {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		_ = s.c.NetConn().SetWriteDeadline(time.Now().Add(time.Second))
		s.c.Seq = 0
		_ = s.sendErr(mysql.NewSQLError(mysql.ERClientInteractionTimeout,
			"The client was disconnected by the server because of inactivity (idle_client_timeout %s)", s.ep.opts.Proxy.IdleClientTimeout.D()))
	case errors.Is(err, mysql.ErrPacketTooLarge):
		_ = s.sendErr(mysql.NewSQLError(mysql.ERNetPacketTooLarge, "Got a packet bigger than 'max_allowed_packet' bytes"))
	case errors.Is(err, mysql.ErrOutOfOrder):
		_ = s.sendErr(mysql.NewSQLError(mysql.ERNetPacketsOutOfOrder, "Got packets out of order"))
	case isEOF(err):
	default:
		s.logger().Debug("read from client failed", "error", err)
	}
}

// close returns or closes the held database connection.
func (s *clientConn) close() {
	if s.be != nil {
		if len(s.pins) > 0 || s.inTx || s.holdsServerState() {
			s.be.Dirty = true
		}
		s.releaseBackend(true)
	}
	s.setPinnedGauge(false)
	s.setTxGauge(false)
	s.c.Close()
}

// holdsServerState reports open cursors or pending long data.
func (s *clientConn) holdsServerState() bool {
	for _, st := range s.stmts {
		if st.cursor || st.longData {
			return true
		}
	}
	return false
}

func (s *clientConn) sendErr(e *mysql.SQLError) error {
	if err := s.c.WritePacket(mysql.AppendErr(nil, e)); err != nil {
		return fmt.Errorf("%w: %v", errClientGone, err)
	}
	if err := s.c.Flush(); err != nil {
		return fmt.Errorf("%w: %v", errClientGone, err)
	}
	return nil
}

func (s *clientConn) sendOK(ok mysql.OK) error {
	if err := s.c.WritePacket(mysql.AppendOK(nil, mysql.OKPacket, ok, s.caps)); err != nil {
		return fmt.Errorf("%w: %v", errClientGone, err)
	}
	if err := s.c.Flush(); err != nil {
		return fmt.Errorf("%w: %v", errClientGone, err)
	}
	return nil
}

// status is the server status the client should see when the node answers
// on its own.
func (s *clientConn) status() uint16 {
	st := uint16(0)
	if s.vars == nil || s.vars["autocommit"] != "OFF" {
		st |= mysql.StatusAutocommit
	}
	if s.inTx {
		st |= mysql.StatusInTrans
	}
	return st
}

func (s *clientConn) dispatch(pkt []byte) error {
	switch pkt[0] {
	case mysql.ComQuit:
		return errClientGone
	case mysql.ComPing:
		return s.sendOK(mysql.OK{Status: s.status()})
	case mysql.ComQuery:
		return s.query(pkt)
	case mysql.ComInitDB:
		return s.initDB(pkt)
	case mysql.ComFieldList:
		return s.forward(pkt, session.Class{}, relayColumns)
	case mysql.ComStatistics:
		return s.forward(pkt, session.Class{}, relayOnePacket)
	case mysql.ComStmtPrepare:
		return s.prepare(pkt)
	case mysql.ComStmtExecute:
		return s.execute(pkt)
	case mysql.ComStmtSendLongData:
		return s.sendLongData(pkt)
	case mysql.ComStmtClose:
		return s.closeStmt(pkt)
	case mysql.ComStmtReset:
		return s.resetStmt(pkt)
	case mysql.ComStmtFetch:
		return s.fetch(pkt)
	case mysql.ComSetOption:
		return s.setOption(pkt)
	case mysql.ComResetConnection:
		s.resetSession()
		return s.sendOK(mysql.OK{Status: mysql.StatusAutocommit})
	case mysql.ComChangeUser:
		return s.changeUser(pkt)
	default:
		return s.sendErr(mysql.NewSQLError(mysql.ERUnknownComError, "Unknown command 0x%02x (not supported by dbproxy)", pkt[0]))
	}
}

// initState builds the desired session state on first use: the target's
// baseline plus the client's character set.
func (s *clientConn) initState(t *backend.Target) {
	// The target's baseline is shared until the session changes a
	// variable (see setVar): an idle client then carries no map of its own.
	s.vars, s.varsOwned = t.Baseline(), false
	if s.vars == nil {
		s.vars, s.varsOwned = map[string]string{}, true
	}
	if cs, coll, ok := t.Collation(s.collation); ok {
		s.setVar("character_set_client", cs)
		s.setVar("character_set_connection", cs)
		s.setVar("character_set_results", cs)
		s.setVar("collation_connection", coll)
	}
	s.stateReady = true
	s.varsFP = s.fingerprint(s.vars)
	s.gen++
}

// setVar records a session variable, copying the shared baseline first.
func (s *clientConn) setVar(name, value string) {
	if v, ok := s.vars[name]; ok && v == value {
		return
	}
	if !s.varsOwned {
		s.vars, s.varsOwned = maps.Clone(s.vars), true
	}
	s.vars[name] = value
}

// acquire returns the database connection for the next command: the held
// one, or one borrowed and brought in line with the session's state.
func (s *clientConn) acquire(cls session.Class) (*backend.Conn, *mysql.SQLError) {
	return s.acquireAs(cls, false)
}

// acquireAs is acquire; with noSchema a borrowed connection is one that
// never selected a database, and it is left without one instead of being
// moved to the session's (see acquireStmt).
func (s *clientConn) acquireAs(cls session.Class, noSchema bool) (*backend.Conn, *mysql.SQLError) {
	if s.be != nil {
		if s.schema != "" && s.be.Schema != s.schema {
			// A statement prepared in another database may have left the
			// connection there (see backendStmt).
			if err := s.be.InitDB(s.schema); err != nil {
				var se *mysql.SQLError
				if errors.As(err, &se) {
					return nil, se
				}
				s.be.Broken = true
				s.dropBackend()
				return nil, mysql.NewSQLError(mysql.ERLostConnectionToBackend, "dbproxy: lost the database connection while restoring session state")
			}
		}
		return s.be, nil
	}
	schema := s.schema
	if noSchema {
		schema = ""
	}
	key := backend.Key{User: s.user, Flavor: s.caps & backend.FlavorCaps, NoSchema: schema == ""}
	var be *backend.Conn
	s.reclaimed = false
	if cls.UsesPrevious && s.prev != nil {
		// Fields of prev are read only under the pool's lock, while it is idle.
		prev, uses, id := s.prev, s.prevUses, s.id
		if prev.Target.Pool.TakeIdle(s.prevKey, prev, func(c *backend.Conn) bool { return c.Uses == uses && c.LastClient == id }) {
			be = prev
			s.reclaimed = true
			// It is in the state this session left it in, unless the
			// session changed since (COM_SET_OPTION, say).
			if err := s.sync(be); err != nil {
				be.Broken = true
				be.Target.Put(be)
				return nil, mysql.NewSQLError(mysql.ERLostConnectionToBackend, "dbproxy: lost the database connection while restoring session state")
			}
			s.be = be
			return be, nil
		}
	}
	if t := s.ep.opts.Router.TryPick(s.role); t != nil {
		// Fast path: an idle connection, no waiting, no timer.
		be, _ = t.TryGet(key)
	}
	if be == nil {
		var serr *mysql.SQLError
		if be, serr = s.borrow(key); serr != nil {
			return nil, serr
		}
	}
	if !s.stateReady {
		s.initState(be.Target)
	}
	if err := s.syncIn(be, schema); err != nil {
		var se *mysql.SQLError
		if errors.As(err, &se) {
			be.Dirty = true
			be.Target.Put(be)
			return nil, se
		}
		be.Broken = true
		be.Target.Put(be)
		s.logger().Warn("restoring session state on a database connection failed", "error", err)
		return nil, mysql.NewSQLError(mysql.ERLostConnectionToBackend, "dbproxy: lost the database connection while restoring session state")
	}
	s.be = be
	return be, nil
}

// ignoredVars are tracked but not restored: they follow the schema, belong
// to the node, or are consumed by the next statement.
func ignoredVar(name string) bool {
	switch name {
	case "character_set_database", "collation_database", "last_insert_id", "insert_id", "last_gtid",
		"session_track_system_variables", "session_track_schema", "session_track_state_change",
		"session_track_transaction_info", "pseudo_thread_id", "timestamp", "rand_seed1", "rand_seed2":
		return true
	}
	return false
}

// charsetVars are set first, in this order, because setting one resets
// the next.
var charsetVarOrder = []string{"character_set_client", "character_set_results", "character_set_connection", "collation_connection"}

// sync brings a borrowed connection in line with the session's state.
func (s *clientConn) sync(be *backend.Conn) error {
	return s.syncIn(be, s.schema)
}

// syncIn is sync with schema in place of the session's database; a
// connection left in another than the session's is not marked as in line
// with it, so that the next sync looks again.
func (s *clientConn) syncIn(be *backend.Conn, schema string) error {
	if be.SyncedWith == s.id && be.SyncedGen == s.gen && schema == s.schema {
		return nil
	}
	synced := func() {
		be.SyncedWith, be.SyncedGen = s.id, s.gen
		if schema != s.schema {
			be.SyncedWith = 0
		}
	}
	if s.varsFP != 0 && be.VarsFP == s.varsFP && (schema == be.Schema || schema == "") &&
		be.LastInsertID == s.lastInsertID && be.MultiStatements == s.multiStmt {
		// Same restorable variables (by fingerprint): nothing to send.
		synced()
		return nil
	}
	if schema != be.Schema && schema != "" {
		if err := be.InitDB(schema); err != nil {
			return err
		}
	}
	var sets []string
	add := func(name string) {
		want, wok := s.vars[name]
		have, hok := be.Vars[name]
		if wok == hok && want == have {
			return
		}
		if !wok {
			sets = append(sets, "`"+name+"`=DEFAULT")
			return
		}
		v := backend.FormatValue(want)
		if want == "" && strings.HasPrefix(name, "character_set_") {
			v = "NULL"
		}
		sets = append(sets, "`"+name+"`="+v)
	}
	for _, name := range charsetVarOrder {
		add(name)
	}
	var names []string
	for name := range s.vars {
		names = append(names, name)
	}
	for name := range be.Vars {
		if _, ok := s.vars[name]; !ok {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		if ignoredVar(name) || s.ep.readOnlyVar(name) || slices.Contains(charsetVarOrder, name) {
			continue
		}
		add(name)
	}
	if s.lastInsertID != be.LastInsertID {
		sets = append(sets, fmt.Sprintf("last_insert_id=%d", s.lastInsertID))
	}
	if len(sets) > 0 {
		if _, err := be.Exec("SET SESSION " + strings.Join(sets, ", ")); err != nil {
			var se *mysql.SQLError
			if errors.As(err, &se) && se.Num == mysql.ERIncorrectGlobalLocalVar {
				// A read-only variable reported by session tracking: stop
				// restoring it and try again.
				if name := quotedName(se.Message); name != "" && !s.ep.readOnlyVar(name) {
					s.ep.addReadOnlyVar(name)
					be.SyncedWith = 0
					return s.syncIn(be, schema)
				}
			}
			return err
		}
		be.Vars = maps.Clone(s.vars)
		// A SET of character_set_connection resets collation_connection,
		// but with both maps consistent it names the collation too when
		// that differs: the connection now is the session's exactly.
		be.ConnCharsetUnknown = false
		be.LastInsertID = s.lastInsertID
	}
	if be.MultiStatements != s.multiStmt {
		if err := be.SetMultiStatements(s.multiStmt); err != nil {
			return err
		}
	}
	synced()
	be.VarsFP = s.varsFP
	return nil
}

// fingerprint hashes the restorable variables of m, independently of
// their order; never 0.
func (s *clientConn) fingerprint(m map[string]string) uint64 {
	var sum uint64
	for k, v := range m {
		if ignoredVar(k) || s.ep.readOnlyVar(k) {
			continue
		}
		var h maphash.Hash
		h.SetSeed(s.ep.seed)
		h.WriteString(k)
		h.WriteByte(0)
		h.WriteString(v)
		sum += h.Sum64()
	}
	return sum | 1
}

// learnConnCharset completes what session tracking reported about the
// connection's character set (see backend.Conn.ConnCharsetUnknown) before
// the connection goes back to the pool or prepares a statement: without
// it the session would restore, and a statement be parsed under, a
// collation the client replaced. A server error leaves the session as the
// node believed it; a failed exchange marks the connection broken.
func (s *clientConn) learnConnCharset() {
	cs, coll, err := s.be.LearnConnCharset()
	if err != nil {
		s.logger().Debug("reading the connection's character set failed", "error", err)
		return
	}
	if s.vars["character_set_connection"] == cs && s.vars["collation_connection"] == coll {
		return
	}
	s.setVar("character_set_connection", cs)
	s.setVar("collation_connection", coll)
	s.varsFP = s.fingerprint(s.vars)
	s.gen++
	// The connection was in line with the session, and both took the
	// same change.
	s.be.VarsFP = s.varsFP
}

// mustHold reports whether the session keeps its database connection
// after the current command.
func (s *clientConn) mustHold() bool {
	return len(s.pins) > 0 || s.inTx || s.holdsServerState()
}

// releaseBackend gives the held connection back to its pool.
func (s *clientConn) releaseBackend(final bool) {
	be := s.be
	s.be = nil
	be.Key.NoSchema = be.Schema == ""
	be.LastClient = s.id
	be.Uses++
	if !final && !be.Dirty && !be.Broken {
		s.prev, s.prevKey, s.prevUses = be, be.Key, be.Uses
	} else {
		s.prev = nil
	}
	be.Target.Put(be)
}

// afterCommand releases the connection at a transaction boundary.
func (s *clientConn) afterCommand() {
	if s.be == nil {
		return
	}
	if s.be.ConnCharsetUnknown && !s.be.Broken {
		s.learnConnCharset()
	}
	if s.be.Broken {
		s.dropBackend()
		return
	}
	if !s.mustHold() {
		s.releaseBackend(false)
	}
}

// dropBackend discards a broken held connection; state it carried is lost.
func (s *clientConn) dropBackend() {
	be := s.be
	s.be = nil
	s.prev = nil
	// The database and variables a USE or SET without session tracking
	// selected went with it.
	s.schemaUnknown, s.parseVarsUnknown = false, false
	if len(s.pins) > 0 {
		s.logger().Warn("pinned database connection lost; session state on it is gone", "reasons", s.pins)
	}
	s.setPinnedGauge(false) // clears pins
	s.setTxGauge(false)
	for _, st := range s.stmts {
		if st.longData {
			st.longDataLost = true
		}
		st.cursor, st.longData = false, false
	}
	be.Target.Put(be)
}

func (s *clientConn) pin(reasons ...session.Reason) {
	if s.be == nil || len(reasons) == 0 {
		return
	}
	wasPinned := len(s.pins) > 0
	for _, r := range reasons {
		if slices.Contains(s.pins, r) {
			continue
		}
		s.pins = append(s.pins, r)
		if m := s.ep.opts.Metrics; m != nil {
			m.Pins.WithLabelValues(s.ep.opts.Proxy.Name, string(r)).Inc()
		}
		if s.ep.opts.Proxy.DebugLogging {
			s.logger().Debug("session pinned", "reason", r)
		}
	}
	s.be.Dirty = true
	if !wasPinned {
		s.setPinnedGauge(true)
	}
}

func (s *clientConn) setPinnedGauge(on bool) {
	m := s.ep.opts.Metrics
	if on {
		s.pinnedOn = s.be.Target
		s.pinnedOn.Pinned.Add(1)
		if m != nil {
			m.ClientsPinned.WithLabelValues(s.ep.opts.Proxy.Name).Inc()
		}
		return
	}
	if len(s.pins) > 0 {
		if s.pinnedOn != nil {
			s.pinnedOn.Pinned.Add(-1)
			s.pinnedOn = nil
		}
		if m != nil {
			m.ClientsPinned.WithLabelValues(s.ep.opts.Proxy.Name).Dec()
		}
		s.pins = nil
	}
}

// setTxGauge records whether the session is inside a transaction (the
// gauge follows).
func (s *clientConn) setTxGauge(on bool) {
	if on == s.inTx {
		return
	}
	s.inTx = on
	m := s.ep.opts.Metrics
	if m == nil {
		return
	}
	g := m.ClientsInTransaction.WithLabelValues(s.ep.opts.Proxy.Name)
	if on {
		g.Inc()
	} else {
		g.Dec()
	}
}

// applyOK records what a terminal OK packet says about the session.
func (s *clientConn) applyOK(be *backend.Conn, ok mysql.OK, cls session.Class) {
	sc := be.ApplyOK(ok)
	if sc.Vars != nil {
		defer func() {
			// The connection was in line with the session before the
			// statement and both took the same changes.
			s.varsFP = s.fingerprint(s.vars)
			be.VarsFP = s.varsFP
		}()
	}
	for k, v := range sc.Vars {
		if !ignoredVar(k) {
			s.setVar(k, v)
			s.gen++
		}
		if k == "insert_id" && v != "" && v != "0" {
			s.pin(session.PinNextTransaction)
		}
	}
	if sc.Schema != nil {
		s.schema = *sc.Schema
		s.gen++
	}
	if ok.LastInsertID != 0 && ok.LastInsertID != s.lastInsertID {
		s.lastInsertID = ok.LastInsertID
		s.gen++
	}
	// A change that variables and schema do not explain cannot move, nor
	// any change made by CALL or EXECUTE: a procedure may set user
	// variables next to the variables it reports. (The server may report
	// a schema or variable change again on the statement after it, so
	// other statements with explained changes do not pin.)
	if (sc.Unmovable || sc.Changed && cls.MayChangeState) && !(cls.IsSet && s.excludeSets()) {
		s.pin(session.PinStateChange)
	}
	s.setTxGauge(ok.Status&mysql.StatusInTrans != 0)
}

func (s *clientConn) excludeSets() bool {
	return s.ep.opts.Proxy.Pool.HasPinningFilter(vocab.PinningFilterExcludeVariableSets)
}

// forward sends a command to a database connection and relays the
// response.
func (s *clientConn) forward(pkt []byte, cls session.Class, mode relayMode) error {
	// A read that holds no session to its connection may run again on
	// another one when its connection breaks before any of the response
	// came: a pooled connection whose server just died looks alive until
	// the first read.
	// Not FOUND_ROWS() or ROW_COUNT(): on another connection they would
	// answer for a statement they were not asked about.
	rerun := cls.Rerunnable && !cls.UsesPrevious && mode == relayQuery && !s.mustHold()
	be, serr := s.acquire(cls)
	if serr != nil {
		s.countErr()
		return s.sendErr(serr)
	}
	if cls.UsesPrevious && !s.reclaimed && len(s.pins) == 0 && !s.inTx && pkt[0] == mysql.ComQuery {
		// The connection of the previous statement is gone: substitute the
		// values this session saw for FOUND_ROWS() and ROW_COUNT().
		pkt = append([]byte{mysql.ComQuery}, session.SubstitutePrevious(string(pkt[1:]), s.foundRows, s.rowCount)...)
	}
	if err := be.WriteCommand(pkt); err != nil {
		be.Broken = true
		held := s.mustHold()
		s.dropBackend()
		if held || cls.UsesPrevious && s.reclaimed {
			// The statement needs this connection: its session state,
			// or the previous statement's counts it reads.
			return s.lostBackend(false)
		}
		// Nothing reached the server: try once more on a fresh connection.
		var done error
		if be, done = s.resend(cls, pkt); be == nil {
			return done
		}
	}
	if !rerun {
		return s.relay(be, cls, mode)
	}
	r := relayer{s: s, be: be, cls: cls}
	err := r.run(mode)
	if err == nil {
		return s.relayed(&r, be, cls)
	}
	if r.wrote || errors.Is(err, errClientGone) || !connectionBroke(err) {
		return s.relayFailed(be, &r, err)
	}
	s.logger().Debug("database connection broke before the response; running the read again on another", "error", err)
	be.Broken = true
	s.dropBackend()
	var done error
	if be, done = s.resend(cls, pkt); be == nil {
		return done
	}
	return s.relay(be, cls, mode)
}

// resend borrows a fresh connection and sends pkt on it. When that fails
// the client is told and the connection is nil; the error is what the
// command's handler returns.
func (s *clientConn) resend(cls session.Class, pkt []byte) (*backend.Conn, error) {
	be, serr := s.acquire(cls)
	if serr != nil {
		s.countErr()
		return nil, s.sendErr(serr)
	}
	if err := be.WriteCommand(pkt); err != nil {
		be.Broken = true
		s.dropBackend()
		return nil, s.lostBackend(false)
	}
	return be, nil
}

// relay relays a response and then applies the boundary rules.
func (s *clientConn) relay(be *backend.Conn, cls session.Class, mode relayMode) error {
	r := relayer{s: s, be: be, cls: cls}
	if err := r.run(mode); err != nil {
		return s.relayFailed(be, &r, err)
	}
	return s.relayed(&r, be, cls)
}

// relayed applies the boundary rules after a response was relayed whole.
func (s *clientConn) relayed(r *relayer, be *backend.Conn, cls session.Class) error {
	if r.failed {
		s.countErr()
	}
	s.recordCounts(r)
	s.holdAfterError(r)
	s.lastOK, s.lastTracking = !r.failed, be.Tracking
	s.pinFor(cls, r.failed)
	s.afterCommand()
	return nil
}

// pinFor pins the session for the state a successful statement created.
func (s *clientConn) pinFor(cls session.Class, failed bool) {
	if failed {
		return
	}
	if s.be != nil && !s.be.Tracking && (cls.IsSet || cls.ChangesSchema || cls.MayChangeState) {
		// Without session tracking the node cannot see what changed.
		s.pin(session.PinNoSessionTracking)
	}
	if len(cls.Pin) == 0 {
		return
	}
	pins := cls.Pin
	if s.excludeSets() && cls.IsSet {
		pins = slices.DeleteFunc(slices.Clone(pins), func(r session.Reason) bool { return r == session.PinUserVariable })
	}
	s.pin(pins...)
}

// relayFailed ends a response that could not be relayed: the database
// connection is dropped; the client hears of it unless it is the one that
// failed.
func (s *clientConn) relayFailed(be *backend.Conn, r *relayer, err error) error {
	s.logger().Debug("relaying a response failed", "error", err)
	be.Broken = true
	s.dropBackend()
	if errors.Is(err, errClientGone) {
		return err
	}
	return s.lostBackend(r.wrote)
}

// lostBackend tells the client its command failed because the database
// connection broke; when part of a response already went out the client
// connection cannot continue.
func (s *clientConn) lostBackend(wrote bool) error {
	s.countErr()
	if wrote {
		return fmt.Errorf("database connection lost mid-response")
	}
	return s.sendErr(mysql.NewSQLError(mysql.ERLostConnectionToBackend, "Lost connection to the database during query (dbproxy)"))
}

func (s *clientConn) countErr() {
	if s.errs != nil {
		s.errs.Inc()
	}
}

func (s *clientConn) query(pkt []byte) error {
	cls := session.Classify(string(pkt[1:]))
	if err := s.forward(pkt, cls, relayQuery); err != nil {
		return err
	}
	s.noteUntracked(cls)
	return nil
}

// noteUntracked remembers what a statement that ran on the held connection
// without session tracking may have changed unseen (it pinned the
// session): binary prepared statements need to know the database and the
// variables they are parsed under (see learnState).
func (s *clientConn) noteUntracked(cls session.Class) {
	if s.be == nil || s.be.Tracking {
		return
	}
	if cls.ChangesSchema {
		s.schemaUnknown = true
	}
	if cls.IsSet || cls.MayChangeState {
		s.parseVarsUnknown = true
	}
}

// learnState asks the held connection for its database after a USE, and
// for its sql_mode and character set after a SET, that ran without
// session tracking, before a statement is prepared or bound to one. The
// session takes what the connection says: it is what the client set. When
// the connection breaks it is marked broken for the caller to drop.
func (s *clientConn) learnState() error {
	if !s.schemaUnknown && !s.parseVarsUnknown || s.be == nil {
		return nil
	}
	names := backend.ParseVarNames()
	q := "SELECT DATABASE()"
	for _, name := range names {
		q += ", @@session." + name
	}
	rows, err := s.be.Query(q)
	if err != nil {
		var se *mysql.SQLError
		if errors.As(err, &se) {
			// Still unknown; the statement goes where the node believes.
			return nil
		}
		s.be.Broken = true
		return fmt.Errorf("ask the connection for its database and variables: %w", err)
	}
	if len(rows) != 1 || len(rows[0]) != 1+len(names) {
		return nil
	}
	row := rows[0]
	if s.schemaUnknown {
		s.schemaUnknown = false
		schema := ""
		if row[0] != nil {
			schema = *row[0]
		}
		s.be.Schema = schema
		if s.schema != schema {
			s.schema = schema
			s.gen++
		}
	}
	if s.parseVarsUnknown {
		s.parseVarsUnknown = false
		changed := false
		for i, name := range names {
			v := "NULL"
			if row[1+i] != nil {
				v = *row[1+i]
			}
			s.be.Vars[name] = v
			if s.vars[name] != v {
				s.setVar(name, v)
				changed = true
			}
		}
		s.be.ConnCharsetUnknown = false
		if changed {
			s.varsFP = s.fingerprint(s.vars)
			s.gen++
		}
		// The held connection is in line with the session (a connection
		// is held only once synced with it), now also in these.
		s.be.VarsFP = s.varsFP
	}
	return nil
}

func (s *clientConn) initDB(pkt []byte) error {
	if err := s.forward(pkt, session.Class{ChangesSchema: true}, relayInitDB); err != nil {
		return err
	}
	if s.lastOK && !s.lastTracking {
		// Without session tracking the OK does not name the schema.
		s.schema = string(pkt[1:])
		if s.be != nil {
			s.be.Schema = s.schema
		}
	}
	return nil
}

func (s *clientConn) setOption(pkt []byte) error {
	if len(pkt) < 3 {
		return s.sendErr(mysql.NewSQLError(mysql.ERUnknownComError, "Malformed COM_SET_OPTION"))
	}
	switch binary.LittleEndian.Uint16(pkt[1:]) {
	case mysql.OptionMultiStatementsOn:
		s.multiStmt = true
	case mysql.OptionMultiStatementsOff:
		s.multiStmt = false
	default:
		return s.sendErr(mysql.NewSQLError(mysql.ERUnknownComError, "Unknown COM_SET_OPTION value"))
	}
	s.gen++
	if s.be != nil {
		if err := s.be.SetMultiStatements(s.multiStmt); err != nil {
			var se *mysql.SQLError
			if errors.As(err, &se) {
				return s.sendErr(se)
			}
			s.be.Broken = true
			s.dropBackend()
			return s.lostBackend(false)
		}
	}
	if s.caps&mysql.ClientDeprecateEOF != 0 {
		return s.sendOK(mysql.OK{Status: s.status()})
	}
	if err := s.c.WritePacket(mysql.AppendEOF(nil, 0, s.status())); err != nil {
		return fmt.Errorf("%w: %v", errClientGone, err)
	}
	return s.c.Flush()
}

// resetSession forgets all session state, as COM_RESET_CONNECTION does on a
// server: the held connection is reset before anyone reuses it.
func (s *clientConn) resetSession() {
	if s.be != nil {
		s.be.Dirty = true
		s.releaseBackend(true)
	}
	s.setPinnedGauge(false)
	s.setTxGauge(false)
	s.pins = nil
	s.schemaUnknown, s.parseVarsUnknown = false, false
	s.stateReady = false
	s.vars = nil
	s.varsFP = 0
	s.lastInsertID = 0
	s.multiStmt = s.caps&mysql.ClientMultiStatements != 0
	s.stmts = nil
	s.prev = nil
	s.gen++
}

func (s *clientConn) changeUser(pkt []byte) error {
	e := s.ep
	res, err := mysql.ChangeUser(s.c, pkt, s.caps, s.tls, e.opts.Server)
	if err != nil {
		// The server closes the connection after a failed change of user.
		e.setupFailure("auth")
		return fmt.Errorf("%w: change user: %v", errClientGone, err)
	}
	s.resetSession()
	s.user = res.User
	s.schema = res.DB
	if res.Collation != 0 {
		s.collation = res.Collation
	}
	s.log = nil
	return nil
}

// quotedName returns the first 'quoted' word of a server message.
func quotedName(msg string) string {
	i := strings.IndexByte(msg, '\'')
	if i < 0 {
		return ""
	}
	j := strings.IndexByte(msg[i+1:], '\'')
	if j < 0 {
		return ""
	}
	return msg[i+1 : i+1+j]
}

// holdAfterError keeps the connection after a failed statement when
// autocommit is off: an ERR packet carries no status, and the statement may
// have opened a transaction (locks, a read view) that must not reach
// another client. The next OK tells whether one is open.
func (s *clientConn) holdAfterError(r *relayer) {
	if r.failed && s.vars != nil && s.vars["autocommit"] == "OFF" {
		s.setTxGauge(true)
	}
}

// recordCounts remembers what FOUND_ROWS() and ROW_COUNT() would return
// after the statement just relayed.
func (s *clientConn) recordCounts(r *relayer) {
	switch {
	case r.failed:
		s.rowCount = -1
	case r.resultSet:
		s.rowCount = -1
		s.foundRows = r.rows
	default:
		s.rowCount = int64(r.affected)
	}
}

// borrow waits for a target and a connection, up to the borrow timeout.
func (s *clientConn) borrow(key backend.Key) (*backend.Conn, *mysql.SQLError) {
	p := s.ep.opts.Proxy
	var be *backend.Conn
	timeout := p.Pool.ConnectionBorrowTimeout.D()
	ctx, cancel := context.WithTimeout(s.ep.closing, timeout)
	defer cancel()
	for attempt := 0; be == nil; attempt++ {
		t, err := s.ep.opts.Router.Pick(ctx, s.role)
		if err != nil {
			what := "writer"
			if s.role == vocab.TargetRoleReadOnly {
				what = "reader or writer"
			}
			return nil, mysql.NewSQLError(mysql.ERNoTargetAvailable, "dbproxy: no healthy database %s available for proxy %s within %s", what, p.Name, timeout)
		}
		be, err = t.Get(ctx, key)
		if err != nil {
			if errors.Is(err, pool.ErrBorrowTimeout) {
				return nil, mysql.NewSQLError(mysql.ERBorrowTimeout, "dbproxy: timed out after %s waiting for a database connection to %s (connection_borrow_timeout)", timeout, t.Name())
			}
			var se *mysql.SQLError
			if errors.As(err, &se) {
				if errors.Is(err, backend.ErrWriterConflict) {
					// The node refused, not the database: its message
					// names the writers and what to do.
					return nil, se
				}
				return nil, mysql.NewSQLError(se.Num, "dbproxy: cannot connect to database target %s: %s", t.Name(), se.Message)
			}
			// The server is unreachable: the monitor re-checks it at once
			// (Get asked it to). Wait for the routing to change, or retry
			// after a short pause, until the borrow timeout: a failover
			// then looks like a slow borrow, not an error.
			if s.ep.opts.Router.Wait(ctx, min(time.Duration(attempt+1)*50*time.Millisecond, time.Second)) {
				continue
			}
			s.logger().Warn("cannot connect to database target", "target", t.Name(), "error", err)
			return nil, mysql.NewSQLError(mysql.ERLostConnectionToBackend, "dbproxy: cannot connect to database target %s within %s", t.Name(), timeout)
		}
	}
	return be, nil
}
