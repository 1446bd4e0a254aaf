package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gqlauth/store/storetest"
)

// tcpProxy forwards a local port to Postgres and can cut the line, to play a database that goes
// away and comes back.
type tcpProxy struct {
	t      *testing.T
	addr   string
	target string
	mu     sync.Mutex
	ln     net.Listener
	conns  []net.Conn
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	p := &tcpProxy{t: t, target: target}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.Down)
	return p
}

func (p *tcpProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", p.target)
			if err != nil {
				client.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, client, server)
			p.mu.Unlock()
			go func() { io.Copy(server, client); server.Close() }()
			go func() { io.Copy(client, server); client.Close() }()
		}
	}()
}

// Down closes the listener and every open connection.
func (p *tcpProxy) Down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// Up listens again on the same address.
func (p *tcpProxy) Up() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.serve(ln)
}

func TestFault_DatabaseDownThenBack(t *testing.T) {
	if !contains(storetest.Kinds(t), storetest.Postgres) {
		t.Skip("TEST_DATABASE_URL not set")
	}
	schema := storetest.NewName(t, storetest.Postgres)
	pgURL := os.Getenv("TEST_DATABASE_URL")
	host := "127.0.0.1:5432"
	if i, j := strings.Index(pgURL, "@"), strings.LastIndex(pgURL, "/"); i >= 0 && j > i {
		host = pgURL[i+1 : j]
	}
	proxy := newTCPProxy(t, host)
	url := strings.Replace(pgURL, host, proxy.addr, 1)
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	base := start(t, t.TempDir(), "DATABASE_URL", url+sep+"search_path="+schema, "JWT_SECRET", strings.Repeat("k", 32))
	tok := accessToken(t, graphql(t, base, "", `mutation { register(username: "alice", password: "correct horse battery") { accessToken } }`), "register")

	proxy.Down()
	for _, q := range []struct{ token, query string }{
		{tok, `{ me { id } }`},
		{"", `mutation { login(username: "alice", password: "correct horse battery") { accessToken } }`},
	} {
		out := graphql(t, base, q.token, q.query)
		errs, _ := out["errors"].([]any)
		if len(errs) != 1 {
			t.Fatalf("%s with the database down: %v", q.query, out)
		}
		e := errs[0].(map[string]any)
		ext := e["extensions"].(map[string]any)
		if ext["code"] != "INTERNAL_SERVER_ERROR" || !strings.Contains(e["message"].(string), "unavailable") {
			t.Fatalf("%s with the database down: %v", q.query, e)
		}
		for _, leak := range []string{"dial", "127.0.0.1", "SELECT", "sessions", "pgx"} {
			if strings.Contains(e["message"].(string), leak) {
				t.Fatalf("message leaks %q: %v", leak, e["message"])
			}
		}
	}
	if got := status(t, base+"/readyz"); got != http.StatusServiceUnavailable {
		t.Fatalf("readyz with the database down: %d", got)
	}
	if got := status(t, base+"/healthz"); got != http.StatusOK {
		t.Fatalf("healthz with the database down: %d", got)
	}

	proxy.Up()
	deadline := time.Now().Add(10 * time.Second)
	for status(t, base+"/readyz") != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("readyz did not recover")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out := graphql(t, base, tok, `{ me { username } }`); out["errors"] != nil {
		t.Fatalf("me after recovery: %v", out)
	}
}

