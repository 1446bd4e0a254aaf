package graph_test

import (
	"encoding/base64"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/ast"

	"gqlauth/graph"
	"gqlauth/store/storetest"
)

// signed returns an HS256-family token over claims with the given header typ, signed with key.
func signed(t *testing.T, method jwt.SigningMethod, key any, typ string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if typ != "" {
		tok.Header["typ"] = typ
	} else {
		delete(tok.Header, "typ")
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAccessToken_RejectedWithReason(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		alice := s.signedInUser(t, "alice")
		parsed, _, err := jwt.NewParser().ParseUnverified(alice.AccessToken, jwt.MapClaims{})
		if err != nil {
			t.Fatal(err)
		}
		valid := parsed.Claims.(jwt.MapClaims)
		with := func(change func(c jwt.MapClaims)) jwt.MapClaims {
			c := jwt.MapClaims{}
			for k, v := range valid {
				c[k] = v
			}
			change(c)
			return c
		}
		now := s.Clock.Now()
		noneToken := func() string {
			tok := jwt.NewWithClaims(jwt.SigningMethodNone, valid)
			tok.Header["typ"] = "at+jwt"
			str, _ := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
			return str
		}()

		cases := []struct{ name, header, reason string }{
			{"Garbage", "Bearer not.a.jwt", "INVALID_TOKEN"},
			{"EmptyBearer", "Bearer ", "INVALID_TOKEN"},
			{"OtherScheme", "Basic " + alice.AccessToken, "INVALID_TOKEN"},
			{"AlgNone", "Bearer " + noneToken, "INVALID_TOKEN"},
			{"OtherAlgorithmSameKey", "Bearer " + signed(t, jwt.SigningMethodHS512, testSecret, "at+jwt", valid), "INVALID_TOKEN"},
			{"OtherKey", "Bearer " + signed(t, jwt.SigningMethodHS256, []byte("another-secret-of-at-least-32-bytes"), "at+jwt", valid), "INVALID_TOKEN"},
			{"MissingTyp", "Bearer " + signed(t, jwt.SigningMethodHS256, testSecret, "", valid), "INVALID_TOKEN"},
			{"PlainJWTTyp", "Bearer " + signed(t, jwt.SigningMethodHS256, testSecret, "JWT", valid), "INVALID_TOKEN"},
			{"WrongIssuer", "Bearer " + signed(t, jwt.SigningMethodHS256, testSecret, "at+jwt", with(func(c jwt.MapClaims) { c["iss"] = "evil" })), "INVALID_TOKEN"},
			{"WrongAudience", "Bearer " + signed(t, jwt.SigningMethodHS256, testSecret, "at+jwt", with(func(c jwt.MapClaims) { c["aud"] = "other" })), "INVALID_TOKEN"},
			{"MissingIssuer", "Bearer " + signed(t, jwt.SigningMethodHS256, testSecret, "at+jwt", with(func(c jwt.MapClaims) { delete(c, "iss") })), "INVALID_TOKEN"},
			{"MissingAudience", "Bearer " + signed(t, jwt.SigningMethodHS256, testSecret, "at+jwt", with(func(c jwt.MapClaims) { delete(c, "aud") })), "INVALID_TOKEN"},
			{"MissingSub", "Bearer " + signed(t, jwt.SigningMethodHS256, testSecret, "at+jwt", with(func(c jwt.MapClaims) { delete(c, "sub") })), "INVALID_TOKEN"},
			{"MissingSid", "Bearer " + signed(t, jwt.SigningMethodHS256, testSecret, "at+jwt", with(func(c jwt.MapClaims) { delete(c, "sid") })), "INVALID_TOKEN"},
			{"MissingExp", "Bearer " + signed(t, jwt.SigningMethodHS256, testSecret, "at+jwt", with(func(c jwt.MapClaims) { delete(c, "exp") })), "INVALID_TOKEN"},
			{"Expired", "Bearer " + signed(t, jwt.SigningMethodHS256, testSecret, "at+jwt", with(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Minute).Unix() })), "TOKEN_EXPIRED"},
			{"ExpiredAndOtherKey", "Bearer " + signed(t, jwt.SigningMethodHS256, []byte("another-secret-of-at-least-32-bytes"), "at+jwt", with(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Minute).Unix() })), "INVALID_TOKEN"},
			{"NotYetValid", "Bearer " + signed(t, jwt.SigningMethodHS256, testSecret, "at+jwt", with(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Hour).Unix() })), "INVALID_TOKEN"},
			{"RefreshTokenAsBearer", "Bearer " + alice.RefreshToken, "INVALID_TOKEN"},
			{"TamperedRole", "Bearer " + tamper(alice.AccessToken), "INVALID_TOKEN"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				r := s.do(t, call{Query: `{ me { id } }`, Header: map[string][]string{"Authorization": {c.header}}})
				r.wantError(t, "UNAUTHENTICATED", c.reason)
				if got := r.Header.Get("WWW-Authenticate"); got != `Bearer error="invalid_token"` {
					t.Errorf("WWW-Authenticate: got %q", got)
				}
			})
		}

		r := s.me(t, "")
		r.wantError(t, "UNAUTHENTICATED", "MISSING_TOKEN")
		if got := r.Header.Get("WWW-Authenticate"); got != "" {
			t.Errorf("no token: WWW-Authenticate should be absent, got %q", got)
		}
		s.Clock.Advance(16 * time.Minute)
		s.me(t, alice.AccessToken).wantError(t, "UNAUTHENTICATED", "TOKEN_EXPIRED")
	})
}

