package graph_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"gqlauth/account"
	"gqlauth/model"
	"gqlauth/store/storetest"
	"gqlauth/token"
)

// chain signs in a fresh user and refreshes its session n times, alternating between the two
// instances, a minute apart. It returns every pair of the chain, R0 first, and a second session
// of the same user that must outlive anything done to the first.
func chain(t *testing.T, a, b *server, username string, n int) (pairs []tokens, other tokens) {
	t.Helper()
	pairs = []tokens{a.signedInUser(t, username)}
	other = a.login(t, username, "correct horse battery")
	for i := range n {
		a.Clock.Advance(time.Minute)
		srv := a
		if i%2 == 1 {
			srv = b
		}
		pairs = append(pairs, refreshed(t, srv.refresh(t, pairs[i].RefreshToken)))
	}
	return pairs, other
}

// wantSessionDead checks, on both instances, that the session of last is revoked and that the
// user's other session is not.
func wantSessionDead(t *testing.T, a, b *server, last, other tokens) {
	t.Helper()
	fresh := refreshed(t, b.refresh(t, other.RefreshToken))
	for _, srv := range []*server{a, b} {
		srv.refresh(t, last.RefreshToken).wantError(t, "UNAUTHENTICATED", "INVALID_REFRESH_TOKEN")
		srv.me(t, last.AccessToken).wantError(t, "UNAUTHENTICATED", "SESSION_REVOKED")
		srv.query(t, fresh.AccessToken, `{ me { id } }`, nil)
	}
}

func TestRefresh_ReplayOfAnyRetiredTokenRevokesSession(t *testing.T) {
	cases := []struct {
		name      string
		rotations int           // R0 → … → R<rotations>
		replay    int           // the Rk presented again
		wait      time.Duration // since the last rotation (the reuse interval is 10 s)
	}{
		{"R0AfterR2", 2, 0, 11 * time.Second},
		{"R0AfterR2WithinInterval", 2, 0, time.Second}, // only the last retired token has grace
		{"R1AfterR2", 2, 1, 11 * time.Second},
		{"R0AfterR3", 3, 0, 11 * time.Second},
		{"R1AfterR3", 3, 1, 11 * time.Second},
		{"R1AfterR3WithinInterval", 3, 1, time.Second},
		{"R2AfterR3", 3, 2, 11 * time.Second},
		{"R0After40", 40, 0, 11 * time.Second},
	}
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		a, b := twoInstances(t, kind)
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				pairs, other := chain(t, a, b, strings.ToLower(c.name), c.rotations)
				a.Clock.Advance(c.wait)
				b.refresh(t, pairs[c.replay].RefreshToken).wantError(t, "UNAUTHENTICATED", "REFRESH_TOKEN_REUSED")
				wantSessionDead(t, a, b, pairs[len(pairs)-1], other)
				// Once the session is dead, a replay is merely invalid.
				a.refresh(t, pairs[c.replay].RefreshToken).wantError(t, "UNAUTHENTICATED", "INVALID_REFRESH_TOKEN")
			})
		}
	})
}

func TestRefresh_LastRetiredTokenWithinIntervalGetsSameSuccessorOnAnyInstance(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		a, b := twoInstances(t, kind)
		pairs, _ := chain(t, a, b, "alice", 3)
		a.Clock.Advance(5 * time.Second)
		again := refreshed(t, b.refresh(t, pairs[2].RefreshToken))
		if again.RefreshToken != pairs[3].RefreshToken {
			t.Fatal("a retry of R2 within the interval got another successor than R3")
		}
		refreshed(t, a.refresh(t, again.RefreshToken)) // the one chain goes on
	})
}

