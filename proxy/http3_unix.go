//go:build unix

package proxy

import (
	"net"
	"syscall"
)

// udpBufferSizes reads a UDP socket's receive and send buffer sizes as the
// kernel reports them (Linux reports twice what was set, as quic-go's
// check reads them too).
func udpBufferSizes(c *net.UDPConn) (rcv, snd int, ok bool) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, 0, false
	}
	var rerr, serr error
	if err := raw.Control(func(fd uintptr) {
		rcv, rerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
		snd, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF)
	}); err != nil || rerr != nil || serr != nil {
		return 0, 0, false
	}
	return rcv, snd, true
}
