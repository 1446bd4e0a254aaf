package graph_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"gqlauth/store"
	"gqlauth/store/storetest"
)

// A socket lives only as long as its authority: every operation is authorized afresh, and a
// committed event, a missed one, an expiry or a revoked key closes the sockets it ends.

func TestSocket_ClosedWithinASecondWhenItsAuthorityEnds(t *testing.T) {
	const pw = "correct horse battery"
	cases := []struct {
		name   string
		revoke func(t *testing.T, s *server, socketTokens, other, admin tokens, apiKey string)
		key    bool // the socket uses an API key
		reason string
	}{
		{"LogoutCurrent", func(t *testing.T, s *server, own, _, _ tokens, _ string) {
			s.query(t, own.AccessToken, `mutation { logout(scope: CURRENT) }`, nil)
		}, false, "SESSION_REVOKED"},
		{"LogoutOthersFromAnotherDevice", func(t *testing.T, s *server, _, other, _ tokens, _ string) {
			s.query(t, other.AccessToken, `mutation { logout(scope: OTHERS) }`, nil)
		}, false, "SESSION_REVOKED"},
		{"LogoutAll", func(t *testing.T, s *server, _, other, _ tokens, _ string) {
			s.query(t, other.AccessToken, `mutation { logout(scope: ALL) }`, nil)
		}, false, "SESSION_REVOKED"},
		{"RefreshTokenReused", func(t *testing.T, s *server, own, _, _ tokens, _ string) {
			refreshed(t, s.refresh(t, own.RefreshToken))
			s.Clock.Advance(11 * time.Second)
			s.refresh(t, own.RefreshToken).wantError(t, "UNAUTHENTICATED", "REFRESH_TOKEN_REUSED")
		}, false, "SESSION_REVOKED"},
		{"PasswordChangedElsewhere", func(t *testing.T, s *server, _, other, _ tokens, _ string) {
			s.query(t, other.AccessToken, `mutation { changePassword(currentPassword: "correct horse battery", newPassword: "another horse battery") }`, nil)
		}, false, "SESSION_REVOKED"},
		{"UserDisabled", func(t *testing.T, s *server, own, _, admin tokens, _ string) {
			s.setDisabled(t, admin.AccessToken, own.User.ID, true)
		}, false, "ACCOUNT_DISABLED"},
		{"APIKeyRevoked", func(t *testing.T, s *server, own, _, _ tokens, apiKey string) {
			var keys []struct{ ID string }
			s.query(t, own.AccessToken, `{ apiKeys { id } }`, nil).field(t, "apiKeys", &keys)
			s.query(t, own.AccessToken, `mutation($id: ID!) { revokeApiKey(id: $id) }`, map[string]any{"id": keys[0].ID})
		}, true, "SESSION_REVOKED"},
		{"APIKeyOwnerDisabled", func(t *testing.T, s *server, own, _, admin tokens, _ string) {
			s.setDisabled(t, admin.AccessToken, own.User.ID, true)
		}, true, "ACCOUNT_DISABLED"},
	}
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		a, b := twoInstances(t, kind)
		admin := a.signedInAdmin(t)
		// The socket on the instance that revokes, and (Postgres: the signal travels through
		// LISTEN/NOTIFY) on another one.
		pairs := map[string][2]*server{"SameInstance": {a, a}}
		if kind == storetest.Postgres {
			pairs["SecondInstance"] = [2]*server{b, a}
		}
		n := 0
		for where, pair := range pairs {
			for _, c := range cases {
				t.Run(where+"/"+c.name, func(t *testing.T) {
					n++
					name := fmt.Sprintf("user%02d", n)
					own := a.register(t, name, pw)
					other := a.login(t, name, pw)
					var key struct{ Secret string }
					a.query(t, own.AccessToken, `mutation { createApiKey(name: "socket") { secret } }`, nil).field(t, "createApiKey", &key)
					payload := bearer(own.AccessToken)
					if c.key {
						payload = map[string]any{"X-API-Key": key.Secret}
					}
					sock, _ := pair[0].dialSocket(t, "", payload)
					sock.acked(t)
					c.revoke(t, pair[1], own, other, admin, key.Secret)
					sock.wantClosed(t, time.Second, 4401, c.reason)
				})
			}
		}
	})
}