func TestRefresh_ConcurrentReplayAndRefreshEndWithSessionRevoked(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		a, b := twoInstances(t, kind)
		pairs, other := chain(t, a, b, "alice", 2)
		a.Clock.Advance(11 * time.Second)
		old, current := pairs[0].RefreshToken, pairs[2].RefreshToken
		var presented [16]string
		responses := make([]response, 16)
		done := make(chan int)
		for i := range 16 {
			presented[i] = current
			srv := a
			if i%2 == 1 {
				presented[i], srv = old, b
			}
			go func() { responses[i] = srv.refresh(t, presented[i]); done <- i }()
		}
		for range 16 {
			<-done
		}
		reused, successors := 0, map[string]bool{}
		for i, r := range responses {
			switch {
			case len(r.Errors) == 0 && presented[i] == current:
				var p tokens
				r.field(t, "refresh", &p)
				successors[p.RefreshToken] = true
			case len(r.Errors) == 1 && r.Errors[0].Extensions.Reason == "REFRESH_TOKEN_REUSED" && presented[i] == old:
				reused++
			case len(r.Errors) == 1 && r.Errors[0].Extensions.Reason == "INVALID_REFRESH_TOKEN":
				// after the revocation
			default:
				t.Fatalf("refresh %d (%s): unexpected %+v", i, map[bool]string{true: "R2", false: "R0"}[presented[i] == current], r.Errors)
			}
		}
		if reused == 0 {
			t.Fatal("no replay of R0 was recognised")
		}
		if len(successors) > 1 {
			t.Fatalf("R2 got %d different successors: the session forked", len(successors))
		}
		for s := range successors {
			a.refresh(t, s).wantError(t, "UNAUTHENTICATED", "INVALID_REFRESH_TOKEN")
		}
		wantSessionDead(t, a, b, pairs[2], other)
	})
}

func TestRefresh_TokenNamingASessionButNotItsOwnIsOnlyInvalid(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		alice := s.signedInUser(t, "alice")
		bob := s.signedInUser(t, "bob")
		sid := sessionID(t, alice.AccessToken)
		_, bobSecret, _ := strings.Cut(bob.RefreshToken, ".")
		_, aliceSecret, _ := strings.Cut(alice.RefreshToken, ".")
		before := s.snapshot(t)
		for name, token := range map[string]string{
			"RandomSecret":          sid + "." + strings.Repeat("A", 43),
			"AnotherSessionsSecret": sid + "." + bobSecret,
			"WithoutSessionID":      aliceSecret,
			"UnknownSession":        uuid.NewString() + "." + aliceSecret,
			"SessionIDNotAUUID":     "alice." + aliceSecret,
			"NulInSessionID":        sid[:8] + "\x00" + sid[9:] + "." + aliceSecret,
			"NulInSecret":           sid + "." + aliceSecret[:10] + "\x00" + aliceSecret[11:],
			"Oversized":             sid + "." + strings.Repeat("A", 500),
			"TwoDots":               sid + "." + aliceSecret + "." + aliceSecret,
		} {
			t.Run(name, func(t *testing.T) {
				s.refresh(t, token).wantError(t, "UNAUTHENTICATED", "INVALID_REFRESH_TOKEN")
			})
		}
		if after := s.snapshot(t); after != before {
			t.Fatalf("a refused refresh wrote:\nbefore %s\nafter  %s", before, after)
		}
		refreshed(t, s.refresh(t, alice.RefreshToken)) // still alive
	})
}

func TestRefresh_TokenIssuedBeforeSessionIDsStillRotatesAndIsGuarded(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		alice := s.signedInUser(t, "alice")
		// A session as the previous release stored it: a token without the session id.
		legacy := strings.Repeat("L", 43)
		now := s.Clock.Now().UTC().Truncate(time.Microsecond)
		sess := &model.Session{
			ID: uuid.Must(uuid.NewV7()).String(), UserID: alice.User.ID, RefreshHash: token.HashRefreshToken(legacy),
			CreatedAt: now, LastUsedAt: now, ExpiresAt: now.Add(time.Hour),
		}
		if err := s.DB.CreateSession(context.Background(), sess); err != nil {
			t.Fatal(err)
		}
		next := refreshed(t, s.refresh(t, legacy))
		if !strings.HasPrefix(next.RefreshToken, sess.ID+".") {
			t.Fatalf("the successor of a legacy token does not name its session: %q", next.RefreshToken)
		}
		s.Clock.Advance(11 * time.Second)
		s.refresh(t, legacy).wantError(t, "UNAUTHENTICATED", "REFRESH_TOKEN_REUSED")
		s.me(t, next.AccessToken).wantError(t, "UNAUTHENTICATED", "SESSION_REVOKED")
		s.query(t, alice.AccessToken, `{ me { id } }`, nil)
	})
}

