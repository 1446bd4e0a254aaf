package graph_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"gqlauth/store/storetest"
)

func refreshed(t *testing.T, r response) tokens {
	t.Helper()
	var p tokens
	if len(r.Errors) > 0 {
		t.Fatalf("refresh: %+v", r.Errors)
	}
	r.field(t, "refresh", &p)
	return p
}

// sessionID returns the sid claim of an access token.
func sessionID(t *testing.T, accessToken string) string {
	t.Helper()
	claims := parseUnverified(t, accessToken)
	sid, _ := claims["sid"].(string)
	return sid
}

func TestRefresh_RotatesTokenAndKeepsSession(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		first := s.signedInUser(t, "alice")
		s.Clock.Advance(time.Minute)

		second := refreshed(t, s.refresh(t, first.RefreshToken))
		if second.RefreshToken == first.RefreshToken || second.AccessToken == first.AccessToken {
			t.Fatal("refresh returned the same tokens")
		}
		if got, want := sessionID(t, second.AccessToken), sessionID(t, first.AccessToken); got != want {
			t.Fatalf("sid changed across refresh: %s → %s", want, got)
		}
		if second.User.ID != first.User.ID || second.TokenType != "Bearer" || second.ExpiresIn != 900 {
			t.Fatalf("payload: %+v", second)
		}
		s.query(t, second.AccessToken, `{ me { id } }`, nil)
		third := refreshed(t, s.refresh(t, second.RefreshToken))
		s.query(t, third.AccessToken, `{ me { id } }`, nil)
	})
}

func TestRefresh_RetryWithinIntervalGetsSameSuccessor(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind, withReuseInterval(10*time.Second))
		first := s.signedInUser(t, "alice")
		a := refreshed(t, s.refresh(t, first.RefreshToken))
		s.Clock.Advance(9 * time.Second)
		b := refreshed(t, s.refresh(t, first.RefreshToken))
		if a.RefreshToken != b.RefreshToken {
			t.Fatal("a retry within the interval forked the session: different successor tokens")
		}
		if a.AccessToken == b.AccessToken {
			t.Fatal("a retry should still get a fresh access token")
		}
		refreshed(t, s.refresh(t, b.RefreshToken)) // the one chain goes on
	})
}

func TestRefresh_ReusedTokenRevokesSession(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind, withReuseInterval(10*time.Second))
		first := s.signedInUser(t, "alice")
		other := s.login(t, "alice", "correct horse battery")
		second := refreshed(t, s.refresh(t, first.RefreshToken))
		s.Clock.Advance(11 * time.Second)

		s.refresh(t, first.RefreshToken).wantError(t, "UNAUTHENTICATED", "REFRESH_TOKEN_REUSED")
		// The whole session is dead: its current refresh token and its access tokens.
		s.refresh(t, second.RefreshToken).wantError(t, "UNAUTHENTICATED", "INVALID_REFRESH_TOKEN")
		s.me(t, second.AccessToken).wantError(t, "UNAUTHENTICATED", "SESSION_REVOKED")
		s.me(t, first.AccessToken).wantError(t, "UNAUTHENTICATED", "SESSION_REVOKED")
		// Only that session: the user's other session lives on.
		s.query(t, other.AccessToken, `{ me { id } }`, nil)
		refreshed(t, s.refresh(t, other.RefreshToken))
	})
}

func TestRefresh_ConcurrentRefreshesShareOneSuccessor(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		first := s.signedInUser(t, "alice")
		results := inParallel(24, func() response { return s.refresh(t, first.RefreshToken) })
		var successor string
		for i, r := range results {
			p := refreshed(t, r)
			if i == 0 {
				successor = p.RefreshToken
			}
			if p.RefreshToken != successor {
				t.Fatalf("refresh %d got another successor: the session forked", i)
			}
		}
		next := refreshed(t, s.refresh(t, successor))
		s.query(t, next.AccessToken, `{ me { id } }`, nil)
	})
}

func TestRefresh_RejectsBadTokens(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		alice := s.signedInUser(t, "alice")
		for name, token := range map[string]any{
			"AccessTokenAsRefreshToken": alice.AccessToken,
			"Unknown":                   "definitely-not-a-token",
			"Empty":                     "",
			"Absent":                    nil,
		} {
			t.Run(name, func(t *testing.T) {
				r := s.do(t, call{Query: `mutation($r: String) { refresh(refreshToken: $r) { accessToken } }`, Variables: map[string]any{"r": token}})
				r.wantError(t, "UNAUTHENTICATED", "INVALID_REFRESH_TOKEN")
			})
		}
	})
}

