package mysql

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"maps"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// Seeds shared by several fuzz targets. They are the packets a proxy sees
// from MariaDB, MySQL 8 and common drivers.

func seedSessionState() []byte {
	var b []byte
	b = appendSessionChange(b, SessionTrackSystemVariables, "autocommit", "ON")
	b = appendSessionChange(b, SessionTrackSystemVariables, "character_set_client", "utf8mb4")
	b = appendSessionChange(b, SessionTrackSchema, "shop", "")
	b = appendSessionChange(b, SessionTrackStateChange, "", "1")
	return b
}

// appendSessionChange encodes one session state entry the way MariaDB does.
func appendSessionChange(b []byte, typ byte, name, value string) []byte {
	var data []byte
	switch typ {
	case SessionTrackSystemVariables:
		data = AppendLenEncString(data, []byte(name))
		data = AppendLenEncString(data, []byte(value))
	case SessionTrackSchema:
		data = AppendLenEncString(data, []byte(name))
	case SessionTrackStateChange:
		// As MariaDB sends it: the flag itself is the entry's data.
		data = []byte(value)
	default:
		data = []byte(value)
	}
	b = append(b, typ)
	return AppendLenEncString(b, data)
}

func seedOKPackets() [][]byte {
	st := seedSessionState()
	return [][]byte{
		{0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00},                                                     // plain OK, autocommit
		{0x00, 0x01, 0xfc, 0xe8, 0x03, 0x03, 0x00, 0x01, 0x00},                                         // INSERT, id 1000, in trans, 1 warning
		append([]byte{0x00, 0x00, 0x00, 0x02, 0x40, 0x00, 0x00, 0x00}, AppendLenEncString(nil, st)...), // session state, no info
		{0xfe, 0x00, 0x00, 0x22, 0x00, 0x00, 0x00},                                                     // end of result set OK
		append([]byte{0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00}, "Rows matched: 3  Changed: 3  Warnings: 0"...),
		AppendOK(nil, OKPacket, OK{AffectedRows: 1 << 40, LastInsertID: 0xffffff, Status: StatusAutocommit | StatusSessionStateChanged, Info: []byte("info"), SessionState: st}, ClientSessionTrack|ClientProtocol41),
	}
}

func seedColumnDefs() [][]byte {
	return [][]byte{
		AppendColumnDef(nil, ColumnDef{Schema: "shop", Table: "o", OrgTable: "orders", Name: "id", OrgName: "id", Charset: 63, Length: 11, Type: 0x03, Flags: 0x4203}),
		AppendColumnDef(nil, ColumnDef{Name: "@@version", Charset: 45, Length: 256, Type: 0xfd, Decimals: 0x27}),
		AppendColumnDef(nil, ColumnDef{Schema: "s", Table: "t", OrgTable: "t", Name: "price", OrgName: "price", Charset: 63, Length: 12, Type: 0xf6, Flags: 0x1000, Decimals: 2}),
	}
}

// realGreeting is a MariaDB 10.11 HandshakeV10 packet: version string with
// the 5.5.5- prefix, MariaDB extended capabilities in the filler.
func realGreeting() []byte {
	b := []byte{10}
	b = append(b, "5.5.5-10.11.6-MariaDB-0+deb12u1"...)
	b = append(b, 0)
	b = binary.LittleEndian.AppendUint32(b, 31)
	b = append(b, "a;P|@xKJ"...)
	b = append(b, 0)
	b = append(b, 0xfe, 0xf7, 0x2d, 0x02, 0x00, 0xff, 0x81, 0x15)
	b = append(b, 0, 0, 0, 0, 0, 0, 0x1d, 0, 0, 0)
	b = append(b, "Q6T=s[pL!P,Y"...)
	b = append(b, 0)
	b = append(b, "mysql_native_password"...)
	return append(b, 0)
}

func seedGreetings() [][]byte {
	scramble := []byte("abcdefghijklmnopqrst")
	caps := ClientProtocol41 | ClientSecureConnection | ClientPluginAuth | ClientSSL | ClientSessionTrack | ClientDeprecateEOF
	mysql8 := appendGreeting(nil, 8, "8.0.36", scramble, caps, 255, AuthCachingSHA2Password)
	return [][]byte{
		realGreeting(),
		appendGreeting(nil, 1, "11.4.2-MariaDB", scramble, caps, 45, AuthNativePassword),
		mysql8,
		AppendErr(nil, NewSQLError(ERConCountError, "Too many connections")),
		{10, '5', 0, 1, 0, 0, 0, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 0, 0, 0x82}, // pre-4.1 short greeting
	}
}

