package mysql

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// bytesConn is a net.Conn that reads from a fixed byte stream and records
// what is written; it lets framing tests run without a socket.
type bytesConn struct {
	r      *bytes.Reader
	w      bytes.Buffer
	closed bool
}

func newBytesConn(in []byte) *bytesConn { return &bytesConn{r: bytes.NewReader(in)} }

func (b *bytesConn) Read(p []byte) (int, error)  { return b.r.Read(p) }
func (b *bytesConn) Write(p []byte) (int, error) { return b.w.Write(p) }
func (b *bytesConn) Close() error                { b.closed = true; return nil }
func (b *bytesConn) LocalAddr() net.Addr         { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 3306} }
func (b *bytesConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (b *bytesConn) SetDeadline(time.Time) error      { return nil }
func (b *bytesConn) SetReadDeadline(time.Time) error  { return nil }
func (b *bytesConn) SetWriteDeadline(time.Time) error { return nil }
func (b *bytesConn) written() []byte                  { return b.w.Bytes() }
func (b *bytesConn) reset(in []byte)                  { b.r = bytes.NewReader(in) }
func (b *bytesConn) isClosed() bool                   { return b.closed }

// wire builds one wire packet.
func wire(seq byte, payload []byte) []byte {
	n := len(payload)
	return append([]byte{byte(n), byte(n >> 8), byte(n >> 16), seq}, payload...)
}

// pattern returns n bytes that differ from position to position, so that a
// misplaced split shows up as a mismatch.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>16)
	}
	return b
}

func TestWritePacketSplitsAndReadPacketJoins(t *testing.T) {
	tests := []struct {
		name string
		size int
		// wire lists the payload length of each wire packet expected.
		wire []int
	}{
		{"empty", 0, []int{0}},
		{"one byte", 1, []int{1}},
		{"just under the limit", MaxPayloadLen - 1, []int{MaxPayloadLen - 1}},
		{"exactly the limit ends with an empty packet", MaxPayloadLen, []int{MaxPayloadLen, 0}},
		{"one over the limit", MaxPayloadLen + 1, []int{MaxPayloadLen, 1}},
		{"two full packets", 2 * MaxPayloadLen, []int{MaxPayloadLen, MaxPayloadLen, 0}},
		{"two and a bit", 2*MaxPayloadLen + 5, []int{MaxPayloadLen, MaxPayloadLen, 5}},
	}
	pool := NewBufferPool(0)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			payload := pattern(tt.size)
			out := newBytesConn(nil)
			w := NewConn(out, pool)
			w.Seq = 250 // the sequence wraps around 255
			if err := w.WritePacket(payload); err != nil {
				t.Fatal(err)
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			if want := byte(250 + len(tt.wire)); w.Seq != want {
				t.Errorf("writer Seq = %d, want %d", w.Seq, want)
			}
			raw := out.written()
			pos := 0
			for i, n := range tt.wire {
				if len(raw) < pos+4 {
					t.Fatalf("wire packet %d: stream ends at %d", i, len(raw))
				}
				got := int(raw[pos]) | int(raw[pos+1])<<8 | int(raw[pos+2])<<16
				if got != n || raw[pos+3] != byte(250+i) {
					t.Fatalf("wire packet %d: length %d seq %d, want %d seq %d", i, got, raw[pos+3], n, byte(250+i))
				}
				pos += 4 + n
			}
			if pos != len(raw) {
				t.Fatalf("wire stream is %d bytes, want %d", len(raw), pos)
			}

			r := NewConn(newBytesConn(raw), pool)
			r.Seq = 250
			r.MaxPacket = tt.size
			got, err := r.ReadPacket()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, payload) {
				t.Fatalf("payload of %d bytes read back as %d bytes, differing", len(payload), len(got))
			}
			if cap(got) > r.MaxPacket {
				t.Errorf("payload capacity %d exceeds MaxPacket %d", cap(got), tt.size)
			}
			if r.Seq != w.Seq {
				t.Errorf("reader Seq = %d, writer Seq = %d", r.Seq, w.Seq)
			}
			if _, err := r.ReadPacket(); !errors.Is(err, io.EOF) {
				t.Errorf("read after the last packet: %v, want io.EOF", err)
			}
		})
	}
}

