package graph

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql/handler/transport"
)

// Close codes of the graphql-transport-ws protocol (graphql-ws's PROTOCOL.md), with the reasons
// its reference server sends.
const (
	closeBadRequest      = 4400 // "Invalid message received"
	closeInitTimeout     = 4408 // "Connection initialisation timeout"
	closeSubscriberTaken = 4409 // "Subscriber for <id> already exists"
	// 4401 "Unauthorized" (subscribe before connection_ack) is closeUnauthorized and 4429 "Too
	// many initialisation requests" is closeTooMany.
)

const transportWS = "graphql-transport-ws"

// errProtocol ends gqlgen's read loop after protocolConn closed the socket for a protocol error.
var errProtocol = errors.New("graphql-transport-ws protocol violation")

// protocolConn holds the client of a graphql-transport-ws socket to the protocol, between the
// WebSocket and gqlgen's transport, which would close with a generic 1002 (a second
// connection_init, subscribe first, the init timeout), with 1000 (a message that is not valid),
// or not at all (a subscription id in use: it replaces the running operation's handle). Each
// client message is validated as the reference implementation does and handed on re-encoded, so
// the transport reads exactly what was checked. gqlgen runs connection_init to its end (ack or
// refusal) before it reads the next message, so "subscribe before connection_ack" is subscribe
// before connection_init. The legacy graphql-ws subprotocol is passed through as gqlgen handles it
// (only the init timeout applies to it).
type protocolConn struct {
	transport.WebsocketConn
	strict  bool        // graphql-transport-ws was negotiated
	inited  bool        // connection_init was read (read loop only)
	closing atomic.Bool // a close frame was sent: later closes keep its code

	mu        sync.Mutex
	initTimer *time.Timer         // closes with 4408 unless connection_init comes first
	ids       map[string]struct{} // subscription ids in use: from subscribe to the server's complete or error
}

func newProtocolConn(conn transport.WebsocketConn, initTimeout time.Duration) *protocolConn {
	c := &protocolConn{WebsocketConn: conn, strict: conn.Subprotocol() == transportWS, ids: map[string]struct{}{}}
	if initTimeout > 0 {
		c.mu.Lock()
		c.initTimer = time.AfterFunc(initTimeout, func() { c.closeWith(closeInitTimeout, "Connection initialisation timeout") })
		c.mu.Unlock()
	}
	return c
}

// NextReader returns the next client message that the transport should handle, and closes the
// socket with the protocol's code on one that breaks the protocol.
func (c *protocolConn) NextReader() (int, io.Reader, error) {
	for {
		kind, r, err := c.WebsocketConn.NextReader()
		if err != nil {
			return kind, r, err
		}
		if !c.strict {
			c.stopInitTimer()
			return kind, r, nil
		}
		data, err := io.ReadAll(r)
		if err != nil {
			return kind, nil, err
		}
		m, ok := parseClientMessage(data)
		if !ok {
			return c.fail(closeBadRequest, "Invalid message received")
		}
		switch m.Type {
		case "connection_init":
			if c.inited {
				return c.fail(closeTooMany, "Too many initialisation requests")
			}
			c.inited = true
			c.stopInitTimer()
		case "subscribe":
			if !c.inited {
				return c.fail(closeUnauthorized, "Unauthorized")
			}
			if !c.claim(m.ID) {
				reason := "Subscriber for " + m.ID + " already exists"
				if len(reason) > 123 { // a close frame's reason is at most 123 bytes
					reason = "Subscriber already exists"
				}
				return c.fail(closeSubscriberTaken, reason)
			}
		default: // ping, pong, complete: allowed at any time, which the transport does not know
			if !c.inited {
				if m.Type == "ping" {
					_ = c.WebsocketConn.WriteJSON(clientMessage{Type: "pong", Payload: m.Payload})
				}
				continue
			}
		}
		out, _ := json.Marshal(m)
		return kind, bytes.NewReader(out), nil
	}
}

