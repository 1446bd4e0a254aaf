package web

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"gqlauth/model"
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
// refused body, up to a bound, before answering: see DrainBodies.)
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

// maxDrainBytes bounds how much of a request body the server reads and discards after the handler
// left it unread.
const maxDrainBytes = 4 << 20

// DrainBodies reads and discards what a handler left unread of a request body (up to
// maxDrainBytes, within the server's ReadTimeout) before the answer goes out. A client is often
// still sending when the server answers early (413 for a body over the limit, 415, 400, 401…),
// and a connection closed with unread data is reset by the kernel: the client would see
// "connection reset" instead of the answer — almost always with a small send buffer, or when it
// writes its whole request before reading. net/http discards unread bodies itself only on
// connections it keeps open, and only up to 256 KiB. A body announced larger than maxDrainBytes
// is not drained; net/http then closes after a pause, which is the best that can be done. Nor is
// the body of a client that asked to wait for "100 Continue" and never got it (the handler read
// nothing): it has not sent its body, and reading now would ask for it.
func DrainBodies(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		body := &trackedBody{ReadCloser: r.Body}
		r2 := r.WithContext(r.Context())
		r2.Body = body
		next.ServeHTTP(w, r2)
		if r.ContentLength <= maxDrainBytes && (body.read || r.Header.Get("Expect") == "") {
			io.CopyN(io.Discard, r.Body, maxDrainBytes)
		}
	})
}

// trackedBody records whether a handler read from the body at all.
type trackedBody struct {
	io.ReadCloser
	read bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	b.read = true
	return b.ReadCloser.Read(p)
}

// MaxFormBytes bounds the body of the form-encoded endpoints (/oauth/token, /oauth/introspect).
const MaxFormBytes = 16 << 10

// readForm parses the form body of r, answering 413 or 400 itself when it cannot, or when a
// parameter is repeated.
func readForm(w http.ResponseWriter, r *http.Request) bool {
	r.Body = LimitBody(w, r, MaxFormBytes)
	err := r.ParseForm()
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		oauthError(w, http.StatusRequestEntityTooLarge, "invalid_request", fmt.Sprintf("the body exceeds %d bytes", MaxFormBytes))
		return false
	case err != nil:
		oauthError(w, http.StatusBadRequest, "invalid_request", "the body is not a valid form")
		return false
	}
	// RFC 6749 §3.1 and §3.2: a parameter MUST NOT be sent more than once. Taking the first (as
	// url.Values.Get does) would let two readers of one request disagree about which counts.
	for name, values := range r.Form { // the body's and the query string's, together
		if len(values) > 1 {
			oauthError(w, http.StatusBadRequest, "invalid_request", "a parameter is repeated: "+model.Truncate(name, 64))
			return false
		}
	}
	return true
}

// validForm reports whether every name and value of a form is UTF-8 text without NUL.
func validForm(form url.Values) bool {
	for name, values := range form {
		if !model.ValidText(name) {
			return false
		}
		for _, v := range values {
			if !model.ValidText(v) {
				return false
			}
		}
	}
	return true
}