// withNul puts a NUL at the start, in the middle and at the end of v.
func withNul(v string) map[string]string {
	return map[string]string{"Start": "\x00" + v, "Middle": v[:len(v)/2] + "\x00" + v[len(v)/2:], "End": v + "\x00"}
}

func TestInput_NulInAnyStringArgumentIsRefusedBeforeAnyQuery(t *testing.T) {
	const pw = "correct horse battery"
	type field struct {
		name, query string
		vars        map[string]any
		arg         string // the variable that gets the NUL
		as          string // "", "user" or "admin"
		code        string
		reason      string
		errField    string
	}
	fields := []field{
		{"RegisterUsername", `mutation($u: String!, $p: String!) { register(username: $u, password: $p) { accessToken } }`, map[string]any{"u": "carol", "p": pw}, "u", "", "BAD_USER_INPUT", "", "username"},
		{"RegisterPassword", `mutation($u: String!, $p: String!) { register(username: $u, password: $p) { accessToken } }`, map[string]any{"u": "carol", "p": pw}, "p", "", "BAD_USER_INPUT", "", "password"},
		{"RegisterEmail", `mutation($u: String!, $p: String!, $e: String) { register(username: $u, password: $p, email: $e) { accessToken } }`, map[string]any{"u": "carol", "p": pw, "e": "carol@example.com"}, "e", "", "BAD_USER_INPUT", "", "email"},
		{"LoginUsername", `mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken } }`, map[string]any{"u": "alice", "p": pw}, "u", "", "UNAUTHENTICATED", "INVALID_CREDENTIALS", ""},
		{"LoginPassword", `mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken } }`, map[string]any{"u": "alice", "p": pw}, "p", "", "UNAUTHENTICATED", "INVALID_CREDENTIALS", ""},
		{"RefreshToken", `mutation($r: String) { refresh(refreshToken: $r) { accessToken } }`, map[string]any{"r": "0190f0f0-0000-7000-8000-000000000000.secret"}, "r", "", "UNAUTHENTICATED", "INVALID_REFRESH_TOKEN", ""},
		{"ChangePasswordCurrent", `mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }`, map[string]any{"c": pw, "n": "another horse battery"}, "c", "user", "BAD_USER_INPUT", "", "currentPassword"},
		{"ChangePasswordNew", `mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }`, map[string]any{"c": pw, "n": "another horse battery"}, "n", "user", "BAD_USER_INPUT", "", "newPassword"},
		{"CreateApiKeyName", `mutation($n: String!) { createApiKey(name: $n) { secret } }`, map[string]any{"n": "deploy bot"}, "n", "user", "BAD_USER_INPUT", "", "name"},
		{"RevokeApiKeyID", `mutation($id: ID!) { revokeApiKey(id: $id) }`, map[string]any{"id": uuid.NewString()}, "id", "user", "BAD_USER_INPUT", "", "id"},
		{"CreateUserUsername", `mutation($u: String!, $p: String!) { createUser(username: $u, password: $p) { id } }`, map[string]any{"u": "dave", "p": pw}, "u", "admin", "BAD_USER_INPUT", "", "username"},
		{"CreateUserEmail", `mutation($u: String!, $p: String!, $e: String) { createUser(username: $u, password: $p, email: $e) { id } }`, map[string]any{"u": "dave", "p": pw, "e": "dave@example.com"}, "e", "admin", "BAD_USER_INPUT", "", "email"},
		{"SetUserRoleID", `mutation($id: ID!) { setUserRole(id: $id, role: ADMIN) { id } }`, map[string]any{"id": uuid.NewString()}, "id", "admin", "BAD_USER_INPUT", "", "id"},
		{"SetUserDisabledID", `mutation($id: ID!) { setUserDisabled(id: $id, disabled: true) { id } }`, map[string]any{"id": uuid.NewString()}, "id", "admin", "BAD_USER_INPUT", "", "id"},
	}
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		tokenFor := map[string]string{"": "", "admin": s.signedInAdmin(t).AccessToken, "user": s.register(t, "alice", pw).AccessToken}
		before := s.snapshot(t)
		for _, f := range fields {
			for pos, bad := range withNul(f.vars[f.arg].(string)) {
				t.Run(f.name+"/"+pos, func(t *testing.T) {
					vars := map[string]any{}
					for k, v := range f.vars {
						vars[k] = v
					}
					vars[f.arg] = bad
					e := s.do(t, call{Query: f.query, Variables: vars, Token: tokenFor[f.as]}).wantError(t, f.code, f.reason)
					if e.Extensions.Field != f.errField {
						t.Fatalf("field: got %q, want %q", e.Extensions.Field, f.errField)
					}
					if len(e.Path) != 1 {
						t.Fatalf("path %v: the error belongs to the root field", e.Path)
					}
				})
			}
		}
		t.Run("GraphQLEscapeInLiteral", func(t *testing.T) {
			e := s.do(t, call{Query: `mutation { register(username: "car\u0000ol", password: "correct horse battery") { accessToken } }`}).
				wantError(t, "BAD_USER_INPUT", "")
			if e.Extensions.Field != "username" {
				t.Fatalf("field: got %q", e.Extensions.Field)
			}
		})
		if after := s.snapshot(t); after != before {
			t.Fatalf("a refused request wrote:\nbefore %s\nafter  %s", before, after)
		}
	})
}

