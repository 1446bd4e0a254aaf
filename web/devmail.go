package web

import (
	"context"
	"net"
	"net/http"
	"net/netip"

	"gqlauth/mailer"
)

// DevMail serves the development inbox (GET /dev/mail): the messages list returns, newest first,
// as JSON [{"to","subject","text","html","at"}]. It answers only a request whose TCP peer is a
// loopback address and that no proxy forwarded; every other request gets 404, as if the endpoint
// did not exist. The client IP of trusted proxies is never consulted: X-Forwarded-For is the
// caller's to write. A request carrying Forwarded, X-Forwarded-For or X-Real-IP came through a
// proxy, which on the same host is a loopback peer for every visitor, so it is refused too.
// server.go mounts it only while the inbox is on.
func DevMail(list func(context.Context) ([]mailer.DevMessage, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !loopbackPeer(r) {
			http.NotFound(w, r)
			return
		}
		if !getOnly(w, r) {
			return
		}
		msgs, err := list(r.Context())
		if err != nil {
			http.Error(w, "the development inbox could not be read", http.StatusInternalServerError)
			return
		}
		if msgs == nil {
			msgs = []mailer.DevMessage{}
		}
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusOK, msgs)
	})
}

// loopbackPeer reports whether r's TCP peer is a loopback address and r names no forwarded client.
func loopbackPeer(r *http.Request) bool {
	for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Real-Ip"} {
		if _, ok := r.Header[h]; ok {
			return false
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
