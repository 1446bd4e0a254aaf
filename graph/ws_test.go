package graph_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

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
					// Only alice's own earlier events (the setup's sign-up, key and sign-out), committed
					// before the subscription but (Postgres) heard late, may come first.
					setup := false
					for _, typ := range []string{`"SIGN_UP"`, `"API_KEY_CREATED"`, `"SIGN_OUT"`} {
						setup = setup || strings.Contains(string(m.Payload), typ)
					}
					if m.Type != "next" || !setup || !strings.Contains(string(m.Payload), `"alice"`) {
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

// §9 names one protocol, graphql-transport-ws. gqlgen also speaks the legacy
// subscriptions-transport-ws ("graphql-ws", and the default when no subprotocol is offered), whose
// close codes and message rules are not §9's; an upgrade that does not offer graphql-transport-ws
// is refused before the handshake, so nothing is ever spoken in it.
func TestSocket_UpgradeWithoutTheTransportWSSubprotocolRefusedBeforeTheHandshake(t *testing.T) {
	s := newServer(t, storetest.SQLite)
	for name, c := range map[string]struct {
		subprotocols []string
		want         int
	}{
		"legacy graphql-ws":         {[]string{"graphql-ws"}, 400},
		"no subprotocol":            {nil, 400},
		"unknown subprotocol":       {[]string{"chat"}, 400},
		"graphql-transport-ws":      {[]string{"graphql-transport-ws"}, 101},
		"legacy and transport-ws":   {[]string{"graphql-ws", "graphql-transport-ws"}, 101},
		"transport-ws among others": {[]string{"chat", "graphql-transport-ws"}, 101},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			conn, res, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.URL, "http"), &websocket.DialOptions{Subprotocols: c.subprotocols})
			status := 101
			if err != nil {
				if res == nil {
					t.Fatal(err)
				}
				status = res.StatusCode
			} else {
				defer conn.CloseNow()
				if got := conn.Subprotocol(); got != "graphql-transport-ws" {
					t.Errorf("negotiated %q, want graphql-transport-ws", got)
				}
			}
			if status != c.want {
				t.Fatalf("status %d, want %d", status, c.want)
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
