package graph_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"gqlauth/graph"
	"gqlauth/store"
	"gqlauth/store/storetest"
	"gqlauth/web"
)

// wsMessage is a graphql-transport-ws message.
type wsMessage struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// liveSocket is a client socket that has sent connection_init.
type liveSocket struct {
	conn *websocket.Conn
	// closed receives the close status and reason when the server ends the socket.
	messages chan wsMessage
	closed   chan websocket.CloseError
	pings    atomic.Int32 // server pings answered
}

// dialSocket opens a graphql-transport-ws socket to the server with origin (or none) and sends
// connection_init with payload. It returns the HTTP status when the upgrade is refused.
func (s *server) dialSocket(t testing.TB, origin string, payload map[string]any) (*liveSocket, int) {
	t.Helper()
	header := http.Header{}
	if origin != "" {
		header.Set("Origin", origin)
	}
	sock, status := s.openSocket(t, header)
	if sock != nil {
		raw, _ := json.Marshal(payload)
		sock.send(t, wsMessage{Type: "connection_init", Payload: raw})
	}
	return sock, status
}

// openSocket opens a graphql-transport-ws socket with header and sends nothing. It returns the HTTP
// status when the upgrade is refused.
func (s *server) openSocket(t testing.TB, header http.Header) (*liveSocket, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, res, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.URL, "http"), &websocket.DialOptions{
		Subprotocols: []string{"graphql-transport-ws"}, HTTPHeader: header,
	})
	if err != nil {
		if res != nil {
			return nil, res.StatusCode
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	sock := &liveSocket{conn: conn, messages: make(chan wsMessage, 16), closed: make(chan websocket.CloseError, 1)}
	go func() {
		for {
			var m wsMessage
			if err := wsjson.Read(context.Background(), conn, &m); err != nil {
				var ce websocket.CloseError
				if errors.As(err, &ce) {
					sock.closed <- ce
				} else {
					sock.closed <- websocket.CloseError{Code: -1, Reason: err.Error()}
				}
				return
			}
			if m.Type == "ping" {
				sock.pings.Add(1)
				wsjson.Write(context.Background(), conn, wsMessage{Type: "pong"})
				continue
			}
			sock.messages <- m
		}
	}()
	return sock, 101
}

// send writes one message (a wsMessage, or raw text as a string) to the server.
func (sock *liveSocket) send(t testing.TB, m any) {
	t.Helper()
	var err error
	if text, ok := m.(string); ok {
		err = sock.conn.Write(context.Background(), websocket.MessageText, []byte(text))
	} else {
		err = wsjson.Write(context.Background(), sock.conn, m)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// operation runs one query, mutation or subscription over the socket and returns its messages, up
// to its complete or error. It is for operations that end: a subscription that was refused.
func (sock *liveSocket) operation(t testing.TB, id, query string, vars map[string]any) []wsMessage {
	t.Helper()
	payload, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	sock.send(t, wsMessage{ID: id, Type: "subscribe", Payload: payload})
	var out []wsMessage
	for {
		m := sock.next(t, 5*time.Second)
		if m.ID != id {
			t.Fatalf("operation %s: a message of %q: %s %s", id, m.ID, m.Type, m.Payload)
		}
		out = append(out, m)
		if m.Type == "complete" || m.Type == "error" {
			return out
		}
	}
}

// results are the GraphQL responses of an operation's messages: each next, and an error message
// as a response with errors only.
func results(t testing.TB, msgs []wsMessage) []response {
	t.Helper()
	var out []response
	for _, m := range msgs {
		var r response
		switch m.Type {
		case "next":
			if err := json.Unmarshal(m.Payload, &r); err != nil {
				t.Fatalf("next: %v", err)
			}
		case "error":
			if err := json.Unmarshal(m.Payload, &r.Errors); err != nil {
				t.Fatalf("error: %v", err)
			}
		default:
			continue
		}
		out = append(out, r)
	}
	return out
}

// next returns the next message, or fails after d.
func (sock *liveSocket) next(t testing.TB, d time.Duration) wsMessage {
	t.Helper()
	select {
	case m := <-sock.messages:
		return m
	case ce := <-sock.closed:
		t.Fatalf("socket closed: %d %s", ce.Code, ce.Reason)
	case <-time.After(d):
		t.Fatalf("no message within %s", d)
	}
	return wsMessage{}
}

// acked waits for connection_ack.
func (sock *liveSocket) acked(t testing.TB) *liveSocket {
	t.Helper()
	if m := sock.next(t, 3*time.Second); m.Type != "connection_ack" {
		t.Fatalf("got %s %s, want connection_ack", m.Type, m.Payload)
	}
	return sock
}

// wantClosed waits at most d for the server to close the socket with code and reason.
func (sock *liveSocket) wantClosed(t testing.TB, d time.Duration, code websocket.StatusCode, reason string) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case ce := <-sock.closed:
			if ce.Code != code || ce.Reason != reason {
				t.Fatalf("closed with %d %q, want %d %q", ce.Code, ce.Reason, code, reason)
			}
			return
		case <-sock.messages: // events before the close
		case <-deadline:
			t.Fatalf("still open after %s, want closed with %d %s", d, code, reason)
		}
	}
}

