package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gqlauth/store/storetest"
)

func env(kv ...string) func(string) string {
	// Many tests run servers at once on one Postgres: each gets the small pool storetest gives.
	m := map[string]string{"DATABASE_MAX_CONNS": strconv.Itoa(storetest.MaxConns)}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// TestMain lets a test run the real main in a subprocess, to see its exit code and output.
func TestMain(m *testing.M) {
	if os.Getenv("DATABASE_MAX_CONNS") == "" {
		// Inherited by the servers tests start as processes (see env).
		os.Setenv("DATABASE_MAX_CONNS", strconv.Itoa(storetest.MaxConns))
	}
	if os.Getenv("GQLAUTH_RUN_MAIN") == "1" {
		main()
		return
	}
	code := m.Run()
	removeServerBinary()
	os.Exit(code)
}

func TestMain_BadConfigurationExits1WithOneClearLine(t *testing.T) {
	cases := map[string][]string{
		"BCRYPT_COST":            {"BCRYPT_COST=99"},
		"ACCESS_TOKEN_TTL":       {"ACCESS_TOKEN_TTL=soon"},
		"JWT_SECRET":             {"DATABASE_URL=postgres://postgres@127.0.0.1:5432/test"},
		"DATABASE_URL":           {"DATABASE_URL=postgres://postgres@127.0.0.1:1/unreachable", "JWT_SECRET=" + strings.Repeat("k", 32)},
		"PORT":                   {"PORT=-1"},
		"TRUSTED_DOCUMENTS_ONLY": {"TRUSTED_DOCUMENTS_ONLY=true"},
		"TRUSTED_DOCUMENTS":      {"TRUSTED_DOCUMENTS=" + badManifest(t)},
		"WEBAUTHN_RP_ID":         {"WEBAUTHN_RP_ID=127.0.0.1"},
		"WEBAUTHN_ORIGINS":       {"WEBAUTHN_RP_ID=example.com", "WEBAUTHN_ORIGINS=https://example.org"},
	}
	for naming, vars := range cases {
		t.Run(naming, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Dir = t.TempDir()
			cmd.Env = append(os.Environ(), "GQLAUTH_RUN_MAIN=1")
			cmd.Env = append(cmd.Env, vars...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			exit, ok := err.(*exec.ExitError)
			if !ok || exit.ExitCode() != 1 {
				t.Fatalf("want exit code 1, got %v (stderr %q)", err, stderr.String())
			}
			out := strings.TrimSpace(stderr.String())
			if strings.Count(out, "\n") != 0 || !strings.Contains(out, naming) || strings.Contains(out, "goroutine") {
				t.Fatalf("want one line naming %s, got %q", naming, out)
			}
		})
	}
}

// badManifest writes a trusted-documents manifest whose one entry's id is not its document's hash.
func badManifest(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "persisted-documents.json")
	entry := `{"sha256:` + strings.Repeat("ab", 32) + `": "{ me { id } }"}`
	if err := os.WriteFile(path, []byte(entry), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// start runs the server with vars in dir until the test ends and returns its base URL.
func start(t *testing.T, dir string, vars ...string) string {
	t.Helper()
	return startLogged(t, dir, io.Discard, vars...)
}

// startLogged is start with the server's log written to logs.
func startLogged(t *testing.T, dir string, logs io.Writer, vars ...string) string {
	t.Helper()
	t.Chdir(dir)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, env(append([]string{"PORT", "0", "BCRYPT_COST", "10"}, vars...)...), logs, ready)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	select {
	case addr := <-ready:
		return "http://" + strings.Replace(addr, "[::]", "127.0.0.1", 1)
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("server did not start")
	}
	return ""
}

func graphql(t *testing.T, base, token, query string) map[string]any {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"query": query})
	req, _ := http.NewRequest(http.MethodPost, base+"/query", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func accessToken(t *testing.T, out map[string]any, field string) string {
	t.Helper()
	data, _ := out["data"].(map[string]any)
	payload, _ := data[field].(map[string]any)
	tok, _ := payload["accessToken"].(string)
	if tok == "" {
		t.Fatalf("no %s.accessToken in %v", field, out)
	}
	return tok
}

func status(t *testing.T, url string) int {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

func TestRun_EmbeddedDatabaseServesEndpoints(t *testing.T) {
	dir := t.TempDir()
	base := start(t, dir)
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/": 200} {
		if got := status(t, base+path); got != want {
			t.Errorf("GET %s: %d, want %d", path, got, want)
		}
	}
	tok := accessToken(t, graphql(t, base, "", `mutation { register(username: "alice", password: "correct horse battery") { accessToken } }`), "register")
	out := graphql(t, base, tok, `{ me { username } }`)
	if me := out["data"].(map[string]any)["me"].(map[string]any); me["username"] != "alice" {
		t.Fatalf("me: %v", out)
	}
	if _, err := os.Stat(dir + "/gqlauth.db"); err != nil {
		t.Fatalf("embedded database file: %v", err)
	}
}

// TestRun_LogLinesOfRequestsAreBatchedAndTheRestWrittenAtOnce: the server's log goes through
// logsink. A line logged outside a request (here "listening") is in the output by the time the
// server says it is ready; a request's line follows within the sink's interval.
func TestRun_LogLinesOfRequestsAreBatchedAndTheRestWrittenAtOnce(t *testing.T) {
	logs := &syncBuffer{}
	base := startLogged(t, t.TempDir(), logs, "LOG_FORMAT", "json")
	if !strings.Contains(logs.String(), `"msg":"listening"`) {
		t.Fatalf("the start-up lines were not written at once:\n%s", logs.String())
	}
	graphql(t, base, "", `{ __typename }`)
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), `"msg":"request","method":"POST","field":"__typename"`); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no request line within 10 s:\n%s", logs.String())
		}
	}
}

