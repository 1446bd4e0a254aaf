package graph_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"gqlauth/account"
	"gqlauth/ratelimit"
	"gqlauth/store/storetest"
)

type auditUser struct {
	ID       string  `json:"id"`
	Username string  `json:"username"`
	Email    *string `json:"email"`
}

type auditEvent struct {
	ID        string     `json:"id"`
	At        string     `json:"at"`
	Type      string     `json:"type"`
	Actor     *auditUser `json:"actor"`
	User      *auditUser `json:"user"`
	SessionID *string    `json:"sessionId"`
	IP        *string    `json:"ip"`
	UserAgent *string    `json:"userAgent"`
	Detail    *string    `json:"detail"`
}

type auditPage struct {
	Edges []struct {
		Cursor string     `json:"cursor"`
		Node   auditEvent `json:"node"`
	} `json:"edges"`
	PageInfo struct {
		HasNextPage bool    `json:"hasNextPage"`
		EndCursor   *string `json:"endCursor"`
	} `json:"pageInfo"`
}

func (p auditPage) events() []auditEvent {
	out := make([]auditEvent, len(p.Edges))
	for i, e := range p.Edges {
		out[i] = e.Node
	}
	return out
}

const auditFields = `edges { cursor node { id at type actor { id username email } user { id username email }
	sessionId ip userAgent detail } } pageInfo { hasNextPage endCursor }`

// auditEvents reads one page of auditEvents with token, failing the test on any error.
func (s *server) auditEvents(t testing.TB, token string, vars map[string]any) auditPage {
	t.Helper()
	var p auditPage
	s.query(t, token, `query($first: Int! = 50, $after: String, $userId: ID, $types: [AuditEventType!]) {
		auditEvents(first: $first, after: $after, userId: $userId, types: $types) { `+auditFields+` } }`, vars).
		field(t, "auditEvents", &p)
	return p
}