func TestInput_UserAgentIsStoredSanitised(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		r := s.do(t, call{
			Query: `mutation { register(username: "alice", password: "correct horse battery") { accessToken } }`,
			// (Go's server itself answers 400 to a NUL in a header; bytes above 0x7f pass.)
			Header: map[string][]string{"User-Agent": {"Mozilla/5.0 \xff\xfe(" + strings.Repeat("x", 400)}},
		})
		var p tokens
		r.field(t, "register", &p)
		var sessions []struct{ UserAgent string }
		s.query(t, p.AccessToken, `{ sessions { userAgent } }`, nil).field(t, "sessions", &sessions)
		if ua := sessions[0].UserAgent; strings.ContainsAny(ua, "\x00\ufffd") || !strings.HasPrefix(ua, "Mozilla/5.0 (") || len(ua) > account.MaxUserAgentLength {
			t.Fatalf("stored user agent %q", ua)
		}
	})
}

func TestInput_BodyThatIsNotUTF8IsRefusedWith400(t *testing.T) {
	const register = `{"query":"mutation($u: String!, $p: String!) { register(username: $u, password: $p) { accessToken } }","variables":{"u":"carol","p":"correct horse `
	cases := map[string]string{
		"InvalidByte":            register + "\xff\"}}",
		"OverlongEncoding":       register + "\xc0\xaf\"}}",
		"TruncatedSequence":      register + "\xe2\x82\"}}",
		"EncodedSurrogate":       register + "\xed\xa0\x80\"}}",
		"LoneHighSurrogate":      register + `\ud800"}}`,
		"LoneLowSurrogate":       register + `\udc00"}}`,
		"HighThenNonSurrogate":   register + `\ud800\u0041"}}`,
		"HighThenHigh":           register + `\ud800\ud800"}}`,
		"InvalidByteOutsideText": `{"query":"{ me { id } }"}` + "\xff",
		"InvalidByteInQuery":     `{"query":"{ me { id } } # \xff"}`,
	}
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		before := s.snapshot(t)
		for name, body := range cases {
			t.Run(name, func(t *testing.T) {
				status, out := s.raw(t, "POST", "", "application/json", []byte(body))
				if status != 400 || !strings.Contains(out, "GRAPHQL_PARSE_FAILED") {
					t.Fatalf("got %d %s, want 400 GRAPHQL_PARSE_FAILED", status, out)
				}
			})
		}
		if after := s.snapshot(t); after != before {
			t.Fatalf("a refused body wrote:\nbefore %s\nafter  %s", before, after)
		}
		// A well-formed surrogate pair is text like any other (the control that proves the above
		// were refused for their bytes, not their shape).
		status, out := s.raw(t, "POST", "", "application/json", []byte(register+`\ud83d\ude00"}}`))
		if status != 200 || !strings.Contains(out, "accessToken") {
			t.Fatalf("valid pair: got %d %s", status, out)
		}
		s.login(t, "carol", "correct horse \U0001F600")
	})
}

