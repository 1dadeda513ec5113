//go:build !linux

package testenv

import "syscall"

// childProcAttr: only Linux has Pdeathsig; elsewhere a killed test binary can
// leave the child server running until it is stopped by hand.
func childProcAttr() *syscall.SysProcAttr { return nil }
