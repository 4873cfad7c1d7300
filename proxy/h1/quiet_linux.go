package h1

import (
	"net"
	"syscall"
)

// peeker checks an idle connection without reading from it. It is made
// once per connection (at dial), so that a check, made for every request
// that reuses a connection, allocates nothing.
type peeker struct {
	raw  syscall.RawConn
	fn   func(fd uintptr) bool
	buf  [1]byte
	idle bool // the last check's answer
}

func newPeeker(c net.Conn) *peeker {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	p := &peeker{raw: raw}
	p.fn = func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), p.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		p.idle = err == syscall.EAGAIN
		return true
	}
	return p
}

// quiet reports whether an idle upstream connection can carry a request:
// the upstream has neither sent anything since the last answer nor closed
// it. One non-blocking peek; net/http's Transport learns the same from its
// read loop goroutine.
func (p *peeker) quiet() bool {
	if p == nil {
		return true
	}
	p.idle = false
	if p.raw.Read(p.fn) != nil {
		return false
	}
	return p.idle
}
