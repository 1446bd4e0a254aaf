package graph_test

import (
	"context"
	"fmt"
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

// slowerKnown counts the pairs (the ith sample of each, taken one right after the other) in which
// the known address took longer.
func slowerKnown(k, u []time.Duration) int {
	n := 0
	for i := range k {
		if k[i] > u[i] {
			n++
		}
	}
	return n
}

func TestNoEnumeration_KnownAndUnknownAddressesTakeTheSameTime(t *testing.T) {
	// samples pairs per mutation; a pair's two requests go one right after the other, in a random
	// order, so that drift in the machine's load falls on both alike. Under -race a request on
	// SQLite takes 50-100 ms and its median wanders by a factor of two from round to round: fewer
	// pairs, and only the sign test (below) judges them.
	samples, lo, hi := 40, 12, 28
	if raceDetector {
		samples, lo, hi = 20, 5, 15
	}
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		// Two checks per mutation, each tolerant of a loaded machine:
		//   - a sign test over the pairs: if the two take the same time, the known address is the
		//     slower one in about half the pairs (binomial: sd 3.2 of 40 pairs, 2.2 of 20); 12-28
		//     of 40 (5-15 of 20) is within 2.5 (2.2) sd. A cost of the known address that shows
		//     (doing the lookup, token and event in the request: 0.5 ms more on SQLite, 7 ms on
		//     Postgres at the median) makes it the slower one in nearly every pair;
		//   - without -race, the medians within 1 ms, or within half the median when a request
		//     takes longer than 2 ms (a loaded machine).
		// One of three rounds, each on a fresh server, must pass both for both mutations.
		for round := 1; ; round++ {
			s, smtp := mailServer(t, kind)
			s.registerWithEmail(t, "ann", "ann@example.com")
			var failed []string
			for _, m := range publicMailMutations {
				k, u := mailTimings(t, s, m.query, "ann@example.com", "nobody@example.com", samples)
				km, um, slower := quantile(k, 0.5), quantile(u, 0.5), slowerKnown(k, u)
				t.Logf("%s %s round %d: known p50 %v p99 %v; unknown p50 %v p99 %v; known slower in %d of %d pairs",
					kind, m.name, round, km, quantile(k, 0.99), um, quantile(u, 0.99), slower, samples)
				medians := (km-um).Abs() < max(time.Millisecond, min(km, um)/2) || raceDetector
				if !medians || slower < lo || slower > hi {
					failed = append(failed, fmt.Sprintf("%s: known %v, unknown %v, known slower in %d of %d", m.name, km, um, slower, samples))
				}
			}
			if len(smtp.waitFor(t, 1)) == 0 {
				t.Fatal("the known address got nothing")
			}
			if len(failed) == 0 {
				break
			} else if round == 3 {
				t.Fatalf("in three rounds known and unknown addresses took measurably different times; last round: %v", failed)
			}
		}
	})
}
