package proxy

import (
	"encoding/binary"
	"fmt"

	"github.com/dbproxy/dbproxy/dataplane/backend"
	"github.com/dbproxy/dbproxy/dataplane/mysql"
	"github.com/dbproxy/dbproxy/dataplane/session"
)

// relayMode says what response a command produces.
type relayMode int

const (
	// relayQuery: OK, ERR, LOCAL INFILE request or result sets (text).
	relayQuery relayMode = iota
	// relayInitDB: OK or ERR.
	relayInitDB
	// relayExecute: like relayQuery with binary rows; may open a cursor.
	relayExecute
	// relayColumns: column definitions up to a terminal (COM_FIELD_LIST).
	relayColumns
	// relayFetch: rows up to a terminal (COM_STMT_FETCH).
	relayFetch
	// relayOnePacket: exactly one packet (COM_STATISTICS).
	relayOnePacket
)

// relayer streams one response from a database connection to the client,
// translating between the connection's wire flavour (always
// CLIENT_DEPRECATE_EOF and CLIENT_SESSION_TRACK) and the client's. Row
// packets are copied without being decoded.
type relayer struct {
	s   *clientConn
	be  *backend.Conn
	cls session.Class
	// wrote is set once anything was written to the client.
	wrote bool
	// failed is set when the response ended in an ERR packet.
	failed bool
	// status is the status of the last terminal packet.
	status uint16
	// staleStmt is a backend statement to close after a prepare response.
	staleStmt uint32
	// resultSet, rows and affected describe the last result: whether it
	// was a result set, its row count, or the affected rows of its OK.
	resultSet bool
	rows      int64
	affected  uint64
}

func (r *relayer) clientErr(err error) error {
	return fmt.Errorf("%w: %v", errClientGone, err)
}

// write sends one payload to the client.
func (r *relayer) write(p []byte) error {
	r.wrote = true
	if err := r.s.c.WriteRaw(p); err != nil {
		return r.clientErr(err)
	}
	return nil
}

func (r *relayer) flush() error {
	if err := r.s.c.Flush(); err != nil {
		return r.clientErr(err)
	}
	return nil
}

func (r *relayer) run(mode relayMode) error {
	var err error
	switch mode {
	case relayColumns, relayFetch:
		// Column definitions (COM_FIELD_LIST) or rows (COM_STMT_FETCH) up
		// to a terminal.
		_, err = r.rowsLoop(false)
	case relayOnePacket:
		var p []byte
		if p, err = r.be.ReadPacket(); err == nil {
			if len(p) > 0 && p[0] == mysql.ErrPacket {
				r.failed = true
			}
			err = r.writeLogical(p)
		}
	default:
		err = r.results(mode)
	}
	if err != nil {
		return err
	}
	return r.flush()
}

// writeLogical writes a payload that may exceed one wire packet.
func (r *relayer) writeLogical(p []byte) error {
	r.wrote = true
	if err := r.s.c.WritePacket(p); err != nil {
		return r.clientErr(err)
	}
	return nil
}

// results relays result sets until one ends without MORE_RESULTS_EXISTS.
func (r *relayer) results(mode relayMode) error {
	for {
		p, err := r.be.ReadPacket()
		if err != nil {
			return err
		}
		if len(p) == 0 {
			return fmt.Errorf("empty packet from database")
		}
		switch p[0] {
		case mysql.OKPacket:
			r.resultSet = false
			more, err := r.terminal(p, false)
			if err != nil || !more {
				return err
			}
			continue
		case mysql.ErrPacket:
			r.failed = true
			if len(p) >= 3 {
				r.be.Target.StatementFailed(binary.LittleEndian.Uint16(p[1:]))
			}
			return r.writeLogical(p)
		case mysql.LocalInfilePacket:
			if mode != relayQuery {
				return fmt.Errorf("unexpected LOCAL INFILE request")
			}
			more, err := r.localInfile(p)
			if err != nil || !more {
				return err
			}
			continue
		}
		n, _, _, err := mysql.ReadLenEncInt(p)
		if err != nil {
			return fmt.Errorf("column count: %w", err)
		}
		r.resultSet, r.rows = true, 0
		if err := r.writeLogical(p); err != nil {
			return err
		}
		for range n {
			if err := r.copyPacket(); err != nil {
				return err
			}
		}
		more, err := r.rowsAfterColumns(mode == relayExecute)
		if err != nil || !more {
			return err
		}
	}
}

// copyPacket relays one wire packet as is.
func (r *relayer) copyPacket() error {
	n, err := r.be.ReadHeader()
	if err != nil {
		return err
	}
	return r.copyPayload(n)
}

func (r *relayer) copyPayload(n int) error {
	r.wrote = true
	if n <= r.be.BufferSize() {
		b, err := r.be.Peek(n)
		if err != nil {
			return err
		}
		if err := r.s.c.WriteRaw(b); err != nil {
			return r.clientErr(err)
		}
		return r.be.Discard(n)
	}
	return r.be.CopyPayload(r.s.c, n)
}

// rowsAfterColumns relays the rows of a result set whose column
// definitions were relayed, inserting the classic EOF for clients that
// want one. It reports whether more results follow.
func (r *relayer) rowsAfterColumns(execute bool) (bool, error) {
	if r.s.caps&mysql.ClientDeprecateEOF != 0 {
		return r.rowsLoop(false)
	}
	// Classic clients get an EOF after the column definitions. With a
	// cursor the server sends no rows: the terminal itself becomes that EOF.
	return r.rowsLoop(true)
}