func TestSocket_ListenerThatLostItsConnectionRechecksEverySocket(t *testing.T) {
	if !slices.Contains(storetest.Kinds(t), storetest.Postgres) {
		t.Skip("LISTEN/NOTIFY: Postgres only (TEST_DATABASE_URL)")
	}
	a, b := twoInstances(t, storetest.Postgres)
	alice := a.signedInUser(t, "alice")
	sock, _ := b.dialSocket(t, "", bearer(alice.AccessToken))
	sock.acked(t)

	// Cut the listeners' connections; revoke while they are down, so the notification is lost;
	// the socket must still close once they are back.
	cut := cutListeners(t, b)
	a.query(t, alice.AccessToken, `mutation { logout }`, nil)
	sock.wantClosed(t, 5*time.Second, 4401, "SESSION_REVOKED")
	if waited := time.Since(cut); waited < 900*time.Millisecond {
		t.Fatalf("closed after %s: before the listener could have reconnected, so not by the resync", waited)
	}
}

// cutListeners terminates the event listeners' database connections of s and waits until they
// are gone; it returns when it cut them. They reconnect by themselves (and resync) after a while.
func cutListeners(t *testing.T, s *server) time.Time {
	t.Helper()
	var channel string
	if err := s.DB.QueryRow(context.Background(), "SELECT 'gqlauth-listener gqlauth_events_' || current_schema()", &channel); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	if err := s.DB.Exec(context.Background(), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '"+channel+"'"); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		var n int
		if err := s.DB.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE application_name = '"+channel+"'", &n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return cut
		}
		if i > 100 {
			t.Fatal("the listeners did not go away")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A demotion whose event this instance never heard of (its listener was down) still ends a running
// auditEvents: after the resync, the subscription checks its authority again before it delivers
// anything more.
func TestSocket_RunningAuditEventsEndsAfterMissedEventsWhenItsRoleIsGone(t *testing.T) {
	if !slices.Contains(storetest.Kinds(t), storetest.Postgres) {
		t.Skip("LISTEN/NOTIFY: Postgres only (TEST_DATABASE_URL)")
	}
	a, b := twoInstances(t, storetest.Postgres)
	root := a.signedInAdmin(t)
	var second struct{ ID string }
	a.query(t, root.AccessToken, `mutation { createUser(username: "admin2", password: "correct horse battery", role: ADMIN) { id } }`, nil).
		field(t, "createUser", &second)
	admin2 := a.login(t, "admin2", "correct horse battery")
	sock, _ := b.dialSocket(t, "", bearer(root.AccessToken))
	sock.acked(t).subscribe(t, "all", `subscription { auditEvents { type user { username } } }`)
	time.Sleep(100 * time.Millisecond)

	cutListeners(t, b)
	a.query(t, admin2.AccessToken, `mutation($id: ID!) { setUserRole(id: $id, role: USER) { id } }`, map[string]any{"id": root.User.ID})
	// Once b listens again, every new event is one the demoted root may no longer see.
	deadline := time.Now().Add(10 * time.Second)
	for n := 0; ; n++ {
		a.signedInUser(t, fmt.Sprintf("carol%d", n))
	wait:
		for {
			select {
			case m := <-sock.messages:
				switch {
				case m.ID == "all" && m.Type == "error" && strings.Contains(string(m.Payload), "INSUFFICIENT_ROLE"):
					return
				case m.ID == "all" && m.Type == "next" && !strings.Contains(string(m.Payload), `"carol`):
					// an event committed before the demotion, late (admin2's sign-in)
				default:
					t.Fatalf("the demoted root got %s %s %s", m.ID, m.Type, m.Payload)
				}
			case ce := <-sock.closed:
				t.Fatalf("socket closed: %d %s", ce.Code, ce.Reason)
			case <-time.After(200 * time.Millisecond):
				break wait
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("auditEvents neither delivered nor ended")
		}
	}
}

func TestSocket_ClosedWhenItsAccessTokenExpires(t *testing.T) {
	s := newServer(t, storetest.SQLite)
	alice := s.signedInUser(t, "alice")
	s.Clock.Advance(15*time.Minute - time.Second) // one second of the token's life left
	sock, _ := s.dialSocket(t, "", bearer(alice.AccessToken))
	sock.acked(t)
	sock.wantClosed(t, 3*time.Second, 4401, "TOKEN_EXPIRED")
}

func TestSocket_RoleDowngradeEndsOnlyTheSubscriptionsTheNewRoleMayNotRun(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		root := s.signedInAdmin(t)
		var second struct{ ID string }
		s.query(t, root.AccessToken, `mutation { createUser(username: "admin2", password: "correct horse battery", role: ADMIN) { id } }`, nil).
			field(t, "createUser", &second)
		admin2 := s.login(t, "admin2", "correct horse battery")

		sock, _ := s.dialSocket(t, "", bearer(root.AccessToken))
		sock.acked(t).subscribe(t, "all", `subscription { auditEvents { type user { username } } }`)
		time.Sleep(100 * time.Millisecond)
		sock.subscribe(t, "own", securityEventsSubscription)
		time.Sleep(100 * time.Millisecond)

		s.signedInUser(t, "carol") // an admin sees everyone's events
		for {
			m := sock.next(t, 2*time.Second)
			if m.ID == "all" && strings.Contains(string(m.Payload), `"carol"`) {
				break
			}
			// Only admin2's sign-in, committed before the subscription but (Postgres) heard late, may come first.
			if m.ID != "all" || !strings.Contains(string(m.Payload), `"admin2"`) {
				t.Fatalf("auditEvents: %s %s", m.ID, m.Payload)
			}
		}
		// root is demoted: auditEvents ends with FORBIDDEN/INSUFFICIENT_ROLE; securityEvents goes on.
		s.query(t, admin2.AccessToken, `mutation($id: ID!) { setUserRole(id: $id, role: USER) { id } }`, map[string]any{"id": root.User.ID})
		var ended, roleEvent bool
		for !ended || !roleEvent {
			m := sock.next(t, 2*time.Second)
			switch {
			case m.ID == "all" && m.Type == "error":
				if !strings.Contains(string(m.Payload), "INSUFFICIENT_ROLE") || !strings.Contains(string(m.Payload), "FORBIDDEN") {
					t.Fatalf("auditEvents ended with %s", m.Payload)
				}
				ended = true
			case m.ID == "own" && strings.Contains(string(m.Payload), "ROLE_CHANGED"):
				roleEvent = true
			case m.ID == "all" && m.Type == "next":
				// the ROLE_CHANGED event itself may or may not reach it before it ends
			default:
				t.Fatalf("unexpected %s %s %s", m.ID, m.Type, m.Payload)
			}
		}
		s.login(t, "root", "correct horse battery")
		if m := sock.next(t, 2*time.Second); m.ID != "own" || !strings.Contains(string(m.Payload), "SIGN_IN") {
			t.Fatalf("securityEvents after the demotion: %s %s", m.ID, m.Payload)
		}
	})
}

// A change written straight to the database records no event, so nothing tells the socket (as on
// an instance the event has not reached yet, or when it was lost): every operation started after
// it must see it by itself, exactly as a fresh request would.
func TestSocket_EveryOperationIsAuthorizedAsAFreshRequestWould(t *testing.T) {
	noEvent := func(*store.Tx) error { return nil }
	cases := []struct {
		name         string
		opts         []option
		apiKey       bool // the socket uses an ADMIN API key of the admin, expiring in 60 s
		change       func(t *testing.T, s *server, adminID string)
		code, reason string
	}{
		{"RoleDropped", nil, false, func(t *testing.T, s *server, adminID string) {
			if _, err := s.DB.SetUserRole(t.Context(), adminID, "USER"); err != nil {
				t.Fatal(err)
			}
		}, "FORBIDDEN", "INSUFFICIENT_ROLE"},
		{"UserDisabled", nil, false, func(t *testing.T, s *server, adminID string) {
			if _, err := s.DB.SetUserDisabled(t.Context(), adminID, true, s.Clock.Now()); err != nil {
				t.Fatal(err)
			}
		}, "FORBIDDEN", "ACCOUNT_DISABLED"},
		{"SessionRevoked", nil, false, func(t *testing.T, s *server, adminID string) {
			if _, err := s.DB.RevokeSessions(t.Context(), adminID, "", store.RevokeAll, s.Clock.Now()); err != nil {
				t.Fatal(err)
			}
		}, "UNAUTHENTICATED", "SESSION_REVOKED"},
		{"APIKeyExpired", nil, true, func(t *testing.T, s *server, _ string) {
			s.Clock.Advance(61 * time.Second) // the socket's own expiry timer runs on real time: not yet
		}, "UNAUTHENTICATED", "TOKEN_EXPIRED"},
		{"APIKeyRevoked", nil, true, func(t *testing.T, s *server, adminID string) {
			if err := s.DB.RevokeAllAPIKeys(t.Context(), adminID, s.Clock.Now()); err != nil {
				t.Fatal(err)
			}
		}, "UNAUTHENTICATED", "SESSION_REVOKED"},
		{"SigningKeyRevoked", []option{withJWTAlg("ES256", time.Minute, 0)}, false, func(t *testing.T, s *server, _ string) {
			first := s.Keys.Keys()[0].Kid
			if _, err := s.Keys.Rotate(t.Context(), func(*store.Tx, string) error { return nil }); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Keys.Revoke(t.Context(), first, noEvent); err != nil {
				t.Fatal(err)
			}
		}, "UNAUTHENTICATED", "INVALID_TOKEN"},
	}
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				s := newServer(t, kind, c.opts...)
				admin := s.signedInAdmin(t)
				bob := s.signedInUser(t, "bob")
				payload := bearer(admin.AccessToken)
				if c.apiKey {
					var key struct{ Secret string }
					s.query(t, admin.AccessToken, `mutation { createApiKey(name: "socket", role: ADMIN, expiresIn: 60) { secret } }`, nil).
						field(t, "createApiKey", &key)
					payload = map[string]any{"X-API-Key": key.Secret}
				}
				sock, _ := s.dialSocket(t, "", payload)
				sock.acked(t)
				// Before the change, the socket may run what an admin may.
				if rs := results(t, sock.operation(t, "before", `{ users { id } }`, nil)); len(rs) != 1 || len(rs[0].Errors) != 0 {
					t.Fatalf("users before the change: %+v", rs)
				}
				roleBefore := userRole(t, s, admin.User.ID)
				// The setup's own events (the key's creation…) reach the socket through LISTEN and
				// make it re-check itself; one arriving after the change would close the socket
				// before the operations below are refused one by one.
				s.settle(t)

				c.change(t, s, admin.User.ID)
				roleAfter := userRole(t, s, admin.User.ID)
				wantRefused(t, sock.operation(t, "query", `{ users { id } }`, nil), c.code, c.reason)
				wantRefused(t, sock.operation(t, "mutation", `mutation($self: ID!, $bob: ID!) {
					self: setUserRole(id: $self, role: ADMIN) { id }
					bob: setUserRole(id: $bob, role: ADMIN) { id }
				}`, map[string]any{"self": admin.User.ID, "bob": bob.User.ID}), c.code, c.reason)
				wantRefused(t, sock.operation(t, "subscription", `subscription { auditEvents { type } }`, nil), c.code, c.reason)
				// The mutation wrote nothing: no one was promoted (the demoted admin not back).
				if got := userRole(t, s, admin.User.ID); got != roleAfter {
					t.Fatalf("the socket's user is %s after the refused mutation, was %s (before the change %s)", got, roleAfter, roleBefore)
				}
				if got := userRole(t, s, bob.User.ID); got != "USER" {
					t.Fatalf("bob is %s", got)
				}
			})
		}
	})
}