func (sock *liveSocket) subscribe(t testing.TB, id, query string) {
	t.Helper()
	payload, _ := json.Marshal(map[string]any{"query": query})
	if err := wsjson.Write(context.Background(), sock.conn, wsMessage{ID: id, Type: "subscribe", Payload: payload}); err != nil {
		t.Fatal(err)
	}
}

const securityEventsSubscription = `subscription { securityEvents { type detail user { username } } }`

func bearer(token string) map[string]any { return map[string]any{"Authorization": "Bearer " + token} }

func TestSocket_HandshakeWithEachCredential(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		alice := s.signedInUser(t, "alice")
		var key struct{ Secret string }
		s.query(t, alice.AccessToken, `mutation { createApiKey(name: "socket") { secret } }`, nil).field(t, "createApiKey", &key)
		revoked := s.login(t, "alice", "correct horse battery")
		s.query(t, revoked.AccessToken, `mutation { logout }`, nil)

		for name, payload := range map[string]map[string]any{"Bearer": bearer(alice.AccessToken), "APIKey": {"X-API-Key": key.Secret}} {
			t.Run(name, func(t *testing.T) {
				sock, _ := s.dialSocket(t, "", payload)
				sock.acked(t).subscribe(t, "1", securityEventsSubscription)
				time.Sleep(50 * time.Millisecond) // the subscription is registered
				s.login(t, "alice", "correct horse battery")
				for {
					m := sock.next(t, 2*time.Second)
					if m.Type == "next" && strings.Contains(string(m.Payload), `"SIGN_IN"`) {
						break
					}
					// Only alice's earlier sign-out, committed before the subscription but (Postgres)
					// heard late, may come first.
					if m.Type != "next" || !strings.Contains(string(m.Payload), `"SIGN_OUT"`) {
						t.Fatalf("got %s %s", m.Type, m.Payload)
					}
				}
			})
		}
		t.Run("Anonymous", func(t *testing.T) {
			sock, _ := s.dialSocket(t, "", nil)
			sock.acked(t).subscribe(t, "1", securityEventsSubscription)
			m := sock.next(t, 2*time.Second)
			if m.Type != "next" || !strings.Contains(string(m.Payload), "MISSING_TOKEN") {
				t.Fatalf("an anonymous securityEvents: %s %s", m.Type, m.Payload)
			}
		})
		for name, c := range map[string]struct {
			payload map[string]any
			reason  string
		}{
			"Garbage":         {bearer("not.a.token"), "INVALID_TOKEN"},
			"RevokedSession":  {bearer(revoked.AccessToken), "SESSION_REVOKED"},
			"UnknownAPIKey":   {map[string]any{"X-API-Key": "gqa_" + strings.Repeat("A", 43)}, "INVALID_TOKEN"},
			"BothCredentials": {map[string]any{"Authorization": "Bearer " + alice.AccessToken, "X-API-Key": key.Secret}, "INVALID_TOKEN"},
		} {
			t.Run("Refused/"+name, func(t *testing.T) {
				sock, _ := s.dialSocket(t, "", c.payload)
				sock.wantClosed(t, 3*time.Second, 4401, c.reason)
			})
		}
		s.query(t, alice.AccessToken, `{ me { id } }`, nil) // the server is fine
	})
}

