//go:build unix

package backend

import (
	"errors"
	"syscall"
)

// Alive reports whether an idle connection can still be used: the server
// has not closed it and sent nothing unasked (a server shutting down sends
// an error before it closes). It peeks at the socket without blocking.
func (c *Conn) Alive() bool {
	if c.Buffered() > 0 {
		return false
	}
	sc, ok := c.NetConn().(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	alive := true
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case n > 0:
			alive = false
		case err == nil:
			alive = false // EOF
		case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EINTR):
		default:
			alive = false
		}
		return true
	})
	return alive && err == nil
}
