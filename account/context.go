package account

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"gqlauth/model"
	"gqlauth/token"
)

// MaxUserAgentLength bounds the User-Agent kept with a session.
const MaxUserAgentLength = 256

// requestAuth is what the middleware learned from one request's credentials, plus the memo of the
// principal, so that the database is asked at most once per request however many guarded fields
// the request resolves, and concurrently resolved fields share the one answer.
type requestAuth struct {
	claims *token.Claims
	token  string                // the access token the claims came from (sockets verify it again)
	apiKey string                // an API key secret, not yet checked against the database
	reason model.AuthErrorReason // why neither claims nor apiKey is set
	// r and proxies give the user agent and client IP, worked out only when an operation needs them
	// (a sign-in, a rate limit), not on every request.
	r        *http.Request
	proxies  Proxies
	clientID string // the OAuth client_id of a token request
	// w and refreshCookie serve cookie mode: the response on which to set the refresh cookie, and
	// the cookie the request came with.
	w             http.ResponseWriter
	refreshCookie string
	// socket marks the credentials a WebSocket presented in connection_init. They are never
	// memoized: each operation on the socket authenticates with its own fresh copy (see
	// SocketOperation), and anything asking with the socket's own context is checked from scratch.
	socket bool

	once      sync.Once
	principal *Principal
	err       error
	// issued: a mutation of this request signed someone in (see issue).
	issued atomic.Bool
}

// Principal is the caller of a request, as loaded from the database.
type Principal struct {
	User *model.User
	// Session is the caller's session; nil when the request was made with an API key.
	Session *model.Session
	// APIKey is the key the request was made with, or nil.
	APIKey *model.APIKey
	// Role is what the request may do: the user's role, capped by the API key's.
	Role model.Role
}

type ctxKey struct{}

func fromContext(ctx context.Context) *requestAuth {
	ra, _ := ctx.Value(ctxKey{}).(*requestAuth)
	return ra
}

// MaxAuthorizationLength bounds the Authorization header that is parsed at all; real access
// tokens are well under 1 KiB.
const MaxAuthorizationLength = 4096

// Middleware decodes the Bearer token of each request into its context: the verified claims or
// the reason the token is unusable. It never rejects a request by itself, so that public
// operations still work with a stale token; only guarded fields fail. When a token was sent but
// is unusable, it says so in WWW-Authenticate (RFC 6750). It also records the client's IP, taking
// X-Forwarded-For into account only from proxies.
func Middleware(tokens *token.Tokens, proxies Proxies) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ra := &requestAuth{r: r, proxies: proxies, w: w}
			if c, err := r.Cookie(RefreshCookieName); err == nil {
				ra.refreshCookie = c.Value
			}
			ra.readCredentials(tokens, r.Header.Get("Authorization"), r.Header.Get("X-API-Key"))
			if ra.reason != "" && ra.reason != model.AuthErrorReasonMissingToken {
				w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, ra)))
		})
	}
}

// readCredentials reads an Authorization header value and an X-API-Key value: a verified Bearer
// token, an API key to look up, or the reason neither is usable.
func (ra *requestAuth) readCredentials(tokens *token.Tokens, header, key string) {
	scheme, token, _ := strings.Cut(header, " ")
	token = strings.TrimSpace(token)
	switch {
	case header == "" && key == "":
		ra.reason = model.AuthErrorReasonMissingToken
	case header != "" && key != "":
		ra.reason = model.AuthErrorReasonInvalidToken // two credentials: refuse rather than guess
	case key != "":
		ra.apiKey, ra.reason = checkAPIKeyFormat(key)
	case len(header) > MaxAuthorizationLength || !strings.EqualFold(scheme, "Bearer") || token == "":
		ra.reason = model.AuthErrorReasonInvalidToken
	case strings.HasPrefix(token, APIKeyPrefix):
		ra.apiKey, ra.reason = checkAPIKeyFormat(token)
	default:
		ra.token = token
		ra.claims, ra.reason = tokens.Verify(token)
	}
}

// ClientIP returns the client IP of the request in ctx ("" outside a request).
func ClientIP(ctx context.Context) string {
	if ra := fromContext(ctx); ra != nil {
		return ra.proxies.ClientIP(ra.r)
	}
	return ""
}

