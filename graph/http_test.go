package graph_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gqlauth/account"
	"gqlauth/graph"
	"gqlauth/store/storetest"
	"gqlauth/token"
)

const (
	mediaJSON     = "application/json"
	mediaResponse = "application/graphql-response+json"
)

// exchange is one raw HTTP request to the GraphQL endpoint and what came back.
type exchange struct {
	method, target, contentType, accept, token string
	body                                       string
}

func (s *server) exchange(t testing.TB, x exchange) response {
	t.Helper()
	if x.method == "" {
		x.method = http.MethodPost
	}
	if x.contentType == "" && x.method == http.MethodPost {
		x.contentType = "application/json"
	}
	req, err := http.NewRequest(x.method, s.URL+x.target, strings.NewReader(x.body))
	if err != nil {
		t.Fatal(err)
	}
	if x.contentType != "" {
		req.Header.Set("Content-Type", x.contentType)
	}
	if x.accept != "" {
		req.Header.Set("Accept", x.accept)
	}
	if x.token != "" {
		req.Header.Set("Authorization", "Bearer "+x.token)
	}
	return send(t, req)
}

func TestHTTP_NegotiatesTheResponseMediaType(t *testing.T) {
	s := newServer(t, storetest.SQLite)
	for _, c := range []struct{ accept, want string }{
		{"", mediaJSON},
		{mediaJSON, mediaJSON},
		{mediaResponse, mediaResponse},
		{"*/*", mediaJSON},
		{"application/*", mediaJSON},
		{mediaResponse + ", " + mediaJSON + ";q=0.9", mediaResponse},
		{mediaResponse + ", " + mediaJSON, mediaResponse}, // named exactly: the client knows it
		{mediaJSON + ", " + mediaResponse + ";q=0.5", mediaJSON},
		{mediaResponse + ";q=0.5, " + mediaJSON + ";q=0.8", mediaJSON},
		{mediaJSON + ";q=0, " + mediaResponse, mediaResponse},
		{"text/html, */*;q=0.1", mediaJSON},
		{"application/xml, " + mediaResponse + ";q=0.2", mediaResponse},
		{"text/html", ""},
		{mediaJSON + ";q=0", ""},
		{"*/*;q=0", ""},
		{"text/html, image/*", ""},
	} {
		t.Run(c.accept, func(t *testing.T) {
			r := s.exchange(t, exchange{accept: c.accept, body: `{"query":"{ __typename }"}`})
			ct := r.Header.Get("Content-Type")
			if c.want == "" {
				if r.Status != http.StatusNotAcceptable || !strings.HasPrefix(ct, mediaJSON) || len(r.Errors) != 1 {
					t.Fatalf("got %d %q %+v, want 406 with a JSON error", r.Status, ct, r.Errors)
				}
				return
			}
			if r.Status != 200 || !strings.HasPrefix(ct, c.want+";") || !strings.Contains(ct, "charset=utf-8") {
				t.Fatalf("got %d %q, want 200 %s", r.Status, ct, c.want)
			}
		})
	}
}

