package mysqltest

import "syscall"

// sysProcAttr puts the child in its own process group, so that Kill and Close
// reach everything it started, and asks the kernel to SIGKILL it when the
// thread that started it dies, so that a crashed or killed test binary does
// not leave mariadbd running. Pdeathsig is tied to the starting OS thread,
// which is why startProcess keeps that thread locked for the child's
// lifetime.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
