package graph_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"gqlauth/graph"
	"gqlauth/model"
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
		if err := s.DB.RecordEvent(context.Background(), e); err != nil {
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
				if got := s.Queries.n.Load(); got < 1+c.queries || got > 1+c.queries+c.waves {
					t.Fatalf("%d database queries, want %d (up to %d more)", got, 1+c.queries, c.waves)
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
