//go:build !linux

package h1

import "net"

// peeker cannot peek here without a read that may consume a byte; bytes an
// upstream sent past its answer are still caught when they arrive before
// the answer ends (Conns.Put), and a request to a closed idle connection
// fails with a 502.
type peeker struct{}

func newPeeker(net.Conn) *peeker { return nil }

func (*peeker) quiet() bool { return true }
