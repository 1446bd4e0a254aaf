package web

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"gqlauth/mailer"
)

// DevMail serves the development inbox (GET /dev/mail): the messages list returns, newest first,
// as JSON [{"to","subject","text","html","at"}]. It answers only a request whose TCP peer is a
// loopback address and that no proxy forwarded; every other request gets 404, as if the endpoint
// did not exist. The client IP of trusted proxies is never consulted: X-Forwarded-For is the
// caller's to write. A request carrying Forwarded, X-Forwarded-For or X-Real-IP came through a
// proxy, which on the same host is a loopback peer for every visitor, so it is refused too.
//
// The request must also name a loopback host (loopbackHost): a proxy that adds no forwarding
// header (nginx's default proxy_pass, socat, ssh -L, kubectl port-forward) passes on the name the
// visitor used, which is not a loopback one, and a page whose name was rebound to 127.0.0.1 (DNS
// rebinding) sends its own name. server.go mounts it only while the inbox is on.
func DevMail(list func(context.Context) ([]mailer.DevMessage, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !loopbackPeer(r) || !loopbackHost(r.Host) {
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

// loopbackHost reports whether host (a request's Host, with or without a port) is a loopback
// name or address: localhost or a name under .localhost (RFC 6761), an address in 127.0.0.0/8,
// or ::1. An empty Host is not.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else {
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// DevMailListenWarning is the warning to log at start when the development inbox is served on
// the listener addr, or "" when addr is a loopback address (unreachable from elsewhere).
func DevMailListenWarning(addr net.Addr) string {
	if tcp, ok := addr.(*net.TCPAddr); ok && tcp.IP.IsLoopback() {
		return ""
	}
	return "the development inbox (GET /dev/mail) is on and the server listens on a non-loopback address: " +
		"never put it behind a proxy; set SMTP_URL, or MAIL_DEV_INBOX=false, before anyone else can reach this server"
}