func TestReadPacketErrors(t *testing.T) {
	big := append(wire(0, pattern(MaxPayloadLen)), wire(1, pattern(10))...)
	tests := []struct {
		name      string
		in        []byte
		seq       uint8
		maxPacket int
		want      error
	}{
		{"clean end", nil, 0, 100, io.EOF},
		{"partial header", []byte{5, 0}, 0, 100, io.ErrUnexpectedEOF},
		{"short payload", []byte{5, 0, 0, 0, 'a', 'b'}, 0, 100, io.ErrUnexpectedEOF},
		{"sequence too high", wire(3, []byte("x")), 2, 100, ErrOutOfOrder},
		{"sequence too low", wire(1, []byte("x")), 2, 100, ErrOutOfOrder},
		{"over MaxPacket", wire(0, pattern(101)), 0, 100, ErrPacketTooLarge},
		{"at MaxPacket", wire(0, pattern(100)), 0, 100, nil},
		{"continuation over MaxPacket", big, 0, MaxPayloadLen + 9, ErrPacketTooLarge},
		{"continuation at MaxPacket", big, 0, MaxPayloadLen + 10, nil},
		{"continuation out of order", append(wire(0, pattern(MaxPayloadLen)), wire(2, nil)...), 0, 1 << 30, ErrOutOfOrder},
		{"continuation missing", wire(0, pattern(MaxPayloadLen)), 0, 1 << 30, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewConn(newBytesConn(tt.in), NewBufferPool(0))
			c.Seq, c.MaxPacket = tt.seq, tt.maxPacket
			pkt, err := c.ReadPacket()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("ReadPacket: %v", err)
				}
				if len(pkt) > tt.maxPacket {
					t.Fatalf("read %d bytes over MaxPacket %d", len(pkt), tt.maxPacket)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("ReadPacket error = %v, want %v", err, tt.want)
			}
			if pkt != nil {
				t.Errorf("ReadPacket returned %d bytes with an error", len(pkt))
			}
		})
	}
}

func TestReadPacketTooLargeDoesNotAllocate(t *testing.T) {
	// A header claiming 16 MiB must be refused before a buffer of that size
	// is made.
	in := []byte{0xff, 0xff, 0xff, 0}
	allocs := testing.AllocsPerRun(20, func() {
		c := &Conn{nc: newBytesConn(in), pool: NewBufferPool(0), MaxPacket: 1024}
		if _, err := c.ReadPacket(); !errors.Is(err, ErrPacketTooLarge) {
			t.Fatalf("ReadPacket: %v", err)
		}
	})
	if allocs > 10 {
		t.Errorf("%v allocations for a refused header", allocs)
	}
}

func TestSequenceAcrossCommands(t *testing.T) {
	out := newBytesConn(nil)
	c := NewConn(out, NewBufferPool(0))
	c.Seq = 7
	if err := c.WriteCommand([]byte{ComPing}); err != nil {
		t.Fatal(err)
	}
	if c.Seq != 1 {
		t.Fatalf("Seq after WriteCommand = %d, want 1", c.Seq)
	}
	if want := wire(0, []byte{ComPing}); !bytes.Equal(out.written(), want) {
		t.Fatalf("wrote % x, want % x", out.written(), want)
	}
	// The response must continue the sequence.
	out.reset(append(wire(1, []byte{OKPacket, 0, 0, 2, 0, 0, 0}), wire(1, []byte{OKPacket})...))
	if _, err := c.ReadPacket(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadPacket(); !errors.Is(err, ErrOutOfOrder) {
		t.Fatalf("repeated sequence id: %v, want ErrOutOfOrder", err)
	}
}

func TestRawPacketAPI(t *testing.T) {
	in := append(wire(1, []byte("hello")), wire(2, []byte("world!"))...)
	src := NewConn(newBytesConn(in), NewBufferPool(0))
	src.Seq = 1
	out := newBytesConn(nil)
	dst := NewConn(out, NewBufferPool(0))
	dst.Seq = 9

	n, err := src.ReadHeader()
	if err != nil || n != 5 {
		t.Fatalf("ReadHeader = %d, %v", n, err)
	}
	if b, err := src.PeekByte(); err != nil || b != 'h' {
		t.Fatalf("PeekByte = %q, %v", b, err)
	}
	if err := src.CopyPayload(dst, n); err != nil {
		t.Fatal(err)
	}
	n, err = src.ReadHeader()
	if err != nil || n != 6 {
		t.Fatalf("second ReadHeader = %d, %v", n, err)
	}
	if b, err := src.Peek(3); err != nil || string(b) != "wor" {
		t.Fatalf("Peek = %q, %v", b, err)
	}
	if err := src.Discard(n); err != nil {
		t.Fatal(err)
	}
	if err := dst.WriteRaw([]byte("raw")); err != nil {
		t.Fatal(err)
	}
	if err := dst.Flush(); err != nil {
		t.Fatal(err)
	}
	want := append(wire(9, []byte("hello")), wire(10, []byte("raw"))...)
	if !bytes.Equal(out.written(), want) {
		t.Fatalf("relayed % x, want % x", out.written(), want)
	}
	if _, err := src.ReadHeader(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("ReadHeader at the end = %v, want io.ErrUnexpectedEOF", err)
	}

	short := NewConn(newBytesConn(wire(0, []byte("ab"))[:5]), NewBufferPool(0))
	if n, err := short.ReadHeader(); err != nil {
		t.Fatal(err)
	} else if _, err := short.ReadPayload(n); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("ReadPayload of a cut packet = %v", err)
	}
}

