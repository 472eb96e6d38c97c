package mysql

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// ErrPacketTooLarge is returned when a logical packet exceeds the limit set
// on the connection.
var ErrPacketTooLarge = errors.New("packet too large")

// ErrOutOfOrder is returned when a packet arrives with an unexpected
// sequence id.
var ErrOutOfOrder = errors.New("packet out of order")

// BufferPool recycles the bufio readers and writers of connections, so that
// an idle client connection holds no buffer. One pool serves a whole node.
type BufferPool struct {
	size int
	r    sync.Pool
	w    sync.Pool
}

// NewBufferPool returns a pool of buffers of the given size.
func NewBufferPool(size int) *BufferPool {
	if size <= 0 {
		size = 16 << 10
	}
	return &BufferPool{size: size}
}

func (p *BufferPool) getReader(r io.Reader) *bufio.Reader {
	if v := p.r.Get(); v != nil {
		br := v.(*bufio.Reader)
		br.Reset(r)
		return br
	}
	return bufio.NewReaderSize(r, p.size)
}

func (p *BufferPool) putReader(br *bufio.Reader) {
	br.Reset(nil)
	p.r.Put(br)
}

func (p *BufferPool) getWriter(w io.Writer) *bufio.Writer {
	if v := p.w.Get(); v != nil {
		bw := v.(*bufio.Writer)
		bw.Reset(w)
		return bw
	}
	return bufio.NewWriterSize(w, p.size)
}

func (p *BufferPool) putWriter(bw *bufio.Writer) {
	bw.Reset(nil)
	p.w.Put(bw)
}

// Conn frames MySQL packets over a net.Conn. It checks the sequence id of
// every packet it reads and numbers the packets it writes. It is not safe for
// concurrent use.
type Conn struct {
	nc   net.Conn
	pool *BufferPool
	br   *bufio.Reader
	bw   *bufio.Writer
	// Seq is the sequence id expected on the next read and used on the next
	// write.
	Seq uint8
	// MaxPacket bounds the size of a logical packet read by ReadPacket.
	MaxPacket int
	// ownReader is a small reader the connection keeps (see UseOwnReader).
	ownReader *bufio.Reader
	hdr       [4]byte
}

// NewConn wraps nc. Buffers come from pool and are given back by
// ReleaseBuffers.
func NewConn(nc net.Conn, pool *BufferPool) *Conn {
	return &Conn{nc: nc, pool: pool, MaxPacket: 1 << 30}
}

// UseOwnReader gives the connection a small read buffer of its own, kept
// while it is idle: a command then costs one read system call instead of
// two (header, then payload), for a few hundred bytes per connection.
func (c *Conn) UseOwnReader(size int) {
	var src io.Reader = c.nc
	if c.br != nil && c.br.Buffered() > 0 {
		// A client may have pipelined a command behind its login: the new
		// reader serves the bytes already read ahead first.
		b, _ := c.br.Peek(c.br.Buffered())
		src = &bufferedConn{Conn: c.nc, pending: append([]byte(nil), b...)}
	}
	if c.br != nil && c.br != c.ownReader {
		c.pool.putReader(c.br)
	}
	c.ownReader = bufio.NewReaderSize(src, size)
	c.br = c.ownReader
}

// NetConn returns the underlying connection.
func (c *Conn) NetConn() net.Conn { return c.nc }

// SetNetConn replaces the underlying connection (after a TLS upgrade). Any
// buffered input is discarded, so call it only at a packet boundary.
func (c *Conn) SetNetConn(nc net.Conn) {
	if c.ownReader != nil {
		c.ownReader.Reset(nc)
		c.br = c.ownReader
	} else if c.br != nil {
		// Input read ahead from the old connection must not be served as
		// if it came from the new one.
		c.pool.putReader(c.br)
		c.br = nil
	}
	c.ReleaseBuffers()
	c.nc = nc
}

func (c *Conn) reader() *bufio.Reader {
	if c.br == nil {
		c.br = c.pool.getReader(c.nc)
	}
	return c.br
}

