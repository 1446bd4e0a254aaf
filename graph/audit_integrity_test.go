package graph_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"gqlauth/store/storetest"
	"gqlauth/token"
)

// The audit log's integrity: an event commits or rolls back with its change, holds no secret,
// pages without duplicates or gaps, and is swept only past its retention.

// fault makes the database refuse one kind of write, as a crash or a constraint would, until the
// returned function removes it.
func fault(t *testing.T, s *server, kind storetest.Kind, table, when string) func() {
	t.Helper()
	ctx := context.Background()
	stmts := []string{fmt.Sprintf(`CREATE TRIGGER injected_fault BEFORE INSERT OR UPDATE ON %s FOR EACH ROW WHEN (%s) EXECUTE FUNCTION injected_fault()`, table, when)}
	undo := []string{"DROP TRIGGER injected_fault ON " + table}
	if kind == storetest.Postgres {
		stmts = append([]string{`CREATE OR REPLACE FUNCTION injected_fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected fault'; END $$`}, stmts...)
	} else {
		op := "INSERT"
		if table == "sessions" {
			op = "UPDATE"
		}
		stmts = []string{fmt.Sprintf(`CREATE TRIGGER injected_fault BEFORE %s ON %s WHEN (%s) BEGIN SELECT RAISE(ABORT, 'injected fault'); END`, op, table, when)}
		undo = []string{"DROP TRIGGER injected_fault"}
	}
	for _, stmt := range stmts {
		if err := s.DB.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	return func() {
		t.Helper()
		for _, stmt := range undo {
			if err := s.DB.Exec(ctx, stmt); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestAudit_RecordAndChangeCommitOrRollBackTogether(t *testing.T) {
	// changePassword writes the new hash, then its event, then revokes the other sessions: a fault
	// in the event must undo the hash, and a fault after the event must undo both.
	cases := []struct{ name, table, when string }{
		{"EventWriteFails", "audit_events", "NEW.type = 'PASSWORD_CHANGED'"},
		{"ChangeFailsAfterEventWritten", "sessions", "NEW.revoked_at IS NOT NULL"},
	}
	const pw, newPw = "correct horse battery", "another horse battery"
	changePassword := `mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }`
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				s := newServer(t, kind)
				alice := s.signedInUser(t, "alice")
				other := s.login(t, "alice", pw)
				before := s.snapshot(t)
				remove := fault(t, s, kind, c.table, c.when)
				s.do(t, call{Query: changePassword, Token: alice.AccessToken, Variables: map[string]any{"c": pw, "n": newPw}}).
					wantError(t, "INTERNAL_SERVER_ERROR", "")
				remove()
				if after := s.snapshot(t); after != before {
					t.Fatalf("a failed change left writes behind:\nbefore %s\nafter  %s", before, after)
				}
				for _, e := range s.securityEvents(t, alice.AccessToken, nil).events() {
					if e.Type == "PASSWORD_CHANGED" {
						t.Fatal("an event was recorded for a change that rolled back")
					}
				}
				s.query(t, other.AccessToken, `{ me { id } }`, nil) // not revoked

				// Without the fault both commit: the change and exactly one record of it.
				s.query(t, alice.AccessToken, changePassword, map[string]any{"c": pw, "n": newPw})
				s.me(t, other.AccessToken).wantError(t, "UNAUTHENTICATED", "SESSION_REVOKED")
				n := 0
				for _, e := range s.securityEvents(t, alice.AccessToken, nil).events() {
					if e.Type == "PASSWORD_CHANGED" {
						n++
					}
				}
				if n != 1 {
					t.Fatalf("%d PASSWORD_CHANGED events for one committed change", n)
				}
			})
		}
	})
}

func TestAudit_LogoutRollsBackWhenItsEventCannotBeWritten(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		alice := s.signedInUser(t, "alice")
		remove := fault(t, s, kind, "audit_events", "NEW.type = 'SIGN_OUT'")
		s.do(t, call{Query: `mutation { logout }`, Token: alice.AccessToken}).wantError(t, "INTERNAL_SERVER_ERROR", "")
		remove()
		s.query(t, alice.AccessToken, `{ me { id } }`, nil) // the session was not revoked without a record
	})
}