// handshakeResponse encodes a HandshakeResponse41 the way a client does;
// the auth data form follows caps.
func handshakeResponse(hr HandshakeResponse) []byte {
	b := binary.LittleEndian.AppendUint32(nil, hr.Caps)
	b = binary.LittleEndian.AppendUint32(b, hr.MaxPacket)
	b = append(b, hr.Collation)
	b = append(b, make([]byte, 23)...)
	b = append(b, hr.User...)
	b = append(b, 0)
	switch {
	case hr.Caps&ClientPluginAuthLenencClientData != 0:
		b = AppendLenEncString(b, hr.AuthResponse)
	case hr.Caps&ClientSecureConnection != 0:
		b = append(b, byte(len(hr.AuthResponse)))
		b = append(b, hr.AuthResponse...)
	default:
		b = append(b, hr.AuthResponse...)
		b = append(b, 0)
	}
	if hr.Caps&ClientConnectWithDB != 0 {
		b = append(b, hr.DB...)
		b = append(b, 0)
	}
	if hr.Caps&ClientPluginAuth != 0 {
		b = append(b, hr.Plugin...)
		b = append(b, 0)
	}
	if hr.Caps&ClientConnectAttrs != 0 {
		b = appendAttrs(b, hr.Attrs)
	}
	return b
}

func appendAttrs(b []byte, attrs map[string]string) []byte {
	var kv []byte
	// Sorted, so that seeds are stable.
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		kv = AppendLenEncString(kv, []byte(k))
		kv = AppendLenEncString(kv, []byte(attrs[k]))
	}
	return AppendLenEncString(b, kv)
}

func seedHandshakeResponses() [][]byte {
	auth := ScrambleNative([]byte("abcdefghijklmnopqrst"), "secret")
	base := ClientProtocol41 | ClientSecureConnection | ClientPluginAuth | ClientTransactions | ClientMultiResults
	attrs := map[string]string{"_client_name": "libmariadb", "_client_version": "3.3.8", "_os": "Linux", "_pid": "4242", "program_name": "mariadb"}
	sslRequest := binary.LittleEndian.AppendUint32(nil, base|ClientSSL)
	sslRequest = binary.LittleEndian.AppendUint32(sslRequest, MaxPayloadLen)
	sslRequest = append(sslRequest, 45)
	sslRequest = append(sslRequest, make([]byte, 23)...)
	return [][]byte{
		// go-sql-driver/mysql
		handshakeResponse(HandshakeResponse{Caps: base | ClientLongPassword | ClientLocalFiles | ClientPluginAuthLenencClientData | ClientConnectWithDB, MaxPacket: 0, Collation: 45, User: "app", AuthResponse: auth, DB: "shop", Plugin: AuthNativePassword}),
		// mariadb CLI with attributes
		handshakeResponse(HandshakeResponse{Caps: base | ClientConnectAttrs | ClientPluginAuthLenencClientData | ClientMultiStatements | ClientSessionTrack, MaxPacket: 1 << 24, Collation: 33, User: "root", AuthResponse: auth, Plugin: AuthNativePassword, Attrs: attrs}),
		// this package's client, caching_sha2_password
		handshakeResponse(HandshakeResponse{Caps: base | ClientConnectWithDB, MaxPacket: MaxPayloadLen, Collation: 255, User: "u", AuthResponse: ScrambleCachingSHA2([]byte("abcdefghijklmnopqrst"), "pw"), DB: "d", Plugin: AuthCachingSHA2Password}),
		// old client without secure connection
		handshakeResponse(HandshakeResponse{Caps: ClientProtocol41, User: "old", AuthResponse: []byte("x")}),
		sslRequest,
	}
}

func changeUserPacket(cu ChangeUserRequest, caps uint32) []byte {
	b := []byte{ComChangeUser}
	b = append(b, cu.User...)
	b = append(b, 0)
	if caps&ClientSecureConnection != 0 {
		b = append(b, byte(len(cu.AuthResponse)))
		b = append(b, cu.AuthResponse...)
	} else {
		b = append(b, cu.AuthResponse...)
		b = append(b, 0)
	}
	b = append(b, cu.DB...)
	b = append(b, 0)
	b = append(b, cu.Collation, 0)
	if caps&ClientPluginAuth != 0 {
		b = append(b, cu.Plugin...)
		b = append(b, 0)
	}
	if caps&ClientConnectAttrs != 0 {
		b = appendAttrs(b, cu.Attrs)
	}
	return b
}

