package graph_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"gqlauth/graph"
	"gqlauth/store/storetest"
)

// post sends a raw body with a content type.
func post(t *testing.T, url, contentType, body string) response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	return send(t, req)
}

func send(t testing.TB, req *http.Request) response {
	t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var r response
	if err := json.Unmarshal(raw, &r); err != nil {
		r.Errors = []gqlError{{Message: "not JSON: " + string(raw)}}
	}
	r.HasData = hasData(raw)
	r.Header, r.Status = res.Header, res.StatusCode
	return r
}

func TestQueryLimits_RefuseWithAClearError(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		admin := s.signedInAdmin(t)
		before, _ := s.DB.CountUsers(context.Background())
		deep := "{ __schema { types { fields { type " + strings.Repeat("{ ofType ", 12) + "{ name }" + strings.Repeat(" }", 12) + " } } } }"
		manyRoot := "{ __typename me { id }"
		for i := range 25 {
			manyRoot += fmt.Sprintf(" f%d: __typename", i)
		}
		manyRoot += " }"
		// status 0: a request error, whose status depends on the response media type (GraphQL
		// over HTTP): 200 in application/json, 400 in application/graphql-response+json.
		cases := []struct {
			name   string
			body   string
			status int
			code   string
		}{
			{"TooDeep", jsonQuery(deep), 0, "GRAPHQL_VALIDATION_FAILED"},
			{"ThousandAliases", jsonQuery(loginFields(1000, "a", "b")), 0, "GRAPHQL_VALIDATION_FAILED"},
			{"TwentyFiveAliases", jsonQuery(loginFields(25, "a", "b")), 0, "GRAPHQL_VALIDATION_FAILED"},
			{"TooManyRootFields", jsonQuery(manyRoot), 0, "GRAPHQL_VALIDATION_FAILED"},
			{"TooManyTokens", jsonQuery("{" + strings.Repeat(" a", 2500) + " }"), 0, "GRAPHQL_PARSE_FAILED"},
			{"QueryTooLong", jsonQuery("{ __typename }" + strings.Repeat(" ", 17<<10)), 0, "GRAPHQL_VALIDATION_FAILED"},
			{"BodyTooLarge", `{"query":"{ __typename }","variables":{"x":"` + strings.Repeat("x", 70<<10) + `"}}`, 413, "GRAPHQL_PARSE_FAILED"},
			{"NotJSON", `query=%7B__typename%7D`, 400, "GRAPHQL_PARSE_FAILED"},
			{"Unparsable", jsonQuery("{ me { "), 0, "GRAPHQL_PARSE_FAILED"},
			{"UnknownField", jsonQuery("{ secrets }"), 0, "GRAPHQL_VALIDATION_FAILED"},
			{"FragmentCycle", jsonQuery("{ ...A } fragment A on Query { me { id } ...B } fragment B on Query { ...A }"), 0, "GRAPHQL_VALIDATION_FAILED"},
		}
		for _, media := range []string{"application/json", "application/graphql-response+json"} {
			for _, c := range cases {
				t.Run(strings.TrimPrefix(media, "application/")+"/"+c.name, func(t *testing.T) {
					req, _ := http.NewRequest(http.MethodPost, s.URL, strings.NewReader(c.body))
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("Accept", media)
					req.Header.Set("Authorization", "Bearer "+admin.AccessToken)
					r := send(t, req)
					want := c.status
					if want == 0 {
						want = map[string]int{"application/json": 200, "application/graphql-response+json": 400}[media]
					}
					if r.Status != want || len(r.Errors) == 0 || r.Errors[0].Extensions.Code != c.code {
						t.Fatalf("got %d %+v, want %d %s", r.Status, r.Errors, want, c.code)
					}
					if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, media) {
						t.Fatalf("Content-Type %q", ct)
					}
					if r.HasData == (media == "application/graphql-response+json") {
						t.Fatalf("data entry present: %v (a request error in %s)", r.HasData, media)
					}
					if strings.Contains(r.Errors[0].Message, "Did you mean") {
						t.Fatalf("field suggestions leak the schema: %q", r.Errors[0].Message)
					}
				})
			}
		}
		if after, _ := s.DB.CountUsers(context.Background()); after != before {
			t.Fatalf("users: %d before, %d after", before, after)
		}
	})
}

func jsonQuery(q string) string {
	b, _ := json.Marshal(map[string]string{"query": q})
	return string(b)
}

func TestQueryLimits_AllowGraphiQLIntrospection(t *testing.T) {
	s := newServer(t, storetest.SQLite)
	r := s.do(t, call{Query: graphiqlIntrospection})
	if len(r.Errors) > 0 || r.Data["__schema"] == nil {
		t.Fatalf("introspection: %+v", r.Errors)
	}
}