func TestReleaseBuffers(t *testing.T) {
	pool := NewBufferPool(0)

	t.Run("nothing buffered gives both buffers back", func(t *testing.T) {
		nc := newBytesConn(wire(0, []byte("one")))
		c := NewConn(nc, pool)
		if _, err := c.ReadPacket(); err != nil {
			t.Fatal(err)
		}
		if err := c.WritePacket([]byte("reply")); err != nil {
			t.Fatal(err)
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		c.ReleaseBuffers()
		if c.br != nil || c.bw != nil {
			t.Fatalf("buffers still held: reader %v writer %v", c.br != nil, c.bw != nil)
		}
		if c.Buffered() != 0 {
			t.Fatalf("Buffered = %d", c.Buffered())
		}
	})

	t.Run("read-ahead input is kept", func(t *testing.T) {
		in := append(wire(0, []byte("one")), wire(1, []byte("two"))...)
		c := NewConn(newBytesConn(in), pool)
		if _, err := c.ReadPacket(); err != nil {
			t.Fatal(err)
		}
		if c.Buffered() != 7 {
			t.Fatalf("Buffered = %d, want 7", c.Buffered())
		}
		c.ReleaseBuffers()
		if c.br == nil {
			t.Fatal("reader with unread input was released")
		}
		pkt, err := c.ReadPacket()
		if err != nil || string(pkt) != "two" {
			t.Fatalf("second packet = %q, %v", pkt, err)
		}
	})

	t.Run("unflushed output is kept", func(t *testing.T) {
		nc := newBytesConn(nil)
		c := NewConn(nc, pool)
		if err := c.WritePacket([]byte("pending")); err != nil {
			t.Fatal(err)
		}
		c.ReleaseBuffers()
		if c.bw == nil {
			t.Fatal("writer with unflushed output was released")
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(nc.written(), wire(0, []byte("pending"))) {
			t.Fatalf("wrote % x", nc.written())
		}
	})

	t.Run("Close releases and closes", func(t *testing.T) {
		nc := newBytesConn(append(wire(0, []byte("a")), wire(1, []byte("b"))...))
		c := NewConn(nc, pool)
		if _, err := c.ReadPacket(); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if !nc.isClosed() || c.br != nil || c.bw != nil {
			t.Fatalf("after Close: closed %v reader %v writer %v", nc.isClosed(), c.br != nil, c.bw != nil)
		}
	})
}

func TestDetachNetConn(t *testing.T) {
	pool := NewBufferPool(0)

	t.Run("read-ahead bytes come first", func(t *testing.T) {
		// A client may send its TLS hello right behind the SSL request: the
		// bytes the reader took ahead must reach the TLS layer.
		hello := []byte("\x16\x03\x01 client hello")
		nc := newBytesConn(append(wire(1, make([]byte, 32)), hello...))
		c := NewConn(nc, pool)
		c.Seq = 1
		if _, err := c.ReadPacket(); err != nil {
			t.Fatal(err)
		}
		if c.Buffered() == 0 {
			t.Fatal("test needs read-ahead input")
		}
		raw := c.DetachNetConn()
		if c.br != nil || c.Buffered() != 0 {
			t.Fatal("reader still held after DetachNetConn")
		}
		got, err := io.ReadAll(raw)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, hello) {
			t.Fatalf("detached conn yields %q, want %q", got, hello)
		}
	})

	t.Run("nothing buffered returns the conn itself", func(t *testing.T) {
		nc := newBytesConn(wire(0, []byte("x")))
		c := NewConn(nc, pool)
		if _, err := c.ReadPacket(); err != nil {
			t.Fatal(err)
		}
		if got := c.DetachNetConn(); got != net.Conn(nc) {
			t.Fatalf("DetachNetConn = %T, want the original conn", got)
		}
	})
}

func TestSetNetConnDiscardsOldInput(t *testing.T) {
	// SetNetConn documents that buffered input is dropped: reads after it
	// must come from the new connection only.
	c := NewConn(newBytesConn(append(wire(0, []byte("old")), wire(1, []byte("stale"))...)), NewBufferPool(0))
	if _, err := c.ReadPacket(); err != nil {
		t.Fatal(err)
	}
	c.SetNetConn(newBytesConn(wire(1, []byte("new"))))
	pkt, err := c.ReadPacket()
	if err != nil || string(pkt) != "new" {
		t.Fatalf("after SetNetConn read %q, %v; want \"new\"", pkt, err)
	}
}

func TestWritePacketOverPipe(t *testing.T) {
	// A real net.Conn with backpressure: a 20 MiB packet crosses a pipe
	// while the reader joins it.
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	payload := pattern(20 << 20)
	errc := make(chan error, 1)
	go func() {
		w := NewConn(a, NewBufferPool(0))
		if err := w.WritePacket(payload); err != nil {
			errc <- err
			return
		}
		errc <- w.Flush()
	}()
	r := NewConn(b, NewBufferPool(0))
	got, err := r.ReadPacket()
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) || r.Seq != 2 {
		t.Fatalf("read %d bytes (equal %v), Seq %d", len(got), bytes.Equal(got, payload), r.Seq)
	}
}