func TestRefresh_ExpiredSessionRefused(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind, withRefreshTTL(time.Hour))
		alice := s.signedInUser(t, "alice")
		s.Clock.Advance(50 * time.Minute)
		next := refreshed(t, s.refresh(t, alice.RefreshToken))
		// The lifetime is absolute: refreshing did not extend it. The access token ends with the
		// session (its exp is capped there); within exp's 5 s leeway it still verifies, and the
		// session's own end refuses it.
		s.Clock.Advance(10*time.Minute + 2*time.Second)
		s.refresh(t, next.RefreshToken).wantError(t, "UNAUTHENTICATED", "INVALID_REFRESH_TOKEN")
		s.me(t, next.AccessToken).wantError(t, "UNAUTHENTICATED", "SESSION_REVOKED")
		s.Clock.Advance(5 * time.Second)
		s.me(t, next.AccessToken).wantError(t, "UNAUTHENTICATED", "TOKEN_EXPIRED")
	})
}

func TestRefresh_DisabledUserRefused(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		admin := s.signedInAdmin(t)
		alice := s.signedInUser(t, "alice")
		s.setDisabled(t, admin.AccessToken, alice.User.ID, true)
		s.refresh(t, alice.RefreshToken).wantError(t, "FORBIDDEN", "ACCOUNT_DISABLED")
	})
}

func TestSetUserDisabled_ReenablingDoesNotReviveSessions(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		admin := s.signedInAdmin(t)
		alice := s.signedInUser(t, "alice")
		s.setDisabled(t, admin.AccessToken, alice.User.ID, true)
		s.setDisabled(t, admin.AccessToken, alice.User.ID, false)

		s.me(t, alice.AccessToken).wantError(t, "UNAUTHENTICATED", "SESSION_REVOKED")
		s.refresh(t, alice.RefreshToken).wantError(t, "UNAUTHENTICATED", "INVALID_REFRESH_TOKEN")
		again := s.login(t, "alice", "correct horse battery")
		var sessions []session
		s.query(t, again.AccessToken, `{ sessions { id current } }`, nil).field(t, "sessions", &sessions)
		if len(sessions) != 1 || !sessions[0].Current {
			t.Fatalf("sessions after re-enable: %+v", sessions)
		}
	})
}

type session struct {
	ID         string  `json:"id"`
	CreatedAt  string  `json:"createdAt"`
	LastUsedAt string  `json:"lastUsedAt"`
	ExpiresAt  string  `json:"expiresAt"`
	UserAgent  *string `json:"userAgent"`
	Current    bool    `json:"current"`
}

func TestLogout_Scopes(t *testing.T) {
	cases := []struct {
		scope                    string
		currentLives, otherLives bool
	}{
		{"CURRENT", false, true},
		{"OTHERS", true, false},
		{"ALL", false, false},
	}
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		for _, c := range cases {
			t.Run(c.scope, func(t *testing.T) {
				s := newServer(t, kind)
				current := s.signedInUser(t, "alice")
				other := s.login(t, "alice", "correct horse battery")
				var ok bool
				s.query(t, current.AccessToken, `mutation { logout(scope: `+c.scope+`) }`, nil).field(t, "logout", &ok)
				if !ok {
					t.Fatal("logout returned false")
				}
				check := func(name string, p tokens, lives bool) {
					if lives {
						s.query(t, p.AccessToken, `{ me { id } }`, nil)
						refreshed(t, s.refresh(t, p.RefreshToken))
						return
					}
					s.me(t, p.AccessToken).wantError(t, "UNAUTHENTICATED", "SESSION_REVOKED")
					s.refresh(t, p.RefreshToken).wantError(t, "UNAUTHENTICATED", "INVALID_REFRESH_TOKEN")
				}
				check("current", current, c.currentLives)
				check("other", other, c.otherLives)
			})
		}
	})
}

func TestLogout_DefaultScopeIsCurrent(t *testing.T) {
	s := newServer(t, storetest.SQLite)
	current := s.signedInUser(t, "alice")
	other := s.login(t, "alice", "correct horse battery")
	s.query(t, current.AccessToken, `mutation { logout }`, nil)
	s.me(t, current.AccessToken).wantError(t, "UNAUTHENTICATED", "SESSION_REVOKED")
	s.query(t, other.AccessToken, `{ me { id } }`, nil)
}

func TestSessions_ListsLiveSessionsNewestFirst(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		first := s.signedInUser(t, "alice")
		s.Clock.Advance(time.Second)
		longUA := strings.Repeat("x", 1000)
		var second tokens
		s.do(t, call{
			Query:  `mutation { login(username: "alice", password: "correct horse battery") { ` + payloadFields + ` } }`,
			Header: map[string][]string{"User-Agent": {longUA}},
		}).field(t, "login", &second)
		s.Clock.Advance(time.Second)
		third := s.login(t, "alice", "correct horse battery")
		s.query(t, third.AccessToken, `mutation { logout }`, nil) // revoked: not listed
		s.signedInUser(t, "bob")                                  // someone else's: not listed

		var sessions []session
		s.query(t, second.AccessToken, `{ sessions { id createdAt lastUsedAt expiresAt userAgent current } }`, nil).field(t, "sessions", &sessions)
		if len(sessions) != 2 {
			t.Fatalf("sessions: %+v", sessions)
		}
		if sessions[0].ID != sessionID(t, second.AccessToken) || !sessions[0].Current || sessions[1].Current {
			t.Fatalf("want the second session first and current: %+v", sessions)
		}
		if sessions[1].ID != sessionID(t, first.AccessToken) {
			t.Fatalf("want the first session last: %+v", sessions)
		}
		if ua := sessions[0].UserAgent; ua == nil || len(*ua) != 256 {
			t.Fatalf("user agent should be truncated to 256 bytes: %v", ua)
		}
		for _, ts := range []string{sessions[0].CreatedAt, sessions[0].ExpiresAt, sessions[0].LastUsedAt} {
			parsed, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil || parsed.Location() != time.UTC || !strings.HasSuffix(ts, "Z") {
				t.Fatalf("time %q is not RFC 3339 in UTC", ts)
			}
		}
	})
}

