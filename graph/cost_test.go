package graph_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"gqlauth/account"
	"gqlauth/graph"
	"gqlauth/model"
	"gqlauth/oidc"
	"gqlauth/store/storetest"
)

// What one request may cost (issue 21, item 5): User.identities is loaded for all the users of a
// response at once, and the complexity limit counts a list by the size it asks for.

// reviewRequest is the security review's request: 20 aliases of a full page of the caller's own
// events, each asking for the identities of the event's user and actor.
var reviewRequest = func() string {
	var b strings.Builder
	b.WriteString("{")
	for i := range 20 {
		fmt.Fprintf(&b, " a%d: securityEvents(first: 100) { edges { node { user { identities { provider } } actor { identities { provider } } } } }", i)
	}
	b.WriteString(" }")
	return b.String()
}()

// unlimited lifts the complexity limit, to measure what a request costs when it runs.
func unlimited() graph.QueryLimits {
	l := graph.DefaultQueryLimits()
	l.MaxComplexity = 1 << 30
	return l
}

// seedEvents records n events concerning userID with actorOf(i) as their actor, straight into
// the database (quicker than n sign-ins).
func (s *server) seedEvents(t testing.TB, n int, userID string, actorOf func(i int) string) {
	t.Helper()
	for i := range n {
		actor, user := actorOf(i), userID
		e := &model.AuditEvent{At: time.Now().UTC(), Type: model.AuditEventTypeSignIn, UserID: &user}
		if actor != "" {
			e.ActorID = &actor
		}
		if err := s.DB.RecordStandaloneEvent(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
}

// link gives userID an identity of provider, straight into the database.
func (s *server) link(t testing.TB, userID, provider string) {
	t.Helper()
	id := &model.Identity{Provider: provider, Subject: "sub-" + userID, UserID: userID, LinkedAt: time.Now().UTC()}
	if err := s.DB.CreateIdentity(context.Background(), id); err != nil {
		t.Fatal(err)
	}
}

func TestIdentities_ReviewRequestCostsOneIdentityQuery(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind, withQueryLimits(unlimited()))
		alice := s.signedInUser(t, "alice")
		s.link(t, alice.User.ID, "corp")
		s.seedEvents(t, 100, alice.User.ID, func(int) string { return alice.User.ID })

		s.Queries.n.Store(0)
		r := s.query(t, alice.AccessToken, reviewRequest, nil)
		got := s.Queries.n.Load()
		t.Logf("%s: the review's request made %d database queries", kind, got)
		var page struct {
			Edges []struct {
				Node struct {
					User  struct{ Identities []struct{ Provider string } }
					Actor struct{ Identities []struct{ Provider string } }
				}
			}
		}
		r.field(t, "a19", &page)
		if len(page.Edges) != 100 || len(page.Edges[99].Node.User.Identities) != 1 || page.Edges[99].Node.Actor.Identities[0].Provider != "corp" {
			t.Fatalf("page: %d edges, last %+v", len(page.Edges), page.Edges[len(page.Edges)-1])
		}
		// One for the caller, two per page (its events, then their users), one for every identity
		// of the response.
		if want := int64(1 + 20*2 + 1); got != want {
			t.Fatalf("%d database queries, want %d", got, want)
		}
	})
}

// seedUsers creates n users straight in the database (no bcrypt, no rate limit), every other one
// with an identity of corp, and returns their ids.
func (s *server) seedUsers(t testing.TB, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		u := &model.User{ID: uuid.Must(uuid.NewV7()).String(), Username: fmt.Sprintf("user%03d", i), Role: model.RoleUser, CreatedAt: time.Now().UTC()}
		if err := s.DB.CreateUser(context.Background(), u); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			s.link(t, u.ID, "corp")
		}
		ids[i] = u.ID
	}
	return ids
}

