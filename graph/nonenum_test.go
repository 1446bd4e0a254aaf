package graph_test

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"gqlauth/store/storetest"
)

// jobs counts the outbox's jobs of a River kind (gqlauth.mail: a message; gqlauth.mail_request:
// a request the sender resolves).
func (s *server) jobs(t testing.TB, kind string) int {
	t.Helper()
	var n int
	if err := s.DB.QueryRow(context.Background(), "SELECT count(*) FROM river_job WHERE kind = '"+kind+"'", &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// requestJobArgs are the stored arguments of the queued requests, oldest first.
func (s *server) requestJobArgs(t testing.TB) []string {
	t.Helper()
	rows, err := s.DB.DumpTable(context.Background(), "river_job")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rows {
		if r["kind"] == "gqlauth.mail_request" {
			out = append(out, r["args"])
		}
	}
	return out
}

// publicMailMutations are the two "always true" mutations that must not tell known addresses
// from unknown ones.
var publicMailMutations = []struct{ name, query string }{
	{"requestPasswordReset", `mutation($e: String!) { requestPasswordReset(email: $e) }`},
	{"requestSignInCode", `mutation($e: String!) { requestSignInCode(email: $e) }`},
}

func (s *server) ask(t testing.TB, query, email string) {
	t.Helper()
	r := s.do(t, call{Query: query, Variables: map[string]any{"e": email}})
	for _, m := range publicMailMutations {
		if m.query == query {
			wantTrue(t, r, m.name)
		}
	}
}

func TestNoEnumeration_KnownAndUnknownAddressesWriteTheSame(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		for _, m := range publicMailMutations {
			// The senders are stopped, so what is measured is the request's own writes.
			s, smtp := mailServer(t, kind, withMailStopped())
			smtp.unfinished = nil // the queued jobs never finish
			s.registerWithEmail(t, "ann", "ann@example.com")
			before := s.snapshot(t) + strings.Repeat("e", s.count(t, "audit_events"))
			s.ask(t, m.query, "ann@example.com") // known
			s.ask(t, m.query, "bob@example.com") // unknown, same length
			args := s.requestJobArgs(t)
			if len(args) != 2 || len(args[0]) != len(args[1]) {
				t.Fatalf("%s: queued requests %q; want two of one length", m.name, args)
			}
			for _, a := range args {
				if strings.Contains(a, "example.com") {
					t.Fatalf("%s: a queued request holds the address in the clear: %s", m.name, a)
				}
			}
			if after := s.snapshot(t) + strings.Repeat("e", s.count(t, "audit_events")); after != before || s.count(t, "mail_tokens") != 0 || s.count(t, "sign_in_codes") != 0 ||
				s.countEvents(t, "PASSWORD_RESET_REQUESTED") != 0 || s.jobs(t, "gqlauth.mail") != 0 {
				t.Fatalf("%s: the request wrote more than its queued job", m.name)
			}
			if got := smtp.quiet(); len(got) != 0 {
				t.Fatalf("%s: %d messages with the senders stopped", m.name, len(got))
			}
		}
	})
}

// mailTimings times samples requests of query for known and for unknown, interleaved in a random
// order within each pair so that drift in the machine's load (and the sender's background work
// for the known address) falls on both alike.
func mailTimings(t *testing.T, s *server, query, known, unknown string, samples int) (k, u []time.Duration) {
	t.Helper()
	for i := range samples {
		order := []string{known, unknown}
		if rand.IntN(2) == 1 || i == 0 {
			order[0], order[1] = order[1], order[0]
		}
		for _, addr := range order {
			start := time.Now()
			s.ask(t, query, addr)
			if d := time.Since(start); addr == known {
				k = append(k, d)
			} else {
				u = append(u, d)
			}
		}
	}
	return k, u
}

// quantile is the q-quantile of ds (nearest rank).
func quantile(ds []time.Duration, q float64) time.Duration {
	s := slices.Sorted(slices.Values(ds))
	return s[min(len(s)-1, int(math.Ceil(q*float64(len(s))))-1)]
}

func TestNoEnumeration_KnownAndUnknownAddressesTakeTheSameTime(t *testing.T) {
	const samples = 60
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		for _, m := range publicMailMutations {
			// A timing test on a shared machine can see one round skewed by load; the two are
			// shown alike when one of three rounds, each on a fresh server, keeps the medians
			// within noise: 3 ms, or a quarter of the median on a machine so loaded that a
			// request takes longer than 12 ms. The known address's work (lookup, token, message,
			// event) happens in the sender, after the answer, so only the background load it adds
			// can show, and it falls on the next request whichever address that asks for.
			for round := 1; ; round++ {
				s, smtp := mailServer(t, kind)
				s.registerWithEmail(t, "ann", "ann@example.com")
				k, u := mailTimings(t, s, m.query, "ann@example.com", "nobody@example.com", samples)
				km, um := quantile(k, 0.5), quantile(u, 0.5)
				t.Logf("%s %s round %d: known p50 %v p99 %v; unknown p50 %v p99 %v", kind, m.name, round, km, quantile(k, 0.99), um, quantile(u, 0.99))
				if len(smtp.waitFor(t, 1)) == 0 {
					t.Fatal("the known address got nothing")
				}
				noise := max(3*time.Millisecond, min(km, um)/4)
				if diff := (km - um).Abs(); diff < noise {
					break
				} else if round == 3 {
					t.Fatalf("%s: in three rounds the medians differed by %v or more (last: known %v, unknown %v)", m.name, noise, km, um)
				}
			}
		}
	})
}