func TestSelfReferencingFragmentsDoNotCrashTheServer(t *testing.T) {
	// vektah/gqlparser#173: this document overflows the validator's stack, a fatal error no
	// recover() catches. The guard refuses it before validation.
	s := newServer(t, storetest.SQLite)
	doc := `{ __schema { queryType { ...F } } } fragment F on __Type { name ofType { ...F ofType { ...F ofType { ...F } } } }`
	r := s.do(t, call{Query: doc})
	r.wantError(t, "GRAPHQL_VALIDATION_FAILED", "")
	s.do(t, call{Query: `{ __typename }`}) // still alive
	var typename string
	s.query(t, "", `{ __typename }`, nil).field(t, "__typename", &typename)
	if typename != "Query" {
		t.Fatalf("__typename: %q", typename)
	}
}

func TestIntrospection_CanBeTurnedOff(t *testing.T) {
	s := newServerOn(t, storetest.Open(t, storetest.SQLite), &clock{now: time.Now().UTC()}, withoutIntrospection())
	r := s.do(t, call{Query: `{ __schema { types { name } } }`})
	if len(r.Errors) != 1 || r.Errors[0].Extensions.Code != "GRAPHQL_VALIDATION_FAILED" || r.Data["__schema"] != nil {
		t.Fatalf("want introspection refused, got %d %+v", r.Status, r.Errors)
	}
}

func TestBadInput_SuiteLeavesDatabaseUnchanged(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		s.signedInUser(t, "alice")
		before, _ := s.DB.CountUsers(context.Background())
		register := `mutation($u: String!, $p: String!) { register(username: $u, password: $p) { accessToken } }`
		cases := []struct {
			name   string
			call   call
			code   string
			reason string
		}{
			{"HugeUsername", call{Query: register, Variables: map[string]any{"u": strings.Repeat("a", 50_000), "p": "correct horse battery"}}, "BAD_USER_INPUT", ""},
			{"HugePassword", call{Query: register, Variables: map[string]any{"u": "bob", "p": strings.Repeat("p", 50_000)}}, "BAD_USER_INPUT", ""},
			{"InvalidUTF8Username", call{Query: register, Variables: map[string]any{"u": "bo\xffb", "p": "correct horse battery"}}, "BAD_USER_INPUT", ""},
			{"NullByteUsername", call{Query: register, Variables: map[string]any{"u": "bo\x00b", "p": "correct horse battery"}}, "BAD_USER_INPUT", ""},
			{"WrongVariableType", call{Query: register, Variables: map[string]any{"u": 42, "p": true}}, "GRAPHQL_VALIDATION_FAILED", ""},
			{"MissingVariable", call{Query: register, Variables: map[string]any{"u": "bob"}}, "GRAPHQL_VALIDATION_FAILED", ""},
			{"UnknownArgument", call{Query: `mutation { register(username: "bob", password: "correct horse battery", admin: true) { accessToken } }`}, "GRAPHQL_VALIDATION_FAILED", ""},
			{"UnknownEnumValue", call{Query: `mutation { logout(scope: EVERYONE) }`}, "GRAPHQL_VALIDATION_FAILED", ""},
			{"Token100KB", call{Query: `{ me { id } }`, Token: strings.Repeat("x", 100_000)}, "UNAUTHENTICATED", "INVALID_TOKEN"},
			{"NullBytePasswordLogin", call{Query: `mutation { login(username: "alice", password: "correct\u0000horse") { accessToken } }`}, "UNAUTHENTICATED", "INVALID_CREDENTIALS"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				r := s.do(t, c.call)
				if len(r.Errors) == 0 || r.Errors[0].Extensions.Code != c.code || r.Errors[0].Extensions.Reason != c.reason {
					t.Fatalf("got %d %+v, want %s/%s", r.Status, r.Errors, c.code, c.reason)
				}
				if r.Status >= 500 {
					t.Fatalf("status %d", r.Status)
				}
			})
		}
		if after, _ := s.DB.CountUsers(context.Background()); after != before {
			t.Fatalf("users: %d before, %d after", before, after)
		}
	})
}

func TestResponses_CarrySecurityHeaders(t *testing.T) {
	s := newServer(t, storetest.SQLite)
	r := s.do(t, call{Query: `mutation { register(username: "alice", password: "correct horse battery") { accessToken } }`})
	for k, want := range map[string]string{"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Pragma": "no-cache"} {
		if got := r.Header.Get(k); got != want {
			t.Errorf("%s: got %q, want %q", k, got, want)
		}
	}
	if r.Header.Get("X-Request-Id") == "" {
		t.Error("no X-Request-Id")
	}
}

