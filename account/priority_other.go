//go:build !linux

package account

// lowerThreadPriority does nothing where priorities are not per thread.
func lowerThreadPriority() {}