func TestIdentities_AdminPageOfManyUsersCostsOneIdentityQuery(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind, withQueryLimits(unlimited()))
		admin := s.signedInAdmin(t)
		users := s.seedUsers(t, 99)
		for i, id := range users {
			// Half of the events are the user's own doing, half an admin's.
			s.seedEvents(t, 1, id, func(int) string { return []string{id, admin.User.ID}[i%2] })
		}
		for _, c := range []struct {
			name, query string
			queries     int64 // besides the caller's one
			waves       int64 // identity queries beyond one that concurrent root fields may add
		}{
			{"users", `{ users(limit: 100) { id identities { provider } } }`, 1 + 1, 0},
			{"auditEvents", `{ auditEvents(first: 100) { edges { node { user { id identities { provider } } actor { id identities { provider } } } } } }`, 2 + 1, 0},
			{"a fragment", `{ users(limit: 100) { ...I } } fragment I on User { id identities { provider } }`, 1 + 1, 0},
			// Root fields of a query resolve concurrently: one that returns its users after a load
			// has started adds one load of its own.
			{"two root fields", `{ users(limit: 100) { ...I } me { ...I } } fragment I on User { id identities { provider } }`, 1 + 1, 1},
		} {
			t.Run(c.name, func(t *testing.T) {
				s.Queries.n.Store(0)
				r := s.query(t, admin.AccessToken, c.query, nil)
				// The caller's one may be answered by the principal cache.
				if got := s.Queries.n.Load(); got < c.queries || got > 1+c.queries+c.waves {
					t.Fatalf("%d database queries, want %d (up to %d more, one fewer from the principal cache)", got, 1+c.queries, c.waves)
				}
				// Every user's own identities, none mixed up: user%03d with an even number has corp.
				linked := 0
				for _, id := range users {
					if strings.Contains(string(r.Data["users"])+string(r.Data["auditEvents"]), `"id":"`+id+`","identities":[{"provider":"corp"}]`) {
						linked++
					}
				}
				if linked != 50 {
					t.Fatalf("%d users shown with their identity, want 50: %s", linked, r.Data)
				}
			})
		}
	})
}

func TestComplexity_ListsCountByTheSizeTheyAsk(t *testing.T) {
	limits := graph.DefaultQueryLimits()
	limits.MaxComplexity = 100
	names := []oidc.Provider{{Name: "a"}, {Name: "b"}, {Name: "c"}} // three providers: up to three identities a user
	s := newServer(t, storetest.SQLite, withQueryLimits(limits), withOIDC(func(publicURL string) oidc.Config {
		return oidc.Config{Providers: names, PublicURL: publicURL}
	}))
	admin := s.signedInAdmin(t)
	for _, c := range []struct {
		name, query string
		vars        map[string]any
		complexity  int // 1 per field plus its selection; a list field 1 plus items × its selection
	}{
		{"users by limit", `{ users(limit: 60) { id username } }`, nil, 1 + 60*2},
		{"users by its default limit", `{ users { id username } }`, nil, 1 + 50*2},
		{"users capped at 100", `{ users(limit: 5000) { id } }`, nil, 1 + 100},
		// limit 0 answers [] and is counted as one item, never as none (nor is a negative limit).
		{"users with limit 0 as one", `{ users(limit: 0) { ` + identitiesTimes(8) + ` } }`, nil, 1 + 1*8*(1+3*4)},
		{"users with a negative limit as one", `query($n: Int!) { users(limit: $n) { ` + identitiesTimes(8) + ` } }`, map[string]any{"n": -1}, 1 + 1*8*(1+3*4)},
		{"securityEvents with first 0 as one", `{ securityEvents(first: 0) { edges { node { user { ` + identitiesTimes(8) + ` } } } } }`, nil, 1 + 1*(1+1+1+8*(1+3*4))},
		{"users by a variable", `query($n: Int!) { users(limit: $n) { id } }`, map[string]any{"n": 30}, 1 + 30},
		{"users by a variable over the limit", `query($n: Int!) { users(limit: $n) { id } }`, map[string]any{"n": 100}, 1 + 100},
		{"securityEvents by first", `{ securityEvents(first: 30) { edges { cursor } pageInfo { hasNextPage } } }`, nil, 1 + 30*(2+2)},
		{"securityEvents by a variable", `query($f: Int!) { securityEvents(first: $f) { edges { cursor } } }`, map[string]any{"f": 60}, 1 + 60*2},
		{"auditEvents by its default first", `{ auditEvents { edges { cursor } } }`, nil, 1 + 50*2},
		{"auditEvents capped at 100", `{ auditEvents(first: 1000) { edges { cursor } } }`, nil, 1 + 100*2},
		{"nested lists multiply", `{ auditEvents(first: 10) { edges { node { user { identities { provider } } } } } }`, nil, 1 + 10*(1+1+1+(1+3*1))},
		{"identities by the providers", `{ me { id identities { provider subject email linkedAt } } }`, nil, 1 + 1 + (1 + 3*4)},
		{"sessions as 50", `{ sessions { id current } }`, nil, 1 + 50*2},
		{"apiKeys by the keys a user may have", `{ apiKeys { id name } }`, nil, 1 + account.MaxAPIKeysPerUser*2},
		{"signingKeys as 50", `{ signingKeys { kid alg } }`, nil, 1 + 50*2},
		{"aliases add up", `{ a: users(limit: 40) { id } b: users(limit: 40) { id } c: users(limit: 40) { id } }`, nil, 3 * (1 + 40)},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := s.do(t, call{Query: c.query, Variables: c.vars, Token: admin.AccessToken})
			if c.complexity <= limits.MaxComplexity {
				if len(r.Errors) > 0 {
					t.Fatalf("complexity %d is within %d, yet: %+v", c.complexity, limits.MaxComplexity, r.Errors)
				}
				return
			}
			e := r.wantError(t, "GRAPHQL_VALIDATION_FAILED", "")
			if want := fmt.Sprintf("operation has complexity %d; at most 100 is allowed", c.complexity); e.Message != want || r.HasData && r.Data != nil {
				t.Fatalf("got %q (data %s), want %q", e.Message, r.Data, want)
			}
		})
	}
}

