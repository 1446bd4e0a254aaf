package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"gqlauth/store/storetest"
)

// formCall is one request to a form endpoint as a client sends it: the body, extra headers (each
// name may carry several values, sent as separate header lines) and an optional Basic client.
type formCall struct {
	path   string
	body   string
	query  string
	header http.Header
	basic  [2]string
}

// formResponse is a form endpoint's answer; raw is its body as sent.
type formResponse struct {
	status int
	header http.Header
	raw    string
	Error  string `json:"error"`
	Access string `json:"access_token"`
}

func postForm(t *testing.T, base string, c formCall) formResponse {
	t.Helper()
	target := base + c.path
	if c.query != "" {
		target += "?" + c.query
	}
	req, _ := http.NewRequest(http.MethodPost, target, strings.NewReader(c.body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for name, values := range c.header {
		for _, v := range values {
			req.Header.Add(name, v)
		}
	}
	if c.basic[0] != "" {
		req.SetBasicAuth(c.basic[0], c.basic[1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := formResponse{status: res.StatusCode, header: res.Header, raw: string(raw)}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("not JSON (%d): %s", res.StatusCode, raw)
	}
	return out
}

// formServer starts the server on kind with an ADMIN root and returns its base URL, an ADMIN's
// API key (for introspection) and a live access token of root's.
func formServer(t *testing.T, kind storetest.Kind) (base, adminKey, live string) {
	t.Helper()
	vars, _, _ := databaseVars(t, kind)
	base = start(t, t.TempDir(), append(vars, "ADMIN_USERNAME", "root", "ADMIN_PASSWORD", "correct horse battery",
		"RATE_LIMIT_USER_FAILURES", "1000")...)
	live = accessToken(t, graphql(t, base, "", `mutation { login(username: "root", password: "correct horse battery") { accessToken } }`), "login")
	out := graphql(t, base, live, `mutation { createApiKey(name: "introspection") { secret } }`)
	adminKey = out["data"].(map[string]any)["createApiKey"].(map[string]any)["secret"].(string)
	return base, adminKey, live
}

// The form endpoints are OAuth endpoints, not the resource server: an Authorization: Basic header
// identifies the client there, and no answer of /oauth/token carries RFC 6750's Bearer challenge,
// whatever the credentials headers hold. /oauth/introspect challenges only with its own 401.
func TestFormEndpoints_NeverSendTheResourceServerChallenge(t *testing.T) {
	for _, kind := range storetest.Kinds(t) {
		t.Run(string(kind), func(t *testing.T) {
			base, adminKey, live := formServer(t, kind)
			password := url.Values{"grant_type": {"password"}, "username": {"root"}, "password": {"correct horse battery"}}.Encode()
			for name, c := range map[string]struct {
				call   formCall
				status int
			}{
				"BasicClient200":          {formCall{path: "/oauth/token", body: password, basic: [2]string{"cli", "sec"}}, 200},
				"BasicClient400":          {formCall{path: "/oauth/token", body: "grant_type=password&username=root&password=wrong", basic: [2]string{"cli", "sec"}}, 400},
				"BasicClientNoGrant":      {formCall{path: "/oauth/token", body: "username=root", basic: [2]string{"cli", "sec"}}, 400},
				"GarbageBearer200":        {formCall{path: "/oauth/token", body: password, header: http.Header{"Authorization": {"Bearer not.a.token"}}}, 200},
				"TwoCredentials200":       {formCall{path: "/oauth/token", body: password, header: http.Header{"Authorization": {"Bearer " + live}, "X-Api-Key": {adminKey}}}, 200},
				"IntrospectAdminKey200":   {formCall{path: "/oauth/introspect", body: "token=" + live, header: http.Header{"X-Api-Key": {adminKey}}}, 200},
				"IntrospectBadForm400":    {formCall{path: "/oauth/introspect", body: "nothing=here", header: http.Header{"X-Api-Key": {adminKey}}}, 400},
				"IntrospectRepeated400":   {formCall{path: "/oauth/introspect", body: "token=a&token=" + live, header: http.Header{"X-Api-Key": {adminKey}}}, 400},
				"IntrospectKeyAsBasic401": {formCall{path: "/oauth/introspect", body: "token=" + live, basic: [2]string{adminKey, ""}}, 401},
			} {
				t.Run(name, func(t *testing.T) {
					r := postForm(t, base, c.call)
					if r.status != c.status {
						t.Fatalf("status %d, want %d: %s", r.status, c.status, r.raw)
					}
					got := r.header.Values("WWW-Authenticate")
					switch {
					case c.status == 401 && (len(got) != 1 || got[0] != `Bearer realm="gqlauth", error="invalid_token"`):
						t.Fatalf("introspection's own 401: WWW-Authenticate %q", got)
					case c.status != 401 && len(got) != 0:
						t.Fatalf("WWW-Authenticate %q on a form endpoint", got)
					}
				})
			}
		})
	}
}

// RFC 6749 §3.1/§3.2: a parameter MUST NOT be sent more than once. Every repeated parameter, in
// the body, in the query string or across both, is 400 invalid_request on both form endpoints,
// instead of the first copy counting; nothing is signed in or looked up.
func TestFormEndpoints_RepeatedParameterRefused(t *testing.T) {
	for _, kind := range storetest.Kinds(t) {
		t.Run(string(kind), func(t *testing.T) {
			base, adminKey, live := formServer(t, kind)
			creds := "username=root&password=correct+horse+battery"
			key := http.Header{"X-Api-Key": {adminKey}}
			for name, c := range map[string]formCall{
				"GrantType":            {path: "/oauth/token", body: "grant_type=password&grant_type=refresh_token&" + creds},
				"GrantTypeSameTwice":   {path: "/oauth/token", body: "grant_type=password&grant_type=password&" + creds},
				"Username":             {path: "/oauth/token", body: "grant_type=password&username=nobody&" + creds},
				"Password":             {path: "/oauth/token", body: "grant_type=password&" + creds + "&password=wrong"},
				"ClientID":             {path: "/oauth/token", body: "grant_type=password&client_id=a&client_id=b&" + creds},
				"RefreshToken":         {path: "/oauth/token", body: "grant_type=refresh_token&refresh_token=a&refresh_token=b"},
				"BodyAndQueryString":   {path: "/oauth/token", body: "grant_type=password&" + creds, query: "grant_type=refresh_token"},
				"IntrospectToken":      {path: "/oauth/introspect", body: "token=garbage&token=" + live, header: key},
				"IntrospectEmptyFirst": {path: "/oauth/introspect", body: "token=&token=" + live, header: key},
				"IntrospectQuery":      {path: "/oauth/introspect", body: "token=" + live, query: "token=garbage", header: key},
			} {
				t.Run(name, func(t *testing.T) {
					r := postForm(t, base, c)
					if r.status != 400 || r.Error != "invalid_request" || r.Access != "" || strings.Contains(r.raw, `"active"`) {
						t.Fatalf("got %d %s, want 400 invalid_request", r.status, r.raw)
					}
				})
			}
			// The same requests without the repeat go through.
			if r := postForm(t, base, formCall{path: "/oauth/token", body: "grant_type=password&" + creds}); r.status != 200 || r.Access == "" {
				t.Fatalf("password grant: %d %s", r.status, r.raw)
			}
			if r := postForm(t, base, formCall{path: "/oauth/introspect", body: "token=" + live, header: key}); r.status != 200 || !strings.Contains(r.raw, `"active":true`) {
				t.Fatalf("introspection: %d %s", r.status, r.raw)
			}
		})
	}
}

// Introspection's caller is one API key: two X-API-Key lines, two Authorization lines, or one of
// each are refused (401) rather than the first one counting.
func TestIntrospection_RepeatedCredentialHeaderRefused(t *testing.T) {
	for _, kind := range storetest.Kinds(t) {
		t.Run(string(kind), func(t *testing.T) {
			base, adminKey, live := formServer(t, kind)
			for name, h := range map[string]http.Header{
				"TwoAPIKeys":             {"X-Api-Key": {adminKey, "gqa_" + strings.Repeat("A", 43)}},
				"SameAPIKeyTwice":        {"X-Api-Key": {adminKey, adminKey}},
				"TwoAuthorizations":      {"Authorization": {"Bearer " + adminKey, "Bearer garbage"}},
				"SameAuthorizationTwice": {"Authorization": {"Bearer " + adminKey, "Bearer " + adminKey}},
				"KeyAndAuthorization":    {"Authorization": {"Bearer " + adminKey}, "X-Api-Key": {adminKey}},
			} {
				t.Run(name, func(t *testing.T) {
					r := postForm(t, base, formCall{path: "/oauth/introspect", body: "token=" + live, header: h})
					if r.status != 401 || r.Error != "invalid_token" {
						t.Fatalf("got %d %s, want 401 invalid_token", r.status, r.raw)
					}
				})
			}
		})
	}
}

// A refused grant's description speaks of what that grant sent: an authorization code is not a
// username and password.
func TestOAuth_FailedAuthorizationCodeGrantDescribesTheCode(t *testing.T) {
	base := start(t, t.TempDir())
	r := postForm(t, base, formCall{path: "/oauth/token", body: "grant_type=authorization_code&code=unknown&code_verifier=" + strings.Repeat("v", 43)})
	if r.status != 400 || r.Error != "invalid_grant" || strings.Contains(r.raw, "password") || !strings.Contains(r.raw, "code") {
		t.Fatalf("got %d %s", r.status, r.raw)
	}
	r = postForm(t, base, formCall{path: "/oauth/token", body: "grant_type=password&username=nobody&password=wrong+password+here"})
	if r.status != 400 || r.Error != "invalid_grant" || !strings.Contains(r.raw, "password") {
		t.Fatalf("password grant: %d %s", r.status, r.raw)
	}
}

// The playground serves its files and nothing else: a directory is 404, never a listing.
func TestPlayground_ServesFilesNotDirectoryListings(t *testing.T) {
	base := start(t, t.TempDir())
	for path, want := range map[string]int{
		"/playground/":               404,
		"/playground/.":              404,
		"/playground//":              404,
		"/playground/playground.js":  200,
		"/playground/playground.css": 200,
		"/playground/missing.js":     404,
	} {
		t.Run(path, func(t *testing.T) {
			res, err := http.Get(base + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != want || strings.Contains(string(body), `href="playground.js"`) {
				t.Fatalf("got %d: %.200s", res.StatusCode, body)
			}
		})
	}
}
