package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
)

// usersCount asks an admin's view of how many users exist.
func usersCount(t *testing.T, base, adminToken string) int {
	t.Helper()
	out := graphql(t, base, adminToken, `{ users(limit: 100) { id } }`)
	users, _ := out["data"].(map[string]any)["users"].([]any)
	return len(users)
}

func TestCSRF_OnlyJSONPostsRunMutations(t *testing.T) {
	base := start(t, t.TempDir(), "ADMIN_USERNAME", "root", "ADMIN_PASSWORD", "correct horse battery")
	admin := accessToken(t, graphql(t, base, "", `mutation { login(username: "root", password: "correct horse battery") { accessToken } }`), "login")
	before := usersCount(t, base, admin)
	mutation := `mutation { register(username: "victim", password: "correct horse battery") { accessToken } }`
	form := url.Values{"query": {mutation}}.Encode()
	cases := []struct {
		name, method, contentType, body, query string
		status                                 int
	}{
		{"FormPost", "POST", "application/x-www-form-urlencoded", form, "", 415},
		{"TextPlainPost", "POST", "text/plain", `{"query":"` + strings.ReplaceAll(mutation, `"`, `\"`) + `"}`, "", 415},
		{"MultipartPost", "POST", "multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{}\r\n--x--", "", 415},
		{"NoContentType", "POST", "", `{"query":"{ __typename }"}`, "", 415},
		{"GetMutation", "GET", "", "", mutation, 405},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			u := base + "/query"
			if c.query != "" {
				u += "?query=" + url.QueryEscape(c.query)
			}
			req, _ := http.NewRequest(c.method, u, strings.NewReader(c.body))
			if c.contentType != "" {
				req.Header.Set("Content-Type", c.contentType)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != c.status || !strings.Contains(string(body), `"code":"GRAPHQL_`) {
				t.Fatalf("got %d %s, want %d with a GraphQL error code", res.StatusCode, body, c.status)
			}
		})
	}
	if after := usersCount(t, base, admin); after != before {
		t.Fatalf("users: %d before, %d after: a refused request wrote", before, after)
	}
	// The same mutation as a JSON POST works.
	accessToken(t, graphql(t, base, "", mutation), "register")
	// And a GET query runs.
	res, err := http.Get(base + "/query?query=" + url.QueryEscape("{ __typename }"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("GET query: %d", res.StatusCode)
	}
}

func TestCookieMode_RefreshTokenInHttpOnlyCookie(t *testing.T) {
	base := start(t, t.TempDir(), "REFRESH_COOKIE", "true", "COOKIE_SECURE", "false")
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar}
	call := func(query string) (*http.Response, string) {
		t.Helper()
		res, err := client.Post(base+"/query", "application/json", strings.NewReader(`{"query":`+quote(query)+`}`))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return res, string(body)
	}
	res, body := call(`mutation { register(username: "alice", password: "correct horse battery") { refreshToken } }`)
	cookie := findCookie(res, "gqlauth_refresh")
	if cookie == nil {
		t.Fatalf("no refresh cookie: %v %s", res.Header, body)
	}
	if !cookie.HttpOnly || cookie.Path != "/query" || cookie.SameSite != http.SameSiteStrictMode || cookie.Secure || cookie.MaxAge <= 0 {
		t.Fatalf("cookie flags: %+v", cookie)
	}
	// refresh with no argument reads the cookie, and rotates it.
	res, body = call(`mutation { refresh { accessToken refreshToken } }`)
	next := findCookie(res, "gqlauth_refresh")
	if strings.Contains(body, "errors") || next == nil || next.Value == cookie.Value {
		t.Fatalf("refresh from cookie: %s (cookie %+v)", body, next)
	}
	// logout clears it.
	token := accessTokenFrom(t, body, "refresh")
	req, _ := http.NewRequest("POST", base+"/query", strings.NewReader(`{"query":"mutation { logout }"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if cleared := findCookie(res, "gqlauth_refresh"); cleared == nil || cleared.MaxAge >= 0 || cleared.Value != "" {
		t.Fatalf("logout did not clear the cookie: %+v", cleared)
	}
	_, body = call(`mutation { refresh { accessToken } }`)
	if !strings.Contains(body, "INVALID_REFRESH_TOKEN") {
		t.Fatalf("refresh after logout: %s", body)
	}
}

func TestCookieMode_SecureByDefault(t *testing.T) {
	base := start(t, t.TempDir(), "REFRESH_COOKIE", "true")
	res, err := http.Post(base+"/query", "application/json", strings.NewReader(`{"query":"mutation { register(username: \"alice\", password: \"correct horse battery\") { accessToken } }"}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if c := findCookie(res, "gqlauth_refresh"); c == nil || !c.Secure {
		t.Fatalf("cookie without Secure by default: %+v", c)
	}
}

func TestCORS_CredentialsOnlyForAllowedOrigins(t *testing.T) {
	base := start(t, t.TempDir(), "CORS_ALLOWED_ORIGINS", "https://app.example.com, http://localhost:5173")
	preflight := func(origin string) http.Header {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodOptions, base+"/query", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "content-type, authorization")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.Header
	}
	h := preflight("https://app.example.com")
	if h.Get("Access-Control-Allow-Origin") != "https://app.example.com" || h.Get("Access-Control-Allow-Credentials") != "true" ||
		!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("allowed origin: %v", h)
	}
	for _, origin := range []string{"https://evil.example.com", "https://app.example.com.evil.com", "null"} {
		if h := preflight(origin); h.Get("Access-Control-Allow-Origin") != "" || h.Get("Access-Control-Allow-Credentials") != "" {
			t.Fatalf("%s got CORS headers: %v", origin, h)
		}
	}
	if _, err := LoadConfig(env("CORS_ALLOWED_ORIGINS", "*")); err == nil {
		t.Fatal("a wildcard origin was accepted")
	}
}

func findCookie(res *http.Response, name string) *http.Cookie {
	for _, c := range res.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func quote(s string) string { return toJSON(s) }

func accessTokenFrom(t *testing.T, body, field string) string {
	t.Helper()
	var out map[string]any
	if err := jsonUnmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	return accessToken(t, out, field)
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