func TestComplexity_ReviewRequestIsRefusedBeforeItRuns(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind) // the default limits
		alice := s.signedInUser(t, "alice")
		s.seedEvents(t, 100, alice.User.ID, func(int) string { return alice.User.ID })
		s.Queries.n.Store(0)
		r := s.do(t, call{Query: reviewRequest, Token: alice.AccessToken})
		e := r.wantError(t, "GRAPHQL_VALIDATION_FAILED", "")
		// Per alias: 1 + 100 × (edges 1 + node 1 + 2 × (user 1 + identities (1 + 1 × provider 1))).
		if want := fmt.Sprintf("operation has complexity %d; at most %d is allowed", 20*(1+100*(2+2*3)), graph.DefaultQueryLimits().MaxComplexity); e.Message != want {
			t.Fatalf("message %q, want %q", e.Message, want)
		}
		if r.Data != nil || len(e.Path) > 0 {
			t.Fatalf("a request error has no data and no path: data %s, path %v", r.Data, e.Path)
		}
		if n := s.Queries.n.Load(); n != 0 {
			t.Fatalf("%d database queries for a refused request, want 0", n)
		}
		// Six of those pages fit the limit, and cost one query for all their identities.
		six := strings.Join(strings.SplitAfterN(reviewRequest, "} } } } }", 7)[:6], "") + " }"
		r = s.query(t, alice.AccessToken, six, nil)
		if len(r.Data) != 6 {
			t.Fatalf("six aliases: %d fields", len(r.Data))
		}
		if n := s.Queries.n.Load(); n != 1+6*2+1 && n != 6*2+1 { // the caller's may come from the principal cache
			t.Fatalf("six aliases: %d database queries, want %d", n, 1+6*2+1)
		}
	})
}

// identitiesTimes is a selection of n aliased identities fields, each with its four fields.
func identitiesTimes(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "i%d: identities { provider subject email linkedAt } ", i)
	}
	return b.String()
}
