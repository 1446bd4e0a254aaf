package graph

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/coder/websocket"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"gqlauth/account"
	"gqlauth/model"
)

// SocketLimits bound the WebSockets of /query.
type SocketLimits struct {
	PerUser                int           // open sockets of one user
	PerIP                  int           // open sockets from one client IP, an IPv6 client by its /64 (before authentication)
	SubscriptionsPerSocket int           // running subscriptions on one socket
	QueriesPerSocket       int           // queries and mutations in flight on one socket
	InitTimeout            time.Duration // longest wait for connection_init
	PingInterval           time.Duration // server pings; a client that stops answering is dropped
	MaxMessageBytes        int64         // largest message read from a client
}

// DefaultSocketLimits suit a browser app: a few tabs per user, an office behind one NAT, about
// as many queries at once on a socket as a browser runs requests to one host.
func DefaultSocketLimits() SocketLimits {
	return SocketLimits{PerUser: 10, PerIP: 100, SubscriptionsPerSocket: 10, QueriesPerSocket: 4, InitTimeout: 10 * time.Second,
		PingInterval: 25 * time.Second, MaxMessageBytes: 64 << 10}
}

// Close codes of a socket whose authority ended (§9), and of one over a cap.
const (
	closeUnauthorized = 4401
	closeTooMany      = 4429
)

// Sockets serves the WebSocket side of /query (graphql-transport-ws, through gqlgen's
// transport) and keeps every open socket by user, so that a committed security event about a user
// re-checks that user's sockets and closes those whose session, key or account is gone.
type Sockets struct {
	svc     *account.Service
	limits  SocketLimits
	origins map[string]bool
	ws      transport.Websocket

	mu     sync.Mutex
	byUser map[string]map[*socket]struct{}
	byIP   map[string]int
}

// socket is one open WebSocket.
type socket struct {
	client  string                  // the client's key for PerIP (account.ClientKey)
	conn    transport.WebsocketConn // set when the handshake is accepted
	ctx     context.Context         // the socket's credentials, set by connection_init
	userID  string
	expiry  *time.Timer
	subs    atomic.Int32 // running subscriptions
	queries atomic.Int32 // queries and mutations in flight
	closed  atomic.Bool
}

type socketKey struct{}

func socketFrom(ctx context.Context) *socket {
	s, _ := ctx.Value(socketKey{}).(*socket)
	return s
}

func newSockets(svc *account.Service, limits SocketLimits, origins []string) *Sockets {
	s := &Sockets{svc: svc, limits: limits, origins: map[string]bool{},
		byUser: map[string]map[*socket]struct{}{}, byIP: map[string]int{}}
	for _, o := range origins {
		s.origins[strings.TrimRight(o, "/")] = true
	}
	readLimit := limits.MaxMessageBytes
	s.ws = transport.Websocket{
		Implementation: acceptor{transport.CoderWebsocketImplementation{AcceptOptions: websocket.AcceptOptions{InsecureSkipVerify: true}},
			limits.InitTimeout},
		InitFunc:         s.init,
		PingPongInterval: limits.PingInterval,
		PayloadReadLimit: &readLimit,
		CloseFunc:        func(ctx context.Context, _ int) { s.forget(socketFrom(ctx)) },
	}
	return s
}

// acceptor is gqlgen's coder/websocket adapter with the protocol's rules in front of the transport
// (protocolConn, which also keeps the init timeout), and it hands the connection to the socket, so
// that the socket can be closed with the close code of its reason.
type acceptor struct {
	transport.CoderWebsocketImplementation
	initTimeout time.Duration
}

func (a acceptor) Accept(w http.ResponseWriter, r *http.Request, o transport.WebsocketAcceptOptions) (transport.WebsocketConn, error) {
	o.Subprotocols = []string{"graphql-transport-ws"} // the only one negotiated, also when the legacy one is offered first
	conn, err := a.CoderWebsocketImplementation.Accept(w, r, o)
	if err != nil {
		return nil, err
	}
	pc := newProtocolConn(conn, a.initTimeout)
	if sock := socketFrom(r.Context()); sock != nil {
		sock.conn = pc
	}
	return pc, nil
}

