package h1

import (
	"net"
	"syscall"
)

// quiet reports whether an idle upstream connection can carry a request:
// the upstream has neither sent anything since the last answer nor closed
// it. One non-blocking peek; net/http's Transport learns the same from its
// read loop goroutine.
func quiet(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = false
	var buf [1]byte
	rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = err == syscall.EAGAIN
		return true
	})
	return ok
}
