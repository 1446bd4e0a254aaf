package graph

import "testing"

// OnSocketAuthenticated makes every socket's init call fn with its user id once the principal
// that admits it has been loaded, until the test ends. Tests that use it must not run in parallel
// with each other.
func OnSocketAuthenticated(t testing.TB, fn func(userID string)) {
	socketAuthenticated.Store(&fn)
	t.Cleanup(func() { socketAuthenticated.Store(nil) })
}