func TestSocket_CrossSiteUpgradeRefusedBeforeTheHandshake(t *testing.T) {
	s := newServer(t, storetest.SQLite, withOrigins("https://app.example.com"))
	alice := s.signedInUser(t, "alice")
	for origin, want := range map[string]int{
		"https://evil.example.com": 403,
		"null":                     403,
		"https://app.example.com":  101, // CORS_ALLOWED_ORIGINS
		s.URL:                      101, // the server's own origin
		"":                         101, // not a browser
	} {
		t.Run(origin, func(t *testing.T) {
			sock, status := s.dialSocket(t, origin, bearer(alice.AccessToken))
			if status != want {
				t.Fatalf("status %d, want %d", status, want)
			}
			if sock != nil {
				sock.acked(t)
			}
		})
	}
}

func TestSocket_SecurityEventsCarryOnlyTheCallersCommittedEvents(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		alice := s.signedInUser(t, "alice")
		s.login(t, "alice", "correct horse battery") // another session, for the logout below
		s.signedInUser(t, "bob")
		sock, _ := s.dialSocket(t, "", bearer(alice.AccessToken))
		sock.acked(t).subscribe(t, "1", securityEventsSubscription)
		time.Sleep(50 * time.Millisecond)

		s.login(t, "bob", "correct horse battery") // not alice's
		// A change that rolls back records nothing, so nothing is sent.
		remove := fault(t, s, kind, "sessions", "NEW.revoked_at IS NOT NULL")
		s.do(t, call{Query: `mutation { logout(scope: OTHERS) }`, Token: alice.AccessToken}).wantError(t, "INTERNAL_SERVER_ERROR", "")
		remove()
		s.do(t, call{Query: `mutation { login(username: "alice", password: "wrong horse battery") { accessToken } }`})
		m := sock.next(t, 2*time.Second)
		if m.Type != "next" || !strings.Contains(string(m.Payload), `"SIGN_IN_FAILED"`) || !strings.Contains(string(m.Payload), `"alice"`) {
			t.Fatalf("the first event alice sees: %s", m.Payload)
		}
	})
}

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

func TestSocket_Caps(t *testing.T) {
	limits := graph.DefaultSocketLimits()
	limits.PerUser, limits.PerIP, limits.SubscriptionsPerSocket = 2, 3, 1
	s := newServer(t, storetest.SQLite, withSocketLimits(limits))
	alice := s.signedInUser(t, "alice")
	bob := s.signedInUser(t, "bob")

	t.Run("SubscriptionsPerSocket", func(t *testing.T) {
		sock, _ := s.dialSocket(t, "", bearer(alice.AccessToken))
		sock.acked(t).subscribe(t, "1", securityEventsSubscription)
		time.Sleep(100 * time.Millisecond) // subscriptions start concurrently: let the first win
		sock.subscribe(t, "2", securityEventsSubscription)
		m := sock.next(t, 2*time.Second)
		if m.ID != "2" || !strings.Contains(string(m.Payload), "TOO_MANY_REQUESTS") {
			t.Fatalf("second subscription: %s %s %s", m.ID, m.Type, m.Payload)
		}
		sock.conn.Close(websocket.StatusNormalClosure, "")
	})
	time.Sleep(100 * time.Millisecond) // the server forgets the closed socket
	t.Run("PerUser", func(t *testing.T) {
		for range 2 {
			sock, _ := s.dialSocket(t, "", bearer(alice.AccessToken))
			sock.acked(t)
		}
		sock, _ := s.dialSocket(t, "", bearer(alice.AccessToken))
		sock.wantClosed(t, 3*time.Second, 4429, "TOO_MANY_SOCKETS")
	})
	time.Sleep(100 * time.Millisecond)
	t.Run("PerIP", func(t *testing.T) {
		// Three sockets of two users from one address; a fourth upgrade is refused.
		for _, tok := range []string{alice.AccessToken, alice.AccessToken, bob.AccessToken} {
			sock, _ := s.dialSocket(t, "", bearer(tok))
			sock.acked(t)
		}
		if _, status := s.dialSocket(t, "", bearer(bob.AccessToken)); status != http.StatusTooManyRequests {
			t.Fatalf("status %d, want 429", status)
		}
	})
}

