package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
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

func TestServer_ServesMetricsAndSchema(t *testing.T) {
	base := start(t, t.TempDir())
	graphql(t, base, "", `mutation { login(username: "nobody", password: "some password") { accessToken } }`)
	for path, want := range map[string]string{
		"/metrics":        `gqlauth_auth_failures_total{reason="INVALID_CREDENTIALS"} 1`,
		"/schema.graphql": "me: User! @auth",
	} {
		res, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if !strings.Contains(string(body), want) {
			t.Errorf("%s lacks %q", path, want)
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
