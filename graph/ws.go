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

	"gqlauth/auth"
	"gqlauth/model"
)

// SocketLimits bound the WebSockets of /query.
type SocketLimits struct {
	PerUser                int           // open sockets of one user
	PerIP                  int           // open sockets from one client IP (before authentication)
	SubscriptionsPerSocket int           // running subscriptions on one socket
	InitTimeout            time.Duration // longest wait for connection_init
	PingInterval           time.Duration // server pings; a client that stops answering is dropped
	MaxMessageBytes        int64         // largest message read from a client
}

// DefaultSocketLimits suit a browser app: a few tabs per user, an office behind one NAT.
func DefaultSocketLimits() SocketLimits {
	return SocketLimits{PerUser: 10, PerIP: 100, SubscriptionsPerSocket: 10, InitTimeout: 10 * time.Second,
		PingInterval: 25 * time.Second, MaxMessageBytes: 64 << 10}
}

// Close codes of a socket whose authority ended (§9), and of one over a cap.
const (
	closeUnauthorized = 4401
	closeTooMany      = 4429
)

// sockets serves the WebSocket side of /query (graphql-transport-ws, through gqlgen's
// transport) and keeps every open socket by user, so that a committed security event about a user
// re-checks that user's sockets and closes those whose session, key or account is gone.
type sockets struct {
	svc     *auth.Service
	tokens  *auth.Tokens
	limits  SocketLimits
	origins map[string]bool
	ws      transport.Websocket

	mu     sync.Mutex
	byUser map[string]map[*socket]struct{}
	byIP   map[string]int
}

// socket is one open WebSocket.
type socket struct {
	ip     string
	conn   transport.WebsocketConn // set when the handshake is accepted
	ctx    context.Context         // the socket's credentials, set by connection_init
	userID string
	expiry *time.Timer
	subs   atomic.Int32
	closed atomic.Bool
}

type socketKey struct{}

func socketFrom(ctx context.Context) *socket {
	s, _ := ctx.Value(socketKey{}).(*socket)
	return s
}

func newSockets(svc *auth.Service, tokens *auth.Tokens, limits SocketLimits, origins []string) *sockets {
	s := &sockets{svc: svc, tokens: tokens, limits: limits, origins: map[string]bool{},
		byUser: map[string]map[*socket]struct{}{}, byIP: map[string]int{}}
	for _, o := range origins {
		s.origins[strings.TrimRight(o, "/")] = true
	}
	readLimit := limits.MaxMessageBytes
	s.ws = transport.Websocket{
		Implementation:   acceptor{transport.CoderWebsocketImplementation{AcceptOptions: websocket.AcceptOptions{InsecureSkipVerify: true}}},
		InitFunc:         s.init,
		InitTimeout:      limits.InitTimeout,
		PingPongInterval: limits.PingInterval,
		PayloadReadLimit: &readLimit,
		CloseFunc:        func(ctx context.Context, _ int) { s.forget(socketFrom(ctx)) },
	}
	svc.Feed().Watch(s.recheckUser)
	svc.Feed().OnResync(s.recheckAll)
	return s
}

// acceptor is gqlgen's coder/websocket adapter that also hands the connection to the socket, so
// that the socket can be closed with the close code of its reason.
type acceptor struct {
	transport.CoderWebsocketImplementation
}

func (a acceptor) Accept(w http.ResponseWriter, r *http.Request, o transport.WebsocketAcceptOptions) (transport.WebsocketConn, error) {
	conn, err := a.CoderWebsocketImplementation.Accept(w, r, o)
	if sock := socketFrom(r.Context()); err == nil && sock != nil {
		sock.conn = conn
	}
	return conn, err
}