func TestSocket_OperationsPassTheSameGuardAsRequests(t *testing.T) {
	s := newServer(t, storetest.SQLite)
	alice := s.signedInUser(t, "alice")
	sock, _ := s.dialSocket(t, "", bearer(alice.AccessToken))
	sock.acked(t).subscribe(t, "1", `subscription { ...A } fragment A on Subscription { ...B } fragment B on Subscription { ...A }`)
	m := sock.next(t, 2*time.Second)
	if !strings.Contains(string(m.Payload), "spreads itself") || !strings.Contains(string(m.Payload), "GRAPHQL_VALIDATION_FAILED") {
		t.Fatalf("a fragment cycle over a socket: %s %s", m.Type, m.Payload)
	}
	s.query(t, alice.AccessToken, `{ me { id } }`, nil)
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

func TestSocket_TrustedDocumentsOnlyModeAppliesToSockets(t *testing.T) {
	path, ids := manifest(t, securityEventsSubscription)
	s := newServer(t, storetest.SQLite, withTrustedDocuments(trustedDocuments(t, path, true)))
	alice := mustAccount(t, s, "alice", false)
	sock, _ := s.dialSocket(t, "", bearer(alice))
	sock.acked(t).subscribe(t, "free", securityEventsSubscription)
	if m := sock.next(t, 2*time.Second); m.ID != "free" || !strings.Contains(string(m.Payload), "PERSISTED_QUERY_REQUIRED") {
		t.Fatalf("free-form over a socket in only-mode: %s %s", m.Type, m.Payload)
	}
	payload, _ := json.Marshal(map[string]any{"query": "", "extensions": map[string]any{"documentId": ids[0]}})
	if err := wsjson.Write(context.Background(), sock.conn, wsMessage{ID: "trusted", Type: "subscribe", Payload: payload}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := s.Service.Login(t.Context(), "alice", "correct horse battery"); err != nil {
		t.Fatal(err)
	}
	for {
		m := sock.next(t, 2*time.Second)
		if m.ID == "trusted" {
			if !strings.Contains(string(m.Payload), "SIGN_IN") {
				t.Fatalf("trusted subscription: %s %s", m.Type, m.Payload)
			}
			break
		}
	}
}

func TestSocket_ProtocolLimits(t *testing.T) {
	limits := graph.DefaultSocketLimits()
	limits.PingInterval, limits.MaxMessageBytes = 100*time.Millisecond, 2048
	s := newServer(t, storetest.SQLite, withSocketLimits(limits))
	alice := s.signedInUser(t, "alice")

	t.Run("Pings", func(t *testing.T) {
		sock, _ := s.dialSocket(t, "", bearer(alice.AccessToken))
		sock.acked(t)
		time.Sleep(450 * time.Millisecond)
		if n := sock.pings.Load(); n < 2 {
			t.Fatalf("%d pings in 450 ms at a 100 ms interval", n)
		}
	})
	t.Run("MessageTooBig", func(t *testing.T) {
		sock, _ := s.dialSocket(t, "", bearer(alice.AccessToken))
		sock.acked(t).subscribe(t, "1", "subscription { securityEvents { type } } # "+strings.Repeat("x", 4096))
		sock.wantClosed(t, 2*time.Second, websocket.StatusMessageTooBig, "read limited at 2049 bytes")
	})
}

// wantRefused fails unless an operation's messages carry no data and only errors with code and
// reason (at least one).
func wantRefused(t testing.TB, msgs []wsMessage, code, reason string) {
	t.Helper()
	rs := results(t, msgs)
	if len(rs) == 0 {
		t.Fatalf("no response: %+v", msgs)
	}
	for _, r := range rs {
		if len(r.Data) != 0 || len(r.Errors) == 0 {
			t.Fatalf("got data %s, errors %+v; want only %s/%s", r.Data, r.Errors, code, reason)
		}
		for _, e := range r.Errors {
			if e.Extensions.Code != code || e.Extensions.Reason != reason {
				t.Fatalf("error %s/%s (%q), want %s/%s", e.Extensions.Code, e.Extensions.Reason, e.Message, code, reason)
			}
		}
	}
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
			for i := range 3 { // each operation asks again, and once
				s.Queries.n.Store(0)
				rs := results(t, sock.operation(t, fmt.Sprint(i), `{ a: me { id } b: me { username } c: me { role } }`, nil))
				if len(rs) != 1 || len(rs[0].Errors) != 0 {
					t.Fatalf("me: %+v", rs)
				}
				if got := s.Queries.n.Load(); got != 1 {
					t.Fatalf("operation %d: %d queries, want 1", i, got)
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
			for i := range 2 {
				s.Queries.n.Store(0)
				rs := results(t, sock.operation(t, fmt.Sprint(i), `{ a: me { id } b: me { role } }`, nil))
				if len(rs) != 1 || len(rs[0].Errors) != 0 {
					t.Fatalf("free-form me as an admin: %+v", rs)
				}
				if got := s.Queries.n.Load(); got != 1 {
					t.Fatalf("operation %d: %d queries, want 1", i, got)
				}
			}
		})
	})
}

