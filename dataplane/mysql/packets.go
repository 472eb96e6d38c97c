package mysql

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// errMalformed is wrapped by every parse error.
var errMalformed = errors.New("malformed packet")

// SQLError is a MySQL error as a client sees it in an ERR packet.
type SQLError struct {
	Num     uint16
	State   string
	Message string
}

// Error implements error.
func (e *SQLError) Error() string {
	return fmt.Sprintf("Error %d (%s): %s", e.Num, e.State, e.Message)
}

// NewSQLError builds a client-facing error with the generic SQL state HY000
// unless the code has a better known one.
func NewSQLError(num uint16, format string, a ...any) *SQLError {
	state := "HY000"
	switch num {
	case ERAccessDenied:
		state = "28000"
	case ERConCountError:
		state = "08004"
	case ERHandshakeError, ERLostConnectionToBackend:
		state = "08S01"
	case ERUnknownComError, ERNetPacketTooLarge, ERNetReadError, ERNetPacketsOutOfOrder:
		state = "08S01"
	case ERBadDB:
		state = "42000"
	case ERNoDB:
		state = "3D000"
	}
	return &SQLError{Num: num, State: state, Message: fmt.Sprintf(format, a...)}
}

// IsMalformed reports whether err comes from parsing a malformed packet.
func IsMalformed(err error) bool { return errors.Is(err, errMalformed) }

func malformed(what string) error { return fmt.Errorf("%w: %s", errMalformed, what) }

// ReadLenEncInt decodes a length-encoded integer at b[0:]. It returns the
// value, whether it was the NULL marker (0xfb), and the bytes consumed.
func ReadLenEncInt(b []byte) (v uint64, isNull bool, n int, err error) {
	if len(b) == 0 {
		return 0, false, 0, malformed("length-encoded integer: no data")
	}
	switch c := b[0]; {
	case c < 0xfb:
		return uint64(c), false, 1, nil
	case c == 0xfb:
		return 0, true, 1, nil
	case c == 0xfc:
		if len(b) < 3 {
			return 0, false, 0, malformed("length-encoded integer: short 2-byte form")
		}
		return uint64(b[1]) | uint64(b[2])<<8, false, 3, nil
	case c == 0xfd:
		if len(b) < 4 {
			return 0, false, 0, malformed("length-encoded integer: short 3-byte form")
		}
		return uint64(b[1]) | uint64(b[2])<<8 | uint64(b[3])<<16, false, 4, nil
	case c == 0xfe:
		if len(b) < 9 {
			return 0, false, 0, malformed("length-encoded integer: short 8-byte form")
		}
		return binary.LittleEndian.Uint64(b[1:9]), false, 9, nil
	default:
		return 0, false, 0, malformed("length-encoded integer: 0xff prefix")
	}
}

// ReadLenEncString decodes a length-encoded string at b[0:].
func ReadLenEncString(b []byte) (s []byte, n int, err error) {
	l, isNull, n, err := ReadLenEncInt(b)
	if err != nil {
		return nil, 0, err
	}
	if isNull {
		return nil, n, nil
	}
	if uint64(len(b)-n) < l {
		return nil, 0, malformed("length-encoded string: short")
	}
	return b[n : n+int(l)], n + int(l), nil
}

// AppendLenEncInt appends v as a length-encoded integer.
func AppendLenEncInt(b []byte, v uint64) []byte {
	switch {
	case v < 0xfb:
		return append(b, byte(v))
	case v <= 0xffff:
		return append(b, 0xfc, byte(v), byte(v>>8))
	case v <= 0xffffff:
		return append(b, 0xfd, byte(v), byte(v>>8), byte(v>>16))
	default:
		b = append(b, 0xfe)
		return binary.LittleEndian.AppendUint64(b, v)
	}
}

// AppendLenEncString appends s as a length-encoded string.
func AppendLenEncString(b []byte, s []byte) []byte {
	b = AppendLenEncInt(b, uint64(len(s)))
	return append(b, s...)
}

// readNulString reads a NUL-terminated string.
func readNulString(b []byte) (s []byte, n int, err error) {
	for i, c := range b {
		if c == 0 {
			return b[:i], i + 1, nil
		}
	}
	return nil, 0, malformed("missing NUL terminator")
}

// OK is a decoded OK packet (also the OK-form of an EOF with
// CLIENT_DEPRECATE_EOF).
type OK struct {
	AffectedRows uint64
	LastInsertID uint64
	Status       uint16
	Warnings     uint16
	Info         []byte
	// SessionState is the raw session state change block, when present.
	SessionState []byte
}