func TestServer_RefusesOversizedHeaders(t *testing.T) {
	base := start(t, t.TempDir())
	req, _ := http.NewRequest(http.MethodPost, base+"/query", strings.NewReader(`{"query":"{ __typename }"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Padding", strings.Repeat("x", 200<<10))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d, want 431", res.StatusCode)
	}
	if got := status(t, base+"/healthz"); got != 200 {
		t.Fatalf("healthz: %d", got)
	}
}

func TestServer_ServesSchemaButNotMetricsOnThePublicPort(t *testing.T) {
	base := start(t, t.TempDir())
	res, err := http.Get(base + "/schema.graphql")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(body), "me: User! @auth") {
		t.Errorf("/schema.graphql lacks the guarded me field: %.200s", body)
	}
	if got := status(t, base+"/metrics"); got != http.StatusNotFound {
		t.Fatalf("/metrics on the public port: %d, want 404", got)
	}
}

func TestServer_ServesMetricsOnMetricsAddrOnly(t *testing.T) {
	logs := &syncBuffer{}
	base := startLogged(t, t.TempDir(), logs, "METRICS_ADDR", "127.0.0.1:0", "LOG_FORMAT", "json")
	graphql(t, base, "", `mutation { login(username: "nobody", password: "some password") { accessToken } }`)
	metrics := "http://" + loggedAddr(t, logs, "serving metrics")
	res, err := http.Get(metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if want := `gqlauth_auth_failures_total{reason="INVALID_CREDENTIALS"} 1`; !strings.Contains(string(body), want) {
		t.Fatalf("/metrics lacks %q", want)
	}
	// The metrics listener serves nothing else, and the public port no metrics.
	for _, path := range []string{"/query", "/", "/healthz"} {
		if got := status(t, metrics+path); got != http.StatusNotFound {
			t.Errorf("metrics listener %s: %d, want 404", path, got)
		}
	}
	if got := status(t, base+"/metrics"); got != http.StatusNotFound {
		t.Fatalf("/metrics on the public port: %d, want 404", got)
	}
}

func TestServer_ListensOnHostOnly(t *testing.T) {
	logs := &syncBuffer{}
	base := startLogged(t, t.TempDir(), logs, "HOST", "127.0.0.1", "LOG_FORMAT", "json")
	addr := loggedAddr(t, logs, "listening")
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("listening on %s, want 127.0.0.1", addr)
	}
	if got := status(t, base+"/healthz"); got != 200 {
		t.Fatalf("healthz on 127.0.0.1: %d", got)
	}
	// Another loopback address of the same machine is another interface address: nothing there.
	_, port, _ := net.SplitHostPort(addr)
	if conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.2", port), 2*time.Second); err == nil {
		conn.Close()
		t.Fatal("the server accepted a connection on 127.0.0.2 with HOST=127.0.0.1")
	}
}

// loggedAddr waits for the JSON log line with message msg and returns its addr.
func loggedAddr(t *testing.T, logs *syncBuffer, msg string) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, line := range strings.Split(logs.String(), "\n") {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == msg && rec.Addr != "" {
				return rec.Addr
			}
		}
	}
	t.Fatalf("no %q log line with an addr in:\n%s", msg, logs.String())
	return ""
}

// syncBuffer is a log destination that tests read while the server writes.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// smallSendBuffer gives a socket a 4 KiB send buffer, so that a large body is still being sent
// when the server answers.
func smallSendBuffer(_, _ string, c syscall.RawConn) error {
	var err error
	if cerr := c.Control(func(fd uintptr) {
		err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096)
	}); cerr != nil {
		return cerr
	}
	return err
}

// bodySender sends one request with body to url and returns the answer and how many bytes of the
// body it sent.
type bodySender func(url string, header http.Header, body []byte) (res *http.Response, answer string, sent int64, err error)

// goClient sends with net/http's client over small-send-buffer sockets; chunked leaves the
// length unannounced; expect asks to wait for "100 Continue" before sending the body.
func goClient(keepAlive, chunked, expect bool) bodySender {
	dialer := &net.Dialer{Timeout: 5 * time.Second, Control: smallSendBuffer}
	transport := &http.Transport{DialContext: dialer.DialContext, DisableKeepAlives: !keepAlive}
	if expect {
		transport.ExpectContinueTimeout = 5 * time.Second
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: transport}
	return func(u string, header http.Header, body []byte) (*http.Response, string, int64, error) {
		counted := &countingReader{r: bytes.NewReader(body)}
		var r io.Reader = counted
		if !chunked {
			r = io.NewSectionReader(bytes.NewReader(body), 0, int64(len(body))) // a known length
			r = io.TeeReader(r, counted)
		}
		req, err := http.NewRequest(http.MethodPost, u, r)
		if err != nil {
			return nil, "", 0, err
		}
		req.ContentLength = -1
		if !chunked {
			req.ContentLength = int64(len(body))
		}
		req.Header = header.Clone()
		if expect {
			req.Header.Set("Expect", "100-continue")
		}
		res, err := client.Do(req)
		if err != nil {
			return nil, "", counted.n.Load(), err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return res, string(b), counted.n.Load(), err
	}
}

// countingReader counts what is read through it (as a reader) or written to it (as a tee's
// destination).
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingReader) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return len(p), nil
}

// rawClient writes the whole request on a small-send-buffer socket before it reads anything, as
// simple clients do.
func rawClient(u string, header http.Header, body []byte) (*http.Response, string, int64, error) {
	target, err := url.Parse(u)
	if err != nil {
		return nil, "", 0, err
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second, Control: smallSendBuffer}
	conn, err := dialer.Dial("tcp", target.Host)
	if err != nil {
		return nil, "", 0, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var head strings.Builder
	fmt.Fprintf(&head, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", target.RequestURI(), target.Host, len(body))
	header.Write(&head)
	head.WriteString("\r\n")
	if _, err := conn.Write(append([]byte(head.String()), body...)); err != nil {
		return nil, "", 0, err
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, "", int64(len(body)), err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res, string(b), int64(len(body)), err
}

func TestServer_AnswersABodyItDoesNotReadInsteadOfResettingTheConnection(t *testing.T) {
	base := start(t, t.TempDir(), "ADMIN_USERNAME", "root", "ADMIN_PASSWORD", "correct horse battery")
	admin := accessToken(t, graphql(t, base, "", `mutation { login(username: "root", password: "correct horse battery") { accessToken } }`), "login")
	key := graphql(t, base, admin, `mutation { createApiKey(name: "introspection") { secret } }`)["data"].(map[string]any)["createApiKey"].(map[string]any)["secret"].(string)
	form := "application/x-www-form-urlencoded"
	headers := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i+1 < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	jsonBody := []byte(`{"query":"{ __typename }","variables":{"x":"` + strings.Repeat("x", 1<<20) + `"}}`)
	formBody := []byte("grant_type=password&username=root&password=" + strings.Repeat("x", 1<<20))
	endpoints := []struct {
		name   string
		path   string
		header http.Header
		body   []byte
		status int
		want   string // in the body
		close  bool   // net/http knows the limit was hit: Connection: close
	}{
		// Over the body limit, on every endpoint that reads a body.
		{"QueryOverLimit", "/query", headers("Content-Type", "application/json"), jsonBody, 413, `"code":"GRAPHQL_PARSE_FAILED"`, true},
		{"TokenOverLimit", "/oauth/token", headers("Content-Type", form), formBody, 413, `"error":"invalid_request"`, true},
		{"IntrospectOverLimit", "/oauth/introspect", headers("Content-Type", form, "X-API-Key", key), formBody, 413, `"error":"invalid_request"`, true},
		// Refused before the body is read at all: the same mechanism.
		{"QueryTextPlain", "/query", headers("Content-Type", "text/plain"), jsonBody, 415, `"code":"GRAPHQL_PARSE_FAILED"`, false},
		{"TokenJSONBody", "/oauth/token", headers("Content-Type", "application/json"), jsonBody, 400, `"error":"invalid_request"`, false},
		{"IntrospectWithoutKey", "/oauth/introspect", headers("Content-Type", form), formBody, 401, `"error":"invalid_token"`, false},
	}
	clients := []struct {
		name string
		send bodySender
	}{
		{"KeepAlive", goClient(true, false, false)},
		{"ConnectionClose", goClient(false, false, false)},
		{"Chunked", goClient(false, true, false)},
		{"ExpectContinue", goClient(false, false, true)},
		{"WritesAllThenReads", rawClient},
	}
	for _, e := range endpoints {
		for _, c := range clients {
			t.Run(e.name+"/"+c.name, func(t *testing.T) {
				t.Parallel() // each try waits on the network, not the CPU
				answered := 0
				for try := range 10 {
					res, body, sent, err := c.send(base+e.path, e.header, e.body)
					switch {
					case err != nil:
						t.Errorf("try %d: %v", try, err)
					case res.StatusCode != e.status || !strings.Contains(body, e.want):
						t.Errorf("try %d: %d %.200s, want %d with %s", try, res.StatusCode, body, e.status, e.want)
					case e.close && !res.Close:
						t.Errorf("try %d: %d without Connection: close", try, res.StatusCode)
					case c.name == "ExpectContinue" && !e.close && sent != 0:
						// The server never read: a client waiting for 100 Continue need not send.
						t.Errorf("try %d: the client was made to send %d bytes of a body refused unread", try, sent)
					default:
						answered++
					}
				}
				if answered != 10 {
					t.Fatalf("%d of 10 tries read the %d", answered, e.status)
				}
			})
		}
	}
}

func TestServer_ShutdownFinishesInFlightRequests(t *testing.T) {
	t.Chdir(t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		// A generous grace period: under the race detector on a loaded machine a cost-13 hash can
		// take seconds, and this test is about finishing in-flight work, not about the default.
		done <- run(ctx, env("PORT", "0", "BCRYPT_COST", "13", "SHUTDOWN_TIMEOUT", "60s",
			"ADMIN_USERNAME", "root", "ADMIN_PASSWORD", "correct horse battery"), io.Discard, ready)
	}()
	var base string
	select {
	case addr := <-ready:
		base = "http://" + strings.Replace(addr, "[::]", "127.0.0.1", 1)
	case err := <-done:
		t.Fatal(err)
	}
	// A login at cost 13 takes a good fraction of a second: stop the server while it runs.
	result := make(chan map[string]any, 1)
	go func() {
		result <- graphql(t, base, "", `mutation { login(username: "root", password: "correct horse battery") { accessToken } }`)
	}()
	time.Sleep(100 * time.Millisecond)
	cancel()
	out := <-result
	accessToken(t, out, "login")
	if err := <-done; err != nil {
		t.Fatalf("run after shutdown: %v", err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("still serving after shutdown")
	}
}
