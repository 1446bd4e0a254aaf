//go:build !linux

package auth

// lowerThreadPriority does nothing where priorities are not per thread.
func lowerThreadPriority() {}
