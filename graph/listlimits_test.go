package graph_test

import (
	"testing"

	"gqlauth/store/storetest"
)

// Every list field whose size the caller chooses, asked for 0 or fewer items: `users(limit: 0)`
// answers [] (Bun reads Limit(0) as no LIMIT at all, which answered every user), a negative
// limit is BAD_USER_INPUT on `limit`, and a connection's `first` must be at least 1
// (BAD_USER_INPUT on `first`). None of them reads a row beyond the caller's.
func TestLists_SizeZeroAnswersNothingAndNegativeIsBadInput(t *testing.T) {
	cases := []struct {
		name  string
		query string
		vars  map[string]any
		field string // "": answers an empty list
	}{
		{"UsersLimitZero", `{ users(limit: 0) { id } }`, nil, ""},
		{"UsersLimitZeroWithOffset", `{ users(limit: 0, offset: 1) { id } }`, nil, ""},
		{"UsersLimitZeroByVariable", `query($n: Int!) { users(limit: $n) { id } }`, map[string]any{"n": 0}, ""},
		{"UsersLimitNegative", `{ users(limit: -1) { id } }`, nil, "limit"},
		{"UsersOffsetNegative", `{ users(limit: 0, offset: -1) { id } }`, nil, "offset"},
		{"AuditEventsFirstZero", `{ auditEvents(first: 0) { edges { cursor } } }`, nil, "first"},
		{"AuditEventsFirstNegative", `query($n: Int!) { auditEvents(first: $n) { edges { cursor } } }`, map[string]any{"n": -5}, "first"},
		{"SecurityEventsFirstZero", `{ securityEvents(first: 0) { edges { cursor } } }`, nil, "first"},
		{"SecurityEventsFirstNegative", `{ securityEvents(first: -1) { edges { cursor } } }`, nil, "first"},
	}
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		admin := s.signedInAdmin(t)
		for _, name := range []string{"alice", "bob", "carol"} {
			s.signedInUser(t, name)
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				s.Queries.n.Store(0)
				r := s.do(t, call{Query: c.query, Variables: c.vars, Token: admin.AccessToken})
				if c.field != "" {
					if e := r.wantError(t, "BAD_USER_INPUT", ""); e.Extensions.Field != c.field {
						t.Fatalf("field %q, want %q", e.Extensions.Field, c.field)
					}
				} else {
					var users []user
					if len(r.Errors) > 0 {
						t.Fatalf("errors: %+v", r.Errors)
					}
					if r.field(t, "users", &users); users == nil || len(users) != 0 {
						t.Fatalf("users: %s, want []", r.Data["users"])
					}
				}
				if n := s.Queries.n.Load(); n > 1 { // the caller's (0 from the principal cache), and nothing more
					t.Fatalf("%d database queries, want at most 1", n)
				}
			})
		}
	})
}
