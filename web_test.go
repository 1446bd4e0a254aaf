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
	"time"

	"gqlauth/config"
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
	if _, err := config.Load(env("CORS_ALLOWED_ORIGINS", "*")); err == nil {
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

// browserRequest sends one request with the given headers (name, value pairs) and no cookie jar.
func browserRequest(t *testing.T, method, u, contentType, body string, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return res, string(out)
}

// cookieServer runs cookie mode with one listed sibling origin and a user "mallory".
func cookieServer(t *testing.T, vars ...string) string {
	t.Helper()
	base := start(t, t.TempDir(), append([]string{"REFRESH_COOKIE", "true", "COOKIE_SECURE", "false",
		"CORS_ALLOWED_ORIGINS", "https://app.example.com"}, vars...)...)
	accessToken(t, graphql(t, base, "", `mutation { register(username: "mallory", password: "correct horse battery") { accessToken } }`), "register")
	return base
}

func TestCookieMode_RequestsABrowserCanSendCrossSiteNeitherSetNorClearTheCookie(t *testing.T) {
	base := cookieServer(t)
	victim := findCookie(mustPost(t, base, `mutation { register(username: "victim", password: "correct horse battery") { accessToken } }`), "gqlauth_refresh")
	if victim == nil {
		t.Fatal("no cookie for a JSON POST without Origin")
	}
	const login = `mutation { login(username: "mallory", password: "correct horse battery") { accessToken } }`
	jsonLogin := `{"query":` + quote(login) + `}`
	form := "application/x-www-form-urlencoded"
	tokenForm := url.Values{"grant_type": {"password"}, "username": {"mallory"}, "password": {"correct horse battery"}}.Encode()
	cookie := "gqlauth_refresh=" + victim.Value
	cases := []struct {
		name, path, contentType, body string
		header                        []string
		status                        int
		want                          string // in the body
	}{
		// The token endpoint takes forms, which any page can post: it never touches the cookie.
		{"TokenFormFromAnOAuthClient", "/oauth/token", form, tokenForm, nil, 200, `"access_token"`},
		{"TokenFormCrossSite", "/oauth/token", form, tokenForm, []string{"Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site", "Cookie", cookie}, 200, `"access_token"`},
		{"TokenFormSameOrigin", "/oauth/token", form, tokenForm, []string{"Origin", base, "Sec-Fetch-Site", "same-origin", "Cookie", cookie}, 200, `"access_token"`},
		{"TokenBadRefreshWithCookie", "/oauth/token", form, "grant_type=refresh_token&refresh_token=bogus", []string{"Sec-Fetch-Site", "cross-site", "Cookie", cookie}, 400, `"invalid_grant"`},
		// Simple requests to /query are refused before anything runs.
		{"QueryFormPost", "/query", form, url.Values{"query": {login}}.Encode(), []string{"Origin", "https://evil.example", "Cookie", cookie}, 415, "GRAPHQL_PARSE_FAILED"},
		{"QueryTextPlain", "/query", "text/plain", jsonLogin, []string{"Origin", "https://evil.example", "Cookie", cookie}, 415, "GRAPHQL_PARSE_FAILED"},
		{"QueryMultipart", "/query", "multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n" + jsonLogin + "\r\n--x--", []string{"Origin", "https://evil.example", "Cookie", cookie}, 415, "GRAPHQL_PARSE_FAILED"},
		// JSON from elsewhere (a browser would need an approved preflight; a CORS mistake must not be enough).
		{"QueryJSONCrossSite", "/query", "application/json", jsonLogin, []string{"Origin", "https://app.example.com", "Sec-Fetch-Site", "cross-site", "Cookie", cookie}, 200, `"login"`},
		{"QueryJSONUnlistedSibling", "/query", "application/json", jsonLogin, []string{"Origin", "https://evil.example.com", "Sec-Fetch-Site", "same-site", "Cookie", cookie}, 200, `"login"`},
		{"QueryJSONSecFetchSiteNone", "/query", "application/json", jsonLogin, []string{"Sec-Fetch-Site", "none", "Cookie", cookie}, 200, `"login"`},
		{"QueryJSONForeignOriginOlderBrowser", "/query", "application/json", jsonLogin, []string{"Origin", "https://evil.example", "Cookie", cookie}, 200, `"login"`},
		{"QueryJSONNullOrigin", "/query", "application/json", jsonLogin, []string{"Origin", "null", "Cookie", cookie}, 200, `"login"`},
		{"QueryJSONLookalikeOrigin", "/query", "application/json", jsonLogin, []string{"Origin", "https://app.example.com.evil.example", "Cookie", cookie}, 200, `"login"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, body := browserRequest(t, http.MethodPost, base+c.path, c.contentType, c.body, c.header...)
			if res.StatusCode != c.status || !strings.Contains(body, c.want) {
				t.Fatalf("got %d %.300s, want %d with %s", res.StatusCode, body, c.status, c.want)
			}
			if got := res.Header.Values("Set-Cookie"); len(got) != 0 {
				t.Fatalf("Set-Cookie on a request a browser can send cross-site: %q", got)
			}
		})
	}
	// The victim's cookie still signs the victim in.
	res, body := browserRequest(t, http.MethodPost, base+"/query", "application/json", `{"query":"mutation { refresh { user { username } } }"}`, "Cookie", cookie)
	if !strings.Contains(body, `"username":"victim"`) || findCookie(res, "gqlauth_refresh") == nil {
		t.Fatalf("the victim's refresh: %s", body)
	}
}

func TestCookieMode_CrossSiteRefreshNeitherUsesNorRotatesTheCookie(t *testing.T) {
	base := cookieServer(t, "REFRESH_REUSE_INTERVAL", "1ms")
	victim := findCookie(mustPost(t, base, `mutation { register(username: "victim", password: "correct horse battery") { accessToken } }`), "gqlauth_refresh")
	cookie := "gqlauth_refresh=" + victim.Value
	refresh := `{"query":"mutation { refresh { user { username } } }"}`
	for _, header := range [][]string{
		{"Sec-Fetch-Site", "cross-site", "Origin", "https://app.example.com"},
		{"Sec-Fetch-Site", "same-site", "Origin", "https://evil.example.com"},
		{"Origin", "https://evil.example"},
		{"Origin", "null"},
	} {
		res, body := browserRequest(t, http.MethodPost, base+"/query", "application/json", refresh, append(header, "Cookie", cookie)...)
		if !strings.Contains(body, "INVALID_REFRESH_TOKEN") || len(res.Header.Values("Set-Cookie")) != 0 {
			t.Fatalf("%q: %s (Set-Cookie %q)", header, body, res.Header.Values("Set-Cookie"))
		}
	}
	// Had any of them rotated the session, the cookie would now be a replayed token.
	time.Sleep(10 * time.Millisecond)
	_, body := browserRequest(t, http.MethodPost, base+"/query", "application/json", refresh, "Sec-Fetch-Site", "same-origin", "Origin", base, "Cookie", cookie)
	if !strings.Contains(body, `"username":"victim"`) {
		t.Fatalf("the victim's own refresh: %s", body)
	}
}

func TestCookieMode_SameOriginListedSiblingAndNonBrowserClientsGetTheCookie(t *testing.T) {
	base := cookieServer(t)
	login := `{"query":"mutation { login(username: \"mallory\", password: \"correct horse battery\") { accessToken } }"}`
	for name, header := range map[string][]string{
		"NoOriginNonBrowser":      nil,
		"SameOrigin":              {"Origin", base, "Sec-Fetch-Site", "same-origin"},
		"SameOriginOlderBrowser":  {"Origin", base},
		"ListedSibling":           {"Origin", "https://app.example.com", "Sec-Fetch-Site", "same-site"},
		"ListedSiblingOlderBrwsr": {"Origin", "https://app.example.com"},
		"ContentTypeWithCharset":  {"Content-Type", "application/json; charset=utf-8", "Sec-Fetch-Site", "same-origin"},
	} {
		t.Run(name, func(t *testing.T) {
			res, body := browserRequest(t, http.MethodPost, base+"/query", "application/json", login, header...)
			if c := findCookie(res, "gqlauth_refresh"); c == nil || c.Value == "" {
				t.Fatalf("no refresh cookie: %s", body)
			}
		})
	}
}

// mustPost sends a JSON GraphQL POST without Origin and returns the response.
func mustPost(t *testing.T, base, query string) *http.Response {
	t.Helper()
	res, body := browserRequest(t, http.MethodPost, base+"/query", "application/json", `{"query":`+quote(query)+`}`)
	if res.StatusCode != 200 || strings.Contains(body, `"errors"`) {
		t.Fatalf("%s: %d %s", query, res.StatusCode, body)
	}
	return res
}
