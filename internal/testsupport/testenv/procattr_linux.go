package testenv

import "syscall"

// childProcAttr makes the kernel SIGKILL a child server when the test binary
// dies (go test timeout, Ctrl-C, kill -9), so no orphan holds ports and temp dirs.
// Pdeathsig fires when the thread that started the child exits; the Go runtime
// does not retire threads unless a goroutine exits while locked to one, which
// the helpers here never do.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