func TestHTTP_StatusCodesFollowTheMediaType(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		cases := []struct {
			name          string
			x             exchange
			json, resp    int // status in application/json, in application/graphql-response+json
			code          string
			dataInJSON    bool // whether the application/json body has a data entry
			dataInRespons bool
		}{
			{"Unparsable", exchange{body: `{"query":"{ me { "}`}, 200, 400, "GRAPHQL_PARSE_FAILED", true, false},
			{"Invalid", exchange{body: `{"query":"{ nothing }"}`}, 200, 400, "GRAPHQL_VALIDATION_FAILED", true, false},
			{"VariableNotCoercible", exchange{body: `{"query":"query($n: Int!) { users(limit: $n) { id } }","variables":{"n":"ten"}}`}, 200, 400, "GRAPHQL_VALIDATION_FAILED", true, false},
			{"VariableMissing", exchange{body: `{"query":"query($n: Int!) { users(limit: $n) { id } }"}`}, 200, 400, "GRAPHQL_VALIDATION_FAILED", true, false},
			{"OverALimit", exchange{body: `{"query":"{ a: __typename b: __typename c: __typename d: __typename e: __typename f: __typename g: __typename h: __typename i: __typename j: __typename k: __typename l: __typename m: __typename n: __typename o: __typename p: __typename q: __typename r: __typename s: __typename t: __typename u: __typename }"}`}, 200, 400, "GRAPHQL_VALIDATION_FAILED", true, false},
			{"NoQuery", exchange{body: `{}`}, 400, 400, "GRAPHQL_PARSE_FAILED", true, false},
			{"QueryNotAString", exchange{body: `{"query":{"a":1}}`}, 400, 400, "GRAPHQL_PARSE_FAILED", true, false},
			{"QueryNull", exchange{body: `{"query":null}`}, 400, 400, "GRAPHQL_PARSE_FAILED", true, false},
			{"VariablesNotAnObject", exchange{body: `{"query":"{ __typename }","variables":"{}"}`}, 400, 400, "GRAPHQL_PARSE_FAILED", true, false},
			{"VariablesAnArray", exchange{body: `{"query":"{ __typename }","variables":[]}`}, 400, 400, "GRAPHQL_PARSE_FAILED", true, false},
			{"OperationNameNotAString", exchange{body: `{"query":"{ __typename }","operationName":7}`}, 400, 400, "GRAPHQL_PARSE_FAILED", true, false},
			{"ExtensionsNotAnObject", exchange{body: `{"query":"{ __typename }","extensions":true}`}, 400, 400, "GRAPHQL_PARSE_FAILED", true, false},
			{"NotJSON", exchange{body: `{"query":`}, 400, 400, "GRAPHQL_PARSE_FAILED", true, false},
			{"EmptyBody", exchange{body: ``}, 400, 400, "GRAPHQL_PARSE_FAILED", true, false},
			{"NotAnObject", exchange{body: `"{ __typename }"`}, 400, 400, "GRAPHQL_PARSE_FAILED", true, false},
			{"FormBody", exchange{contentType: "application/x-www-form-urlencoded", body: `query=%7B__typename%7D`}, 415, 415, "GRAPHQL_PARSE_FAILED", true, false},
			{"MutationOverGET", exchange{method: "GET", target: "/?query=" + url.QueryEscape(`mutation { logout }`)}, 405, 405, "GRAPHQL_VALIDATION_FAILED", true, false},
			{"GETWithoutQuery", exchange{method: "GET", target: "/"}, 400, 400, "GRAPHQL_PARSE_FAILED", true, false},
			{"GETVariablesNotJSON", exchange{method: "GET", target: "/?query=" + url.QueryEscape(`{ __typename }`) + "&variables=x"}, 400, 400, "GRAPHQL_PARSE_FAILED", true, false},
			{"PUT", exchange{method: "PUT", body: `{"query":"{ __typename }"}`}, 405, 405, "GRAPHQL_PARSE_FAILED", true, false},
			// A field error is not a request error: the operation ran, and data is there.
			{"FieldError", exchange{body: `{"query":"{ me { id } }"}`}, 200, 200, "UNAUTHENTICATED", true, true},
		}
		for _, c := range cases {
			for _, media := range []string{mediaJSON, mediaResponse} {
				t.Run(c.name+"/"+strings.TrimPrefix(media, "application/"), func(t *testing.T) {
					x := c.x
					x.accept = media
					r := s.exchange(t, x)
					want, data := c.json, c.dataInJSON
					if media == mediaResponse {
						want, data = c.resp, c.dataInRespons
					}
					if r.Status != want || len(r.Errors) == 0 || r.Errors[0].Extensions.Code != c.code {
						t.Fatalf("got %d %+v, want %d %s", r.Status, r.Errors, want, c.code)
					}
					if r.HasData != data {
						t.Fatalf("data entry: got %v, want %v", r.HasData, data)
					}
					if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, media) {
						t.Fatalf("Content-Type %q, want %s", ct, media)
					}
				})
			}
		}
		t.Run("NullOptionalParametersAreAllowed", func(t *testing.T) {
			r := s.exchange(t, exchange{body: `{"query":"{ __typename }","variables":null,"operationName":null,"extensions":null}`})
			if r.Status != 200 || len(r.Errors) > 0 {
				t.Fatalf("got %d %+v", r.Status, r.Errors)
			}
		})
	})
}

// manifest writes a trusted-documents manifest of docs, keyed as graphql-codegen's client preset
// keys them, and returns its path.
func manifest(t testing.TB, docs ...string) (path string, ids []string) {
	t.Helper()
	m := map[string]string{}
	for _, d := range docs {
		sum := sha256.Sum256([]byte(d))
		id := "sha256:" + hex.EncodeToString(sum[:])
		m[id], ids = d, append(ids, id)
	}
	return writeManifest(t, m), ids
}