// securityEvents reads one page of the caller's own events.
func (s *server) securityEvents(t testing.TB, token string, vars map[string]any) auditPage {
	t.Helper()
	var p auditPage
	s.query(t, token, `query($first: Int! = 50, $after: String) { securityEvents(first: $first, after: $after) { `+auditFields+` } }`, vars).
		field(t, "securityEvents", &p)
	return p
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func TestAudit_EverySecurityChangeIsRecorded(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		clk := &clock{now: time.Now().UTC()}
		s := newServerOn(t, storetest.Open(t, kind), clk, withRateLimits(account.Limits{
			Counter: ratelimit.NewMemory(clk.Now), FailuresPerUser: 3, UserWindow: time.Hour,
		}))
		root := s.signedInAdmin(t)
		var alice, second, bob tokens
		var keyID string
		const pw, newPw = "correct horse battery", "another horse battery"

		// Each step acts through the API and names the events it must have written, newest first:
		// type, actor, user, whose session ("new": the session the step started), detail.
		type want struct{ typ, actor, user, session, detail string }
		steps := []struct {
			name string
			act  func(t *testing.T) (newSession string)
			want []want
		}{
			{"Register", func(t *testing.T) string {
				alice = s.register(t, "alice", pw)
				return sessionID(t, alice.AccessToken)
			}, []want{{"SIGN_UP", "alice", "alice", "new", ""}}},
			{"Login", func(t *testing.T) string {
				second = s.login(t, "alice", pw)
				return sessionID(t, second.AccessToken)
			}, []want{{"SIGN_IN", "alice", "alice", "new", ""}}},
			{"WrongPassword", func(t *testing.T) string {
				s.do(t, call{Query: `mutation { login(username: "alice", password: "wrong horse battery") { accessToken } }`}).
					wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
				return ""
			}, []want{{"SIGN_IN_FAILED", "", "alice", "", "wrong password"}}},
			{"UnknownUsername", func(t *testing.T) string {
				s.do(t, call{Query: `mutation { login(username: "nobody", password: "wrong horse battery") { accessToken } }`}).
					wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
				return ""
			}, []want{{"SIGN_IN_FAILED", "", "", "", `unknown username "nobody"`}}},
			{"UsernameLockedAfterFailures", func(t *testing.T) string {
				for range 2 {
					s.do(t, call{Query: `mutation { login(username: "nobody", password: "wrong horse battery") { accessToken } }`})
				}
				return ""
			}, []want{
				{"SIGN_IN_FAILED", "", "", "", `unknown username "nobody"`},
				{"RATE_LIMITED", "", "", "", `username locked for this client after failed sign-ins: "nobody"`},
				{"SIGN_IN_FAILED", "", "", "", `unknown username "nobody"`},
			}},
			{"LogoutOthers", func(t *testing.T) string {
				s.query(t, alice.AccessToken, `mutation { logout(scope: OTHERS) }`, nil)
				return ""
			}, []want{{"SIGN_OUT", "alice", "alice", "alice", "OTHERS"}}},
			{"ChangePassword", func(t *testing.T) string {
				s.query(t, alice.AccessToken, `mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }`,
					map[string]any{"c": pw, "n": newPw})
				return ""
			}, []want{{"PASSWORD_CHANGED", "alice", "alice", "alice", "other sessions revoked"}}},
			{"CreateApiKey", func(t *testing.T) string {
				var k struct{ APIKey struct{ ID string } }
				s.query(t, alice.AccessToken, `mutation { createApiKey(name: "deploy bot") { apiKey { id } } }`, nil).field(t, "createApiKey", &k)
				keyID = k.APIKey.ID
				return ""
			}, []want{{"API_KEY_CREATED", "alice", "alice", "alice", "deploy bot"}}},
			{"RevokeApiKey", func(t *testing.T) string {
				s.query(t, alice.AccessToken, `mutation($id: ID!) { revokeApiKey(id: $id) }`, map[string]any{"id": keyID})
				return ""
			}, []want{{"API_KEY_REVOKED", "alice", "alice", "alice", "deploy bot"}}},
			{"CreateUser", func(t *testing.T) string {
				s.query(t, root.AccessToken, `mutation { createUser(username: "bob", password: "correct horse battery") { id } }`, nil)
				bob = s.login(t, "bob", pw)
				return sessionID(t, bob.AccessToken)
			}, []want{{"SIGN_IN", "bob", "bob", "new", ""}, {"USER_CREATED", "root", "bob", "root", "USER"}}},
			{"SetUserRole", func(t *testing.T) string {
				s.query(t, root.AccessToken, `mutation($id: ID!) { setUserRole(id: $id, role: ADMIN) { id } }`, map[string]any{"id": bob.User.ID})
				return ""
			}, []want{{"ROLE_CHANGED", "root", "bob", "root", "ADMIN"}}},
			{"Disable", func(t *testing.T) string {
				s.setDisabled(t, root.AccessToken, bob.User.ID, true)
				return ""
			}, []want{{"USER_DISABLED", "root", "bob", "root", ""}}},
			{"DisabledSignIn", func(t *testing.T) string {
				s.do(t, call{Query: `mutation { login(username: "bob", password: "correct horse battery") { accessToken } }`}).
					wantError(t, "FORBIDDEN", "ACCOUNT_DISABLED")
				return ""
			}, []want{{"SIGN_IN_FAILED", "", "bob", "", "account disabled"}}},
			{"Enable", func(t *testing.T) string {
				s.setDisabled(t, root.AccessToken, bob.User.ID, false)
				return ""
			}, []want{{"USER_ENABLED", "root", "bob", "root", ""}}},
			{"RefreshTokenReused", func(t *testing.T) string {
				refreshed(t, s.refresh(t, alice.RefreshToken))
				s.Clock.Advance(11 * time.Second)
				s.refresh(t, alice.RefreshToken).wantError(t, "UNAUTHENTICATED", "REFRESH_TOKEN_REUSED")
				return ""
			}, []want{{"REFRESH_TOKEN_REUSED", "", "alice", "alice", "session revoked"}}},
			{"LogoutAll", func(t *testing.T) string {
				fresh := s.login(t, "alice", newPw)
				s.query(t, fresh.AccessToken, `mutation { logout(scope: ALL) }`, nil)
				return sessionID(t, fresh.AccessToken)
			}, []want{{"SIGN_OUT", "alice", "alice", "new", "ALL"}, {"SIGN_IN", "alice", "alice", "new", ""}}},
		}

		names := map[string]string{} // user id → username
		seen := s.auditEvents(t, root.AccessToken, map[string]any{"first": 100}).events()
		for _, step := range steps {
			t.Run(step.name, func(t *testing.T) {
				newSession := step.act(t)
				names[alice.User.ID], names[bob.User.ID], names[root.User.ID] = "alice", "bob", "root"
				sessions := map[string]string{"alice": sessionID(t, alice.AccessToken), "root": sessionID(t, root.AccessToken), "new": newSession, "": ""}
				all := s.auditEvents(t, root.AccessToken, map[string]any{"first": 100}).events()
				fresh := all[:len(all)-len(seen)]
				seen = all
				if len(fresh) != len(step.want) {
					t.Fatalf("%d new events, want %d: %+v", len(fresh), len(step.want), fresh)
				}
				for i, w := range step.want {
					e := fresh[i]
					actor, user := "", ""
					if e.Actor != nil {
						actor = names[e.Actor.ID]
					}
					if e.User != nil {
						user = names[e.User.ID]
					}
					got := want{e.Type, actor, user, deref(e.SessionID), deref(e.Detail)}
					if w.session != "" {
						w.session = sessions[w.session]
					}
					if got != w {
						t.Errorf("event %d: got %+v, want %+v", i, got, w)
					}
					if deref(e.IP) != "127.0.0.1" || !strings.HasPrefix(deref(e.UserAgent), "Go-http-client") {
						t.Errorf("event %d: ip %q, user agent %q", i, deref(e.IP), deref(e.UserAgent))
					}
					if at, err := time.Parse(time.RFC3339, e.At); err != nil || at.Sub(s.Clock.Now()).Abs() > time.Second {
						t.Errorf("event %d: at %q (clock %s)", i, e.At, s.Clock.Now())
					}
				}
			})
		}
	})
}

