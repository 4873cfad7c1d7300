//go:build !linux

package dnstest

import "syscall"

// sysProcAttr: only Linux can tie knotd's life to the test process.
func sysProcAttr() *syscall.SysProcAttr { return nil }
