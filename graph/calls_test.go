package graph_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// GraphQL calls as a client makes them, and the signed-in users most tests start from.

// raw sends one HTTP request with exactly these bytes and returns the status and body.
func (s *server) raw(t testing.TB, method, target, contentType string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, s.URL+target, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(out)
}

// response is a GraphQL response as a client sees it.
type response struct {
	Data   map[string]json.RawMessage `json:"data"`
	Errors []gqlError                 `json:"errors"`
	Header http.Header                `json:"-"`
	Status int                        `json:"-"`
	// HasData says whether the body had a data entry at all (null included).
	HasData bool `json:"-"`
}

func hasData(raw []byte) bool {
	var keys map[string]json.RawMessage
	json.Unmarshal(raw, &keys)
	_, ok := keys["data"]
	return ok
}

type gqlError struct {
	Message    string `json:"message"`
	Path       []any  `json:"path"`
	Extensions struct {
		Code         string `json:"code"`
		Reason       string `json:"reason"`
		Field        string `json:"field"`
		RequiredRole string `json:"requiredRole"`
		RequiredAal  string `json:"requiredAal"`
		RetryAfter   int    `json:"retryAfter"`
	} `json:"extensions"`
}

// call is one GraphQL request. token, if not empty, goes in the Authorization header as Bearer.
type call struct {
	Query     string
	Variables map[string]any
	Token     string
	Header    http.Header
}

// do sends c to the server and decodes the response.
func (s *server) do(t testing.TB, c call) response {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": c.Query, "variables": c.Variables})
	req, err := http.NewRequest(http.MethodPost, s.URL, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range c.Header {
		req.Header[k] = v
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var r response
	raw, _ := io.ReadAll(res.Body)
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("response is not JSON (%d): %s", res.StatusCode, raw)
	}
	r.Header, r.Status, r.HasData = res.Header, res.StatusCode, hasData(raw)
	return r
}

// query sends a query with a token and fails the test on any error.
func (s *server) query(t testing.TB, token, query string, vars map[string]any) response {
	t.Helper()
	r := s.do(t, call{Query: query, Variables: vars, Token: token})
	if len(r.Errors) > 0 {
		t.Fatalf("%s: unexpected errors: %+v", query, r.Errors)
	}
	return r
}

// field decodes one top-level field of the data into v.
func (r response) field(t testing.TB, name string, v any) {
	t.Helper()
	raw, ok := r.Data[name]
	if !ok {
		t.Fatalf("no data.%s in response: errors %+v", name, r.Errors)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("data.%s: %v", name, err)
	}
}

// wantError fails the test unless the response has exactly one error, with this code and reason.
func (r response) wantError(t testing.TB, code, reason string) gqlError {
	t.Helper()
	if len(r.Errors) != 1 {
		t.Fatalf("want one %s/%s error, got %+v (data %s)", code, reason, r.Errors, r.Data)
	}
	e := r.Errors[0]
	if e.Extensions.Code != code || e.Extensions.Reason != reason {
		t.Fatalf("error: got %s/%s (%q), want %s/%s", e.Extensions.Code, e.Extensions.Reason, e.Message, code, reason)
	}
	return e
}

type user struct {
	ID        string  `json:"id"`
	Username  string  `json:"username"`
	Email     *string `json:"email"`
	Role      string  `json:"role"`
	Disabled  bool    `json:"disabled"`
	CreatedAt string  `json:"createdAt"`
}

type tokens struct {
	AccessToken  string `json:"accessToken"`
	TokenType    string `json:"tokenType"`
	ExpiresIn    int    `json:"expiresIn"`
	RefreshToken string `json:"refreshToken"`
	User         user   `json:"user"`
}

const payloadFields = `accessToken tokenType expiresIn refreshToken user { id username email role disabled createdAt }`

// register creates a user through the API and returns its first tokens.
func (s *server) register(t testing.TB, username, password string) tokens {
	t.Helper()
	var p tokens
	s.query(t, "", `mutation($u: String!, $p: String!) { register(username: $u, password: $p) { `+payloadFields+` } }`,
		map[string]any{"u": username, "p": password}).field(t, "register", &p)
	return p
}

// login signs in through the API, starting a new session.
func (s *server) login(t testing.TB, username, password string) tokens {
	t.Helper()
	var p tokens
	s.query(t, "", `mutation($u: String!, $p: String!) { login(username: $u, password: $p) { `+payloadFields+` } }`,
		map[string]any{"u": username, "p": password}).field(t, "login", &p)
	return p
}

// refresh exchanges a refresh token and returns the raw response.
func (s *server) refresh(t testing.TB, refreshToken string) response {
	t.Helper()
	return s.do(t, call{
		Query:     `mutation($r: String) { refresh(refreshToken: $r) { ` + payloadFields + ` } }`,
		Variables: map[string]any{"r": refreshToken},
	})
}

// me calls the guarded me query with token and returns the raw response.
func (s *server) me(t testing.TB, token string) response {
	t.Helper()
	return s.do(t, call{Query: `{ me { id username role } }`, Token: token})
}

// signedInUser registers a user with a fresh name and returns the name and tokens.
func (s *server) signedInUser(t testing.TB, username string) tokens {
	t.Helper()
	return s.register(t, username, "correct horse battery")
}

// signedInAdmin creates an admin directly through the service's bootstrap path and signs it in.
func (s *server) signedInAdmin(t testing.TB) tokens {
	t.Helper()
	p := s.register(t, "root", "correct horse battery")
	if _, err := s.DB.SetUserRole(context.Background(), p.User.ID, "ADMIN"); err != nil {
		t.Fatal(err)
	}
	return p
}

// parseUnverified returns the claims of a JWT without checking it.
func parseUnverified(t testing.TB, token string) jwt.MapClaims {
	t.Helper()
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(token, claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

// setDisabled disables or enables a user as an admin, failing the test on any error.
func (s *server) setDisabled(t testing.TB, adminToken, id string, disabled bool) {
	t.Helper()
	s.query(t, adminToken, `mutation($id: ID!, $d: Boolean!) { setUserDisabled(id: $id, disabled: $d) { id } }`,
		map[string]any{"id": id, "d": disabled})
}

// inParallel sends n copies of a request at once and returns the responses in order.
func inParallel(n int, send func() response) []response {
	results := make([]response, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = send()
		}()
	}
	wg.Wait()
	return results
}
