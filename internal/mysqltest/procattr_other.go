//go:build unix && !linux

package mysqltest

import "syscall"

// sysProcAttr puts the child in its own process group, so that Kill and Close
// reach everything it started. Without Linux's Pdeathsig a crashed test
// binary can leave mariadbd running.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