// tamper flips the payload of a JWT to claim ADMIN without re-signing it.
func tamper(token string) string {
	parts := strings.Split(token, ".")
	claims, _ := jwt.NewParser().DecodeSegment(parts[1])
	claims = []byte(strings.Replace(string(claims), `"role":"USER"`, `"role":"ADMIN"`, 1))
	parts[1] = base64.RawURLEncoding.EncodeToString(claims)
	return strings.Join(parts, ".")
}

func TestPublicOperations_WorkDespiteBadToken(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		s.signedInUser(t, "alice")
		r := s.do(t, call{
			Query: `mutation { login(username: "alice", password: "correct horse battery") { accessToken } }`,
			Token: "garbage",
		})
		if len(r.Errors) > 0 {
			t.Fatalf("login with a stale token in the header: %+v", r.Errors)
		}
		if got := r.Header.Get("WWW-Authenticate"); got != `Bearer error="invalid_token"` {
			t.Errorf("WWW-Authenticate: got %q", got)
		}
	})
}

func TestAuth_InsufficientRoleNamesRequiredRole(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		alice := s.signedInUser(t, "alice")
		r := s.do(t, call{Query: `{ me { username } users { id } }`, Token: alice.AccessToken})
		e := r.wantError(t, "FORBIDDEN", "INSUFFICIENT_ROLE")
		if e.Extensions.RequiredRole != "ADMIN" {
			t.Fatalf("requiredRole: got %q, want ADMIN", e.Extensions.RequiredRole)
		}
		if len(e.Path) != 1 || e.Path[0] != "users" {
			t.Fatalf("path: got %v, want [users]", e.Path)
		}
	})
}

func TestSetUserRole_AppliesToExistingToken(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		admin := s.signedInAdmin(t)
		alice := s.signedInUser(t, "alice")
		usersQuery := `{ users { username } }`
		s.do(t, call{Query: usersQuery, Token: alice.AccessToken}).wantError(t, "FORBIDDEN", "INSUFFICIENT_ROLE")

		var u user
		s.query(t, admin.AccessToken, `mutation($id: ID!) { setUserRole(id: $id, role: ADMIN) { role } }`, map[string]any{"id": alice.User.ID}).field(t, "setUserRole", &u)
		if u.Role != "ADMIN" {
			t.Fatalf("role: %s", u.Role)
		}
		// The same token, still saying role USER, now passes: the role is read from the database.
		var users []user
		s.query(t, alice.AccessToken, usersQuery, nil).field(t, "users", &users)
		if len(users) != 2 {
			t.Fatalf("users: %+v", users)
		}
		s.query(t, admin.AccessToken, `mutation($id: ID!) { setUserRole(id: $id, role: USER) { role } }`, map[string]any{"id": alice.User.ID})
		s.do(t, call{Query: usersQuery, Token: alice.AccessToken}).wantError(t, "FORBIDDEN", "INSUFFICIENT_ROLE")
	})
}

func TestAdminMutations_RejectBadIDs(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		admin := s.signedInAdmin(t)
		for _, q := range []string{
			`mutation($id: ID!) { setUserRole(id: $id, role: ADMIN) { id } }`,
			`mutation($id: ID!) { setUserDisabled(id: $id, disabled: true) { id } }`,
		} {
			r := s.do(t, call{Query: q, Token: admin.AccessToken, Variables: map[string]any{"id": "not-a-uuid"}})
			if e := r.wantError(t, "BAD_USER_INPUT", ""); e.Extensions.Field != "id" {
				t.Errorf("field: %q", e.Extensions.Field)
			}
			r = s.do(t, call{Query: q, Token: admin.AccessToken, Variables: map[string]any{"id": "01939a4c-0000-7000-8000-000000000000"}})
			r.wantError(t, "NOT_FOUND", "")
		}
	})
}