// refRead is a model of ReadPacket over a byte stream: the payloads it
// must return, the error after them and the final sequence id.
func refRead(in []byte, seq uint8, maxPacket int) (pkts [][]byte, endSeq uint8, final error) {
	for {
		if len(in) == 0 {
			return pkts, seq, io.EOF
		}
		var pkt []byte
		for {
			if len(in) < 4 {
				return pkts, seq, io.ErrUnexpectedEOF
			}
			n := int(in[0]) | int(in[1])<<8 | int(in[2])<<16
			if in[3] != seq {
				return pkts, seq, ErrOutOfOrder
			}
			seq++
			in = in[4:]
			if len(pkt)+n > maxPacket {
				return pkts, seq, ErrPacketTooLarge
			}
			if len(in) < n {
				return pkts, seq, io.ErrUnexpectedEOF
			}
			pkt = append(pkt, in[:n]...)
			in = in[n:]
			if n < MaxPayloadLen {
				break
			}
		}
		if pkt == nil {
			pkt = []byte{}
		}
		pkts = append(pkts, pkt)
	}
}

// FuzzReadPacket feeds arbitrary byte streams to ReadPacket: it must never
// panic, never return or reserve more than MaxPacket, and agree with a model
// of the framing on every payload, the sequence check and the final error.
func FuzzReadPacket(f *testing.F) {
	f.Add(wire(0, []byte{ComQuery, 's', 'e', 'l', 'e', 'c', 't', ' ', '1'}), uint8(0), uint16(1024), false)
	f.Add(append(wire(1, seedOKPackets()[0]), wire(2, seedOKPackets()[3])...), uint8(1), uint16(64), false)
	f.Add(append(wire(0, []byte{ComPing}), wire(0, []byte{ComPing})...), uint8(0), uint16(64), false)
	f.Add([]byte{0xff, 0xff, 0xff, 0x00, 1, 2, 3}, uint8(0), uint16(0xffff), false)
	f.Add([]byte{0x05, 0x00, 0x00, 0x03, 'a'}, uint8(3), uint16(4), false)
	f.Add(append(wire(255, []byte("wrap")), wire(0, []byte("around"))...), uint8(255), uint16(16), false)
	f.Add(wire(1, seedHandshakeResponses()[1]), uint8(1), uint16(4096), false)
	f.Add(append(wire(0, []byte("select 1")), wire(1, []byte("more"))...), uint8(0), uint16(64), true)
	f.Fuzz(func(t *testing.T, in []byte, seq uint8, maxPacket uint16, own bool) {
		limit := int(maxPacket)
		wantPkts, wantSeq, wantErr := refRead(in, seq, limit)

		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		c := NewConn(newBytesConn(in), NewBufferPool(512))
		c.Seq, c.MaxPacket = seq, limit
		if own {
			// The small reader a client connection keeps between commands.
			c.UseOwnReader(16)
		}
		var got [][]byte
		var err error
		for {
			var pkt []byte
			if pkt, err = c.ReadPacket(); err != nil {
				if pkt != nil {
					t.Fatalf("payload returned with error %v", err)
				}
				break
			}
			if len(pkt) > limit || cap(pkt) > limit {
				t.Fatalf("packet len %d cap %d over MaxPacket %d", len(pkt), cap(pkt), limit)
			}
			got = append(got, pkt)
		}
		runtime.ReadMemStats(&after)

		if !errors.Is(err, wantErr) {
			t.Fatalf("final error %v, want %v", err, wantErr)
		}
		if c.Seq != wantSeq {
			t.Fatalf("final Seq %d, want %d", c.Seq, wantSeq)
		}
		if len(got) != len(wantPkts) {
			t.Fatalf("read %d packets, want %d", len(got), len(wantPkts))
		}
		for i := range got {
			if !bytes.Equal(got[i], wantPkts[i]) {
				t.Fatalf("packet %d = % x, want % x", i, got[i], wantPkts[i])
			}
		}
		// Payloads come out of the input, plus at most one refused or cut
		// packet of at most MaxPacket, plus buffers and bookkeeping.
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > uint64(len(in)+limit+64<<10) {
			t.Fatalf("allocated %d bytes for %d input bytes with MaxPacket %d", alloc, len(in), limit)
		}
	})
}