func TestSessions_ExpiredSessionsNotListed(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind, withRefreshTTL(time.Hour))
		s.signedInUser(t, "alice")
		s.Clock.Advance(30 * time.Minute)
		late := s.login(t, "alice", "correct horse battery")
		s.Clock.Advance(31 * time.Minute) // the first session has expired
		late = refreshed(t, s.refresh(t, late.RefreshToken))
		var sessions []session
		s.query(t, late.AccessToken, `{ sessions { id } }`, nil).field(t, "sessions", &sessions)
		if len(sessions) != 1 || sessions[0].ID != sessionID(t, late.AccessToken) {
			t.Fatalf("sessions: %+v", sessions)
		}
	})
}

func TestChangePassword_RevokesOtherSessions(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		current := s.signedInUser(t, "alice")
		other := s.login(t, "alice", "correct horse battery")
		s.query(t, current.AccessToken, `mutation { changePassword(currentPassword: "correct horse battery", newPassword: "new password 123") }`, nil)

		s.query(t, current.AccessToken, `{ me { id } }`, nil)
		refreshed(t, s.refresh(t, current.RefreshToken))
		s.me(t, other.AccessToken).wantError(t, "UNAUTHENTICATED", "SESSION_REVOKED")
		s.refresh(t, other.RefreshToken).wantError(t, "UNAUTHENTICATED", "INVALID_REFRESH_TOKEN")
		s.login(t, "alice", "new password 123")
		s.do(t, call{Query: `mutation { login(username: "alice", password: "correct horse battery") { accessToken } }`}).
			wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
	})
}

func TestChangePassword_ValidatesInput(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		alice := s.signedInUser(t, "alice")
		other := s.login(t, "alice", "correct horse battery")
		for _, c := range []struct{ name, current, next, field string }{
			{"WrongCurrent", "wrong horse battery", "new password 123", "currentPassword"},
			{"NewTooShort", "correct horse battery", "short", "newPassword"},
			{"NewTooLong", "correct horse battery", strings.Repeat("x", 73), "newPassword"},
		} {
			t.Run(c.name, func(t *testing.T) {
				r := s.do(t, call{
					Query:     `mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }`,
					Variables: map[string]any{"c": c.current, "n": c.next}, Token: alice.AccessToken,
				})
				if e := r.wantError(t, "BAD_USER_INPUT", ""); e.Extensions.Field != c.field {
					t.Fatalf("field: got %q, want %q", e.Extensions.Field, c.field)
				}
			})
		}
		// Nothing changed: the old password works and the other session lives.
		s.login(t, "alice", "correct horse battery")
		s.query(t, other.AccessToken, `{ me { id } }`, nil)
	})
}

func TestSweep_DeletesDeadSessions(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind, withRefreshTTL(time.Hour))
		s.signedInUser(t, "alice")
		revoked := s.login(t, "alice", "correct horse battery")
		s.query(t, revoked.AccessToken, `mutation { logout }`, nil)
		s.Clock.Advance(2 * time.Hour)
		fresh := s.login(t, "alice", "correct horse battery")

		n, err := s.DB.DeleteDeadSessions(context.Background(), s.Clock.Now(), s.Clock.Now().Add(-time.Hour), 1000)
		if err != nil {
			t.Fatal(err)
		}
		if n != 2 {
			t.Fatalf("deleted %d sessions, want 2 (one expired, one revoked)", n)
		}
		s.query(t, fresh.AccessToken, `{ me { id } }`, nil)
	})
}

func TestMultiInstance_LogoutOnOneIsSeenByTheOther(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		a, b := twoInstances(t, kind)

		alice := a.signedInUser(t, "alice")
		b.query(t, alice.AccessToken, `{ me { id } }`, nil)
		next := refreshed(t, b.refresh(t, alice.RefreshToken))
		a.query(t, next.AccessToken, `mutation { logout }`, nil)
		b.me(t, next.AccessToken).wantError(t, "UNAUTHENTICATED", "SESSION_REVOKED")
		b.refresh(t, next.RefreshToken).wantError(t, "UNAUTHENTICATED", "INVALID_REFRESH_TOKEN")
	})
}