func userRole(t testing.TB, s *server, id string) string {
	t.Helper()
	u, err := s.DB.UserByID(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return string(u.Role)
}

func TestSocket_EachOperationLoadsItsPrincipalWithOneQuery(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		t.Run("Bearer", func(t *testing.T) {
			s := newServer(t, kind)
			alice := s.signedInUser(t, "alice")
			sock, _ := s.dialSocket(t, "", bearer(alice.AccessToken))
			sock.acked(t)
			s.settle(t)
			for i := range 3 { // each operation asks again, and once
				s.Queries.n.Store(0)
				rs := results(t, sock.operation(t, fmt.Sprint(i), `{ a: me { id } b: me { username } c: me { role } }`, nil))
				if len(rs) != 1 || len(rs[0].Errors) != 0 {
					t.Fatalf("me: %+v", rs)
				}
				if got := s.Queries.n.Load(); got > 1 { // 0 when the principal cache answers
					t.Fatalf("operation %d: %d queries, want at most 1", i, got)
				}
			}
		})
		// In trusted-documents-only mode the document check asks for the role before the operation
		// runs; the two share the operation's one query.
		t.Run("TrustedDocumentsOnly", func(t *testing.T) {
			path, _ := manifest(t, meDocument)
			s := newServer(t, kind, withTrustedDocuments(trustedDocuments(t, path, true)))
			root := mustAccount(t, s, "root", true)
			sock, _ := s.dialSocket(t, "", bearer(root))
			sock.acked(t)
			s.settle(t)
			for i := range 2 {
				s.Queries.n.Store(0)
				rs := results(t, sock.operation(t, fmt.Sprint(i), `{ a: me { id } b: me { role } }`, nil))
				if len(rs) != 1 || len(rs[0].Errors) != 0 {
					t.Fatalf("free-form me as an admin: %+v", rs)
				}
				if got := s.Queries.n.Load(); got > 1 { // 0 when the principal cache answers
					t.Fatalf("operation %d: %d queries, want at most 1", i, got)
				}
			}
		})
	})
}