// awaitAck, among the frames a test sends, waits for connection_ack.
type awaitAck struct{}

// The graphql-transport-ws protocol's close codes (graphql-ws's PROTOCOL.md), never a generic
// 1002 (or 1000): gqlgen's transport alone would send those.
func TestSocket_ProtocolViolationsCloseWithTheProtocolsCodes(t *testing.T) {
	limits := graph.DefaultSocketLimits()
	limits.InitTimeout = 300 * time.Millisecond
	s := newServer(t, storetest.SQLite, withSocketLimits(limits))
	alice := s.signedInUser(t, "alice")
	initPayload, _ := json.Marshal(bearer(alice.AccessToken))
	connInit := wsMessage{Type: "connection_init", Payload: initPayload}
	subscribe := func(id string) wsMessage {
		return wsMessage{ID: id, Type: "subscribe", Payload: json.RawMessage(`{"query": "subscription { securityEvents { type } }"}`)}
	}
	const invalid = "Invalid message received"
	cases := []struct {
		name   string
		frames []any // wsMessage, raw text, or awaitAck
		code   websocket.StatusCode
		reason string
	}{
		{"SubscribeBeforeConnectionAck", []any{subscribe("1")}, 4401, "Unauthorized"},
		{"SecondConnectionInit", []any{connInit, awaitAck{}, connInit}, 4429, "Too many initialisation requests"},
		{"NoConnectionInit", nil, 4408, "Connection initialisation timeout"},
		{"NoConnectionInit/OnlyPings", []any{`{"type":"ping"}`, `{"type":"pong"}`}, 4408, "Connection initialisation timeout"},
		{"DuplicateSubscriptionID", []any{connInit, awaitAck{}, subscribe("1"), subscribe("1")}, 4409, "Subscriber for 1 already exists"},
		{"DuplicateSubscriptionID/Long", []any{connInit, awaitAck{}, subscribe(strings.Repeat("x", 120)), subscribe(strings.Repeat("x", 120))},
			4409, "Subscriber already exists"},
		{"Invalid/BeforeConnectionInit", []any{`{`}, 4400, invalid},
		{"Invalid/NotJSON", []any{connInit, awaitAck{}, `{`}, 4400, invalid},
		{"Invalid/Array", []any{connInit, awaitAck{}, `[]`}, 4400, invalid},
		{"Invalid/Null", []any{connInit, awaitAck{}, `null`}, 4400, invalid},
		{"Invalid/NoType", []any{connInit, awaitAck{}, `{"id":"1"}`}, 4400, invalid},
		{"Invalid/TypeNotAString", []any{connInit, awaitAck{}, `{"type":1}`}, 4400, invalid},
		{"Invalid/UnknownType", []any{connInit, awaitAck{}, `{"type":"hello"}`}, 4400, invalid},
		{"Invalid/TypeKeyInOtherCase", []any{connInit, awaitAck{}, `{"TYPE":"ping"}`}, 4400, invalid},
		{"Invalid/AServersMessage", []any{connInit, awaitAck{}, `{"type":"next","id":"1","payload":{}}`}, 4400, invalid},
		{"Invalid/ConnectionAckFromTheClient", []any{`{"type":"connection_ack"}`}, 4400, invalid},
		{"Invalid/InitPayloadNotAnObject", []any{`{"type":"connection_init","payload":"Bearer x"}`}, 4400, invalid},
		{"Invalid/PingPayloadNotAnObject", []any{connInit, awaitAck{}, `{"type":"ping","payload":[]}`}, 4400, invalid},
		{"Invalid/SubscribeWithoutID", []any{connInit, awaitAck{}, `{"type":"subscribe","payload":{"query":"{ me { id } }"}}`}, 4400, invalid},
		{"Invalid/SubscribeWithEmptyID", []any{connInit, awaitAck{}, `{"type":"subscribe","id":"","payload":{"query":"{ me { id } }"}}`}, 4400, invalid},
		{"Invalid/SubscribeWithNumericID", []any{connInit, awaitAck{}, `{"type":"subscribe","id":1,"payload":{"query":"{ me { id } }"}}`}, 4400, invalid},
		{"Invalid/SubscribeWithoutPayload", []any{connInit, awaitAck{}, `{"type":"subscribe","id":"1"}`}, 4400, invalid},
		{"Invalid/SubscribeQueryNotAString", []any{connInit, awaitAck{}, `{"type":"subscribe","id":"1","payload":{"query":1}}`}, 4400, invalid},
		{"Invalid/SubscribeVariablesNotAnObject", []any{connInit, awaitAck{}, `{"type":"subscribe","id":"1","payload":{"query":"{ me { id } }","variables":[]}}`}, 4400, invalid},
		{"Invalid/SubscribeOperationNameNotAString", []any{connInit, awaitAck{}, `{"type":"subscribe","id":"1","payload":{"query":"{ me { id } }","operationName":1}}`}, 4400, invalid},
		{"Invalid/CompleteWithoutID", []any{connInit, awaitAck{}, `{"type":"complete"}`}, 4400, invalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sock, _ := s.openSocket(t, nil)
			for _, f := range c.frames {
				if _, ok := f.(awaitAck); ok {
					sock.acked(t)
					continue
				}
				sock.send(t, f)
			}
			sock.wantClosed(t, 3*time.Second, c.code, c.reason)
		})
	}
	s.query(t, alice.AccessToken, `{ me { id } }`, nil) // the server is fine
}