// serve upgrades r, after the cross-site check: browsers do not apply CORS to WebSockets, so an
// upgrade from a page on another origin would otherwise ride on the user's network position.
func (s *sockets) serve(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	if origin := r.Header.Get("Origin"); origin != "" && !s.allowedOrigin(origin, r.Host) {
		writeErrors(w, r, mediaJSON, http.StatusForbidden, requestError(model.ErrorCodeForbidden,
			"WebSocket upgrades are accepted from this server's own origin and CORS_ALLOWED_ORIGINS only"))
		return
	}
	ip := auth.ClientIP(r.Context())
	s.mu.Lock()
	if s.byIP[ip] >= s.limits.PerIP {
		s.mu.Unlock()
		writeErrors(w, r, mediaJSON, http.StatusTooManyRequests, requestError(model.ErrorCodeTooManyRequests, "too many open sockets from this address"))
		return
	}
	s.byIP[ip]++
	s.mu.Unlock()
	sock := &socket{ip: ip}
	defer s.forget(sock) // also when the handshake or init never completes
	s.ws.Do(w, r.WithContext(context.WithValue(r.Context(), socketKey{}, sock)), exec)
}

func (s *sockets) allowedOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && (strings.EqualFold(u.Host, host) || s.origins[strings.TrimRight(origin, "/")])
}

// init authenticates connection_init with the rules of the HTTP middleware. Without a credential
// the socket is anonymous (only @public subscriptions run); a bad one closes it with 4401.
func (s *sockets) init(ctx context.Context, payload transport.InitPayload) (context.Context, *transport.InitPayload, error) {
	sock := socketFrom(ctx)
	ctx = auth.SocketContext(ctx, s.tokens, payload.Authorization(), payload.GetString("X-API-Key"))
	if !auth.HasCredentials(ctx) {
		sock.ctx = ctx
		return ctx, nil, nil
	}
	p, err := s.svc.Authenticate(ctx)
	if err != nil {
		return refuseSocket(ctx, closeUnauthorized, reasonOf(err), err)
	}
	s.mu.Lock()
	if len(s.byUser[p.User.ID]) >= s.limits.PerUser {
		s.mu.Unlock()
		return refuseSocket(ctx, closeTooMany, "TOO_MANY_SOCKETS", errors.New("too many open sockets for this user"))
	}
	if s.byUser[p.User.ID] == nil {
		s.byUser[p.User.ID] = map[*socket]struct{}{}
	}
	s.byUser[p.User.ID][sock] = struct{}{}
	sock.ctx, sock.userID = ctx, p.User.ID
	s.mu.Unlock()
	if exp := auth.TokenExpiry(ctx); !exp.IsZero() {
		sock.expiry = time.AfterFunc(exp.Sub(s.svc.Now()), func() { sock.close(closeUnauthorized, string(model.AuthErrorReasonTokenExpired)) })
	}
	return ctx, nil, nil
}

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

// recheckUser re-authenticates every open socket of the user a committed event is about, and
// closes those whose authority is gone (logout, refresh-token reuse, password change, a disabled
// account, a revoked API key or signing key).
func (s *sockets) recheckUser(e *model.AuditEvent) {
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

// recheckAll re-authenticates every open socket: events may have been missed.
func (s *sockets) recheckAll() {
	s.mu.Lock()
	var open []*socket
	for _, set := range s.byUser {
		for sock := range set {
			open = append(open, sock)
		}
	}
	s.mu.Unlock()
	s.recheck(open)
}

func (s *sockets) recheck(open []*socket) {
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
func (s *sockets) forget(sock *socket) {
	if sock == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sock.ip != "" {
		if s.byIP[sock.ip]--; s.byIP[sock.ip] <= 0 {
			delete(s.byIP, sock.ip)
		}
		sock.ip = ""
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

// aroundSubscriptions caps the running subscriptions of a socket.
func (s *sockets) aroundSubscriptions(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	sock, op := socketFrom(ctx), graphql.GetOperationContext(ctx)
	if sock == nil || op == nil || op.Operation == nil || op.Operation.Operation != ast.Subscription {
		return next(ctx)
	}
	if int(sock.subs.Add(1)) > s.limits.SubscriptionsPerSocket {
		sock.subs.Add(-1)
		return graphql.OneShot(&graphql.Response{Errors: gqlerror.List{requestError(model.ErrorCodeTooManyRequests,
			"too many subscriptions on this socket")}})
	}
	responses := next(ctx)
	var done atomic.Bool
	return func(ctx context.Context) *graphql.Response {
		resp := responses(ctx)
		if resp == nil && done.CompareAndSwap(false, true) {
			sock.subs.Add(-1)
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