func TestAudit_RateLimitRecordedOncePerWindowNotPerRequest(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		clk := &clock{now: time.Now().UTC()}
		s := newServerOn(t, storetest.Open(t, kind), clk, withRateLimits(account.Limits{
			Counter: ratelimit.NewMemory(clk.Now), PerClient: 2, ClientWindow: time.Minute,
		}))
		for range 12 {
			s.do(t, call{Query: `mutation { login(username: "nobody", password: "wrong horse battery") { accessToken } }`})
		}
		clk.Advance(2 * time.Minute) // a new window
		for range 4 {
			s.do(t, call{Query: `mutation { login(username: "nobody", password: "wrong horse battery") { accessToken } }`})
		}
		rows, err := s.DB.DumpTable(context.Background(), "audit_events")
		if err != nil {
			t.Fatal(err)
		}
		count := map[string]int{}
		for _, r := range rows {
			count[r["type"]]++
		}
		// 2 + 2 attempts went through; 12 + 4 − 4 were refused, and wrote 2 rows, not 12.
		if count["RATE_LIMITED"] != 2 || count["SIGN_IN_FAILED"] != 4 || len(rows) != 6 {
			t.Fatalf("events: %v", count)
		}
	})
}

func TestAudit_VisibilityAndArguments(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		var root tokens
		s.query(t, "", `mutation { register(username: "root", password: "correct horse battery", email: "root@example.com") { `+payloadFields+` } }`, nil).
			field(t, "register", &root)
		if _, err := s.DB.SetUserRole(context.Background(), root.User.ID, "ADMIN"); err != nil {
			t.Fatal(err)
		}
		s.query(t, root.AccessToken, `mutation { createUser(username: "bob", password: "correct horse battery", email: "bob@example.com") { id } }`, nil)
		alice := s.signedInUser(t, "alice")
		bob := s.login(t, "bob", "correct horse battery")
		s.query(t, root.AccessToken, `mutation($id: ID!) { setUserRole(id: $id, role: ADMIN) { id } }`, map[string]any{"id": alice.User.ID})

		t.Run("UserCannotReadEveryone", func(t *testing.T) {
			e := s.do(t, call{Query: `{ auditEvents { edges { cursor } } }`, Token: bob.AccessToken}).wantError(t, "FORBIDDEN", "INSUFFICIENT_ROLE")
			if e.Extensions.RequiredRole != "ADMIN" {
				t.Fatalf("requiredRole %q", e.Extensions.RequiredRole)
			}
		})
		t.Run("SecurityEventsAreOnlyTheCallersOwn", func(t *testing.T) {
			for _, who := range []tokens{alice, bob} {
				events := s.securityEvents(t, who.AccessToken, nil).events()
				if len(events) == 0 {
					t.Fatal("no events")
				}
				for _, e := range events {
					if e.User == nil || e.User.ID != who.User.ID {
						t.Fatalf("%s sees an event about %+v", who.User.Username, e.User)
					}
				}
			}
		})
		t.Run("AnotherActorsEmailIsHiddenFromUsers", func(t *testing.T) {
			// bob's account was created by root, whose email is no business of bob's.
			redacted := false
			for _, e := range s.securityEvents(t, bob.AccessToken, nil).events() {
				redacted = redacted || (e.Actor != nil && e.Actor.Username == "root")
				if e.Actor != nil && e.Actor.ID != bob.User.ID && e.Actor.Email != nil {
					t.Fatalf("bob sees the email of %s", e.Actor.Username)
				}
				if e.User != nil && e.User.ID == bob.User.ID && deref(e.User.Email) != "bob@example.com" {
					t.Fatalf("bob's own email missing: %+v", e.User)
				}
			}
			if !redacted {
				t.Fatal("no event of bob's names root as its actor")
			}
			// An admin sees it.
			events := s.auditEvents(t, root.AccessToken, map[string]any{"userId": bob.User.ID, "types": []string{"USER_CREATED"}}).events()
			if len(events) != 1 || deref(events[0].Actor.Email) != "root@example.com" {
				t.Fatalf("admin view: %+v", events)
			}
		})
		t.Run("FiltersByUserAndType", func(t *testing.T) {
			events := s.auditEvents(t, root.AccessToken, map[string]any{"userId": alice.User.ID, "types": []string{"ROLE_CHANGED"}}).events()
			if len(events) != 1 || events[0].Type != "ROLE_CHANGED" || deref(events[0].Detail) != "ADMIN" || events[0].Actor.Username != "root" {
				t.Fatalf("events: %+v", events)
			}
		})
		t.Run("BadArguments", func(t *testing.T) {
			for name, c := range map[string]struct {
				query string
				field string
			}{
				"FirstZero":       {`{ securityEvents(first: 0) { edges { cursor } } }`, "first"},
				"FirstNegative":   {`{ auditEvents(first: -1) { edges { cursor } } }`, "first"},
				"ForeignCursor":   {`{ auditEvents(after: "bm90LWEtY3Vyc29y") { edges { cursor } } }`, "after"},
				"GarbageCursor":   {`{ securityEvents(after: "!!!") { edges { cursor } } }`, "after"},
				"MalformedUserID": {`{ auditEvents(userId: "42") { edges { cursor } } }`, "userId"},
			} {
				t.Run(name, func(t *testing.T) {
					e := s.do(t, call{Query: c.query, Token: root.AccessToken}).wantError(t, "BAD_USER_INPUT", "")
					if e.Extensions.Field != c.field {
						t.Fatalf("field %q, want %q", e.Extensions.Field, c.field)
					}
				})
			}
		})
		t.Run("FirstIsCappedAt100", func(t *testing.T) {
			for range 105 {
				s.do(t, call{Query: `mutation { login(username: "alice", password: "wrong horse battery") { accessToken } }`})
			}
			p := s.auditEvents(t, root.AccessToken, map[string]any{"first": 1000})
			if len(p.Edges) != 100 || !p.PageInfo.HasNextPage {
				t.Fatalf("%d edges, hasNextPage %v", len(p.Edges), p.PageInfo.HasNextPage)
			}
		})
	})
}
