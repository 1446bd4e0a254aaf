package graph_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"gqlauth/graph"
	"gqlauth/mfa"
	"gqlauth/store/storetest"
	"gqlauth/web"
)

// meWide is one request with eleven guarded fields.
var meWide = func() string {
	var b strings.Builder
	b.WriteString("{ me { id username role }")
	for i := range 10 {
		fmt.Fprintf(&b, " m%d: me { id }", i)
	}
	b.WriteString(" }")
	return b.String()
}()

// BenchmarkGuardedRequest is a whole guarded GraphQL request over HTTP: middleware, guard,
// gqlgen, the directive's one user/session query and the response. The me-wide variant shows the
// query is paid once per request, not per field.
func BenchmarkGuardedRequest(b *testing.B) {
	for _, kind := range storetest.Kinds(b) {
		for name, query := range map[string]string{"me": `{ me { id username role } }`, "me-wide": meWide} {
			b.Run(string(kind)+"/"+name, func(b *testing.B) {
				s := newServer(b, kind)
				alice := s.signedInUser(b, "alice")
				c := call{Query: query, Token: alice.AccessToken}
				b.ReportAllocs()
				for b.Loop() {
					if r := s.do(b, c); len(r.Errors) > 0 {
						b.Fatal(r.Errors)
					}
				}
			})
		}
	}
}

// BenchmarkRefreshRotation is one refresh end to end: the row lock, the rotation and a new pair.
func BenchmarkRefreshRotation(b *testing.B) {
	for _, kind := range storetest.Kinds(b) {
		b.Run(string(kind), func(b *testing.B) {
			s := newServer(b, kind)
			refresh := s.signedInUser(b, "alice").RefreshToken
			b.ReportAllocs()
			for b.Loop() {
				r := s.do(b, call{Query: `mutation($r: String) { refresh(refreshToken: $r) { refreshToken } }`, Variables: map[string]any{"r": refresh}})
				var p tokens
				r.field(b, "refresh", &p)
				refresh = p.RefreshToken
			}
		})
	}
}

// BenchmarkTrustedDocument compares one guarded me sent as free-form text with the same
// operation sent by documentId, on one server. Both hit warm caches; the trusted one skips the
// limits guard's cache lookup of the text and never needs parsing or validation at all.
func BenchmarkTrustedDocument(b *testing.B) {
	path, ids := manifest(b, meDocument)
	s := newServer(b, storetest.SQLite, withTrustedDocuments(trustedDocuments(b, path, false)))
	alice := s.signedInUser(b, "alice")
	for name, body := range map[string]string{
		"free-form": `{"query":` + strconv.Quote(meDocument) + `}`,
		"trusted":   `{"documentId":"` + ids[0] + `"}`,
	} {
		b.Run(name, func(b *testing.B) {
			x := exchange{body: body, token: alice.AccessToken}
			b.ReportAllocs()
			for b.Loop() {
				if r := s.exchange(b, x); len(r.Errors) > 0 {
					b.Fatal(r.Errors)
				}
			}
		})
	}
}

// BenchmarkGuardedRequestByAlgorithm is BenchmarkGuardedRequest's me with HS256 and with ES256
// keys. A client sends one token for its whole lifetime, so after the first request its
// verification is a cache hit whatever the algorithm; the difference is the key-revocation check
// on each hit.
func BenchmarkGuardedRequestByAlgorithm(b *testing.B) {
	for _, alg := range []string{"HS256", "ES256"} {
		b.Run(alg, func(b *testing.B) {
			var opts []option
			if alg != "HS256" {
				opts = append(opts, withJWTAlg(alg, time.Minute, 0))
			}
			s := newServer(b, storetest.SQLite, opts...)
			alice := s.signedInUser(b, "alice")
			c := call{Query: `{ me { id username role } }`, Token: alice.AccessToken}
			b.ReportAllocs()
			for b.Loop() {
				if r := s.do(b, c); len(r.Errors) > 0 {
					b.Fatal(r.Errors)
				}
			}
		})
	}
}

// BenchmarkSockets_1000Idle holds 1,000 idle authenticated sockets (1,000 users) on one
// server and reports the memory they take (server and client sides together, as both run in this
// process: an upper bound for the server's share) and how long after a logout its socket is closed.
// Each iteration logs one session out. On Postgres the close travels through LISTEN/NOTIFY.
func BenchmarkSockets_1000Idle(b *testing.B) {
	for _, kind := range storetest.Kinds(b) {
		b.Run(string(kind), func(b *testing.B) { benchmarkIdleSockets(b, kind) })
	}
}