// What the protocol allows, the server allows: ping, pong and complete before connection_init,
// and an id again once its operation completed.
func TestSocket_ProtocolAllowsWhatTheReferenceServerAllows(t *testing.T) {
	s := newServer(t, storetest.SQLite)
	alice := s.signedInUser(t, "alice")
	initPayload, _ := json.Marshal(bearer(alice.AccessToken))

	sock, _ := s.openSocket(t, nil)
	sock.send(t, `{"type":"ping","payload":{"n":1}}`)
	if m := sock.next(t, 2*time.Second); m.Type != "pong" || string(m.Payload) != `{"n":1}` {
		t.Fatalf("a ping before connection_init: %s %s", m.Type, m.Payload)
	}
	sock.send(t, `{"type":"pong"}`)
	sock.send(t, `{"type":"complete","id":"nothing"}`)
	sock.send(t, wsMessage{Type: "connection_init", Payload: initPayload})
	sock.acked(t)
	for range 2 { // the same id, once the first operation completed
		rs := results(t, sock.operation(t, "q", `{ me { username } }`, nil))
		if len(rs) != 1 || len(rs[0].Errors) != 0 || !strings.Contains(string(rs[0].Data["me"]), "alice") {
			t.Fatalf("me: %+v", rs)
		}
	}
	// A subscription the client completed frees its id too.
	sock.subscribe(t, "s", securityEventsSubscription)
	time.Sleep(50 * time.Millisecond)
	sock.send(t, wsMessage{ID: "s", Type: "complete"})
	if m := sock.next(t, 2*time.Second); m.ID != "s" || m.Type != "complete" {
		t.Fatalf("after the client's complete: %s %s %s", m.ID, m.Type, m.Payload)
	}
	sock.subscribe(t, "s", securityEventsSubscription)
	time.Sleep(50 * time.Millisecond)
	s.login(t, "alice", "correct horse battery")
	if m := sock.next(t, 2*time.Second); m.ID != "s" || m.Type != "next" || !strings.Contains(string(m.Payload), "SIGN_IN") {
		t.Fatalf("the id again: %s %s %s", m.ID, m.Type, m.Payload)
	}
}