// CallerID returns the id of the user authenticated so far in this request, or "". It never
// queries the database: it reports what a guarded field already loaded.
func CallerID(ctx context.Context) string {
	ra := fromContext(ctx)
	if ra == nil {
		return ""
	}
	if ra.principal != nil {
		return ra.principal.User.ID
	}
	if ra.claims != nil {
		return ra.claims.Subject
	}
	return ""
}

// Proxies are the networks whose X-Forwarded-For header is believed.
type Proxies []netip.Prefix

// ParseProxies parses a comma-separated list of IPs and CIDR prefixes.
func ParseProxies(list string) (Proxies, error) {
	var out Proxies
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if !strings.Contains(item, "/") {
			addr, err := netip.ParseAddr(item)
			if err != nil {
				return nil, fmt.Errorf("%q is not an IP or CIDR prefix", item)
			}
			out = append(out, netip.PrefixFrom(addr, addr.BitLen()))
			continue
		}
		prefix, err := netip.ParsePrefix(item)
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP or CIDR prefix", item)
		}
		out = append(out, prefix.Masked())
	}
	return out, nil
}

func (p Proxies) trusts(addr netip.Addr) bool {
	for _, prefix := range p {
		if prefix.Contains(addr.Unmap()) {
			return true
		}
	}
	return false
}

// ClientIP is the address of the peer, or, when the peer is a trusted proxy, the right-most entry
// in X-Forwarded-For that is not a trusted proxy (the left part is client-controlled).
//
// That entry is the client whatever it holds. An IP with a port ("1.2.3.4:5", "[2001:db8::1]:443",
// as some load balancers write it) or in brackets counts as that IP. Anything else — "unknown",
// an RFC 7239 obfuscated identifier such as "_hidden", an empty entry, garbage — is returned as an
// opaque client of its own, `xff:"<entry>"` (quoted, at most 64 bytes of it): its own rate-limit
// bucket, never the proxy's. Falling back to the proxy would put every such client into one
// bucket that any of them could exhaust for all; skipping to the entry further left would let the
// client choose its bucket. Only a trusted proxy writes the right-most entry, so its content
// is not the client's choice unless the proxy passes the header through unchanged — and such a
// proxy lets a client name any valid IP anyway. A trusted proxy that sends no X-Forwarded-For at
// all is itself the client.
func (p Proxies) ClientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	peer = peer.Unmap()
	values := r.Header.Values("X-Forwarded-For")
	if !p.trusts(peer) || len(values) == 0 {
		return peer.String()
	}
	hops := strings.Split(strings.Join(values, ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		entry := strings.TrimSpace(hops[i])
		hop, ok := forwardedAddr(entry)
		if !ok {
			return "xff:" + strconv.Quote(truncate(entry, 64))
		}
		if !p.trusts(hop) {
			return hop.String()
		}
		peer = hop
	}
	return peer.String() // every entry is a trusted proxy
}

// forwardedAddr reads one X-Forwarded-For entry: an IP, optionally in brackets or with a port.
func forwardedAddr(entry string) (netip.Addr, bool) {
	var addr netip.Addr
	if ap, err := netip.ParseAddrPort(entry); err == nil {
		addr = ap.Addr()
	} else if inner, ok := strings.CutPrefix(entry, "["); ok && strings.HasSuffix(inner, "]") {
		if addr, err = netip.ParseAddr(strings.TrimSuffix(inner, "]")); err != nil || !addr.Is6() {
			return netip.Addr{}, false
		}
	} else if addr, err = netip.ParseAddr(entry); err != nil {
		return netip.Addr{}, false
	}
	return addr.Unmap().WithZone(""), true
}

// UserAgent returns the User-Agent of the request in ctx, truncated.
func UserAgent(ctx context.Context) string {
	if ra := fromContext(ctx); ra != nil {
		return truncate(ra.r.UserAgent(), MaxUserAgentLength)
	}
	return ""
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence, and drops bytes the
// databases will not store.
func truncate(s string, n int) string {
	s = strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }
