package web_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"gqlauth/mailer"
	"gqlauth/web"
)

// devInbox is a development inbox holding two messages, served by web.DevMail.
func devInbox(t *testing.T) http.Handler {
	t.Helper()
	inbox := mailer.NewMemoryInbox(10)
	at := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	for i, subject := range []string{"older", "newer"} {
		m := mailer.DevMessage{To: "ann@example.com", Subject: subject, Text: "text " + subject, HTML: "<p>" + subject + "</p>", At: at.Add(time.Duration(i) * time.Minute)}
		if err := inbox.Add(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	return web.DevMail(inbox.List)
}

func get(t *testing.T, url string, header ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1]
			continue
		}
		req.Header.Set(header[i], header[i+1])
	}
	// No proxy from the environment: the request must reach the listener from this host.
	client := &http.Client{Transport: &http.Transport{}}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

func TestDevMail_LoopbackPeerGetsTheInboxNewestFirst(t *testing.T) {
	ts := httptest.NewServer(devInbox(t)) // a loopback listener: the test is a loopback peer
	defer ts.Close()
	status, body := get(t, ts.URL+"/dev/mail")
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, body)
	}
	var msgs []map[string]any
	if err := json.Unmarshal([]byte(body), &msgs); err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || msgs[0]["subject"] != "newer" || msgs[1]["subject"] != "older" {
		t.Fatalf("inbox %s, want newer then older", body)
	}
	for _, key := range []string{"to", "subject", "text", "html", "at"} {
		if _, ok := msgs[0][key]; !ok || len(msgs[0]) != 5 {
			t.Fatalf("message %v: want exactly to, subject, text, html, at", msgs[0])
		}
	}
	if msgs[0]["at"] != "2026-12-05T12:01:00Z" || msgs[0]["html"] != "<p>newer</p>" {
		t.Fatalf("message %v", msgs[0])
	}
}

func TestDevMail_ForwardedRequestsFromALoopbackPeerAre404(t *testing.T) {
	ts := httptest.NewServer(devInbox(t))
	defer ts.Close()
	// A reverse proxy on the same host is a loopback peer for every visitor: whatever client a
	// forwarding header names, even a loopback one, the request came through it.
	cases := []struct{ name, header, value string }{
		{"XForwardedForRemote", "X-Forwarded-For", "203.0.113.7"},
		{"XForwardedForLoopback", "X-Forwarded-For", "127.0.0.1"},
		{"XForwardedForEmpty", "X-Forwarded-For", ""},
		{"Forwarded", "Forwarded", "for=203.0.113.7"},
		{"XRealIP", "X-Real-IP", "127.0.0.1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, ts.URL+"/dev/mail", nil)
			req.Header[http.CanonicalHeaderKey(c.header)] = []string{c.value}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusNotFound || json.Valid(body) {
				t.Fatalf("status %d %q, want 404 without the inbox", res.StatusCode, body)
			}
		})
	}
}

// nonLoopbackIP is an address of this host that is not loopback, or nil.
func nonLoopbackIP() net.IP {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() && n.IP.To4() != nil {
			return n.IP
		}
	}
	return nil
}

func TestDevMail_NonLoopbackPeerIs404EvenClaimingLoopback(t *testing.T) {
	h := devInbox(t)
	headers := [][]string{nil, {"X-Forwarded-For", "127.0.0.1"}, {"X-Real-IP", "::1"}, {"Forwarded", "for=127.0.0.1"}}
	ip := nonLoopbackIP()
	if ip != nil {
		// Through real TCP: a listener on this host's own non-loopback address, reached at that
		// address, sees a non-loopback peer.
		ln, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
		if err != nil {
			t.Fatal(err)
		}
		ts := httptest.NewUnstartedServer(h)
		ts.Listener.Close()
		ts.Listener = ln
		ts.Start()
		defer ts.Close()
		t.Logf("non-loopback peer %s over TCP", ip)
		for _, hdr := range headers {
			// A loopback Host, so that only the peer check refuses.
			if status, body := get(t, ts.URL+"/dev/mail", append([]string{"Host", "localhost"}, hdr...)...); status != http.StatusNotFound {
				t.Fatalf("peer %s, headers %v: status %d %s, want 404", ip, hdr, status, body)
			}
		}
		return
	}
	// No such address on this host: the peer address as net/http sets it.
	for _, remote := range []string{"203.0.113.7:5555", "[2001:db8::1]:5555", "10.0.0.1:1", "garbage"} {
		for _, hdr := range headers {
			req := httptest.NewRequest(http.MethodGet, "/dev/mail", nil)
			req.RemoteAddr = remote
			req.Host = "localhost"
			for i := 0; i+1 < len(hdr); i += 2 {
				req.Header.Set(hdr[i], hdr[i+1])
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusNotFound {
				t.Fatalf("peer %s, headers %v: status %d, want 404", remote, hdr, rec.Code)
			}
		}
	}
}

// A loopback peer is not enough: a same-host proxy that adds no forwarding header (nginx's
// default proxy_pass, socat, ssh -L, kubectl port-forward) passes on the visitor's Host, and a
// DNS-rebinding page sends its own name. Only a loopback name or address with any port is served.
func TestDevMail_OnlyALoopbackHostIsServed(t *testing.T) {
	ts := httptest.NewServer(devInbox(t))
	defer ts.Close()
	cases := []struct {
		host string
		want int
	}{
		{"rebind.evil.example", http.StatusNotFound},
		{"rebind.evil.example:8080", http.StatusNotFound},
		{"localhost.evil.example", http.StatusNotFound},
		{"evillocalhost", http.StatusNotFound},
		{"10.0.0.5:8080", http.StatusNotFound},
		{"0.0.0.0:8080", http.StatusNotFound},
		{"[::]:8080", http.StatusNotFound},
		{"[2001:db8::1]", http.StatusNotFound},
		{"", http.StatusNotFound},
		{"localhost", http.StatusOK},
		{"localhost:8080", http.StatusOK},
		{"LocalHost.:8080", http.StatusOK},
		{"app.localhost:3000", http.StatusOK},
		{"127.0.0.1", http.StatusOK},
		{"127.0.0.1:8080", http.StatusOK},
		{"127.1.2.3:80", http.StatusOK},
		{"[::1]", http.StatusOK},
		{"[::1]:8080", http.StatusOK},
		{"[::ffff:127.0.0.1]:8080", http.StatusOK},
	}
	for _, c := range cases {
		t.Run(c.host, func(t *testing.T) {
			if status := rawGet(t, ts.Listener.Addr().String(), c.host); status != c.want {
				t.Fatalf("Host %q: status %d, want %d", c.host, status, c.want)
			}
		})
	}
}

// rawGet sends GET /dev/mail to addr over TCP with the Host header host (none when empty, as
// HTTP/1.0 allows) and returns the status.
func rawGet(t *testing.T, addr, host string) int {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := "GET /dev/mail HTTP/1.0\r\n\r\n"
	if host != "" {
		req = "GET /dev/mail HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n"
	}
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

func TestDevMail_ListenWarningUnlessLoopback(t *testing.T) {
	for _, c := range []struct {
		addr string
		warn bool
	}{
		{"127.0.0.1:8080", false}, {"[::1]:8080", false},
		{"0.0.0.0:8080", true}, {"[::]:8080", true}, {"192.0.2.1:8080", true},
	} {
		addr, err := net.ResolveTCPAddr("tcp", c.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := web.DevMailListenWarning(addr) != ""; got != c.warn {
			t.Errorf("listening on %s: warning %v, want %v", c.addr, got, c.warn)
		}
	}
}
