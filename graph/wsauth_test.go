package graph_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"gqlauth/graph"
	"gqlauth/model"
	"gqlauth/store/storetest"
)

// securityEvent is one event of a securityEvents subscription with its actor's identities.
type securityEvent struct {
	Type  string
	Actor *struct {
		Email      *string
		Identities []struct{ Subject string }
	}
}

// nextSecurityEvent returns the next event of subscription id whose type is typ, skipping other
// events (a sign-in committed before the subscription may be heard after it on Postgres).
func (sock *liveSocket) nextSecurityEvent(t testing.TB, id, typ string) securityEvent {
	t.Helper()
	for {
		m := sock.next(t, 3*time.Second)
		if m.ID != id || m.Type != "next" {
			t.Fatalf("subscription %s: %s %s %s", id, m.ID, m.Type, m.Payload)
		}
		var r struct {
			Data   struct{ SecurityEvents securityEvent }
			Errors []gqlError
		}
		if err := json.Unmarshal(m.Payload, &r); err != nil || len(r.Errors) > 0 {
			t.Fatalf("event: %s (%v)", m.Payload, err)
		}
		if r.Data.SecurityEvents.Type == typ {
			return r.Data.SecurityEvents
		}
	}
}

// A subscription runs for hours: every event it delivers is resolved with the caller as they are
// at that event, not as they were when it started. carol, an ADMIN, sees the acting admin's
// identities (a field for the user themself and admins) while she is one; once demoted, the very
// next event shows none, exactly as a fresh query does. Before, the subscription's caller was
// loaded once for the whole operation, and events after the demotion still showed them.
func TestSocket_EachEventIsResolvedWithTheCallerAsTheyAreAtThatEvent(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		root := s.signedInAdmin(t)
		s.link(t, root.User.ID, "corp") // the acting admin has an identity
		var carol struct{ ID string }
		s.query(t, root.AccessToken, `mutation { createUser(username: "carol", password: "correct horse battery", role: ADMIN) { id } }`, nil).
			field(t, "createUser", &carol)
		carolTokens := s.login(t, "carol", "correct horse battery")
		setRole := func(role string) {
			s.query(t, root.AccessToken, `mutation($id: ID!, $r: Role!) { setUserRole(id: $id, role: $r) { id } }`, map[string]any{"id": carol.ID, "r": role})
		}

		sock, _ := s.dialSocket(t, "", bearer(carolTokens.AccessToken))
		sock.acked(t).subscribe(t, "own", `subscription { securityEvents { type actor { email identities { subject } } } }`)
		time.Sleep(100 * time.Millisecond)

		setRole("ADMIN") // an event by root while carol is an admin: root's identities show
		if e := sock.nextSecurityEvent(t, "own", "ROLE_CHANGED"); e.Actor == nil || len(e.Actor.Identities) != 1 {
			t.Fatalf("while ADMIN, the actor's identities: %+v", e.Actor)
		}
		setRole("USER") // the demotion itself, and every event after it: none
		for i, how := range []func(){
			func() {},
			func() { setRole("USER") },
			func() { s.setDisabled(t, root.AccessToken, carol.ID, false) },
		} {
			how()
			typ := "ROLE_CHANGED"
			if i == 2 {
				typ = "USER_ENABLED"
			}
			if e := sock.nextSecurityEvent(t, "own", typ); e.Actor == nil || len(e.Actor.Identities) != 0 || e.Actor.Email != nil {
				t.Fatalf("event %d after the demotion shows the actor's identities: %+v", i, e.Actor)
			}
		}
		// What a fresh query shows, too.
		r := s.query(t, carolTokens.AccessToken, `{ securityEvents(first: 1) { edges { node { actor { identities { subject } } } } } }`, nil)
		if !strings.Contains(string(r.Data["securityEvents"]), `"identities":[]`) {
			t.Fatalf("fresh query: %s", r.Data["securityEvents"])
		}
		// A disabled account still closes the socket, as before.
		s.setDisabled(t, root.AccessToken, carol.ID, true)
		sock.wantClosed(t, time.Second, 4401, "ACCOUNT_DISABLED")
	})
}

