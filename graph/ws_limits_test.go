package graph_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"gqlauth/graph"
	"gqlauth/store/storetest"
	"gqlauth/web"
)

// The limits of sockets: caps per user, IP and socket, the query guard and trusted documents,
// and the graphql-transport-ws protocol's rules and close codes.

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
