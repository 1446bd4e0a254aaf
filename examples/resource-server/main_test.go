package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// gqlauth starts the gqlauth binary (GQLAUTH_BIN) with ES256 keys that publish for 2 s before
// they sign, and returns its base URL.
func gqlauth(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("GQLAUTH_BIN")
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true but GQLAUTH_BIN is not set")
		}
		t.Skip("GQLAUTH_BIN not set: build gqlauth and point GQLAUTH_BIN at it")
	}
	bin, _ = filepath.Abs(bin)
	cmd := exec.Command(bin)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "PORT=0", "JWT_ALG=ES256", "JWKS_MAX_AGE=2s", "JWT_KEY_PUBLISH_DELAY=2s",
		"ADMIN_USERNAME=root", "ADMIN_PASSWORD=correct horse battery", "BCRYPT_COST=10")
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() })
	listening := regexp.MustCompile(`msg=listening addr=\S*:(\d+)`)
	lines := bufio.NewScanner(out)
	for lines.Scan() {
		if m := listening.FindStringSubmatch(lines.Text()); m != nil {
			go func() {
				for lines.Scan() {
				}
			}()
			return "http://127.0.0.1:" + m[1]
		}
	}
	t.Fatal("gqlauth did not start")
	return ""
}

// gql runs a GraphQL operation on gqlauth and returns data.<field>.
func gql(t *testing.T, base, token, query string, field string) json.RawMessage {
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
	var out struct {
		Data   map[string]json.RawMessage
		Errors []any
	}
	json.NewDecoder(res.Body).Decode(&out)
	if len(out.Errors) > 0 {
		t.Fatalf("%s: %v", query, out.Errors)
	}
	return out.Data[field]
}

func login(t *testing.T, base, username string) string {
	t.Helper()
	var p struct{ AccessToken string }
	json.Unmarshal(gql(t, base, "", `mutation { login(username: "`+username+`", password: "correct horse battery") { accessToken } }`, "login"), &p)
	return p.AccessToken
}

// call sends a request to the resource server and returns the status.
func call(t *testing.T, api http.Handler, method, path, token string) int {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, req)
	return rec.Code
}

// eventually polls until status is want, for at most d.
func eventually(t *testing.T, d time.Duration, want int, status func() int) {
	t.Helper()
	deadline := time.Now().Add(d)
	got := status()
	for got != want && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		got = status()
	}
	if got != want {
		t.Fatalf("status %d, want %d within %s", got, want, d)
	}
}

func TestResourceServer_TrustsTokensThroughAKeyRotationWithoutRestart(t *testing.T) {
	base := gqlauth(t)
	root := login(t, base, "root")
	var key struct{ Secret string }
	json.Unmarshal(gql(t, base, root, `mutation { createApiKey(name: "resource-server") { secret } }`, "createApiKey"), &key)
	gql(t, base, root, `mutation { createUser(username: "alice", password: "correct horse battery") { id } }`, "createUser")
	alice := login(t, base, "alice")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	api, err := NewAPI(ctx, Config{GqlauthURL: base, Issuer: "gqlauth", Audience: "gqlauth",
		RefreshInterval: time.Second, UnknownKIDEvery: 500 * time.Millisecond, IntrospectionKey: key.Secret})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/api/profile", alice, 200},
		{"GET", "/api/admin", root, 200},
		{"GET", "/api/admin", alice, 403}, // the role claim is enforced
		{"GET", "/api/profile", "garbage", 401},
		{"POST", "/api/transfer", alice, 200},
	} {
		if got := call(t, api, c.method, c.path, c.token); got != c.want {
			t.Fatalf("%s %s: %d, want %d", c.method, c.path, got, c.want)
		}
	}

	// Rotate: the new key is published at once and signs after 2 s.
	var next struct{ Kid string }
	json.Unmarshal(gql(t, base, root, `mutation { rotateSigningKey { kid } }`, "rotateSigningKey"), &next)
	time.Sleep(2500 * time.Millisecond)
	fresh := login(t, base, "alice")
	if h := header(t, fresh); h["kid"] != next.Kid {
		t.Fatalf("a token after the publish delay was signed by %v, not the new key %s", h["kid"], next.Kid)
	}
	// Tokens from before and after the rotation both pass; neither process restarted.
	for _, tok := range []string{alice, fresh} {
		if got := call(t, api, "GET", "/api/profile", tok); got != 200 {
			t.Fatalf("after the rotation: %d", got)
		}
	}

	// Revoke the old key: it leaves the JWKS, and the resource server drops it at its next refresh.
	var keys []struct{ Kid, State string }
	json.Unmarshal(gql(t, base, root, `{ signingKeys { kid state } }`, "signingKeys"), &keys)
	for _, k := range keys {
		if k.State == "RETIRED" {
			gql(t, base, root, `mutation { revokeSigningKey(kid: "`+k.Kid+`") }`, "revokeSigningKey")
		}
	}
	eventually(t, 5*time.Second, 401, func() int { return call(t, api, "GET", "/api/profile", alice) })
	if got := call(t, api, "GET", "/api/profile", fresh); got != 200 {
		t.Fatalf("a token of the current key after the revocation: %d", got)
	}

	// Local verification sees a logout only at exp; introspection sees it at once.
	gql(t, base, fresh, `mutation { logout }`, "logout")
	if got := call(t, api, "GET", "/api/profile", fresh); got != 200 {
		t.Fatalf("JWKS-only check after logout: %d (expected still 200 until exp)", got)
	}
	if got := call(t, api, "POST", "/api/transfer", fresh); got != 401 {
		t.Fatalf("introspected check after logout: %d, want 401", got)
	}
}

func header(t *testing.T, token string) map[string]any {
	t.Helper()
	var h map[string]any
	raw, err := base64URL(token[:bytes.IndexByte([]byte(token), '.')])
	if err != nil || json.Unmarshal(raw, &h) != nil {
		t.Fatalf("not a JWT: %v", err)
	}
	return h
}

func base64URL(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