func TestSocket_QueriesAndMutationsInFlightPerSocketAreCapped(t *testing.T) {
	limits := graph.DefaultSocketLimits()
	limits.QueriesPerSocket, limits.SubscriptionsPerSocket = 2, 1
	// Sign-ins that take a while: a costly hash, one at a time.
	s := newServer(t, storetest.SQLite, withSocketLimits(limits), withBcryptCost(10), withBcryptPool(1, time.Minute))
	alice := s.signedInUser(t, "alice")
	bob := s.signedInUser(t, "bob")
	sock, _ := s.dialSocket(t, "", bearer(alice.AccessToken))
	// A running subscription (alice's events: bob's sign-ins send it nothing) takes no query's place.
	sock.acked(t).subscribe(t, "events", securityEventsSubscription)
	time.Sleep(50 * time.Millisecond)

	const login = `mutation { login(username: "bob", password: "correct horse battery") { accessToken } }`
	payload, _ := json.Marshal(map[string]any{"query": login})
	for i := range 6 {
		sock.send(t, wsMessage{ID: fmt.Sprint(i), Type: "subscribe", Payload: payload})
	}
	signedIn, refused := 0, 0
	for done := 0; done < 6; {
		m := sock.next(t, 10*time.Second)
		switch m.Type {
		case "complete":
			done++
		case "next":
			var r response
			json.Unmarshal(m.Payload, &r)
			switch {
			case len(r.Errors) == 0 && len(r.Data["login"]) > 0:
				signedIn++
			case len(r.Errors) == 1 && r.Errors[0].Extensions.Code == "TOO_MANY_REQUESTS" && r.Errors[0].Extensions.RetryAfter == 1:
				refused++
			default:
				t.Fatalf("sign-in %s: %s", m.ID, m.Payload)
			}
		default:
			t.Fatalf("unexpected %s %s %s", m.ID, m.Type, m.Payload)
		}
	}
	if signedIn != 2 || refused != 4 {
		t.Fatalf("%d signed in, %d refused; want 2 and 4", signedIn, refused)
	}
	// The refused ones started no session; with the two done, the socket runs operations again.
	var sessions []struct{ ID string }
	s.query(t, bob.AccessToken, `{ sessions { id } }`, nil).field(t, "sessions", &sessions)
	if len(sessions) != 3 {
		t.Fatalf("bob has %d sessions, want 3 (sign-up and two sign-ins)", len(sessions))
	}
	if rs := results(t, sock.operation(t, "again", `{ me { id } }`, nil)); len(rs) != 1 || len(rs[0].Errors) != 0 {
		t.Fatalf("after the cap: %+v", rs)
	}
}

func TestSocket_PerIPCapCountsAnIPv6ClientByItsSlash64(t *testing.T) {
	limits := graph.DefaultSocketLimits()
	limits.PerIP = 2
	proxies, err := web.ParseProxies("127.0.0.1,::1")
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, storetest.SQLite, withSocketLimits(limits), withTrustedProxies(proxies))
	for _, step := range []struct {
		from string
		want int
	}{
		{"2001:db8:1:2::1", 101},
		{"2001:db8:1:2:ffff:ffff:ffff:ffff", 101},
		{"2001:db8:1:2:abcd::7", 429}, // a third address of the same /64
		{"2001:db8:1:3::1", 101},      // the next /64
		{"203.0.113.1", 101},
		{"203.0.113.1", 101},
		{"203.0.113.1", 429},
		{"203.0.113.2", 101},        // IPv4: by address
		{"::ffff:203.0.113.1", 429}, // the same IPv4 address, mapped
	} {
		_, status := s.openSocket(t, http.Header{"X-Forwarded-For": {step.from}})
		if status != step.want {
			t.Fatalf("from %s: status %d, want %d", step.from, status, step.want)
		}
	}
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