// rowsLoop relays row packets until the terminal OK/EOF or an ERR.
// pendingEOF asks for a classic EOF before the first row.
func (r *relayer) rowsLoop(pendingEOF bool) (bool, error) {
	cont := false
	for {
		n, err := r.be.ReadHeader()
		if err != nil {
			return false, err
		}
		if cont {
			cont = n == mysql.MaxPayloadLen
			if err := r.copyPayload(n); err != nil {
				return false, err
			}
			continue
		}
		if n > 0 {
			var first byte
			if n <= r.be.BufferSize() {
				b, err := r.be.Peek(n)
				if err != nil {
					return false, err
				}
				first = b[0]
			} else if first, err = r.be.PeekByte(); err != nil {
				return false, err
			}
			switch {
			case first == mysql.EOFPacket && n < mysql.MaxPayloadLen:
				// The terminal is consumed before the next read: the
				// connection's scratch buffer saves an allocation per query.
				p, err := r.be.ReadPayloadInto(r.be.Scratch[:0], n)
				if cap(p) > cap(r.be.Scratch) && cap(p) <= 4096 {
					r.be.Scratch = p[:0]
				}
				if err != nil {
					return false, err
				}
				if pendingEOF {
					ok, err := mysql.ParseOK(p, r.be.Info.Caps)
					if err != nil {
						return false, err
					}
					if ok.Status&mysql.StatusCursorExists == 0 {
						if err := r.write(mysql.AppendEOF(nil, 0, ok.Status)); err != nil {
							return false, err
						}
					}
				}
				return r.terminal(p, true)
			case first == mysql.ErrPacket:
				p, err := r.be.ReadPayload(n)
				if err != nil {
					return false, err
				}
				r.failed = true
				if pendingEOF {
					if err := r.write(mysql.AppendEOF(nil, 0, r.be.Status)); err != nil {
						return false, err
					}
				}
				return false, r.writeLogical(p)
			}
		}
		if pendingEOF {
			pendingEOF = false
			if err := r.write(mysql.AppendEOF(nil, 0, r.be.Status)); err != nil {
				return false, err
			}
		}
		cont = n == mysql.MaxPayloadLen
		r.rows++
		if err := r.copyPayload(n); err != nil {
			return false, err
		}
	}
}

// terminal handles an OK packet that ends a result (eof=true: the 0xfe
// form after rows) and relays it in the client's flavour. It reports
// whether more results follow.
func (r *relayer) terminal(p []byte, eof bool) (bool, error) {
	ok, err := mysql.ParseOK(p, r.be.Info.Caps)
	if err != nil {
		return false, err
	}
	r.status = ok.Status
	if !eof {
		r.affected = ok.AffectedRows
	}
	r.s.applyOK(r.be, ok, r.cls)
	caps := r.s.caps
	switch {
	case eof && caps&mysql.ClientDeprecateEOF == 0:
		err = r.write(mysql.AppendEOF(nil, ok.Warnings, ok.Status))
	case caps&mysql.ClientSessionTrack != 0 && r.be.Info.Caps&mysql.ClientSessionTrack != 0:
		err = r.write(p)
	default:
		hdr := mysql.OKPacket
		if eof {
			hdr = mysql.EOFPacket
		}
		err = r.write(mysql.AppendOK(nil, hdr, ok, caps))
	}
	return ok.Status&mysql.StatusMoreResultsExists != 0, err
}

// localInfile relays a LOAD DATA LOCAL INFILE exchange: the server's file
// request goes to the client, the client's file packets to the server up
// to the empty packet, and the server's result back. Clients that did not
// enable local files get an error; the server gets an empty file.
func (r *relayer) localInfile(req []byte) (bool, error) {
	s := r.s
	if s.caps&mysql.ClientLocalFiles == 0 {
		if err := r.be.WritePacket(nil); err != nil {
			return false, err
		}
		if err := r.be.Flush(); err != nil {
			return false, err
		}
		p, err := r.be.ReadPacket()
		if err != nil {
			return false, err
		}
		if len(p) > 0 && p[0] == mysql.OKPacket {
			if ok, err := mysql.ParseOK(p, r.be.Info.Caps); err == nil {
				r.s.applyOK(r.be, ok, r.cls)
				if ok.Status&mysql.StatusMoreResultsExists != 0 {
					// The rest of a multi-statement is still coming: this
					// connection cannot be reused.
					r.be.Broken = true
				}
			}
		}
		r.failed = true
		return false, r.write(mysql.AppendErr(nil, mysql.NewSQLError(mysql.ERLocalInfileDisabled,
			"The used command is not allowed because the client did not enable LOAD DATA LOCAL INFILE")))
	}
	if err := r.write(req); err != nil {
		return false, err
	}
	if err := r.flush(); err != nil {
		return false, err
	}
	// The file ends with an empty packet that does not continue a
	// full-size one.
	for cont := false; ; {
		n, err := s.c.ReadHeader()
		if err != nil {
			return false, r.clientErr(err)
		}
		if err := s.c.CopyPayload(r.be.Conn, n); err != nil {
			return false, r.clientErr(err)
		}
		if n == 0 && !cont {
			break
		}
		cont = n == mysql.MaxPayloadLen
	}
	if err := r.be.Flush(); err != nil {
		return false, err
	}
	p, err := r.be.ReadPacket()
	if err != nil {
		return false, err
	}
	if len(p) > 0 && p[0] == mysql.ErrPacket {
		r.failed = true
		return false, r.write(p)
	}
	return r.terminal(p, false)
}