// FuzzRawPackets drives the relay API (ReadHeader, PeekByte, CopyPayload,
// Discard) over arbitrary input: what is copied must be the input's wire
// packets renumbered, sequence ids are checked on every header, and a cut
// stream ends in io.ErrUnexpectedEOF, not a panic.
func FuzzRawPackets(f *testing.F) {
	f.Add(append(wire(1, []byte{0x01}), wire(2, seedColumnDefs()[0])...), uint8(1))
	f.Add(append(wire(1, seedOKPackets()[1]), wire(2, []byte{0xfe, 0, 0, 2, 0})...), uint8(1))
	f.Add([]byte{1, 0, 0, 0}, uint8(0))
	f.Add([]byte{1, 0, 0, 0, 'x', 0, 0, 0, 2}, uint8(0))
	f.Fuzz(func(t *testing.T, in []byte, seq uint8) {
		src := NewConn(newBytesConn(in), NewBufferPool(64))
		src.Seq = seq
		out := newBytesConn(nil)
		dst := NewConn(out, NewBufferPool(64))
		var want []byte
		rest := in
		for i := 0; ; i++ {
			n, err := src.ReadHeader()
			if len(rest) < 4 {
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("header %d with %d bytes left: %v", i, len(rest), err)
				}
				break
			}
			if rest[3] != byte(int(seq)+i) {
				if !errors.Is(err, ErrOutOfOrder) {
					t.Fatalf("header %d with sequence %d, want %d: %v", i, rest[3], byte(int(seq)+i), err)
				}
				break
			}
			if err != nil {
				t.Fatalf("header %d: %v", i, err)
			}
			if want := int(rest[0]) | int(rest[1])<<8 | int(rest[2])<<16; n != want {
				t.Fatalf("header %d length %d, want %d", i, n, want)
			}
			avail := len(rest) - 4
			if n > 0 && avail > 0 {
				if b, err := src.PeekByte(); err != nil || b != rest[4] {
					t.Fatalf("PeekByte = %x, %v; want %x", b, err, rest[4])
				}
			}
			if i%2 == 0 {
				err = src.CopyPayload(dst, n)
			} else {
				err = src.Discard(n)
			}
			if avail < n {
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("payload %d cut at %d of %d bytes: %v", i, avail, n, err)
				}
				break
			}
			if err != nil {
				t.Fatalf("payload %d: %v", i, err)
			}
			if i%2 == 0 {
				want = append(want, wire(byte(i/2), rest[4:4+n])...)
			}
			rest = rest[4+n:]
		}
		if err := dst.Flush(); err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(out.written(), want) {
			t.Fatalf("relayed % x, want prefix % x", out.written(), want)
		}
	})
}

