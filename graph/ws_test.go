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
	"gqlauth/store/storetest"
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	header := http.Header{}
	if origin != "" {
		header.Set("Origin", origin)
	}
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
	raw, _ := json.Marshal(payload)
	if err := wsjson.Write(ctx, conn, wsMessage{Type: "connection_init", Payload: raw}); err != nil {
		t.Fatal(err)
	}
	return sock, 101
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
				m := sock.next(t, 2*time.Second)
				if m.Type != "next" || !strings.Contains(string(m.Payload), `"SIGN_IN"`) {
					t.Fatalf("got %s %s", m.Type, m.Payload)
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

	// Cut the listeners' connections and wait until they are gone; revoke while they are down,
	// so the notification is lost; the socket must still close once they are back.
	var channel string
	if err := b.DB.QueryRow(context.Background(), "SELECT 'gqlauth-listener gqlauth_events_' || current_schema()", &channel); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	if err := b.DB.Exec(context.Background(), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '"+channel+"'"); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		var n int
		if err := b.DB.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE application_name = '"+channel+"'", &n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if i > 100 {
			t.Fatal("the listeners did not go away")
		}
		time.Sleep(5 * time.Millisecond)
	}
	a.query(t, alice.AccessToken, `mutation { logout }`, nil)
	sock.wantClosed(t, 5*time.Second, 4401, "SESSION_REVOKED")
	if waited := time.Since(cut); waited < 900*time.Millisecond {
		t.Fatalf("closed after %s: before the listener could have reconnected, so not by the resync", waited)
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
		if m := sock.next(t, 2*time.Second); m.ID != "all" || !strings.Contains(string(m.Payload), `"carol"`) {
			t.Fatalf("auditEvents: %s %s", m.ID, m.Payload)
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
	limits.InitTimeout, limits.PingInterval, limits.MaxMessageBytes = 300*time.Millisecond, 100*time.Millisecond, 2048
	s := newServer(t, storetest.SQLite, withSocketLimits(limits))
	alice := s.signedInUser(t, "alice")

	t.Run("ConnectionInitTimeout", func(t *testing.T) {
		conn, _, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(s.URL, "http"), &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.CloseNow()
		start := time.Now()
		_, _, err = conn.Read(context.Background()) // never sends connection_init
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Reason != "connection initialisation timeout" || time.Since(start) > 2*time.Second {
			t.Fatalf("got %v after %s", err, time.Since(start))
		}
	})
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
