package proxy

import (
	"net"
	"syscall"
)

// stillOpen reports whether an idle upstream connection is still open: it
// has nothing to read and the upstream has not closed it. One non-blocking
// peek; net/http's Transport learns the same from its read loop goroutine.
func stillOpen(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	open := false
	var buf [1]byte
	rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		open = err == syscall.EAGAIN
		return true
	})
	return open
}
