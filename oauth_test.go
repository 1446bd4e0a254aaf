package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"gqlauth/store/storetest"
)

// databaseVars returns the environment that points the server at a fresh database of kind, and
// how to open that database directly.
func databaseVars(t *testing.T, kind storetest.Kind) (vars []string, driver, dsn string) {
	t.Helper()
	if kind == storetest.SQLite {
		return nil, "sqlite", "gqlauth.db" // in the working directory start() moves to
	}
	schema := storetest.NewName(t, kind)
	u, err := url.Parse(os.Getenv("TEST_DATABASE_URL"))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return []string{"DATABASE_URL", u.String(), "JWT_SECRET", strings.Repeat("k", 32)}, "pgx", u.String()
}

func oauthConfig(base string) *oauth2.Config {
	return &oauth2.Config{
		ClientID: "integration-test",
		Endpoint: oauth2.Endpoint{TokenURL: base + "/oauth/token", AuthStyle: oauth2.AuthStyleInParams},
	}
}

func TestOAuth_StandardClientSignsInRefreshesAndCallsTheAPI(t *testing.T) {
	for _, kind := range storetest.Kinds(t) {
		t.Run(string(kind), func(t *testing.T) { testOAuthClient(t, kind) })
	}
}

func testOAuthClient(t *testing.T, kind storetest.Kind) {
	// x/oauth2 treats a token as expired 10 s before its expiry, so an 11 s lifetime makes it
	// refresh after about a second.
	vars, driver, dsn := databaseVars(t, kind)
	base := start(t, t.TempDir(), append(vars, "ACCESS_TOKEN_TTL", "11s", "ADMIN_USERNAME", "alice", "ADMIN_PASSWORD", "correct horse battery")...)
	ctx := context.Background()
	conf := oauthConfig(base)
	tok, err := conf.PasswordCredentialsToken(ctx, "alice", "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken == "" || tok.RefreshToken == "" || tok.TokenType != "Bearer" {
		t.Fatalf("token: %+v", tok)
	}
	source := conf.TokenSource(ctx, tok)
	client := oauth2.NewClient(ctx, source)
	me := func() string {
		res, err := client.Post(base+"/query", "application/json", strings.NewReader(`{"query":"{ me { username } }"}`))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return string(body)
	}
	if got := me(); !strings.Contains(got, `"username":"alice"`) {
		t.Fatalf("me: %s", got)
	}
	time.Sleep(1500 * time.Millisecond)
	if got := me(); !strings.Contains(got, `"username":"alice"`) {
		t.Fatalf("me after refresh: %s", got)
	}
	refreshed, err := source.Token()
	if err != nil {
		t.Fatal(err)
	}
	if refreshed.RefreshToken == tok.RefreshToken || refreshed.AccessToken == tok.AccessToken {
		t.Fatal("the token source did not refresh (or the refresh token did not rotate)")
	}
	// The session was labelled with the client id.
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var clientID string
	if err := db.QueryRow(`SELECT client_id FROM sessions LIMIT 1`).Scan(&clientID); err != nil || clientID != "integration-test" {
		t.Fatalf("client_id on the session: %q %v", clientID, err)
	}
}

type oauthResponse struct {
	status  int
	header  http.Header
	Error   string `json:"error"`
	Access  string `json:"access_token"`
	Refresh string `json:"refresh_token"`
}

func postToken(t *testing.T, base, contentType, body string) oauthResponse {
	t.Helper()
	res, err := http.Post(base+"/oauth/token", contentType, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out oauthResponse
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		t.Fatalf("not JSON (%d): %v", res.StatusCode, err)
	}
	out.status, out.header = res.StatusCode, res.Header
	return out
}

