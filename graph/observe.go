package graph

import (
	"context"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vektah/gqlparser/v2/ast"

	"gqlauth/account"
	"gqlauth/model"
)

// Metrics are the server's Prometheus metrics.
type Metrics struct {
	requests     *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	authFailures *prometheus.CounterVec
	rateLimited  prometheus.Counter

	// byLabels holds the children of requests and latency already resolved, by their labels:
	// WithLabelValues checks and hashes its labels on every call. Copied on write (a new root
	// field or outcome: a few dozen over the process's life), so a request reads it without a lock.
	byLabels   atomic.Pointer[map[requestLabels]*requestMetrics]
	byLabelsMu sync.Mutex
}

// requestLabels are the labels of a request's metrics; both are bounded (the schema's root
// fields, the error codes).
type requestLabels struct{ field, outcome string }

type requestMetrics struct {
	count   prometheus.Counter
	latency prometheus.Observer
}

// observeRequest counts a request and its latency.
func (m *Metrics) observeRequest(field, outcome string, elapsed time.Duration) {
	if m == nil {
		return
	}
	key := requestLabels{field, outcome}
	var rm *requestMetrics
	if p := m.byLabels.Load(); p != nil {
		rm = (*p)[key]
	}
	if rm == nil {
		rm = m.resolve(key)
	}
	rm.count.Inc()
	rm.latency.Observe(elapsed.Seconds())
}

// resolve resolves the children of key once, and publishes them in a new copy of byLabels.
func (m *Metrics) resolve(key requestLabels) *requestMetrics {
	m.byLabelsMu.Lock()
	defer m.byLabelsMu.Unlock()
	old := map[requestLabels]*requestMetrics{}
	if p := m.byLabels.Load(); p != nil {
		old = *p
	}
	if rm := old[key]; rm != nil {
		return rm
	}
	rm := &requestMetrics{count: m.requests.WithLabelValues(key.field, key.outcome), latency: m.latency.WithLabelValues(key.field)}
	next := make(map[requestLabels]*requestMetrics, len(old)+1)
	maps.Copy(next, old)
	next[key] = rm
	m.byLabels.Store(&next)
	return rm
}

// NewMetrics registers the metrics with reg. queueDepth, if not nil, reports how many password
// operations wait for a bcrypt worker.
func NewMetrics(reg prometheus.Registerer, queueDepth func() int64) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gqlauth_graphql_requests_total",
			Help: "GraphQL requests by operation (the first root field) and outcome (ok or the first error code).",
		}, []string{"operation", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gqlauth_graphql_request_duration_seconds",
			Help:    "GraphQL request latency by operation (the first root field).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"operation"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gqlauth_auth_failures_total",
			Help: "Auth failures by reason (errors[].extensions.reason).",
		}, []string{"reason"}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gqlauth_rate_limited_total",
			Help: "Operations refused with TOO_MANY_REQUESTS (rate limits and a full bcrypt queue).",
		}),
	}
	reg.MustRegister(m.requests, m.latency, m.authFailures, m.rateLimited)
	if queueDepth != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gqlauth_bcrypt_queue_depth",
			Help: "Password operations waiting for a bcrypt worker.",
		}, func() float64 { return float64(queueDepth()) }))
	}
	return m
}

// observeError counts an error shown to a client.
func (m *Metrics) observeError(e *model.Error) {
	if m == nil {
		return
	}
	if e.Reason != "" {
		m.authFailures.WithLabelValues(string(e.Reason)).Inc()
	}
	if e.Code == model.ErrorCodeTooManyRequests {
		m.rateLimited.Inc()
	}
}

// requestInfo is filled in while a request is served and logged when it ends. It is also the
// request's context (its parent's values and cancellation, and itself under requestInfoKey), its
// status-recording ResponseWriter and the X-Request-Id header's value: one allocation per request
// where a context.WithValue, a writer, a header slice and the record were four.
type requestInfo struct {
	context.Context
	id        string
	operation string // the client's operation name, for logs
	rootField string // the first root field, for metrics (bounded by the schema)
	errorCode string // the first error code of the response
	sw        statusWriter
	idHeader  [1]string
}

type requestInfoKey struct{}

// Value is the parent's, with the request's info under requestInfoKey. Other keys go to the
// parent, so context.WithCancel below finds the parent's cancelCtx and starts no goroutine.
func (info *requestInfo) Value(key any) any {
	if _, ok := key.(requestInfoKey); ok {
		return info
	}
	return info.Context.Value(key)
}

func infoFrom(ctx context.Context) *requestInfo {
	info, _ := ctx.Value(requestInfoKey{}).(*requestInfo)
	return info
}

// RequestID returns the id of the request in ctx, or "".
func RequestID(ctx context.Context) string {
	if info := infoFrom(ctx); info != nil {
		return info.id
	}
	return ""
}

// AccessLog says which requests get a log line (ACCESS_LOG).
type AccessLog string

const (
	AccessLogAll    AccessLog = "all"    // every request
	AccessLogErrors AccessLog = "errors" // requests that ended with an error (any error code, or a status ≥ 400)
	AccessLogOff    AccessLog = "off"    // none; metrics still count every request
)