// WriteJSON sends a server message; a complete or error frees its subscription id (before it is
// sent: a client may reuse the id as soon as it reads it).
func (c *protocolConn) WriteJSON(v any) error {
	if !c.strict {
		return c.WebsocketConn.WriteJSON(v)
	}
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var m struct{ ID, Type string }
	if json.Unmarshal(data, &m) == nil && (m.Type == "complete" || m.Type == "error") {
		c.mu.Lock()
		delete(c.ids, m.ID)
		c.mu.Unlock()
	}
	return c.WebsocketConn.WriteJSON(json.RawMessage(data))
}

// WriteClose sends the close frame; only the first close is sent, so that the transport's own
// close after a protocol error (1002, or 1000) does not replace the protocol's code.
func (c *protocolConn) WriteClose(code int, reason string) error {
	if !c.closing.CompareAndSwap(false, true) {
		return nil
	}
	c.stopInitTimer()
	return c.WebsocketConn.WriteClose(code, reason)
}

// SetReadLimit and SetReadDeadline hand the transport's message limit and pong deadline on.
func (c *protocolConn) SetReadLimit(limit int64) {
	if l, ok := c.WebsocketConn.(transport.WebsocketReadLimiter); ok {
		l.SetReadLimit(limit)
	}
}

func (c *protocolConn) SetReadDeadline(t time.Time) error {
	if d, ok := c.WebsocketConn.(transport.WebsocketReadDeadliner); ok {
		return d.SetReadDeadline(t)
	}
	return nil
}

func (c *protocolConn) stopInitTimer() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.initTimer != nil {
		c.initTimer.Stop()
	}
}

// claim takes a subscription id, unless it is in use.
func (c *protocolConn) claim(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, taken := c.ids[id]; taken {
		return false
	}
	c.ids[id] = struct{}{}
	return true
}

func (c *protocolConn) closeWith(code int, reason string) {
	_ = c.WriteClose(code, reason)
	_ = c.Close()
}

func (c *protocolConn) fail(code int, reason string) (int, io.Reader, error) {
	c.closeWith(code, reason)
	return 0, nil, errProtocol
}

// clientMessage is a graphql-transport-ws message from the client, as handed to the transport.
type clientMessage struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// parseClientMessage validates a client message with the rules of graphql-ws's validateMessage:
// a JSON object whose type is one a client sends, with the id and payload that type needs. The
// keys are matched exactly (encoding/json alone would also take "TYPE" for "type").
func parseClientMessage(data []byte) (clientMessage, bool) {
	var env map[string]json.RawMessage
	if json.Unmarshal(data, &env) != nil || env == nil {
		return clientMessage{}, false
	}
	var m clientMessage
	if jsonKind(env["type"]) != '"' || json.Unmarshal(env["type"], &m.Type) != nil {
		return clientMessage{}, false
	}
	payload := env["payload"]
	switch m.Type {
	case "connection_init", "ping", "pong":
		if !objectOrNull(payload) {
			return clientMessage{}, false
		}
		if jsonKind(payload) == '{' {
			m.Payload = payload
		}
	case "subscribe":
		var p map[string]json.RawMessage
		if !m.readID(env["id"]) || jsonKind(payload) != '{' || json.Unmarshal(payload, &p) != nil ||
			jsonKind(p["query"]) != '"' || !objectOrNull(p["variables"]) || !objectOrNull(p["extensions"]) ||
			!(p["operationName"] == nil || jsonKind(p["operationName"]) == 'n' || jsonKind(p["operationName"]) == '"') {
			return clientMessage{}, false
		}
		m.Payload = payload
	case "complete":
		if !m.readID(env["id"]) {
			return clientMessage{}, false
		}
	default: // connection_ack, next, error and anything else are not a client's to send
		return clientMessage{}, false
	}
	return m, true
}

// readID reads a non-empty string id.
func (m *clientMessage) readID(raw json.RawMessage) bool {
	return jsonKind(raw) == '"' && json.Unmarshal(raw, &m.ID) == nil && m.ID != ""
}

// jsonKind is the first byte of a JSON value ('{', '"', 'n', …), 0 when there is none.
func jsonKind(raw json.RawMessage) byte {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 {
		return 0
	}
	return raw[0]
}

// objectOrNull reports whether raw is missing, null or an object.
func objectOrNull(raw json.RawMessage) bool {
	k := jsonKind(raw)
	return k == 0 || k == 'n' || k == '{'
}