// FuzzPacketRoundTrip writes payloads with WritePacket and reads them back
// with ReadPacket.
func FuzzPacketRoundTrip(f *testing.F) {
	f.Add([]byte("select 1"), []byte{}, []byte{0xfe, 0, 0}, uint8(0))
	f.Add(seedOKPackets()[2], seedColumnDefs()[1], []byte(nil), uint8(200))
	f.Fuzz(func(t *testing.T, a, b, c []byte, seq uint8) {
		out := newBytesConn(nil)
		w := NewConn(out, NewBufferPool(32))
		w.Seq = seq
		for _, p := range [][]byte{a, b, c} {
			if err := w.WritePacket(p); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		r := NewConn(newBytesConn(out.written()), NewBufferPool(32))
		r.Seq = seq
		r.MaxPacket = max(len(a), len(b), len(c))
		for i, p := range [][]byte{a, b, c} {
			got, err := r.ReadPacket()
			if err != nil {
				t.Fatalf("packet %d: %v", i, err)
			}
			if !bytes.Equal(got, p) {
				t.Fatalf("packet %d = % x, want % x", i, got, p)
			}
		}
		if r.Seq != w.Seq || r.Seq != seq+3 {
			t.Fatalf("reader Seq %d, writer Seq %d, want %d", r.Seq, w.Seq, seq+3)
		}
	})
}

// FuzzLenEnc checks the length-encoded integer and string codecs: decoding
// arbitrary bytes stays in bounds, and encoding then decoding gives the
// value back.
func FuzzLenEnc(f *testing.F) {
	for _, b := range [][]byte{{0x00}, {0xfa}, {0xfb}, {0xfc, 0xfb, 0x00}, {0xfd, 1, 2, 3}, {0xfe, 1, 2, 3, 4, 5, 6, 7, 8}, {0xff}, {0x03, 'a', 'b', 'c'}, {0xfc, 0xff, 0xff}} {
		f.Add(b, uint64(0), []byte("x"))
	}
	f.Add([]byte{}, uint64(250), []byte{})
	f.Add([]byte{}, uint64(251), make([]byte, 251))
	f.Add([]byte{}, uint64(1<<24), make([]byte, 1<<16))
	f.Add([]byte{}, uint64(1<<64-1), []byte("def"))
	f.Fuzz(func(t *testing.T, in []byte, v uint64, s []byte) {
		if got, isNull, n, err := ReadLenEncInt(in); err == nil {
			if n < 1 || n > 9 || n > len(in) {
				t.Fatalf("ReadLenEncInt(% x) consumed %d", in, n)
			}
			if isNull != (in[0] == 0xfb) || (isNull && got != 0) {
				t.Fatalf("ReadLenEncInt(% x) NULL = %v value %d", in, isNull, got)
			}
		} else if !IsMalformed(err) {
			t.Fatalf("error not marked malformed: %v", err)
		}
		if str, n, err := ReadLenEncString(in); err == nil {
			if n > len(in) || len(str) > n {
				t.Fatalf("ReadLenEncString(% x) = %d bytes, consumed %d", in, len(str), n)
			}
			if len(str) > 0 && !bytes.Equal(in[n-len(str):n], str) {
				t.Fatalf("string is not the tail of the consumed bytes")
			}
		} else if !IsMalformed(err) {
			t.Fatalf("error not marked malformed: %v", err)
		}

		enc := AppendLenEncInt([]byte{0xaa}, v)
		got, isNull, n, err := ReadLenEncInt(enc[1:])
		if err != nil || isNull || got != v || n != len(enc)-1 {
			t.Fatalf("int %d: encoded % x, decoded %d null %v n %d err %v", v, enc[1:], got, isNull, n, err)
		}
		senc := AppendLenEncString(nil, s)
		str, n, err := ReadLenEncString(append(senc, 0x99))
		if err != nil || !bytes.Equal(str, s) || n != len(senc) {
			t.Fatalf("string of %d bytes: decoded %d bytes n %d err %v", len(s), len(str), n, err)
		}
	})
}

// FuzzParseOK checks ParseOK on arbitrary input and the AppendOK round
// trip: decoding, re-encoding and decoding again gives the same packet.
func FuzzParseOK(f *testing.F) {
	caps := []uint32{ClientProtocol41, ClientProtocol41 | ClientSessionTrack}
	for _, p := range seedOKPackets() {
		for _, c := range caps {
			f.Add(p, c)
		}
	}
	f.Fuzz(func(t *testing.T, in []byte, caps uint32) {
		ok, err := ParseOK(in, caps)
		if err != nil {
			if !IsMalformed(err) {
				t.Fatalf("error not marked malformed: %v", err)
			}
			return
		}
		if ok.SessionState != nil && (caps&ClientSessionTrack == 0 || ok.Status&StatusSessionStateChanged == 0) {
			t.Fatalf("session state without CLIENT_SESSION_TRACK and the status flag")
		}
		_ = ParseSessionState(ok.SessionState, func(SessionChange) {})

		enc := AppendOK(nil, in[0], ok, caps)
		ok2, err := ParseOK(enc, caps)
		if err != nil {
			t.Fatalf("re-encoded OK % x does not parse: %v", enc, err)
		}
		// AppendOK drops the state-changed flag when no state goes with it.
		if ok.SessionState == nil {
			ok.Status &^= StatusSessionStateChanged
		}
		if !okEqual(ok, ok2) {
			t.Fatalf("round trip changed the OK packet:\n%+v\n%+v", ok, ok2)
		}
	})
}

func okEqual(a, b OK) bool {
	return a.AffectedRows == b.AffectedRows && a.LastInsertID == b.LastInsertID && a.Status == b.Status &&
		a.Warnings == b.Warnings && bytes.Equal(a.Info, b.Info) && bytes.Equal(a.SessionState, b.SessionState) &&
		(a.SessionState == nil) == (b.SessionState == nil)
}

// FuzzOKRoundTrip encodes OK packets from arbitrary fields.
func FuzzOKRoundTrip(f *testing.F) {
	f.Add(uint64(1), uint64(1000), StatusAutocommit|StatusSessionStateChanged, uint16(2), []byte("Rows matched: 1"), seedSessionState(), true, false)
	f.Add(uint64(0), uint64(0), StatusInTrans, uint16(0), []byte{}, []byte(nil), false, true)
	f.Add(uint64(1<<63), uint64(251), StatusSessionStateChanged, uint16(0), []byte(nil), []byte{}, true, true)
	f.Fuzz(func(t *testing.T, affected, lastID uint64, status, warnings uint16, info, state []byte, track, eof bool) {
		caps := ClientProtocol41
		if track {
			caps |= ClientSessionTrack
		}
		header := OKPacket
		if eof {
			header = EOFPacket
		}
		in := OK{AffectedRows: affected, LastInsertID: lastID, Status: status, Warnings: warnings, Info: info, SessionState: state}
		got, err := ParseOK(AppendOK(nil, header, in, caps), caps)
		if err != nil {
			t.Fatal(err)
		}
		want := in
		if !track || state == nil {
			want.Status &^= StatusSessionStateChanged
		}
		if want.Status&StatusSessionStateChanged == 0 {
			want.SessionState = nil
		}
		if got.AffectedRows != want.AffectedRows || got.LastInsertID != want.LastInsertID || got.Status != want.Status ||
			got.Warnings != want.Warnings || !bytes.Equal(got.Info, want.Info) || !bytes.Equal(got.SessionState, want.SessionState) ||
			(want.SessionState != nil) != (got.SessionState != nil) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
		}
	})
}

