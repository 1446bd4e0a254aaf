package graph_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"gqlauth/store/storetest"
	"gqlauth/web"
)

// Where each party acts from: a proxy the server trusts sets the client IP, and each party has its
// own user agent, so that an event shows whose session, address and browser it carries.
var (
	adminClient   = client{"203.0.113.9", "admin-console/1"}
	bobClient     = client{"198.51.100.7", "bob-browser/1"}
	carolClient   = client{"198.51.100.8", "carol-phone/1"}
	guesserClient = client{"192.0.2.66", "guesser/1"}
)

type client struct{ ip, userAgent string }

func (c client) header() http.Header {
	return http.Header{"X-Forwarded-For": {c.ip}, "User-Agent": {c.userAgent}}
}

// from sends a query from client c with token and fails the test on any error.
func (s *server) from(t testing.TB, c client, token, query string, vars map[string]any) response {
	t.Helper()
	r := s.do(t, call{Query: query, Variables: vars, Token: token, Header: c.header()})
	if len(r.Errors) > 0 {
		t.Fatalf("%s: unexpected errors: %+v", query, r.Errors)
	}
	return r
}

// ownViewWant is what an event of one's own securityEvents must show: its type, the actor's
// username, whose session / IP / user agent it carries ("" for none), the detail.
type ownViewWant struct{ typ, actor, session, ip, userAgent, detail string }

func (w ownViewWant) check(t *testing.T, e auditEvent, sessions map[string]string, clients map[string]client) {
	t.Helper()
	got := ownViewWant{e.Type, "", deref(e.SessionID), deref(e.IP), deref(e.UserAgent), deref(e.Detail)}
	if e.Actor != nil {
		got.actor = e.Actor.Username
	}
	want := w
	want.session = sessions[w.session]
	want.ip, want.userAgent = clients[w.ip].ip, clients[w.ip].userAgent
	if got != want {
		t.Errorf("%s: got %+v, want %+v", w.typ, got, want)
	}
}

// ownViewScenario: root (an admin) creates bob and carol; bob signs in, someone guesses bob's
// password, root makes bob an ADMIN; root disables and enables carol, who then signs in.
type ownViewScenario struct {
	s                  *server
	root, bob, carol   tokens
	sessions           map[string]string
	clients            map[string]client
	bobWant, carolWant []ownViewWant
}

func newOwnViewScenario(t *testing.T, kind storetest.Kind) *ownViewScenario {
	t.Helper()
	proxies, _ := web.ParseProxies("127.0.0.1")
	s := newServer(t, kind, withTrustedProxies(proxies))
	const pw = "correct horse battery"
	v := &ownViewScenario{s: s}
	s.from(t, adminClient, "", `mutation { register(username: "root", password: "correct horse battery", email: "root@example.com") { `+payloadFields+` } }`, nil).
		field(t, "register", &v.root)
	if _, err := s.DB.SetUserRole(context.Background(), v.root.User.ID, "ADMIN"); err != nil {
		t.Fatal(err)
	}
	var bob, carol user
	s.from(t, adminClient, v.root.AccessToken, `mutation { createUser(username: "bob", password: "correct horse battery", email: "bob@example.com") { id } }`, nil).field(t, "createUser", &bob)
	s.from(t, adminClient, v.root.AccessToken, `mutation { createUser(username: "carol", password: "correct horse battery") { id } }`, nil).field(t, "createUser", &carol)
	login := `mutation($u: String!, $p: String!) { login(username: $u, password: $p) { ` + payloadFields + ` } }`
	s.from(t, bobClient, "", login, map[string]any{"u": "bob", "p": pw}).field(t, "login", &v.bob)
	s.do(t, call{Query: login, Variables: map[string]any{"u": "bob", "p": "wrong horse battery"}, Header: guesserClient.header()}).
		wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
	s.from(t, adminClient, v.root.AccessToken, `mutation($id: ID!) { setUserRole(id: $id, role: ADMIN) { id } }`, map[string]any{"id": bob.ID})
	for _, disabled := range []bool{true, false} {
		s.from(t, adminClient, v.root.AccessToken, `mutation($id: ID!, $d: Boolean!) { setUserDisabled(id: $id, disabled: $d) { id } }`,
			map[string]any{"id": carol.ID, "d": disabled})
	}
	s.from(t, carolClient, "", login, map[string]any{"u": "carol", "p": pw}).field(t, "login", &v.carol)

	v.sessions = map[string]string{"": "", "root": sessionID(t, v.root.AccessToken), "bob": sessionID(t, v.bob.AccessToken), "carol": sessionID(t, v.carol.AccessToken)}
	v.clients = map[string]client{"": {}, "root": adminClient, "bob": bobClient, "carol": carolClient, "guesser": guesserClient}
	// Newest first. What root did shows root as the actor, and nothing of root's session, address
	// or browser; what bob and carol did, or an anonymous guesser tried on bob's account, shows
	// where it came from.
	v.bobWant = []ownViewWant{
		{"ROLE_CHANGED", "root", "", "", "", "ADMIN"},
		{"SIGN_IN_FAILED", "", "", "guesser", "", "wrong password"},
		{"SIGN_IN", "bob", "bob", "bob", "", ""},
		{"USER_CREATED", "root", "", "", "", "USER"},
	}
	v.carolWant = []ownViewWant{
		{"SIGN_IN", "carol", "carol", "carol", "", ""},
		{"USER_ENABLED", "root", "", "", "", ""},
		{"USER_DISABLED", "root", "", "", "", ""},
		{"USER_CREATED", "root", "", "", "", "USER"},
	}
	for _, list := range [][]ownViewWant{v.bobWant, v.carolWant} {
		for i := range list {
			list[i].userAgent = list[i].ip // the same party's client
		}
	}
	return v
}