// serve upgrades r, after the cross-site check: browsers do not apply CORS to WebSockets, so an
// upgrade from a page on another origin would otherwise ride on the user's network position.
func (s *Sockets) serve(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	if origin := r.Header.Get("Origin"); origin != "" && !s.allowedOrigin(origin, r.Host) {
		writeErrors(w, r, mediaJSON, http.StatusForbidden, requestError(model.ErrorCodeForbidden,
			"WebSocket upgrades are accepted from this server's own origin and CORS_ALLOWED_ORIGINS only"))
		return
	}
	if !offersTransportWS(r.Header.Values("Sec-WebSocket-Protocol")) {
		// gqlgen would otherwise speak the legacy subscriptions-transport-ws protocol ("graphql-ws",
		// or no subprotocol at all), whose close codes and message rules are not §9's: one protocol,
		// checked by one wrapper, is the whole surface.
		writeErrors(w, r, mediaJSON, http.StatusBadRequest, requestError(model.ErrorCodeBadUserInput,
			"WebSocket upgrades must offer the graphql-transport-ws subprotocol"))
		return
	}
	client := account.ClientKey(r.Context())
	s.mu.Lock()
	if s.byIP[client] >= s.limits.PerIP {
		s.mu.Unlock()
		writeErrors(w, r, mediaJSON, http.StatusTooManyRequests, requestError(model.ErrorCodeTooManyRequests, "too many open sockets from this address"))
		return
	}
	s.byIP[client]++
	s.mu.Unlock()
	sock := &socket{client: client}
	defer s.forget(sock) // also when the handshake or init never completes
	s.ws.Do(w, r.WithContext(context.WithValue(r.Context(), socketKey{}, sock)), exec)
}

// offersTransportWS reports whether a Sec-WebSocket-Protocol list names graphql-transport-ws.
func offersTransportWS(values []string) bool {
	for _, v := range values {
		for _, p := range strings.Split(v, ",") {
			if strings.TrimSpace(p) == "graphql-transport-ws" {
				return true
			}
		}
	}
	return false
}

func (s *Sockets) allowedOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && (strings.EqualFold(u.Host, host) || s.origins[strings.TrimRight(origin, "/")])
}

// init authenticates connection_init with the rules of an HTTP request's credentials. Without a
// credential the socket is anonymous (only @public subscriptions run); a bad one closes it with
// 4401. What is kept is the credential, not the principal: each operation authenticates again
// (operationAuth).
//
// The socket is registered under its user before the principal that admits it is loaded: an
// event committed after that load finds the socket and re-checks it. Loaded first and registered
// after, a revocation committed in between closed nothing, and the socket lived on. A token names
// its user; an API key names its owner only in the database, so a key's socket loads once to
// learn whom to register under, and once more after.
func (s *Sockets) init(ctx context.Context, payload transport.InitPayload) (context.Context, *transport.InitPayload, error) {
	sock := socketFrom(ctx)
	authorization, apiKey := payloadCredentials(payload)
	ctx = s.svc.SocketContext(ctx, authorization, apiKey)
	sock.ctx = ctx
	if !account.HasCredentials(ctx) {
		return ctx, nil, nil
	}
	userID := account.TokenSubject(ctx)
	if userID == "" {
		p, err := s.svc.Authenticate(ctx)
		if err != nil {
			return refuseSocket(ctx, closeUnauthorized, reasonOf(err), err)
		}
		userID = p.User.ID
	}
	s.mu.Lock()
	if len(s.byUser[userID]) >= s.limits.PerUser {
		s.mu.Unlock()
		return refuseSocket(ctx, closeTooMany, "TOO_MANY_SOCKETS", errors.New("too many open sockets for this user"))
	}
	if s.byUser[userID] == nil {
		s.byUser[userID] = map[*socket]struct{}{}
	}
	s.byUser[userID][sock] = struct{}{}
	sock.userID = userID
	s.mu.Unlock()
	// Admitted from the database, never from the principal cache: a revocation committed before
	// this read is seen by it, and one committed after finds the socket registered above when its
	// event arrives. A cached read could lag a revocation whose event this instance has already
	// handled (before the socket was registered) — and nothing would check the socket again.
	p, err := s.svc.Recheck(ctx)
	if err != nil {
		s.forget(sock)
		return refuseSocket(ctx, closeUnauthorized, reasonOf(err), err)
	}
	if hook := socketAuthenticated.Load(); hook != nil {
		(*hook)(userID)
	}
	// The socket closes when its access token or API key expires.
	exp := account.TokenExpiry(ctx)
	if p.APIKey != nil {
		exp = p.APIKey.ExpiresAt
	}
	if !exp.IsZero() {
		s.mu.Lock() // forget reads it
		sock.expiry = time.AfterFunc(exp.Sub(s.svc.Now()), func() { sock.close(closeUnauthorized, string(model.AuthErrorReasonTokenExpired)) })
		s.mu.Unlock()
	}
	return ctx, nil, nil
}