func (c *Conn) writer() *bufio.Writer {
	if c.bw == nil {
		c.bw = c.pool.getWriter(c.nc)
	}
	return c.bw
}

// ReleaseBuffers returns the buffers to the pool when nothing is buffered.
// The next read or write takes new ones.
func (c *Conn) ReleaseBuffers() {
	if c.br != nil && c.br != c.ownReader && c.br.Buffered() == 0 {
		c.pool.putReader(c.br)
		c.br = nil
	}
	if c.bw != nil && c.bw.Buffered() == 0 {
		c.pool.putWriter(c.bw)
		c.bw = nil
	}
}

// Close closes the connection and releases its buffers.
func (c *Conn) Close() error {
	err := c.nc.Close()
	if c.br != nil && c.br != c.ownReader {
		c.pool.putReader(c.br)
	}
	c.br, c.ownReader = nil, nil
	if c.bw != nil {
		c.bw.Reset(nil)
		c.pool.putWriter(c.bw)
		c.bw = nil
	}
	return err
}

// Buffered reports how many input bytes are already read ahead.
func (c *Conn) Buffered() int {
	if c.br == nil {
		return 0
	}
	return c.br.Buffered()
}

// readHeader reads a packet header and checks its sequence id. When no
// reader buffer is held it reads the header straight from the socket, so an
// idle connection blocks without holding a buffer.
func (c *Conn) readHeader() (int, error) {
	var err error
	if c.br == nil {
		_, err = io.ReadFull(c.nc, c.hdr[:])
	} else {
		_, err = io.ReadFull(c.br, c.hdr[:])
	}
	if err != nil {
		return 0, err
	}
	n := int(uint32(c.hdr[0]) | uint32(c.hdr[1])<<8 | uint32(c.hdr[2])<<16)
	if c.hdr[3] != c.Seq {
		return 0, fmt.Errorf("%w: got sequence %d, want %d", ErrOutOfOrder, c.hdr[3], c.Seq)
	}
	c.Seq++
	return n, nil
}