func benchmarkIdleSockets(b *testing.B, kind storetest.Kind) {
	limits := graph.DefaultSocketLimits()
	limits.PerUser, limits.PerIP = 2000, 2000
	s := newServer(b, kind, withSocketLimits(limits))
	const n = 1000
	sessions := make([]tokens, n)
	for i := range sessions {
		sessions[i] = s.signedInUser(b, fmt.Sprintf("user%04d", i))
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	goroutines := runtime.NumGoroutine()
	socks := make([]*liveSocket, n)
	for i, p := range sessions {
		socks[i], _ = s.dialSocket(b, "", bearer(p.AccessToken))
		socks[i].acked(b)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perSocket := float64(after.HeapInuse-before.HeapInuse) / n
	perSocketGoroutines := float64(runtime.NumGoroutine()-goroutines) / n

	var total time.Duration
	i := 0
	for b.Loop() {
		p, sock := sessions[i%n], socks[i%n]
		i++
		if i > n {
			b.Skip("more iterations than sockets")
		}
		start := time.Now()
		s.query(b, p.AccessToken, `mutation { logout }`, nil)
		sock.wantClosed(b, time.Second, 4401, "SESSION_REVOKED")
		total += time.Since(start)
	}
	b.ReportMetric(float64(total.Microseconds())/float64(max(i, 1))/1000, "ms-logout-to-close")
	b.ReportMetric(perSocket, "heap-B/socket")
	b.ReportMetric(perSocketGoroutines, "goroutines/socket")
}

// BenchmarkHandler is the handler alone, as server.go builds it (request log formatted and
// discarded, metrics), called without a network: the per-request CPU that gqlauth adds.
func BenchmarkHandler(b *testing.B) {
	s := newServer(b, storetest.SQLite)
	alice := s.signedInUser(b, "alice")
	log := slog.New(graph.NewLogHandler(io.Discard, false, nil, nil))
	handler := func(access graph.AccessLog) http.Handler {
		h, err := graph.NewHandler(&graph.Resolver{Account: s.Service}, graph.Options{Logger: log, Metrics: graph.NewMetrics(prometheus.NewRegistry(), nil), AccessLog: access})
		if err != nil {
			b.Fatal(err)
		}
		return web.Credentials(s.Tokens, web.CredentialOptions{})(h)
	}
	logged, quiet := handler(graph.AccessLogAll), handler(graph.AccessLogOff)
	for _, c := range []struct {
		name, query, token string
		h                  http.Handler
	}{
		{"typename", `{ __typename }`, "", logged},
		{"typename/ACCESS_LOG=off", `{ __typename }`, "", quiet},
		{"me", `{ me { id username role } }`, alice.AccessToken, logged},
		{"me/ACCESS_LOG=off", `{ me { id username role } }`, alice.AccessToken, quiet},
		{"me-wide", meWide, alice.AccessToken, logged},
	} {
		h := c.h
		b.Run(c.name, func(b *testing.B) {
			body, _ := json.Marshal(map[string]any{"query": c.query})
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/query", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				if c.token != "" {
					req.Header.Set("Authorization", "Bearer "+c.token)
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK || bytes.Contains(rec.Body.Bytes(), []byte(`"errors"`)) {
					b.Fatal(rec.Body.String())
				}
			}
		})
	}
}

// BenchmarkWideQuery is the handler alone (as BenchmarkHandler, ACCESS_LOG=off) with 1, 11 and 20
// guarded root fields in one request (20 is the most DefaultQueryLimits allow): how the cost of a
// request grows with its fields. Its allocs/op is exact where the time is noisy on a shared
// machine: (allocs at 20 − allocs at 11) / 9 is the allocations of one more `mN: me { id }`.
func BenchmarkWideQuery(b *testing.B) {
	s := newServer(b, storetest.SQLite)
	alice := s.signedInUser(b, "alice")
	h, err := graph.NewHandler(&graph.Resolver{Account: s.Service}, graph.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), AccessLog: graph.AccessLogOff})
	if err != nil {
		b.Fatal(err)
	}
	handler := web.Credentials(s.Tokens, web.CredentialOptions{})(h)
	for _, fields := range []int{1, 11, 20} {
		var q strings.Builder
		q.WriteString("{ me { id username role }")
		for i := range fields - 1 {
			fmt.Fprintf(&q, " m%d: me { id }", i)
		}
		q.WriteString(" }")
		body, _ := json.Marshal(map[string]any{"query": q.String()})
		b.Run(fmt.Sprintf("fields=%d", fields), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/query", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
				rec := httptest.NewRecorder()
				handler.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK || bytes.Contains(rec.Body.Bytes(), []byte(`"errors"`)) {
					b.Fatal(rec.Body.String())
				}
			}
		})
	}
}

// BenchmarkVerifyMfa is the second step end to end over HTTP: the TOTP check against the
// candidate steps, the compare-and-set of the accepted step, the session raised and a new token
// pair. Each iteration moves the clock one time step on (a step is accepted once). It reports
// the p50 and p99 of the calls as well as the mean.
func BenchmarkVerifyMfa(b *testing.B) {
	for _, kind := range storetest.Kinds(b) {
		b.Run(string(kind), func(b *testing.B) {
			s := newServer(b, kind)
			alice := s.signedInUser(b, "alice")
			secret, _ := s.enrolTotp(b, alice.AccessToken)
			token := s.loginMFA(b, "alice").AccessToken
			var took []time.Duration
			for b.Loop() {
				s.Clock.Advance(mfa.Period * time.Second)
				code := totpCode(b, secret, s.Clock.Now())
				start := time.Now()
				r := s.verifyMfa(b, token, code)
				took = append(took, time.Since(start))
				if len(r.Errors) > 0 {
					b.Fatal(r.Errors)
				}
				var p mfaPayload
				r.field(b, "verifyMfa", &p)
				token = p.AccessToken
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(took[len(took)*99/100].Microseconds()), "p99-µs")
		})
	}
}
