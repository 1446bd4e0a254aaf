package account

import (
	"io"
	"net/http"
)

// LimitBody returns the body of r limited to limit bytes: a read past the limit fails with
// *http.MaxBytesError, which every body-reading endpoint answers with 413.
//
// The limit is net/http's own, applied to the ResponseWriter that net/http created: w is unwrapped
// through Unwrap, as http.ResponseController does, because net/http learns that the limit was hit
// only through its own writer. Only then does the answer carry "Connection: close" and the server
// close the connection gracefully (FIN, then a pause for the client to read) instead of at once
// with the rest of the body unread, which the kernel answers with a reset: the client would see
// "connection reset" instead of the 413. (The server also reads and discards what is left of a
// refused body, up to a bound, before answering: see drainBodies in server.go.)
func LimitBody(w http.ResponseWriter, r *http.Request, limit int64) io.ReadCloser {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			break
		}
		w = u.Unwrap()
	}
	return http.MaxBytesReader(w, r.Body, limit)
}