func TestAudit_NeverHoldsSecrets(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		root := s.signedInAdmin(t)
		const pw, newPw, wrong = "correct horse battery", "another horse battery", "wrong horse battery 42"
		alice := s.register(t, "alice", pw)
		s.do(t, call{Query: `mutation($p: String!) { login(username: "alice", password: $p) { accessToken } }`, Variables: map[string]any{"p": wrong}})
		var key struct{ Secret string }
		s.query(t, alice.AccessToken, `mutation { createApiKey(name: "ci") { secret } }`, nil).field(t, "createApiKey", &key)
		next := refreshed(t, s.refresh(t, alice.RefreshToken))
		s.Clock.Advance(11 * time.Second)
		s.refresh(t, alice.RefreshToken) // reuse
		again := s.login(t, "alice", pw)
		s.query(t, again.AccessToken, `mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }`,
			map[string]any{"c": pw, "n": newPw})
		s.query(t, again.AccessToken, `mutation { logout(scope: ALL) }`, nil)

		users, _ := s.DB.DumpTable(context.Background(), "users")
		secrets := []string{pw, newPw, wrong, key.Secret, alice.AccessToken, alice.RefreshToken, next.AccessToken,
			next.RefreshToken, again.AccessToken, again.RefreshToken, token.HashRefreshToken(alice.RefreshToken),
			token.HashRefreshToken(next.RefreshToken), token.HashRefreshToken(key.Secret), string(testSecret)}
		for _, u := range users {
			secrets = append(secrets, u["password_hash"])
		}
		rows, err := s.DB.DumpTable(context.Background(), "audit_events")
		if err != nil {
			t.Fatal(err)
		}
		stored, _ := json.Marshal(rows)
		admin, _ := json.Marshal(s.auditEvents(t, root.AccessToken, map[string]any{"first": 100}))
		own, _ := json.Marshal(s.securityEvents(t, s.login(t, "alice", newPw).AccessToken, map[string]any{"first": 100}))
		if len(rows) < 8 {
			t.Fatalf("only %d events stored", len(rows))
		}
		for where, text := range map[string]string{"stored events": string(stored), "auditEvents": string(admin), "securityEvents": string(own)} {
			for _, secret := range secrets {
				if secret != "" && strings.Contains(text, secret) {
					t.Errorf("%s contain a secret (%.12s…)", where, secret)
				}
			}
		}
	})
}

func TestAudit_PagesHaveNoDuplicatesOrGapsUnderConcurrentWrites(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		root := s.signedInAdmin(t)
		failLogin := func(name string) {
			s.do(t, call{Query: `mutation($u: String!) { login(username: $u, password: "wrong horse battery") { accessToken } }`,
				Variables: map[string]any{"u": name}})
		}
		for i := range 25 {
			failLogin(fmt.Sprintf("before%02d", i))
		}
		filter := map[string]any{"first": 10, "types": []string{"SIGN_IN_FAILED"}}
		var got []auditEvent
		var after any
		var writers sync.WaitGroup
		for page := 0; ; page++ {
			filter["after"] = after
			p := s.auditEvents(t, root.AccessToken, filter)
			got = append(got, p.events()...)
			// Events written between page reads, and while the next page is read, are newer than
			// every event of the first page: they belong before it, never in a later page.
			writers.Add(1)
			go func() {
				defer writers.Done()
				for i := range 3 {
					failLogin(fmt.Sprintf("during%d%d", page, i))
				}
			}()
			if !p.PageInfo.HasNextPage {
				if p.PageInfo.EndCursor == nil || len(p.Edges) == 0 || *p.PageInfo.EndCursor != p.Edges[len(p.Edges)-1].Cursor {
					t.Fatalf("last page's endCursor: %+v", p.PageInfo)
				}
				break
			}
			after = *p.PageInfo.EndCursor
			if page > 5 {
				t.Fatal("more pages than events")
			}
		}
		writers.Wait()
		if len(got) != 25 {
			t.Fatalf("paged through %d events, want the 25 that existed at the first read", len(got))
		}
		seen := map[string]bool{}
		for i, e := range got {
			if seen[e.ID] {
				t.Fatalf("event %s twice", e.ID)
			}
			seen[e.ID] = true
			if want := fmt.Sprintf(`unknown username "before%02d"`, 24-i); deref(e.Detail) != want {
				t.Fatalf("event %d: %q, want %q (newest first, no gaps)", i, deref(e.Detail), want)
			}
		}
		// The events written meanwhile are all there, newest first, at the head.
		head := s.auditEvents(t, root.AccessToken, map[string]any{"first": 100, "types": []string{"SIGN_IN_FAILED"}}).events()
		if len(head) != 25+3*3 || !strings.Contains(deref(head[0].Detail), "during") {
			t.Fatalf("%d events after the writes; newest %q", len(head), deref(head[0].Detail))
		}
	})
}

func TestAudit_SweepDeletesOnlyEventsPastRetention(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind, withAuditRetention(time.Hour))
		s.signedInAdmin(t)
		for range 3 {
			s.do(t, call{Query: `mutation { login(username: "old", password: "wrong horse battery") { accessToken } }`})
		}
		s.Clock.Advance(61 * time.Minute)
		for range 2 {
			s.do(t, call{Query: `mutation { login(username: "new", password: "wrong horse battery") { accessToken } }`})
		}
		n, err := s.Service.SweepAuditEvents(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n != 4 { // root's sign-up and the three failures before the hour
			t.Fatalf("swept %d events, want 4", n)
		}
		fresh := s.login(t, "root", "correct horse battery")
		events := s.auditEvents(t, fresh.AccessToken, nil).events()
		if len(events) != 3 || deref(events[1].Detail) != `unknown username "new"` || deref(events[2].Detail) != `unknown username "new"` {
			t.Fatalf("kept: %+v", events)
		}
	})
}