func TestInput_GETQueryStringThatIsNotUTF8IsRefusedWith400(t *testing.T) {
	s := newServer(t, storetest.SQLite)
	for name, rawQuery := range map[string]string{
		"InvalidByteInQuery":         "query=" + url.QueryEscape("{ me { id } }") + "%FF",
		"InvalidByteInVariables":     "query=" + url.QueryEscape("{ me { id } }") + "&variables=" + url.QueryEscape(`{"x":"`) + "%C0%AF" + url.QueryEscape(`"}`),
		"LoneSurrogateInVariables":   "query=" + url.QueryEscape("{ me { id } }") + "&variables=" + url.QueryEscape(`{"x":"\udc00"}`),
		"InvalidByteInParameterName": "query=" + url.QueryEscape("{ me { id } }") + "&%FF=1",
	} {
		t.Run(name, func(t *testing.T) {
			status, out := s.raw(t, "GET", "/?"+rawQuery, "", nil)
			if status != 400 || !strings.Contains(out, "GRAPHQL_PARSE_FAILED") {
				t.Fatalf("got %d %s, want 400 GRAPHQL_PARSE_FAILED", status, out)
			}
		})
	}
	status, _ := s.raw(t, "GET", "/?query="+url.QueryEscape("{ __typename }"), "", nil)
	if status != 200 {
		t.Fatalf("a clean GET got %d", status)
	}
}

func TestInput_SurrogateEscapeInGraphQLStringIsAParseError(t *testing.T) {
	s := newServer(t, storetest.SQLite)
	for name, literal := range map[string]string{
		"Lone":     `\ud800`,
		"Pair":     `\ud83d\ude00`, // gqlparser would turn even a pair into two U+FFFD
		"Low":      `\uDC00`,
		"InMiddle": `correct \uD800 horse`,
	} {
		t.Run(name, func(t *testing.T) {
			r := s.do(t, call{Query: `mutation { register(username: "carol", password: "correct horse ` + literal + `") { accessToken } }`})
			r.wantError(t, "GRAPHQL_PARSE_FAILED", "")
		})
	}
	if n, _ := s.DB.CountUsers(context.Background()); n != 0 {
		t.Fatalf("%d users stored", n)
	}
}

func TestValidation_NoSuggestionsUnlessDebug(t *testing.T) {
	cases := map[string]string{
		"Argument":     `mutation { login(usernme: "alice", password: "correct horse battery") { accessToken } }`,
		"VariableType": `query($x: Strin) { me { id } }`,
		"EnumValue":    `mutation { logout(scope: AL) }`,
		"Field":        `{ me { usernam } }`,
		"FragmentType": `{ me { ...f } } fragment f on Usr { id }`,
		"Directive":    `{ me { id @skp(if: true) } }`,
		"ScalarLeaf":   `{ me }`,
		"InputField":   `query($x: Strng!) { me { id } }`,
	}
	quiet, chatty := newServer(t, storetest.SQLite), newServer(t, storetest.SQLite, withDebug())
	suggested := 0
	for name, query := range cases {
		t.Run(name, func(t *testing.T) {
			r := quiet.do(t, call{Query: query})
			if len(r.Errors) == 0 || r.Errors[0].Extensions.Code != "GRAPHQL_VALIDATION_FAILED" {
				t.Fatalf("got %+v, want GRAPHQL_VALIDATION_FAILED", r.Errors)
			}
			for _, e := range r.Errors {
				if strings.Contains(e.Message, "Did you mean") {
					t.Fatalf("suggestion with debug off: %q", e.Message)
				}
			}
			for _, e := range chatty.do(t, call{Query: query}).Errors {
				if strings.Contains(e.Message, "Did you mean") {
					suggested++
				}
			}
		})
	}
	// With debug on the same mistakes are answered with suggestions: the rules are the same ones,
	// only quiet.
	if suggested < 5 {
		t.Fatalf("debug on: only %d of %d misspellings got a suggestion", suggested, len(cases))
	}
}
