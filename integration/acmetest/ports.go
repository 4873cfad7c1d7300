package acmetest

import (
	"net"
	"testing"
)

// FreePort returns a TCP port on 127.0.0.1 that was free at the time of the
// call (it binds port 0, reads the port, and closes the listener). Another
// process may grab the port before the caller binds it, so bind it soon.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("acmetest: finding a free port: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		t.Fatalf("acmetest: closing probe listener: %v", err)
	}
	return port
}