func TestRun_GeneratedSecretSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	first := start(t, dir)
	tok := accessToken(t, graphql(t, first, "", `mutation { register(username: "alice", password: "correct horse battery") { accessToken } }`), "register")
	second := start(t, dir) // a second instance on the same file, as after a restart
	if out := graphql(t, second, tok, `{ me { username } }`); out["errors"] != nil {
		t.Fatalf("token from before the restart: %v", out)
	}
}

func TestRun_BootstrapsAdminOnce(t *testing.T) {
	dir := t.TempDir()
	base := start(t, dir, "ADMIN_USERNAME", "root", "ADMIN_PASSWORD", "first password")
	tok := accessToken(t, graphql(t, base, "", `mutation { login(username: "root", password: "first password") { accessToken } }`), "login")
	if out := graphql(t, base, tok, `{ users { username role } }`); out["errors"] != nil {
		t.Fatalf("admin query: %v", out)
	}
	// An existing user is left untouched: the new password does not replace the old one.
	again := start(t, dir, "ADMIN_USERNAME", "root", "ADMIN_PASSWORD", "second password")
	accessToken(t, graphql(t, again, "", `mutation { login(username: "root", password: "first password") { accessToken } }`), "login")
}

func TestRun_Postgres(t *testing.T) {
	if !contains(storetest.Kinds(t), storetest.Postgres) {
		t.Skip("TEST_DATABASE_URL not set")
	}
	vars, _, _ := databaseVars(t, storetest.Postgres)
	base := start(t, t.TempDir(), vars...)
	tok := accessToken(t, graphql(t, base, "", `mutation { register(username: "alice", password: "correct horse battery") { accessToken } }`), "register")
	if out := graphql(t, base, tok, `{ me { username } }`); out["errors"] != nil {
		t.Fatalf("me: %v", out)
	}
	if got := status(t, base+"/readyz"); got != 200 {
		t.Fatalf("readyz: %d", got)
	}
}

func contains[T comparable](xs []T, x T) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