func TestLogs_NeverContainSecrets(t *testing.T) {
	var logs syncBuffer
	s := newServer(t, storetest.SQLite, withLogs(&logs))
	const password, newPassword = "correct horse battery", "a whole new password"
	p := s.register(t, "alice", password)
	p2 := refreshed(t, s.refresh(t, p.RefreshToken))
	s.query(t, p2.AccessToken, `mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }`, map[string]any{"c": password, "n": newPassword})
	s.do(t, call{Query: `mutation($p: String!) { login(username: "alice", password: $p) { accessToken } }`, Variables: map[string]any{"p": password}})
	s.do(t, call{Query: `{ me { id } }`, Token: p.AccessToken + "tampered"})
	s.refresh(t, p.RefreshToken) // a replay: logged as a warning
	out := logs.String()
	for name, secret := range map[string]string{
		"password": password, "new password": newPassword, "access token": p.AccessToken, "refresh token": p.RefreshToken,
		"second access token": p2.AccessToken, "second refresh token": p2.RefreshToken, "JWT secret": string(testSecret),
	} {
		if strings.Contains(out, secret) {
			t.Errorf("the log contains the %s", name)
		}
	}
	if !strings.Contains(out, `"msg":"request"`) || !strings.Contains(out, `"request_id"`) || !strings.Contains(out, `"user":"`+p.User.ID+`"`) {
		t.Errorf("request lines lack request id or user: %s", out)
	}
}

func TestQueryLimits_ComplexityCountsEveryFieldWithFragmentsExpanded(t *testing.T) {
	limits := graph.DefaultQueryLimits()
	limits.MaxComplexity = 12 // the helpers' register needs 12
	s := newServer(t, storetest.SQLite, withQueryLimits(limits))
	alice := s.signedInUser(t, "alice")
	for _, c := range []struct {
		name, query string
		refused     bool
	}{
		{"twelve", `{ me { id username email role disabled createdAt } a: me { id username email role } }`, false},
		{"thirteen", `{ me { id username email role disabled createdAt } a: me { id username email role disabled } }`, true},
		{"thirteen through a fragment", `{ me { ...U } a: me { id username email role disabled } } fragment U on User { id username email role disabled createdAt }`, true},
		{"a fragment spread twice counts twice", `{ me { ...U ...U } } fragment U on User { id username email role disabled createdAt }`, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := s.do(t, call{Query: c.query, Token: alice.AccessToken})
			if !c.refused {
				if len(r.Errors) > 0 {
					t.Fatal(r.Errors)
				}
				return
			}
			if e := r.wantError(t, "GRAPHQL_VALIDATION_FAILED", ""); !strings.Contains(e.Message, "complexity at least 13; at most 12") {
				t.Errorf("message %q", e.Message)
			}
		})
	}
}

func TestAccessLog_ModesChooseWhichRequestsAreLogged(t *testing.T) {
	for _, c := range []struct {
		mode       graph.AccessLog
		ok, failed bool // whether a successful and a failed request are logged
	}{
		{graph.AccessLogAll, true, true},
		{graph.AccessLogErrors, false, true},
		{graph.AccessLogOff, false, false},
	} {
		t.Run(string(c.mode), func(t *testing.T) {
			logs := &syncBuffer{}
			s := newServer(t, storetest.SQLite, withLogs(logs), withAccessLog(c.mode))
			s.do(t, call{Query: `{ __typename }`})
			s.do(t, call{Query: `{ me { id } }`}) // UNAUTHENTICATED
			out := logs.String()
			if got := strings.Contains(out, `"field":"__typename"`); got != c.ok {
				t.Errorf("successful request logged: %v, want %v", got, c.ok)
			}
			if got := strings.Contains(out, `"field":"me"`); got != c.failed {
				t.Errorf("failed request logged: %v, want %v", got, c.failed)
			}
		})
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// graphiqlIntrospection is the introspection query GraphiQL sends when it opens.
const graphiqlIntrospection = `query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } }
}`

func TestPanicInResolver_IsInternalErrorAndLogged(t *testing.T) {
	// A service without a database panics on its first query: a real nil dereference deep in a
	// resolver, which must become INTERNAL_SERVER_ERROR, be logged with the request id, and leave
	// the server serving.
	var logs syncBuffer
	s := newServerOn(t, nil, &clock{now: time.Now().UTC()}, withLogs(&logs))
	r := s.do(t, call{Query: `mutation { login(username: "alice", password: "some password") { accessToken } }`})
	if len(r.Errors) != 1 || r.Errors[0].Extensions.Code != "INTERNAL_SERVER_ERROR" || r.Errors[0].Message != "internal server error" {
		t.Fatalf("got %d %+v", r.Status, r.Errors)
	}
	id := r.Header.Get("X-Request-Id")
	if out := logs.String(); !strings.Contains(out, "panic in resolver") || !strings.Contains(out, `"request_id":"`+id+`"`) {
		t.Fatalf("the panic was not logged with request id %s: %s", id, out)
	}
	if r := s.do(t, call{Query: `{ __typename }`}); len(r.Errors) > 0 {
		t.Fatalf("after the panic: %+v", r.Errors)
	}
}