// FuzzParseErr checks ParseErr and the AppendErr round trip.
func FuzzParseErr(f *testing.F) {
	f.Add(AppendErr(nil, NewSQLError(ERAccessDenied, "Access denied for user 'u'@'h' (using password: YES)")), uint16(1045), "28000", "msg")
	f.Add([]byte{0xff, 0x10, 0x04, 'T', 'o', 'o', ' ', 'm', 'a', 'n', 'y'}, uint16(1040), "08004", "")
	f.Add([]byte{0xff, 0x48, 0x04, '#', '4', '2'}, uint16(1146), "bad", "Table 'x.y' doesn't exist")
	f.Fuzz(func(t *testing.T, in []byte, num uint16, state, msg string) {
		if e, err := ParseErr(in); err == nil {
			if len(e.State) != 5 {
				t.Fatalf("SQL state %q is not 5 bytes", e.State)
			}
			// Re-encoding a parsed error keeps it, unless the message itself
			// looked like a state marker.
			e2, err := ParseErr(AppendErr(nil, e))
			if err != nil || *e2 != *e {
				t.Fatalf("round trip of %+v: %+v, %v", e, e2, err)
			}
		} else if !IsMalformed(err) {
			t.Fatalf("error not marked malformed: %v", err)
		}
		in2 := &SQLError{Num: num, State: state, Message: msg}
		got, err := ParseErr(AppendErr(nil, in2))
		if err != nil {
			t.Fatal(err)
		}
		want := *in2
		if len(want.State) != 5 {
			want.State = "HY000"
		}
		if *got != want {
			t.Fatalf("round trip: got %+v, want %+v", got, want)
		}
	})
}

// FuzzParseEOF checks ParseEOF and the AppendEOF round trip.
func FuzzParseEOF(f *testing.F) {
	f.Add([]byte{0xfe, 0, 0, 2, 0}, uint16(0), uint16(2))
	f.Add([]byte{0xfe}, uint16(1), StatusMoreResultsExists)
	f.Add([]byte{0xfe, 0, 0, 0x22, 0, 0, 0, 0, 0, 0}, uint16(0), StatusSessionStateChanged)
	f.Fuzz(func(t *testing.T, in []byte, warnings, status uint16) {
		if _, err := ParseEOF(in); err == nil && (len(in) == 0 || in[0] != EOFPacket || len(in) > 9) {
			t.Fatalf("ParseEOF accepted % x", in)
		}
		got, err := ParseEOF(AppendEOF(nil, warnings, status))
		if err != nil {
			t.Fatal(err)
		}
		if got.Warnings != warnings || got.Status != status&^StatusSessionStateChanged {
			t.Fatalf("round trip: %+v from %d/%d", got, warnings, status)
		}
		if !IsEOFPacket(EOFPacket, len(AppendEOF(nil, warnings, status))) {
			t.Fatal("IsEOFPacket rejects an EOF packet")
		}
	})
}

// FuzzParseSessionState decodes arbitrary session state blocks and checks
// that well-formed ones come back entry by entry.
func FuzzParseSessionState(f *testing.F) {
	f.Add(seedSessionState(), "time_zone", "+00:00", "db")
	f.Add([]byte{0x05, 0x09, 0x08, 'I', '_', '_', '_', '_', '_', '_', '_'}, "", "", "")
	f.Add([]byte{0x03, 0x02, 0x00, 0x00}, "sql_mode", "", "")
	f.Fuzz(func(t *testing.T, in []byte, name, value, schema string) {
		err := ParseSessionState(in, func(sc SessionChange) {})
		if err != nil && !IsMalformed(err) {
			t.Fatalf("error not marked malformed: %v", err)
		}
		var b []byte
		b = appendSessionChange(b, SessionTrackSystemVariables, name, value)
		b = appendSessionChange(b, SessionTrackSchema, schema, "")
		b = appendSessionChange(b, SessionTrackStateChange, "", "1")
		b = appendSessionChange(b, SessionTrackTransactionState, "", value)
		var got []SessionChange
		if err := ParseSessionState(b, func(sc SessionChange) { got = append(got, sc) }); err != nil {
			t.Fatal(err)
		}
		want := []SessionChange{
			{Type: SessionTrackSystemVariables, Name: name, Value: value},
			{Type: SessionTrackSchema, Name: schema},
			{Type: SessionTrackStateChange, Value: "1"},
			{Type: SessionTrackTransactionState, Value: value},
		}
		if len(got) != len(want) {
			t.Fatalf("got %d entries, want %d", len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("entry %d = %+v, want %+v", i, got[i], want[i])
			}
		}
	})
}