func writeManifest(t testing.TB, m any) string {
	t.Helper()
	raw, _ := json.Marshal(m)
	path := filepath.Join(t.TempDir(), "persisted-documents.json")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func trustedDocuments(t testing.TB, path string, only bool) *graph.TrustedDocuments {
	t.Helper()
	d, err := graph.ReadTrustedDocuments(path, only)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

const (
	meDocument    = `query Me { me { id username role } }`
	loginDocument = `mutation Login($username: String!, $password: String!) { login(username: $username, password: $password) { accessToken } }`
)

func TestTrustedDocuments_RunByDocumentIDOverPOSTAndGET(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		path, ids := manifest(t, meDocument, loginDocument)
		s := newServer(t, kind, withTrustedDocuments(trustedDocuments(t, path, false)))
		alice := s.signedInUser(t, "alice")
		me, login := ids[0], ids[1]

		r := s.exchange(t, exchange{token: alice.AccessToken, body: `{"documentId":"` + me + `"}`})
		if r.Status != 200 || len(r.Errors) > 0 || !strings.Contains(string(r.Data["me"]), `"alice"`) {
			t.Fatalf("POST documentId: %d %+v %s", r.Status, r.Errors, r.Data["me"])
		}
		r = s.exchange(t, exchange{method: "GET", target: "/?documentId=" + url.QueryEscape(me), token: alice.AccessToken})
		if r.Status != 200 || len(r.Errors) > 0 || !strings.Contains(string(r.Data["me"]), `"alice"`) {
			t.Fatalf("GET documentId: %d %+v", r.Status, r.Errors)
		}
		r = s.exchange(t, exchange{body: `{"documentId":"` + login + `","variables":{"username":"alice","password":"correct horse battery"},"operationName":"Login"}`})
		if r.Status != 200 || len(r.Errors) > 0 || !strings.Contains(string(r.Data["login"]), "accessToken") {
			t.Fatalf("login by documentId: %d %+v", r.Status, r.Errors)
		}
		// The directive applies to a trusted document exactly as to free-form text.
		s.exchange(t, exchange{body: `{"documentId":"` + me + `"}`}).wantError(t, "UNAUTHENTICATED", "MISSING_TOKEN")
		// GET still runs queries only.
		r = s.exchange(t, exchange{method: "GET", target: "/?documentId=" + url.QueryEscape(login) + "&variables=" + url.QueryEscape(`{"username":"alice","password":"x"}`)})
		if r.Status != http.StatusMethodNotAllowed {
			t.Fatalf("mutation by GET documentId: %d %+v", r.Status, r.Errors)
		}
		for _, media := range []string{mediaJSON, mediaResponse} {
			r = s.exchange(t, exchange{accept: media, body: `{"documentId":"sha256:` + strings.Repeat("0", 64) + `"}`})
			if want := map[string]int{mediaJSON: 200, mediaResponse: 400}[media]; r.Status != want || r.HasData == (media == mediaResponse) {
				t.Fatalf("unknown id in %s: %d data %v", media, r.Status, r.HasData)
			}
			r.wantError(t, "PERSISTED_QUERY_NOT_FOUND", "")
		}
	})
}

func TestTrustedDocuments_OnlyModeRefusesFreeFormExceptFromAdmins(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		path, ids := manifest(t, meDocument, loginDocument)
		s := newServer(t, kind, withTrustedDocuments(trustedDocuments(t, path, true)))
		// Accounts are made through the store-backed service directly: register is free-form.
		root := mustAccount(t, s, "root", true)
		alice := mustAccount(t, s, "alice", false)

		free := `{"query":"{ me { username } }"}`
		s.exchange(t, exchange{body: free}).wantError(t, "PERSISTED_QUERY_REQUIRED", "")
		s.exchange(t, exchange{body: free, token: alice}).wantError(t, "PERSISTED_QUERY_REQUIRED", "")
		s.exchange(t, exchange{method: "GET", target: "/?query=" + url.QueryEscape(`{ __typename }`)}).wantError(t, "PERSISTED_QUERY_REQUIRED", "")
		if r := s.exchange(t, exchange{body: free, token: root}); len(r.Errors) > 0 || !strings.Contains(string(r.Data["me"]), "root") {
			t.Fatalf("an admin's free-form query: %+v", r.Errors)
		}
		// Trusted documents work for everyone.
		if r := s.exchange(t, exchange{body: `{"documentId":"` + ids[0] + `"}`, token: alice}); len(r.Errors) > 0 {
			t.Fatalf("trusted me: %+v", r.Errors)
		}
		r := s.exchange(t, exchange{body: `{"documentId":"` + ids[1] + `","variables":{"username":"alice","password":"correct horse battery"}}`})
		if len(r.Errors) > 0 {
			t.Fatalf("trusted login: %+v", r.Errors)
		}
		for _, media := range []string{mediaJSON, mediaResponse} {
			r := s.exchange(t, exchange{accept: media, body: free})
			if want := map[string]int{mediaJSON: 200, mediaResponse: 400}[media]; r.Status != want {
				t.Fatalf("refusal in %s: %d", media, r.Status)
			}
		}
	})
}

