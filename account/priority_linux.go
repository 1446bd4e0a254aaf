package account

import "syscall"

// lowerThreadPriority gives the calling OS thread the lowest CPU priority (nice 19). On Linux,
// priorities are per thread, so this leaves the rest of the process alone.
func lowerThreadPriority() {
	syscall.Setpriority(syscall.PRIO_PROCESS, syscall.Gettid(), 19)
}