func TestOAuth_TokenEndpointErrors(t *testing.T) {
	base := start(t, t.TempDir(), "ADMIN_USERNAME", "root", "ADMIN_PASSWORD", "correct horse battery",
		"REFRESH_REUSE_INTERVAL", "1ms", "RATE_LIMIT_USER_FAILURES", "1000")
	form := "application/x-www-form-urlencoded"
	good := postToken(t, base, form, url.Values{"grant_type": {"password"}, "username": {"root"}, "password": {"correct horse battery"}}.Encode())
	if good.status != 200 || good.Access == "" {
		t.Fatalf("password grant: %+v", good)
	}
	rotated := postToken(t, base, form, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {good.Refresh}}.Encode())
	if rotated.status != 200 || rotated.Refresh == good.Refresh {
		t.Fatalf("refresh grant: %+v", rotated)
	}
	time.Sleep(5 * time.Millisecond) // past the reuse interval

	// A disabled user.
	tok := accessToken(t, graphql(t, base, "", `mutation { login(username: "root", password: "correct horse battery") { accessToken } }`), "login")
	out := graphql(t, base, tok, `mutation { createUser(username: "off", password: "correct horse battery") { id } }`)
	id := out["data"].(map[string]any)["createUser"].(map[string]any)["id"].(string)
	graphql(t, base, tok, `mutation { setUserDisabled(id: "`+id+`", disabled: true) { id } }`)

	cases := []struct {
		name, contentType, body string
		status                  int
		code                    string
	}{
		{"MissingGrantType", form, "username=root&password=x", 400, "invalid_request"},
		{"UnknownGrantType", form, "grant_type=client_credentials", 400, "unsupported_grant_type"},
		{"WrongPassword", form, "grant_type=password&username=root&password=wrong+password", 400, "invalid_grant"},
		{"UnknownUser", form, "grant_type=password&username=nobody&password=wrong+password", 400, "invalid_grant"},
		{"DisabledUser", form, "grant_type=password&username=off&password=correct+horse+battery", 400, "invalid_grant"},
		{"MissingPassword", form, "grant_type=password&username=root", 400, "invalid_request"},
		{"JSONBody", "application/json", `{"grant_type":"password","username":"root","password":"correct horse battery"}`, 400, "invalid_request"},
		{"ReusedRefreshToken", form, "grant_type=refresh_token&refresh_token=" + url.QueryEscape(good.Refresh), 400, "invalid_grant"},
		{"RevokedByReuse", form, "grant_type=refresh_token&refresh_token=" + url.QueryEscape(rotated.Refresh), 400, "invalid_grant"},
		{"MissingRefreshToken", form, "grant_type=refresh_token", 400, "invalid_request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := postToken(t, base, c.contentType, c.body)
			if r.status != c.status || r.Error != c.code {
				t.Fatalf("got %d %q, want %d %q", r.status, r.Error, c.status, c.code)
			}
			if r.header.Get("Cache-Control") != "no-store" || r.header.Get("Pragma") != "no-cache" {
				t.Fatalf("headers: %v", r.header)
			}
		})
	}
}

func TestOAuth_TokenEndpointIsRateLimited(t *testing.T) {
	base := start(t, t.TempDir(), "RATE_LIMIT_PER_IP", "3")
	form := "application/x-www-form-urlencoded"
	body := "grant_type=password&username=nobody&password=some+password"
	for i := range 3 {
		if r := postToken(t, base, form, body); r.Error != "invalid_grant" {
			t.Fatalf("attempt %d: %+v", i, r)
		}
	}
	r := postToken(t, base, form, body)
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" {
		t.Fatalf("fourth attempt: %d %q retry-after %q", r.status, r.Error, r.header.Get("Retry-After"))
	}
	// The GraphQL login shares the budget: one code path underneath.
	out := graphql(t, base, "", `mutation { login(username: "nobody", password: "some password") { accessToken } }`)
	if !strings.Contains(toJSON(out), "TOO_MANY_REQUESTS") {
		t.Fatalf("GraphQL login after the token endpoint's limit: %v", out)
	}
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestOAuth_TokenEndpointRefusesTextThatIsNotUTF8OrHasNul(t *testing.T) {
	for _, kind := range storetest.Kinds(t) {
		t.Run(string(kind), func(t *testing.T) {
			vars, driver, dsn := databaseVars(t, kind)
			base := start(t, t.TempDir(), append(vars, "ADMIN_USERNAME", "root", "ADMIN_PASSWORD", "correct horse battery")...)
			good := postToken(t, base, "application/x-www-form-urlencoded", "grant_type=password&username=root&password=correct+horse+battery")
			if good.status != 200 {
				t.Fatalf("password grant: %+v", good)
			}
			db, err := sql.Open(driver, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			rows := func() (n int) {
				if err := db.QueryRow(`SELECT count(*) FROM sessions`).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			before := rows()
			refresh := url.QueryEscape(good.Refresh)
			for _, field := range []string{"username", "password", "refresh_token", "client_id", "grant_type"} {
				for shape, bad := range map[string]string{"InvalidByte": "%FF", "Overlong": "%C0%AF", "EncodedSurrogate": "%ED%A0%80", "Nul": "%00"} {
					t.Run(field+"/"+shape, func(t *testing.T) {
						values := map[string]string{"grant_type": "password", "username": "root", "password": "correct+horse+battery", "client_id": "cli"}
						if field == "refresh_token" {
							values = map[string]string{"grant_type": "refresh_token", "refresh_token": refresh}
						}
						values[field] = values[field] + bad
						var body []string
						for k, v := range values {
							body = append(body, k+"="+v)
						}
						r := postToken(t, base, "application/x-www-form-urlencoded", strings.Join(body, "&"))
						if r.status != 400 || r.Error != "invalid_request" {
							t.Fatalf("got %d %q, want 400 invalid_request", r.status, r.Error)
						}
					})
				}
			}
			if after := rows(); after != before {
				t.Fatalf("sessions: %d before, %d after", before, after)
			}
			// The refresh token is untouched by all of that.
			if r := postToken(t, base, "application/x-www-form-urlencoded", "grant_type=refresh_token&refresh_token="+refresh); r.status != 200 {
				t.Fatalf("refresh after the refusals: %+v", r)
			}
		})
	}
}
