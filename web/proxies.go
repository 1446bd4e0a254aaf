package web

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"gqlauth/model"
)

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
			return "xff:" + strconv.Quote(model.Truncate(entry, 64))
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