// FuzzParseColumnDef checks ParseColumnDef and the AppendColumnDef round
// trip.
func FuzzParseColumnDef(f *testing.F) {
	for _, p := range seedColumnDefs() {
		f.Add(p, "s", "t", "c", uint16(63), uint32(11), byte(3), uint16(0), byte(0))
	}
	f.Add([]byte{0x03, 'd', 'e', 'f', 0, 0, 0, 0, 0, 0x0c}, "", "", "", uint16(0), uint32(0), byte(0), uint16(0), byte(0))
	f.Fuzz(func(t *testing.T, in []byte, schema, table, name string, charset uint16, length uint32, typ byte, flags uint16, decimals byte) {
		if c, err := ParseColumnDef(in); err == nil {
			c2, err := ParseColumnDef(AppendColumnDef(nil, c))
			if err != nil || c2 != c {
				t.Fatalf("round trip of parsed %+v: %+v, %v", c, c2, err)
			}
		} else if !IsMalformed(err) {
			t.Fatalf("error not marked malformed: %v", err)
		}
		in2 := ColumnDef{Schema: schema, Table: table, OrgTable: table + "_org", Name: name, OrgName: strings.ToUpper(name),
			Charset: charset, Length: length, Type: typ, Flags: flags, Decimals: decimals}
		got, err := ParseColumnDef(AppendColumnDef(nil, in2))
		if err != nil || got != in2 {
			t.Fatalf("round trip of %+v: %+v, %v", in2, got, err)
		}
	})
}

// FuzzParsePrepareOK checks ParsePrepareOK and the AppendPrepareOK round
// trip.
func FuzzParsePrepareOK(f *testing.F) {
	f.Add(AppendPrepareOK(nil, PrepareOK{StmtID: 1, Columns: 2, Params: 1}), uint32(7), uint16(0), uint16(3), uint16(1))
	f.Add([]byte{0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}, uint32(1<<31), uint16(0xffff), uint16(0), uint16(0))
	f.Add([]byte{0xff, 0x19, 0x04, '#', '4', '2', '0', '0', '0'}, uint32(0), uint16(0), uint16(0), uint16(0))
	f.Fuzz(func(t *testing.T, in []byte, id uint32, cols, params, warnings uint16) {
		if p, err := ParsePrepareOK(in); err == nil {
			p2, err := ParsePrepareOK(AppendPrepareOK(nil, p))
			if err != nil || p2 != p {
				t.Fatalf("round trip of parsed %+v: %+v, %v", p, p2, err)
			}
		} else if !IsMalformed(err) {
			t.Fatalf("error not marked malformed: %v", err)
		}
		want := PrepareOK{StmtID: id, Columns: cols, Params: params, Warnings: warnings}
		got, err := ParsePrepareOK(AppendPrepareOK(nil, want))
		if err != nil || got != want {
			t.Fatalf("round trip of %+v: %+v, %v", want, got, err)
		}
	})
}

// FuzzParseGreeting decodes arbitrary greetings. Whatever it accepts must
// be safe to answer: the client computes its auth response from the
// scramble without panicking.
func FuzzParseGreeting(f *testing.F) {
	for _, g := range seedGreetings() {
		f.Add(g, "10.11.6-MariaDB", uint32(5), uint32(ClientProtocol41|ClientSecureConnection|ClientPluginAuth), byte(45))
	}
	f.Fuzz(func(t *testing.T, in []byte, version string, connID, caps uint32, collation byte) {
		if g, err := ParseGreeting(in); err == nil {
			for _, plugin := range []string{g.Plugin, AuthNativePassword, AuthCachingSHA2Password} {
				_, _ = authResponse(plugin, g.Scramble, "password", false)
			}
		} else {
			var se *SQLError
			if !IsMalformed(err) && !errors.As(err, &se) {
				t.Fatalf("error neither malformed nor a server error: %v", err)
			}
		}

		if strings.IndexByte(version, 0) >= 0 {
			return
		}
		caps |= ClientProtocol41 | ClientSecureConnection | ClientPluginAuth
		scramble := []byte("01234567890123456789")
		g, err := ParseGreeting(appendGreeting(nil, connID, version, scramble, caps, collation, AuthNativePassword))
		if err != nil {
			t.Fatal(err)
		}
		if g.Version != version || g.ConnID != connID || g.Caps != caps || g.Collation != collation ||
			g.Status != StatusAutocommit || !bytes.Equal(g.Scramble, scramble) || g.Plugin != AuthNativePassword {
			t.Fatalf("round trip: %+v", g)
		}
	})
}

// FuzzParseHandshakeResponse decodes arbitrary handshake responses and
// checks the round trip of well-formed ones.
func FuzzParseHandshakeResponse(f *testing.F) {
	for _, p := range seedHandshakeResponses() {
		f.Add(p, uint32(ClientProtocol41|ClientSecureConnection|ClientPluginAuth|ClientConnectWithDB), "app", []byte("auth"), "shop", "mysql_native_password", "k", "v")
	}
	f.Add([]byte{}, ClientProtocol41|ClientPluginAuthLenencClientData|ClientConnectAttrs|ClientPluginAuth, "", []byte{}, "", "", "", "")
	f.Fuzz(func(t *testing.T, in []byte, caps uint32, user string, auth []byte, db, plugin, key, value string) {
		if hr, err := ParseHandshakeResponse(in); err != nil {
			if !IsMalformed(err) {
				t.Fatalf("error not marked malformed: %v", err)
			}
		} else if len(hr.Attrs) > 64 {
			t.Fatalf("%d connection attributes kept", len(hr.Attrs))
		}

		if strings.IndexByte(user+db+plugin, 0) >= 0 {
			return
		}
		caps |= ClientProtocol41
		if caps&(ClientPluginAuthLenencClientData|ClientSecureConnection) == 0 {
			if bytes.IndexByte(auth, 0) >= 0 {
				return
			}
		} else if caps&ClientPluginAuthLenencClientData == 0 && len(auth) > 255 {
			auth = auth[:255]
		}
		want := HandshakeResponse{Caps: caps, MaxPacket: 1 << 24, Collation: 45, User: user, AuthResponse: auth}
		if caps&ClientConnectWithDB != 0 {
			want.DB = db
		}
		if caps&ClientPluginAuth != 0 {
			want.Plugin = plugin
		}
		if caps&ClientConnectAttrs != 0 {
			want.Attrs = map[string]string{key: value}
		}
		got, err := ParseHandshakeResponse(handshakeResponse(want))
		if err != nil {
			t.Fatal(err)
		}
		if got.Caps != want.Caps || got.MaxPacket != want.MaxPacket || got.Collation != want.Collation || got.User != want.User ||
			!bytes.Equal(got.AuthResponse, want.AuthResponse) || got.DB != want.DB || got.Plugin != want.Plugin || !maps.Equal(got.Attrs, want.Attrs) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
		}
	})
}

// FuzzParseChangeUser decodes arbitrary COM_CHANGE_USER packets and checks
// the round trip of well-formed ones.
func FuzzParseChangeUser(f *testing.F) {
	caps := ClientProtocol41 | ClientSecureConnection | ClientPluginAuth | ClientConnectAttrs
	seed := changeUserPacket(ChangeUserRequest{User: "app", AuthResponse: ScrambleNative([]byte("abcdefghijklmnopqrst"), "pw"), DB: "shop", Collation: 45, Plugin: AuthNativePassword, Attrs: map[string]string{"_client_name": "Go-MySQL-Driver"}}, caps)
	f.Add(seed, caps, "u", []byte("x"), "db", byte(33), "mysql_native_password", "k", "v")
	f.Add([]byte{ComChangeUser, 'u', 0, 0, 0}, ClientProtocol41, "", []byte{}, "", byte(0), "", "", "")
	f.Add([]byte{ComChangeUser, 'u', 0, 20}, ClientSecureConnection, "root", []byte{}, "", byte(255), "", "", "")
	f.Fuzz(func(t *testing.T, in []byte, caps uint32, user string, auth []byte, db string, collation byte, plugin, key, value string) {
		if _, err := ParseChangeUser(in, caps); err != nil && !IsMalformed(err) {
			t.Fatalf("error not marked malformed: %v", err)
		}

		if strings.IndexByte(user+db+plugin, 0) >= 0 {
			return
		}
		if caps&ClientSecureConnection == 0 {
			if bytes.IndexByte(auth, 0) >= 0 {
				return
			}
		} else if len(auth) > 255 {
			auth = auth[:255]
		}
		want := ChangeUserRequest{User: user, AuthResponse: auth, DB: db, Collation: collation}
		if caps&ClientPluginAuth != 0 {
			want.Plugin = plugin
		}
		if caps&ClientConnectAttrs != 0 {
			want.Attrs = map[string]string{key: value}
		}
		got, err := ParseChangeUser(changeUserPacket(want, caps), caps)
		if err != nil {
			t.Fatal(err)
		}
		if got.User != want.User || !bytes.Equal(got.AuthResponse, want.AuthResponse) || got.DB != want.DB ||
			got.Collation != want.Collation || got.Plugin != want.Plugin || !maps.Equal(got.Attrs, want.Attrs) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
		}
	})
}

// TestParseSessionStateChangeForms accepts the state-change flag as MariaDB
// sends it (0x02, 0x01, '1') and as MySQL documents it (a length-encoded
// string inside the entry's data).
func TestParseSessionStateChangeForms(t *testing.T) {
	for name, in := range map[string][]byte{
		"mariadb": {SessionTrackStateChange, 0x01, '1'},
		"mysql":   {SessionTrackStateChange, 0x02, 0x01, '1'},
	} {
		var got []SessionChange
		if err := ParseSessionState(in, func(sc SessionChange) { got = append(got, sc) }); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(got) != 1 || got[0].Type != SessionTrackStateChange || got[0].Value != "1" {
			t.Fatalf("%s: got %+v", name, got)
		}
	}
}