func TestSecurityEvents_ShowNothingOfWhereAnotherPersonActedFrom(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		v := newOwnViewScenario(t, kind)
		for _, c := range []struct {
			name  string
			who   tokens
			wants []ownViewWant
		}{
			{"User", v.carol, v.carolWant},
			{"AdminReadingTheirOwn", v.bob, v.bobWant}, // bob is an ADMIN by now: the same view
		} {
			t.Run(c.name, func(t *testing.T) {
				events := v.s.securityEvents(t, c.who.AccessToken, nil).events()
				if len(events) != len(c.wants) {
					t.Fatalf("%d events, want %d: %+v", len(events), len(c.wants), events)
				}
				for i, w := range c.wants {
					e := events[i]
					w.check(t, e, v.sessions, v.clients)
					if e.Actor != nil && e.Actor.Username == "root" && (e.Actor.Email != nil || e.Actor.ID != v.root.User.ID) {
						t.Errorf("%s: actor %+v, want root's id and no email", e.Type, e.Actor)
					}
					if e.User == nil || e.User.ID != c.who.User.ID {
						t.Errorf("%s: user %+v", e.Type, e.User)
					}
				}
			})
		}
	})
}

func TestSecurityEvents_AdminsSeeTheWholeEventThroughAuditEvents(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		v := newOwnViewScenario(t, kind)
		for _, who := range []tokens{v.bob, v.carol} {
			events := v.s.auditEvents(t, v.root.AccessToken, map[string]any{"userId": who.User.ID, "types": []string{"USER_CREATED", "ROLE_CHANGED", "USER_DISABLED"}}).events()
			if len(events) == 0 {
				t.Fatalf("no events about %s", who.User.Username)
			}
			for _, e := range events {
				got := ownViewWant{e.Type, e.Actor.Username, deref(e.SessionID), deref(e.IP), deref(e.UserAgent), deref(e.Detail)}
				if got.actor != "root" || got.session != v.sessions["root"] || got.ip != adminClient.ip || got.userAgent != adminClient.userAgent ||
					deref(e.Actor.Email) != "root@example.com" {
					t.Errorf("admin view of %s's %s: %+v, actor %+v", who.User.Username, e.Type, got, e.Actor)
				}
			}
		}
	})
}

func TestSecurityEvents_SubscriptionShowsTheSameView(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		v := newOwnViewScenario(t, kind)
		s := v.s
		// Events of the scenario may still be on their way to this instance (Postgres NOTIFY):
		// the subscription shows only those after the last one already stored.
		last, _ := strconv.Atoi(v.s.securityEvents(t, v.carol.AccessToken, map[string]any{"first": 1}).events()[0].ID)
		sock, _ := s.dialSocket(t, "", bearer(v.carol.AccessToken))
		sock.acked(t).subscribe(t, "1", `subscription { securityEvents { id at type sessionId ip userAgent detail
			actor { id username email } user { id username email } } }`)
		time.Sleep(50 * time.Millisecond)

		// What root does to carol, a guess at carol's password, and carol's own sign-out, as they
		// happen; then the same events through the query.
		s.from(t, adminClient, v.root.AccessToken, `mutation($id: ID!) { setUserRole(id: $id, role: ADMIN) { id } }`, map[string]any{"id": v.carol.User.ID})
		s.do(t, call{Query: `mutation { login(username: "carol", password: "wrong horse battery") { accessToken } }`, Header: guesserClient.header()}).
			wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
		other := s.login(t, "carol", "correct horse battery")
		s.from(t, carolClient, v.carol.AccessToken, `mutation { logout(scope: OTHERS) }`, nil)
		wants := []ownViewWant{
			{"ROLE_CHANGED", "root", "", "", "", "ADMIN"},
			{"SIGN_IN_FAILED", "", "", "guesser", "guesser", "wrong password"},
			{"SIGN_IN", "carol", "other", "local", "local", ""},
			{"SIGN_OUT", "carol", "carol", "carol", "carol", "OTHERS"},
		}
		v.sessions["other"] = sessionID(t, other.AccessToken)
		v.clients["local"] = client{"127.0.0.1", "Go-http-client/1.1"}
		var live []auditEvent
		for len(live) < len(wants) {
			m := sock.next(t, 3*time.Second)
			var payload struct {
				Data struct {
					SecurityEvents auditEvent `json:"securityEvents"`
				} `json:"data"`
			}
			if m.Type != "next" || json.Unmarshal(m.Payload, &payload) != nil {
				t.Fatalf("got %s %s", m.Type, m.Payload)
			}
			if id, _ := strconv.Atoi(payload.Data.SecurityEvents.ID); id > last {
				live = append(live, payload.Data.SecurityEvents)
			}
		}
		for i, w := range wants {
			w.check(t, live[i], v.sessions, v.clients)
		}
		// The query shows each event exactly as it came (it lists them newest first).
		queried := s.securityEvents(t, v.carol.AccessToken, map[string]any{"first": len(wants)}).events()
		for i, e := range live {
			q := queried[len(wants)-1-i]
			a, _ := json.Marshal(e)
			b, _ := json.Marshal(q)
			if string(a) != string(b) {
				t.Errorf("subscription %s\n     query %s", a, b)
			}
		}
	})
}