// ReadPacket reads one logical packet, joining continuation packets, and
// returns a newly allocated payload.
func (c *Conn) ReadPacket() ([]byte, error) {
	n, err := c.readHeader()
	if err != nil {
		return nil, err
	}
	if n > c.MaxPacket {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrPacketTooLarge, n, c.MaxPacket)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(c.reader(), buf); err != nil {
		return nil, unexpectedEOF(err)
	}
	for n == MaxPayloadLen {
		if n, err = c.readHeader(); err != nil {
			return nil, unexpectedEOF(err)
		}
		if len(buf)+n > c.MaxPacket {
			return nil, fmt.Errorf("%w: over %d bytes", ErrPacketTooLarge, c.MaxPacket)
		}
		start := len(buf)
		if need := start + n; need > cap(buf) {
			// Grow by doubling, but never past MaxPacket: a peer cannot make
			// us reserve more than the limit.
			nb := make([]byte, start, min(max(need, 2*cap(buf)), c.MaxPacket))
			copy(nb, buf)
			buf = nb
		}
		buf = buf[:start+n]
		if _, err := io.ReadFull(c.reader(), buf[start:]); err != nil {
			return nil, unexpectedEOF(err)
		}
	}
	return buf, nil
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// WritePacket writes payload as one logical packet (split into wire packets
// of at most MaxPayloadLen) into the write buffer. Call Flush to send.
func (c *Conn) WritePacket(payload []byte) error {
	w := c.writer()
	for {
		n := len(payload)
		if n > MaxPayloadLen {
			n = MaxPayloadLen
		}
		hdr := [4]byte{byte(n), byte(n >> 8), byte(n >> 16), c.Seq}
		c.Seq++
		if _, err := w.Write(hdr[:]); err != nil {
			return err
		}
		if _, err := w.Write(payload[:n]); err != nil {
			return err
		}
		payload = payload[n:]
		if n < MaxPayloadLen {
			return nil
		}
	}
}

// Flush sends buffered output.
func (c *Conn) Flush() error {
	if c.bw == nil {
		return nil
	}
	return c.bw.Flush()
}

// WriteCommand starts a new command exchange: it resets the sequence,
// writes payload and flushes.
func (c *Conn) WriteCommand(payload []byte) error {
	c.Seq = 0
	if err := c.WritePacket(payload); err != nil {
		return err
	}
	return c.Flush()
}

// ReadHeader reads the header of the next wire packet and returns its
// payload length; the payload is still unread (see Peek, CopyPayload,
// Discard).
func (c *Conn) ReadHeader() (int, error) {
	n, err := c.readHeader()
	return n, unexpectedEOF(err)
}

// BufferSize is the size of the read buffer: payloads up to this size can
// be inspected with Peek.
func (c *Conn) BufferSize() int { return c.reader().Size() }

// Peek returns the next n unread bytes without consuming them; n must not
// exceed BufferSize. The slice is valid until the next read.
func (c *Conn) Peek(n int) ([]byte, error) {
	b, err := c.reader().Peek(n)
	return b, unexpectedEOF(err)
}

// PeekByte returns the first payload byte of a packet whose payload was not
// read by NextRaw, without consuming it.
func (c *Conn) PeekByte() (byte, error) {
	b, err := c.reader().Peek(1)
	if err != nil {
		return 0, unexpectedEOF(err)
	}
	return b[0], nil
}

// CopyPayload relays n unread payload bytes of the current packet from c to
// dst as a wire packet with dst's sequence id.
func (c *Conn) CopyPayload(dst *Conn, n int) error {
	w := dst.writer()
	hdr := [4]byte{byte(n), byte(n >> 8), byte(n >> 16), dst.Seq}
	dst.Seq++
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	if _, err := io.CopyN(w, c.reader(), int64(n)); err != nil {
		return unexpectedEOF(err)
	}
	return nil
}

// Discard skips n unread payload bytes.
func (c *Conn) Discard(n int) error {
	_, err := c.reader().Discard(n)
	return unexpectedEOF(err)
}

// WriteRaw writes one wire packet with the given payload (at most
// MaxPayloadLen bytes) and the next sequence id.
func (c *Conn) WriteRaw(payload []byte) error {
	w := c.writer()
	n := len(payload)
	hdr := [4]byte{byte(n), byte(n >> 8), byte(n >> 16), c.Seq}
	c.Seq++
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

// ReadPayload reads the n unread payload bytes of the current wire packet
// into a new slice.
func (c *Conn) ReadPayload(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(c.reader(), b); err != nil {
		return nil, unexpectedEOF(err)
	}
	return b, nil
}

// ReadPayloadInto reads the n unread payload bytes of the current wire
// packet into buf (grown when too small) and returns them; the result is
// valid until buf is reused.
func (c *Conn) ReadPayloadInto(buf []byte, n int) ([]byte, error) {
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(c.reader(), buf); err != nil {
		return nil, unexpectedEOF(err)
	}
	return buf, nil
}

// bufferedConn is a net.Conn whose first reads return bytes that were read
// ahead into a buffer.
type bufferedConn struct {
	net.Conn
	pending []byte
}

func (b *bufferedConn) Read(p []byte) (int, error) {
	if len(b.pending) > 0 {
		n := copy(p, b.pending)
		b.pending = b.pending[n:]
		return n, nil
	}
	return b.Conn.Read(p)
}

// DetachNetConn returns the underlying connection with any read-ahead bytes
// still to be read from it, and drops the buffers; used before a TLS
// upgrade, when the peer may already have sent its TLS hello.
func (c *Conn) DetachNetConn() net.Conn {
	nc := c.nc
	if c.br != nil && c.br.Buffered() > 0 {
		b, _ := c.br.Peek(c.br.Buffered())
		nc = &bufferedConn{Conn: c.nc, pending: append([]byte(nil), b...)}
		_, _ = c.br.Discard(len(b))
	}
	c.ReleaseBuffers()
	return nc
}