// observe gives each request an id (also sent back as X-Request-Id), and when it ends writes one
// log line (as accessLog says) and the metrics: id, operation, duration, status, user id. Never a
// token or password: it logs nothing from the request body but the operation name.
func observe(log *slog.Logger, metrics *Metrics, accessLog AccessLog, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		// Not a secret, only unique in practice: math/rand/v2's generator costs no system call.
		info := &requestInfo{Context: r.Context(), id: requestID(rand.Uint64())}
		info.idHeader[0] = info.id
		w.Header()["X-Request-Id"] = info.idHeader[:] // the canonical key, set without a lookup
		info.sw = statusWriter{ResponseWriter: w, status: http.StatusOK}
		r = r.WithContext(info)
		next.ServeHTTP(&info.sw, r)

		elapsed := time.Since(start)
		outcome := info.errorCode
		if outcome == "" {
			outcome = "ok"
		}
		if info.rootField == "" {
			info.rootField = "none"
		}
		metrics.observeRequest(info.rootField, outcome, elapsed)
		status := info.sw.status
		if accessLog == AccessLogOff || (accessLog == AccessLogErrors && outcome == "ok" && status < 400) {
			return
		}
		h := log.Handler()
		if !h.Enabled(r.Context(), slog.LevelInfo) {
			return
		}
		// As log.LogAttrs does, without the caller's program counter (runtime.Callers on every
		// request) that no handler of ours shows. Empty attributes are left out: each one costs
		// formatting on every request.
		line := accessLine{time: start.Add(elapsed), method: r.Method, operation: info.operation,
			field: info.rootField, status: status, outcome: outcome, duration: elapsed, user: account.CallerID(r.Context())}
		if ids, ok := h.(requestIDHandler); ok {
			// What requestIDHandler would add, added here without its context lookup.
			h, line.requestID = ids.Handler, info.id
			if ids.lines != nil && ids.lines.write(&line) {
				return
			}
		}
		h.Handle(r.Context(), line.record())
	})
}

// requestID is n as 16 lower-case hex digits.
func requestID(n uint64) string {
	const digits = "0123456789abcdef"
	var b [16]byte
	for i := 15; i >= 0; i-- {
		b[i] = digits[n&0xf]
		n >>= 4
	}
	return string(b[:])
}

// aroundOperations records the operation for the request log and metrics.
func aroundOperations(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	if socketFrom(ctx) != nil {
		return next(ctx) // a socket's operations run side by side; its request was logged at upgrade
	}
	if info, op := infoFrom(ctx), graphql.GetOperationContext(ctx); info != nil && op != nil && op.Operation != nil {
		info.operation = truncateName(op.OperationName)
		for _, sel := range op.Operation.SelectionSet {
			if f, ok := sel.(*ast.Field); ok {
				info.rootField = f.Name
				break
			}
		}
	}
	return next(ctx)
}

// aroundResponses records the first error code of the response for the request log and metrics.
// It runs once per response, after every field has been resolved.
func aroundResponses(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	resp := next(ctx)
	if socketFrom(ctx) != nil {
		return resp
	}
	if info := infoFrom(ctx); info != nil && resp != nil && len(resp.Errors) > 0 && info.errorCode == "" {
		info.errorCode = asString(resp.Errors[0].Extensions["code"])
	}
	return resp
}

func truncateName(s string) string {
	if len(s) > 64 {
		return s[:64]
	}
	return s
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// InRequest says whether ctx is that of a GraphQL request (one with a request id).
func InRequest(ctx context.Context) bool { return infoFrom(ctx) != nil }

// LogHandler wraps h so that every record logged with a request's context carries its request id.
func LogHandler(h slog.Handler) slog.Handler { return requestIDHandler{Handler: h} }

type requestIDHandler struct {
	slog.Handler
	lines *accessLines // where observe may write access lines itself (see NewLogHandler), or nil
}

func (h requestIDHandler) Handle(ctx context.Context, r slog.Record) error {
	if id := RequestID(ctx); id != "" {
		r.AddAttrs(slog.String("request_id", id))
	}
	return h.Handler.Handle(ctx, r)
}

func (h requestIDHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	return requestIDHandler{Handler: h.Handler.WithAttrs(attrs)} // lines has not got the attributes
}

func (h requestIDHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return requestIDHandler{Handler: h.Handler.WithGroup(name)}
}

var (
	noStore    = []string{"no-store"}
	noCache    = []string{"no-cache"}
	noSniff    = []string{"nosniff"}
	noReferrer = []string{"no-referrer"}
)

// securityHeaders are sent on every GraphQL response: responses carry tokens and personal data,
// so no cache may keep them, and browsers must not sniff them into something else.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Canonical keys and shared values, set without Header.Set's lookup and allocation (Set,
		// Add and Del replace a value slice, never write into it).
		h := w.Header()
		h["Cache-Control"], h["Pragma"] = noStore, noCache
		h["X-Content-Type-Options"], h["Referrer-Policy"] = noSniff, noReferrer
		next.ServeHTTP(w, r)
	})
}