func TestLenEncIntBoundaries(t *testing.T) {
	tests := []struct {
		v    uint64
		size int
	}{
		{0, 1}, {250, 1}, {251, 3}, {0xffff, 3}, {0x10000, 4}, {0xffffff, 4}, {0x1000000, 9}, {1<<64 - 1, 9},
	}
	for _, tt := range tests {
		b := AppendLenEncInt(nil, tt.v)
		if len(b) != tt.size {
			t.Errorf("AppendLenEncInt(%d) is %d bytes, want %d", tt.v, len(b), tt.size)
		}
		v, isNull, n, err := ReadLenEncInt(b)
		if err != nil || isNull || n != tt.size || v != tt.v {
			t.Errorf("ReadLenEncInt(% x) = %d, %v, %d, %v", b, v, isNull, n, err)
		}
	}
	if _, isNull, n, err := ReadLenEncInt([]byte{0xfb}); err != nil || !isNull || n != 1 {
		t.Errorf("NULL marker: %v %d %v", isNull, n, err)
	}
	for _, bad := range [][]byte{nil, {0xff}, {0xfc, 1}, {0xfd, 1, 2}, {0xfe, 1, 2, 3, 4, 5, 6, 7}} {
		if _, _, _, err := ReadLenEncInt(bad); !IsMalformed(err) {
			t.Errorf("ReadLenEncInt(% x) error = %v, want malformed", bad, err)
		}
	}
	if _, _, err := ReadLenEncString([]byte{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}); !IsMalformed(err) {
		t.Errorf("huge string length: %v", err)
	}
}

func TestUseOwnReader(t *testing.T) {
	pool := NewBufferPool(0)

	t.Run("keeps its buffer while idle", func(t *testing.T) {
		c := NewConn(newBytesConn(append(wire(0, []byte("one")), wire(0, []byte("two"))...)), pool)
		c.UseOwnReader(64)
		for _, want := range []string{"one", "two"} {
			c.Seq = 0
			pkt, err := c.ReadPacket()
			if err != nil || string(pkt) != want {
				t.Fatalf("ReadPacket = %q, %v; want %q", pkt, err, want)
			}
			c.ReleaseBuffers()
			if c.br == nil {
				t.Fatal("own reader released")
			}
		}
		if err := c.Close(); err != nil || c.br != nil {
			t.Fatalf("Close: %v, reader kept %v", err, c.br != nil)
		}
	})

	t.Run("input read ahead by the pooled reader is not lost", func(t *testing.T) {
		// A client may pipeline its first command behind its login: the
		// bytes the pooled reader took ahead must be read after the switch.
		in := append(wire(1, []byte("login")), wire(0, []byte{ComQuery, '1'})...)
		c := NewConn(newBytesConn(in), pool)
		c.Seq = 1
		if _, err := c.ReadPacket(); err != nil {
			t.Fatal(err)
		}
		c.ReleaseBuffers()
		c.UseOwnReader(64)
		c.Seq = 0
		pkt, err := c.ReadPacket()
		if err != nil || string(pkt) != "\x031" {
			t.Fatalf("pipelined command = %q, %v", pkt, err)
		}
	})

	t.Run("larger packets than the buffer", func(t *testing.T) {
		payload := pattern(1000)
		c := NewConn(newBytesConn(wire(0, payload)), pool)
		c.UseOwnReader(16)
		pkt, err := c.ReadPacket()
		if err != nil || !bytes.Equal(pkt, payload) {
			t.Fatalf("ReadPacket: %d bytes, %v", len(pkt), err)
		}
	})
}