// A socket is registered for revocation checks before the principal that admits it is loaded, so
// a revocation committed right after that load still closes it. Before, the principal was loaded
// first: a revocation committed between the load and the registration found no socket to close,
// and the socket lived on with its revoked session or key. The hook runs the revocation exactly
// there, and waits until this instance has handled its event.
func TestSocket_RevokedWhileItsInitRunsIsClosed(t *testing.T) {
	cases := []struct {
		name   string
		key    bool // the socket uses an API key
		revoke string
	}{
		{"BearerSessionLoggedOut", false, `mutation { logout(scope: ALL) }`},
		{"APIKeyRevoked", true, `mutation($id: ID!) { revokeApiKey(id: $id) }`},
	}
	for _, kind := range storetest.Kinds(t) { // one after another: the hook is the process's
		for _, c := range cases {
			t.Run(string(kind)+"/"+c.name, func(t *testing.T) {
				s := newServer(t, kind)
				alice := s.signedInUser(t, "alice")
				other := s.login(t, "alice", "correct horse battery")
				var key struct {
					Secret string
					APIKey struct{ ID string }
				}
				s.query(t, alice.AccessToken, `mutation { createApiKey(name: "socket") { secret apiKey { id } } }`, nil).field(t, "createApiKey", &key)

				handled := make(chan struct{}, 1)
				s.DB.AddEventSink(func(e *model.AuditEvent) { // after the instance's own path (WireEvents): the socket re-check
					if e.UserID != nil && *e.UserID == alice.User.ID &&
						(e.Type == model.AuditEventTypeSignOut || e.Type == model.AuditEventTypeAPIKeyRevoked) {
						select {
						case handled <- struct{}{}:
						default:
						}
					}
				})
				hookErr := make(chan error, 1)
				graph.OnSocketAuthenticated(t, func(userID string) {
					if userID != alice.User.ID {
						return // another test's socket
					}
					body, _ := json.Marshal(map[string]any{"query": c.revoke, "variables": map[string]any{"id": key.APIKey.ID}})
					req, _ := http.NewRequest(http.MethodPost, s.URL, bytes.NewReader(body))
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("Authorization", "Bearer "+other.AccessToken)
					res, err := http.DefaultClient.Do(req)
					if err == nil {
						res.Body.Close()
						select {
						case <-handled:
						case <-time.After(5 * time.Second):
							err = fmt.Errorf("the revocation's event was not handled")
						}
					}
					hookErr <- err
				})

				payload := bearer(alice.AccessToken)
				if c.key {
					payload = map[string]any{"X-API-Key": key.Secret}
				}
				sock, _ := s.dialSocket(t, "", payload)
				if err := <-hookErr; err != nil {
					t.Fatal(err)
				}
				sock.wantClosed(t, 2*time.Second, 4401, "SESSION_REVOKED")
			})
		}
	}
}

// An access token never outlives its session: its exp is capped at the session's absolute expiry
// (and expiresIn says so), so a token issued near the session's end, and a socket living on it,
// end with the session. Before, a token issued a minute before the session's end lived 15 minutes
// more for every verifier that reads only exp, and a socket on it stayed open that long.
func TestSessions_AccessTokenExpiresNoLaterThanItsSession(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		t.Run("SessionShorterThanTheTokenTTL", func(t *testing.T) {
			s := newServer(t, kind, withRefreshTTL(10*time.Minute))
			p := s.signedInUser(t, "alice")
			claims := parseUnverified(t, p.AccessToken)
			if p.ExpiresIn != 600 || claims["exp"].(float64)-claims["iat"].(float64) != 600 {
				t.Fatalf("expiresIn %d, exp-iat %v; want 600 (the session's lifetime)", p.ExpiresIn, claims["exp"].(float64)-claims["iat"].(float64))
			}
		})
		t.Run("RefreshNearTheSessionsEnd", func(t *testing.T) {
			s := newServer(t, kind, withRefreshTTL(time.Hour))
			first := s.signedInUser(t, "alice")
			s.Clock.Advance(50 * time.Minute)
			p := refreshed(t, s.refresh(t, first.RefreshToken))
			var sessions []struct{ ExpiresAt time.Time }
			s.query(t, p.AccessToken, `{ sessions { expiresAt } }`, nil).field(t, "sessions", &sessions)
			exp := time.Unix(int64(parseUnverified(t, p.AccessToken)["exp"].(float64)), 0)
			if p.ExpiresIn != 600 || !exp.Equal(sessions[0].ExpiresAt.Truncate(time.Second)) {
				t.Fatalf("expiresIn %d, exp %v; want 600 and the session's end %v", p.ExpiresIn, exp, sessions[0].ExpiresAt)
			}
			s.Clock.Advance(10*time.Minute + 6*time.Second) // past the session's end and the 5 s leeway on exp
			s.me(t, p.AccessToken).wantError(t, "UNAUTHENTICATED", "TOKEN_EXPIRED")
		})
	})
	t.Run("SocketEndsWithTheSession", func(t *testing.T) {
		s := newServer(t, storetest.SQLite, withRefreshTTL(2*time.Second)) // the session ends in 2 s
		alice := s.signedInUser(t, "alice")
		sock, _ := s.dialSocket(t, "", bearer(alice.AccessToken))
		sock.acked(t)
		sock.wantClosed(t, 3*time.Second, 4401, "TOKEN_EXPIRED")
	})
}