// notText stands for a credential member of connection_init whose value is neither a string nor
// null: no credential reads it (no Bearer scheme, no API-key prefix), so the rule refuses it
// (INVALID_TOKEN, 4401) instead of the socket going on anonymously.
const notText = "(not a string)"

// payloadCredentials reads the credentials of a connection_init payload as HTTP reads a
// request's headers (http.Header.Values): the member names match case-insensitively, as header
// names do, and every member that matches gives one value, so that "authorization" beside
// "Authorization" is one credential sent twice, which the rule refuses like two credentials. A
// null value is an empty one (no credential, as JavaScript clients send for "signed out").
func payloadCredentials(payload transport.InitPayload) (authorization, apiKey []string) {
	for name, v := range payload {
		var dst *[]string
		switch {
		case strings.EqualFold(name, "Authorization"):
			dst = &authorization
		case strings.EqualFold(name, "X-API-Key"):
			dst = &apiKey
		default:
			continue
		}
		switch v := v.(type) {
		case string:
			*dst = append(*dst, v)
		case nil:
			*dst = append(*dst, "")
		default:
			*dst = append(*dst, notText)
		}
	}
	return authorization, apiKey
}

// socketAuthenticated, when set (by tests only), is called in init once the principal that admits
// a socket has been loaded, before the socket is acknowledged.
var socketAuthenticated atomic.Pointer[func(userID string)]

func refuseSocket(ctx context.Context, code int, reason string, err error) (context.Context, *transport.InitPayload, error) {
	ctx = transport.WithWebsocketCloseCode(ctx, code)
	return transport.AppendCloseReason(ctx, reason), nil, err
}

// reasonOf is the close reason of an authentication error: its AuthErrorReason.
func reasonOf(err error) string {
	var merr *model.Error
	if errors.As(err, &merr) && merr.Reason != "" {
		return string(merr.Reason)
	}
	return string(model.AuthErrorReasonInvalidToken)
}

// Recheck re-authenticates every open socket of the user a committed event is about, and closes
// those whose authority is gone (logout, refresh-token reuse, password change, a disabled account,
// a revoked API key or signing key).
func (s *Sockets) Recheck(e *model.AuditEvent) {
	if e.UserID == nil {
		return
	}
	s.mu.Lock()
	var open []*socket
	for sock := range s.byUser[*e.UserID] {
		open = append(open, sock)
	}
	s.mu.Unlock()
	s.recheck(open)
}

// RecheckAll re-authenticates every open socket: events may have been missed.
func (s *Sockets) RecheckAll() { s.recheck(s.all()) }

func (s *Sockets) all() []*socket {
	s.mu.Lock()
	defer s.mu.Unlock()
	var open []*socket
	for _, set := range s.byUser {
		for sock := range set {
			open = append(open, sock)
		}
	}
	return open
}

// ReverifyAll verifies the access token of every open socket again, after the signing keys were
// reloaded: a socket whose token's key was revoked closes with 4401 INVALID_TOKEN. It asks the
// database nothing.
func (s *Sockets) ReverifyAll() {
	for _, sock := range s.all() {
		if reason := s.svc.VerifyAgain(sock.ctx); reason != "" {
			sock.close(closeUnauthorized, string(reason))
		}
	}
}

func (s *Sockets) recheck(open []*socket) {
	for _, sock := range open {
		go func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(sock.ctx), 5*time.Second)
			defer cancel()
			if _, err := s.svc.Recheck(ctx); err != nil {
				var merr *model.Error
				if errors.As(err, &merr) && merr.Reason != "" {
					sock.close(closeUnauthorized, string(merr.Reason))
				}
			}
		}()
	}
}

// close ends the socket with code and reason (once).
func (sock *socket) close(code int, reason string) {
	if sock.conn == nil || !sock.closed.CompareAndSwap(false, true) {
		return
	}
	sock.conn.WriteClose(code, reason)
	sock.conn.Close()
}

