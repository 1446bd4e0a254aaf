package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"gqlauth/store/storetest"
)

// The principal cache's faults with real processes (docs/principal-cache.md): an instance frozen
// with SIGSTOP past its lease, and one killed with SIGKILL while it holds a lease. Each instance
// is this test binary running main (TestMain, GQLAUTH_RUN_MAIN), on one Postgres schema, with the
// defaults: PRINCIPAL_CACHE on, a lease of 2 s renewed every 500 ms.

// instance is a server process.
type instance struct {
	URL string
	cmd *exec.Cmd
}

// startInstance starts a server process on the schema and waits until its principal cache serves.
func startInstance(t *testing.T, schema string, env ...string) *instance {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	pgURL := os.Getenv("TEST_DATABASE_URL")
	sep := "?"
	if strings.Contains(pgURL, "?") {
		sep = "&"
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "GQLAUTH_RUN_MAIN=1", "DATABASE_URL="+pgURL+sep+"search_path="+schema,
		"JWT_SECRET="+strings.Repeat("k", 32), "HOST=127.0.0.1", fmt.Sprint("PORT=", port), "BCRYPT_COST=10",
		"LOG_FORMAT=json", "ACCESS_LOG=off",
		// These tests sign up and refresh from one address, on a race-instrumented binary on a
		// loaded machine: neither the per-IP limit nor bcrypt's queue timeout is what they test.
		"RATE_LIMIT_PER_IP=0", "BCRYPT_QUEUE_TIMEOUT=60s")
	cmd.Env = append(cmd.Env, "PRINCIPAL_CACHE=true") // off by default; these tests are about it
	cmd.Env = append(cmd.Env, env...)
	cacheOn := true
	for _, kv := range env {
		if kv == "PRINCIPAL_CACHE=false" {
			cacheOn = false
		}
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		cmd.Wait()
	})
	serving := make(chan struct{})
	go func() {
		lines := bufio.NewScanner(out)
		for lines.Scan() {
			if strings.Contains(lines.Text(), `"principal cache serving"`) || !cacheOn && strings.Contains(lines.Text(), `"listening"`) {
				select {
				case <-serving:
				default:
					close(serving)
				}
			}
		}
	}()
	select {
	case <-serving:
	case <-time.After(30 * time.Second):
		t.Fatal("the instance's principal cache did not start serving")
	}
	return &instance{URL: fmt.Sprintf("http://127.0.0.1:%d", port), cmd: cmd}
}

// meOK asks for me with a client of its own (no connection reuse) and reports whether it worked.
func meOK(t *testing.T, base, token string) bool {
	t.Helper()
	out := graphql(t, base, token, `{ me { id } }`)
	return out["errors"] == nil
}

func cacheFaultSetup(t *testing.T) (schema string) {
	t.Helper()
	if !contains(storetest.Kinds(t), storetest.Postgres) {
		t.Skip("TEST_DATABASE_URL not set")
	}
	if testing.Short() {
		t.Skip("starts server processes")
	}
	return storetest.NewName(t, storetest.Postgres)
}

func TestPrincipalCache_InstancePausedPastItsLeaseRefusesOnceResumed(t *testing.T) {
	schema := cacheFaultSetup(t)
	a := startInstance(t, schema)
	b := startInstance(t, schema)
	tok := accessToken(t, graphql(t, a.URL, "", `mutation { register(username: "alice", password: "correct horse battery") { accessToken } }`), "register")
	for range 3 {
		if !meOK(t, b.URL, tok) {
			t.Fatal("B refused a live session")
		}
	}
	// Healthy: a revocation waits for B's acknowledgement, not for its lease.
	other := accessToken(t, graphql(t, a.URL, "", `mutation { login(username: "alice", password: "correct horse battery") { accessToken } }`), "login")
	meOK(t, b.URL, other)
	start := time.Now()
	graphql(t, a.URL, other, `mutation { logout(scope: CURRENT) }`)
	t.Logf("logout with every instance healthy: %v", time.Since(start))
	if meOK(t, b.URL, other) {
		t.Fatal("B served a session logged out on A")
	}

	if err := b.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// A request that reaches B while it is frozen: it is answered only after B resumes.
	pending := make(chan map[string]any, 1)
	stopped := time.Now()
	start = time.Now()
	out := graphql(t, a.URL, tok, `mutation { logout(scope: CURRENT) }`)
	took := time.Since(start)
	if out["errors"] != nil {
		t.Fatalf("logout: %v", out)
	}
	t.Logf("logout with B frozen: %v (B's lease is 2 s, renewed every 500 ms)", took)
	if took < time.Second || took > 5*time.Second {
		t.Fatalf("logout with B frozen took %v: want the rest of B's lease (1.5–2 s after its last acknowledgement)", took)
	}
	go func() {
		res, err := (&http.Client{Timeout: 30 * time.Second}).Do(meRequest(t, b.URL, tok))
		if err != nil {
			pending <- map[string]any{"transport": err.Error()}
			return
		}
		defer res.Body.Close()
		pending <- decode(t, res)
	}()
	time.Sleep(2*time.Second - time.Since(stopped) + 500*time.Millisecond) // well past B's lease, on every clock
	if err := b.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	select {
	case out := <-pending:
		if out["errors"] == nil {
			t.Fatalf("B, resumed, served a session logged out while it was frozen: %v", out)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("B did not answer after it resumed")
	}
	if meOK(t, b.URL, tok) {
		t.Fatal("B, resumed, served a logged-out session")
	}
}

func TestPrincipalCache_InstanceKilledHoldingALeaseDelaysRevocationAtMostALease(t *testing.T) {
	schema := cacheFaultSetup(t)
	a := startInstance(t, schema)
	c := startInstance(t, schema)
	tok := accessToken(t, graphql(t, a.URL, "", `mutation { register(username: "alice", password: "correct horse battery") { accessToken } }`), "register")
	if !meOK(t, c.URL, tok) {
		t.Fatal("C refused a live session")
	}
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	c.cmd.Wait()
	start := time.Now()
	out := graphql(t, a.URL, tok, `mutation { logout(scope: CURRENT) }`)
	took := time.Since(start)
	if out["errors"] != nil {
		t.Fatalf("logout: %v", out)
	}
	t.Logf("logout with C killed: %v (C's lease is 2 s)", took)
	if took > 3500*time.Millisecond {
		t.Fatalf("logout with C killed took %v: more than C's lease", took)
	}
	if meOK(t, a.URL, tok) {
		t.Fatal("A served a logged-out session")
	}
	// Once C's lease has run out, nobody waits for it any more.
	other := accessToken(t, graphql(t, a.URL, "", `mutation { login(username: "alice", password: "correct horse battery") { accessToken } }`), "login")
	start = time.Now()
	graphql(t, a.URL, other, `mutation { logout(scope: CURRENT) }`)
	if took := time.Since(start); took > time.Second {
		t.Fatalf("a later logout still waited %v for the dead instance", took)
	}
}

func meRequest(t *testing.T, base, token string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, base+"/query", strings.NewReader(`{"query":"{ me { id } }"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	return req
}

func decode(t *testing.T, res *http.Response) map[string]any {
	var out map[string]any
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		return map[string]any{"decode": err.Error()}
	}
	return out
}