// ParseOK decodes an OK packet (header 0x00 or 0xfe) sent on a connection
// with the given capabilities.
func ParseOK(b []byte, caps uint32) (OK, error) {
	var ok OK
	if len(b) < 1 || (b[0] != OKPacket && b[0] != EOFPacket) {
		return ok, malformed("OK packet: bad header")
	}
	pos := 1
	v, _, n, err := ReadLenEncInt(b[pos:])
	if err != nil {
		return ok, fmt.Errorf("OK packet affected rows: %w", err)
	}
	ok.AffectedRows = v
	pos += n
	if v, _, n, err = ReadLenEncInt(b[pos:]); err != nil {
		return ok, fmt.Errorf("OK packet last insert id: %w", err)
	}
	ok.LastInsertID = v
	pos += n
	if len(b) < pos+4 {
		return ok, malformed("OK packet: short status")
	}
	ok.Status = binary.LittleEndian.Uint16(b[pos:])
	ok.Warnings = binary.LittleEndian.Uint16(b[pos+2:])
	pos += 4
	if pos >= len(b) {
		return ok, nil
	}
	if caps&ClientSessionTrack == 0 {
		ok.Info = b[pos:]
		return ok, nil
	}
	info, n, err := ReadLenEncString(b[pos:])
	if err != nil {
		return ok, fmt.Errorf("OK packet info: %w", err)
	}
	ok.Info = info
	pos += n
	if ok.Status&StatusSessionStateChanged != 0 && pos < len(b) {
		st, _, err := ReadLenEncString(b[pos:])
		if err != nil {
			return ok, fmt.Errorf("OK packet session state: %w", err)
		}
		ok.SessionState = st
	}
	return ok, nil
}

// AppendOK encodes ok with the given header byte (0x00, or 0xfe for an
// end-of-result OK) for a client with the given capabilities. Session state
// is kept only for clients with CLIENT_SESSION_TRACK.
func AppendOK(b []byte, header byte, ok OK, caps uint32) []byte {
	b = append(b, header)
	b = AppendLenEncInt(b, ok.AffectedRows)
	b = AppendLenEncInt(b, ok.LastInsertID)
	status := ok.Status
	if caps&ClientSessionTrack == 0 || ok.SessionState == nil {
		status &^= StatusSessionStateChanged
	}
	b = binary.LittleEndian.AppendUint16(b, status)
	b = binary.LittleEndian.AppendUint16(b, ok.Warnings)
	if caps&ClientSessionTrack == 0 {
		return append(b, ok.Info...)
	}
	if len(ok.Info) > 0 || status&StatusSessionStateChanged != 0 {
		b = AppendLenEncString(b, ok.Info)
	}
	if status&StatusSessionStateChanged != 0 {
		b = AppendLenEncString(b, ok.SessionState)
	}
	return b
}

// AppendEOF encodes a classic EOF packet.
func AppendEOF(b []byte, warnings, status uint16) []byte {
	b = append(b, EOFPacket)
	b = binary.LittleEndian.AppendUint16(b, warnings)
	return binary.LittleEndian.AppendUint16(b, status&^StatusSessionStateChanged)
}

// EOF is a decoded classic EOF packet.
type EOF struct {
	Warnings uint16
	Status   uint16
}

// ParseEOF decodes a classic EOF packet.
func ParseEOF(b []byte) (EOF, error) {
	if len(b) < 1 || b[0] != EOFPacket || len(b) > 9 {
		return EOF{}, malformed("EOF packet: bad header or length")
	}
	if len(b) < 5 {
		return EOF{}, nil
	}
	return EOF{Warnings: binary.LittleEndian.Uint16(b[1:]), Status: binary.LittleEndian.Uint16(b[3:])}, nil
}

// IsEOFPacket reports whether a wire packet of length n starting with
// header is an EOF or end-of-result OK packet rather than a row.
func IsEOFPacket(header byte, n int) bool {
	return header == EOFPacket && n < MaxPayloadLen
}

// ParseErr decodes an ERR packet (protocol 4.1 form).
func ParseErr(b []byte) (*SQLError, error) {
	if len(b) < 3 || b[0] != ErrPacket {
		return nil, malformed("ERR packet: bad header")
	}
	e := &SQLError{Num: binary.LittleEndian.Uint16(b[1:]), State: "HY000"}
	rest := b[3:]
	if len(rest) >= 6 && rest[0] == '#' {
		e.State = string(rest[1:6])
		rest = rest[6:]
	}
	e.Message = string(rest)
	return e, nil
}

// AppendErr encodes e as an ERR packet.
func AppendErr(b []byte, e *SQLError) []byte {
	b = append(b, ErrPacket)
	b = binary.LittleEndian.AppendUint16(b, e.Num)
	state := e.State
	if len(state) != 5 {
		state = "HY000"
	}
	b = append(b, '#')
	b = append(b, state...)
	return append(b, e.Message...)
}

// SessionChange is one entry of an OK packet's session state block.
type SessionChange struct {
	Type byte
	// Name and Value are set for system variables; Name alone for the
	// schema; Value "1" for a state change.
	Name, Value string
}