// forget drops a socket from the registry (once).
func (s *Sockets) forget(sock *socket) {
	if sock == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sock.client != "" {
		if s.byIP[sock.client]--; s.byIP[sock.client] <= 0 {
			delete(s.byIP, sock.client)
		}
		sock.client = ""
	}
	if sock.expiry != nil {
		sock.expiry.Stop()
	}
	if set := s.byUser[sock.userID]; set != nil {
		delete(set, sock)
		if len(set) == 0 {
			delete(s.byUser, sock.userID)
		}
	}
}

// socketAuthStat names the operation's credentials among its stats (gqlgen's per-operation store
// for extensions).
const socketAuthStat = "gqlauth.socketOperation"

// operationAuth returns ctx carrying the credentials of the socket operation in it: fresh for
// each operation (account.SocketOperation: the token verified again, the principal loaded by the
// operation itself), made once and kept with the operation, so that the checks before it runs
// (socketGuard) and the run share one principal query.
func (s *Sockets) operationAuth(ctx context.Context) context.Context {
	op := graphql.GetOperationContext(ctx)
	a, ok := op.Stats.GetExtension(socketAuthStat).(*account.SocketOperation)
	if !ok {
		a = s.svc.NewSocketOperation(ctx)
		op.Stats.SetExtension(socketAuthStat, a)
	}
	return a.Context(ctx)
}

// aroundOperation runs an operation sent over a socket with its own credentials, and caps what
// runs at once on the socket: its subscriptions, and its queries and mutations in flight. One
// over a cap gets TOO_MANY_REQUESTS and the socket stays (its other operations are the client's
// own); an operation is in flight until its last response is handed to the transport.
func (s *Sockets) aroundOperation(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	sock, op := socketFrom(ctx), graphql.GetOperationContext(ctx)
	ctx = s.operationAuth(ctx)
	running, limit, what := &sock.queries, s.limits.QueriesPerSocket, "too many queries and mutations in flight on this socket"
	if op.Operation != nil && op.Operation.Operation == ast.Subscription {
		running, limit, what = &sock.subs, s.limits.SubscriptionsPerSocket, "too many subscriptions on this socket"
	}
	if int(running.Add(1)) > limit {
		running.Add(-1)
		return graphql.OneShot(&graphql.Response{Errors: gqlerror.List{{Message: what,
			Extensions: extensions(&model.Error{Code: model.ErrorCodeTooManyRequests, RetryAfter: 1})}}})
	}
	responses := next(ctx)
	var done atomic.Bool
	return func(ctx context.Context) *graphql.Response {
		resp := responses(ctx)
		if resp == nil && done.CompareAndSwap(false, true) {
			running.Add(-1)
		}
		return resp
	}
}

// socketGuard applies to operations sent over a socket what the HTTP endpoint applies to requests
// before gqlgen parses them: the query limits (and with them the fragment-cycle check that keeps
// gqlparser's validator from overflowing its stack) and the trusted-documents rule.
type socketGuard struct{ e *endpoint }

var _ graphql.OperationParameterMutator = socketGuard{}

func (socketGuard) ExtensionName() string                          { return "SocketGuard" }
func (socketGuard) Validate(schema graphql.ExecutableSchema) error { return nil }

func (g socketGuard) MutateOperationParameters(ctx context.Context, raw *graphql.RawParams) *gqlerror.Error {
	if socketFrom(ctx) == nil {
		return nil // an HTTP request: the endpoint checked it already
	}
	ctx = g.e.sockets.operationAuth(ctx) // the trusted-documents rule asks for the caller's role
	// A socket's subscribe payload has no documentId member; clients put it in extensions.
	req := &request{params: raw}
	req.documentID, _ = raw.Extensions["documentId"].(string)
	if _, err := g.e.resolveDocument(ctx, http.MethodPost, req); err != nil {
		return err
	}
	if req.documentID != "" {
		return nil // checked at start
	}
	_, err := g.e.guard.check(ctx, http.MethodPost, raw.Query)
	return err
}

// subscriptionError is err as a subscription's closing error, with the codes of the presenter.
func subscriptionError(err error) *gqlerror.Error {
	var merr *model.Error
	if !errors.As(err, &merr) {
		merr = model.Internal()
	}
	return &gqlerror.Error{Message: merr.Message, Extensions: extensions(merr)}
}