func TestSocket_ClosedWithinASecondWhenItsSigningKeyIsRevoked(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		a, b := twoInstances(t, kind, withJWTAlg("ES256", time.Minute, 0))
		root := a.signedInAdmin(t)
		first := header(t, root.AccessToken)["kid"].(string)
		alice := a.signedInUser(t, "alice")
		// Sockets on the instance that revokes and (Postgres: the revocation travels through the
		// event channel) on another one; a socket with a token of the next key stays.
		instances := []*server{a}
		if kind == storetest.Postgres {
			instances = append(instances, b)
		}
		var doomed []*liveSocket
		for _, s := range instances {
			sock, _ := s.dialSocket(t, "", bearer(alice.AccessToken))
			doomed = append(doomed, sock.acked(t))
		}
		next := a.rotate(t, root.AccessToken)
		a.query(t, root.AccessToken, `mutation($k: ID!) { revokeSigningKey(kid: $k) }`, map[string]any{"k": first})
		for _, sock := range doomed {
			sock.wantClosed(t, time.Second, 4401, "INVALID_TOKEN")
		}
		fresh := a.login(t, "alice", "correct horse battery")
		if header(t, fresh.AccessToken)["kid"] != next.Kid {
			t.Fatal("the next key was not promoted")
		}
		sock, _ := instances[len(instances)-1].dialSocket(t, "", bearer(fresh.AccessToken))
		sock.acked(t)
		if rs := results(t, sock.operation(t, "me", `{ me { id } }`, nil)); len(rs) != 1 || len(rs[0].Errors) != 0 {
			t.Fatalf("a token of the next key: %+v", rs)
		}
	})
}

func TestSocket_ClosedWhenItsAPIKeyExpires(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		alice := s.signedInUser(t, "alice")
		var key struct{ Secret string }
		s.query(t, alice.AccessToken, `mutation { createApiKey(name: "socket", expiresIn: 60) { secret } }`, nil).field(t, "createApiKey", &key)
		s.Clock.Advance(59 * time.Second) // one second of the key's life left
		sock, _ := s.dialSocket(t, "", map[string]any{"X-API-Key": key.Secret})
		sock.acked(t)
		sock.wantClosed(t, 3*time.Second, 4401, "TOKEN_EXPIRED")
	})
}

// settle waits until the server has stopped querying the database: on Postgres the sign-in events
// of the test's setup reach this instance through LISTEN, possibly after the socket opened, and
// each re-checks the user's sockets with a query of its own that is not the operation's.
func (s *server) settle(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for last := s.Queries.n.Load(); time.Now().Before(deadline); {
		time.Sleep(250 * time.Millisecond)
		now := s.Queries.n.Load()
		if now == last {
			return
		}
		last = now
	}
	t.Fatal("the server kept querying the database for 5 s")
}