func TestUsers_PaginatesAndValidates(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		admin := s.signedInAdmin(t)
		for _, name := range []string{"user1", "user2", "user3"} {
			s.signedInUser(t, name)
		}
		var page []user
		s.query(t, admin.AccessToken, `{ users(limit: 2, offset: 1) { username } }`, nil).field(t, "users", &page)
		if len(page) != 2 || page[0].Username != "user1" || page[1].Username != "user2" {
			t.Fatalf("page: %+v", page)
		}
		for _, q := range []string{`{ users(limit: -1) { id } }`, `{ users(offset: -1) { id } }`} {
			s.do(t, call{Query: q, Token: admin.AccessToken}).wantError(t, "BAD_USER_INPUT", "")
		}
	})
}

func TestCreateUser_AdminSetsRole(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		admin := s.signedInAdmin(t)
		var u user
		s.query(t, admin.AccessToken, `mutation { createUser(username: "ops", password: "correct horse battery", email: "ops@example.com", role: ADMIN) { username role email } }`, nil).field(t, "createUser", &u)
		if u.Role != "ADMIN" || *u.Email != "ops@example.com" {
			t.Fatalf("created: %+v", u)
		}
		s.login(t, "ops", "correct horse battery")
		r := s.do(t, call{Query: `mutation { createUser(username: "ops", password: "correct horse battery") { id } }`, Token: admin.AccessToken})
		r.wantError(t, "BAD_USER_INPUT", "")
	})
}

func TestAuth_OneQueryPerRequest(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		admin := s.signedInAdmin(t)

		s.Queries.n.Store(0)
		s.query(t, admin.AccessToken, `{ me { id } a: me { username } b: me { role } c: me { createdAt } }`, nil)
		if got := s.Queries.n.Load(); got > 1 { // 0 when the principal cache answers
			t.Fatalf("four guarded fields: %d queries, want at most 1", got)
		}
		s.Queries.n.Store(0)
		s.query(t, admin.AccessToken, `{ me { id } users { id } again: users(limit: 1) { id } }`, nil)
		if got := s.Queries.n.Load(); got < 2 || got > 3 { // at most one for auth, one per users field
			t.Fatalf("me + 2×users: %d queries, want 2 or 3", got)
		}
	})
}

func TestSchema_EveryRootFieldIsGuarded(t *testing.T) {
	sdl, err := os.ReadFile("../schema.graphqls")
	if err != nil {
		t.Fatal(err)
	}
	schema := gqlparser.MustLoadSchema(&ast.Source{Name: "schema.graphqls", Input: string(sdl)})
	if err := graph.CheckGuards(schema); err != nil {
		t.Fatal(err)
	}
}

func TestCheckGuards_RefusesUnguardedOrDoublyGuardedField(t *testing.T) {
	sdl, err := os.ReadFile("../schema.graphqls")
	if err != nil {
		t.Fatal(err)
	}
	for name, extra := range map[string]string{
		"Unguarded":   `extend type Query { leak: String }`,
		"BothGuards":  `extend type Mutation { confused: Boolean @auth @public }`,
		"PublicOnly?": `extend type Query { ok: String @public }`,
	} {
		schema := gqlparser.MustLoadSchema(&ast.Source{Input: string(sdl)}, &ast.Source{Input: extra})
		err := graph.CheckGuards(schema)
		if strings.HasSuffix(name, "?") {
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
}

func TestCheckArgumentPlacement_OnlyRootFieldsTakeArguments(t *testing.T) {
	sdl, err := os.ReadFile("../schema.graphqls")
	if err != nil {
		t.Fatal(err)
	}
	if err := graph.CheckArgumentPlacement(gqlparser.MustLoadSchema(&ast.Source{Input: string(sdl)})); err != nil {
		t.Fatalf("the schema itself: %v", err)
	}
	// A nested field with arguments would escape the root-field argument check: refused.
	nested := gqlparser.MustLoadSchema(&ast.Source{Input: string(sdl)}, &ast.Source{Input: `extend type User { note(text: String!): String }`})
	if err := graph.CheckArgumentPlacement(nested); err == nil || !strings.Contains(err.Error(), "User.note") {
		t.Fatalf("got %v, want a refusal naming User.note", err)
	}
}
