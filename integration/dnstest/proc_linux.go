package dnstest

import "syscall"

// sysProcAttr makes the kernel kill knotd when the test process dies
// without running its cleanups (a test timeout, a crash).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