// mustAccount creates an account without going through GraphQL and returns an access token.
func mustAccount(t *testing.T, s *server, username string, admin bool) string {
	t.Helper()
	if admin {
		if _, err := s.Service.EnsureAdmin(t.Context(), username, "correct horse battery"); err != nil {
			t.Fatal(err)
		}
	} else if _, err := s.Service.CreateUser(t.Context(), username, "correct horse battery", nil, "USER"); err != nil {
		t.Fatal(err)
	}
	p, err := s.Service.Login(t.Context(), username, "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	return p.AccessToken
}

func TestTrustedDocuments_DocumentIDWithOtherTextNeverRunsTheText(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		path, ids := manifest(t, meDocument)
		s := newServer(t, kind, withTrustedDocuments(trustedDocuments(t, path, false)))
		alice := s.signedInUser(t, "alice")
		before := s.snapshot(t)
		body, _ := json.Marshal(map[string]any{
			"documentId": ids[0],
			"query":      `mutation { register(username: "mallory", password: "correct horse battery") { accessToken } }`,
		})
		for _, media := range []string{mediaJSON, mediaResponse} {
			r := s.exchange(t, exchange{accept: media, body: string(body), token: alice.AccessToken})
			if r.Status != 400 || r.HasData != (media == mediaJSON) {
				t.Fatalf("%s: %d data %v %+v", media, r.Status, r.HasData, r.Errors)
			}
		}
		if after := s.snapshot(t); after != before {
			t.Fatal("the free-form text ran")
		}
		// The same text as the document is not ambiguous.
		same, _ := json.Marshal(map[string]any{"documentId": ids[0], "query": meDocument})
		if r := s.exchange(t, exchange{body: string(same), token: alice.AccessToken}); len(r.Errors) > 0 {
			t.Fatalf("documentId with its own text: %+v", r.Errors)
		}
	})
}

func TestTrustedDocuments_BadManifestRefusedAtStartNamingTheEntry(t *testing.T) {
	id := func(d string) string {
		sum := sha256.Sum256([]byte(d))
		return "sha256:" + hex.EncodeToString(sum[:])
	}
	deep := "{ __schema { types { fields { type " + strings.Repeat("{ ofType ", 12) + "{ name }" + strings.Repeat(" }", 12) + " } } } }"
	for _, c := range []struct {
		name     string
		manifest map[string]string
		want     string
	}{
		{"HashMismatch", map[string]string{id("{ me { id } }"): "{ me { username } }"}, "is not the SHA-256 of the document"},
		{"NoAlgorithmPrefix", map[string]string{strings.TrimPrefix(id("{ me { id } }"), "sha256:"): "{ me { id } }"}, `"sha256:"`},
		{"Unparsable", map[string]string{id("{ me { "): "{ me { "}, "Expected Name"},
		{"NotInTheSchema", map[string]string{id("{ secrets }"): "{ secrets }"}, `Cannot query field "secrets"`},
		{"OverTheLimits", map[string]string{id(deep): deep}, "levels deep"},
		{"FragmentCycle", map[string]string{id("{ ...A } fragment A on Query { ...A }"): "{ ...A } fragment A on Query { ...A }"}, "spreads itself"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := writeManifest(t, c.manifest)
			_, err := newHandler(t, trustedDocuments(t, path, false))
			var bad string
			for k := range c.manifest {
				bad = k
			}
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), bad) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("got %v, want one line naming %q and saying %q", err, bad, c.want)
			}
		})
	}
	t.Run("NotJSON", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "m.json")
		os.WriteFile(path, []byte("[1,2"), 0o600)
		if _, err := graph.ReadTrustedDocuments(path, false); err == nil || !strings.Contains(err.Error(), "TRUSTED_DOCUMENTS") {
			t.Fatalf("got %v", err)
		}
	})
}

// newHandler builds the GraphQL handler alone, as the server does at start.
func newHandler(t *testing.T, trusted *graph.TrustedDocuments) (http.Handler, error) {
	t.Helper()
	tokens, err := token.NewTokens(token.TokenConfig{Secret: testSecret, Issuer: "gqlauth", Audience: "gqlauth", TTL: 15 * 60e9})
	if err != nil {
		t.Fatal(err)
	}
	passwords, err := account.NewPasswords(account.PasswordConfig{Cost: 4})
	if err != nil {
		t.Fatal(err)
	}
	svc := account.NewService(storetest.Open(t, storetest.SQLite), tokens, passwords, account.ServiceConfig{})
	return graph.NewHandler(&graph.Resolver{Account: svc}, graph.Options{Trusted: trusted, Introspection: true})
}
