//go:build linux

package redisserver

import "syscall"

// sysProcAttr asks the kernel to SIGKILL redis-server when the test
// process dies. t.Cleanup covers every normal exit, but not a test
// binary that is itself killed (for example by `go test -timeout`),
// which would otherwise leave an orphaned server holding a port.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
