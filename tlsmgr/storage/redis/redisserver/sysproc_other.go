//go:build !linux

package redisserver

import "syscall"

// sysProcAttr returns nil: parent-death signals are Linux-only, so on
// other systems only t.Cleanup stops the server.
func sysProcAttr() *syscall.SysProcAttr { return nil }