// ParseSessionState decodes the session state block of an OK packet.
func ParseSessionState(b []byte, fn func(SessionChange)) error {
	for len(b) > 0 {
		typ := b[0]
		data, n, err := ReadLenEncString(b[1:])
		if err != nil {
			return fmt.Errorf("session state entry: %w", err)
		}
		b = b[1+n:]
		switch typ {
		case SessionTrackSystemVariables:
			name, n, err := ReadLenEncString(data)
			if err != nil {
				return fmt.Errorf("session state variable name: %w", err)
			}
			val, _, err := ReadLenEncString(data[n:])
			if err != nil {
				return fmt.Errorf("session state variable value: %w", err)
			}
			fn(SessionChange{Type: typ, Name: string(name), Value: string(val)})
		case SessionTrackSchema:
			name, _, err := ReadLenEncString(data)
			if err != nil {
				return fmt.Errorf("session state schema: %w", err)
			}
			fn(SessionChange{Type: typ, Name: string(name)})
		case SessionTrackStateChange:
			// MariaDB sends the flag as the entry's data ("1"); MySQL
			// documents it as a length-encoded string inside the data.
			val := data
			if len(data) > 1 {
				v, _, err := ReadLenEncString(data)
				if err != nil {
					return fmt.Errorf("session state change: %w", err)
				}
				val = v
			}
			fn(SessionChange{Type: typ, Value: string(val)})
		default:
			fn(SessionChange{Type: typ, Value: string(data)})
		}
	}
	return nil
}

// PrepareOK is the first packet of a COM_STMT_PREPARE response.
type PrepareOK struct {
	StmtID   uint32
	Columns  uint16
	Params   uint16
	Warnings uint16
}

// ParsePrepareOK decodes a COM_STMT_PREPARE_OK packet.
func ParsePrepareOK(b []byte) (PrepareOK, error) {
	if len(b) < 12 || b[0] != OKPacket {
		return PrepareOK{}, malformed("prepare OK: short or bad header")
	}
	return PrepareOK{
		StmtID:   binary.LittleEndian.Uint32(b[1:]),
		Columns:  binary.LittleEndian.Uint16(b[5:]),
		Params:   binary.LittleEndian.Uint16(b[7:]),
		Warnings: binary.LittleEndian.Uint16(b[10:]),
	}, nil
}

// AppendPrepareOK encodes a COM_STMT_PREPARE_OK packet.
func AppendPrepareOK(b []byte, p PrepareOK) []byte {
	b = append(b, OKPacket)
	b = binary.LittleEndian.AppendUint32(b, p.StmtID)
	b = binary.LittleEndian.AppendUint16(b, p.Columns)
	b = binary.LittleEndian.AppendUint16(b, p.Params)
	b = append(b, 0)
	return binary.LittleEndian.AppendUint16(b, p.Warnings)
}

// ColumnDef holds the fields of a column definition the proxy needs.
type ColumnDef struct {
	Schema, Table, OrgTable, Name, OrgName string
	Charset                                uint16
	Length                                 uint32
	Type                                   byte
	Flags                                  uint16
	Decimals                               byte
}

// ParseColumnDef decodes a protocol 4.1 column definition.
func ParseColumnDef(b []byte) (ColumnDef, error) {
	var c ColumnDef
	var strs [6][]byte
	pos := 0
	for i := range strs {
		s, n, err := ReadLenEncString(b[pos:])
		if err != nil {
			return c, fmt.Errorf("column definition field %d: %w", i, err)
		}
		strs[i] = s
		pos += n
	}
	if string(strs[0]) != "def" {
		return c, malformed("column definition: catalog is not def")
	}
	fixed, _, n, err := ReadLenEncInt(b[pos:])
	if err != nil {
		return c, fmt.Errorf("column definition fixed length: %w", err)
	}
	pos += n
	if fixed < 12 || uint64(len(b)-pos) < 12 {
		return c, malformed("column definition: short fixed fields")
	}
	c.Schema, c.Table, c.OrgTable = string(strs[1]), string(strs[2]), string(strs[3])
	c.Name, c.OrgName = string(strs[4]), string(strs[5])
	c.Charset = binary.LittleEndian.Uint16(b[pos:])
	c.Length = binary.LittleEndian.Uint32(b[pos+2:])
	c.Type = b[pos+6]
	c.Flags = binary.LittleEndian.Uint16(b[pos+7:])
	c.Decimals = b[pos+9]
	return c, nil
}

// AppendColumnDef encodes a protocol 4.1 column definition.
func AppendColumnDef(b []byte, c ColumnDef) []byte {
	b = AppendLenEncString(b, []byte("def"))
	for _, s := range []string{c.Schema, c.Table, c.OrgTable, c.Name, c.OrgName} {
		b = AppendLenEncString(b, []byte(s))
	}
	b = append(b, 0x0c)
	b = binary.LittleEndian.AppendUint16(b, c.Charset)
	b = binary.LittleEndian.AppendUint32(b, c.Length)
	b = append(b, c.Type)
	b = binary.LittleEndian.AppendUint16(b, c.Flags)
	return append(b, c.Decimals, 0, 0)
}
