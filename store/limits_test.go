package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"gqlauth/model"
	"gqlauth/store"
	"gqlauth/store/storetest"
)

// Bun writes no LIMIT clause for Limit(0) or a negative limit: passed through, a size of 0 would
// read or delete every row. Every store query that takes a size reads and deletes nothing for it.
func TestStore_ZeroOrNegativeSizeReadsAndDeletesNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		db := storetest.Open(t, kind)
		ctx := context.Background()
		old := time.Now().UTC().Add(-48 * time.Hour).Truncate(time.Microsecond)
		for i := range 3 {
			u := &model.User{ID: uuid.Must(uuid.NewV7()).String(), Username: fmt.Sprintf("user%d", i), Role: model.RoleUser, PasswordHash: "x", CreatedAt: old}
			if err := db.CreateUser(ctx, u); err != nil {
				t.Fatal(err)
			}
			id := uuid.Must(uuid.NewV7()).String()
			if err := db.CreateSession(ctx, &model.Session{ID: id, UserID: u.ID, RefreshHash: id, CreatedAt: old, LastUsedAt: old, ExpiresAt: old.Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			if err := db.CreateAPIKey(ctx, &model.APIKey{ID: id, UserID: u.ID, Name: "k", Prefix: "gqa_x", SecretHash: id, Role: model.RoleUser, CreatedAt: old, ExpiresAt: old.Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			if err := db.RecordStandaloneEvent(ctx, &model.AuditEvent{At: old, Type: model.AuditEventTypeSignUp, UserID: &u.ID}); err != nil {
				t.Fatal(err)
			}
			if err := db.CreateSignInFlow(ctx, &model.SignInFlow{StateHash: id, Provider: "corp", CreatedAt: old, ExpiresAt: old.Add(time.Minute)}); err != nil {
				t.Fatal(err)
			}
			if err := db.PutWebAuthnChallenge(ctx, &store.WebAuthnChallenge{ID: id, Kind: "sign_in", SessionData: "{}", CreatedAt: old, ExpiresAt: old.Add(time.Minute)}); err != nil {
				t.Fatal(err)
			}
		}
		before := dump(t, db)
		now := time.Now().UTC()
		for _, size := range []int{0, -1} {
			if users, err := db.ListUsers(ctx, size, 0); err != nil || len(users) != 0 {
				t.Fatalf("ListUsers(%d): %d users, %v", size, len(users), err)
			}
			if events, err := db.AuditEvents(ctx, store.AuditFilter{Limit: size}); err != nil || len(events) != 0 {
				t.Fatalf("AuditEvents(Limit %d): %d events, %v", size, len(events), err)
			}
			deletes := map[string]func() (int, error){
				"DeleteDeadSessions":      func() (int, error) { return db.DeleteDeadSessions(ctx, now, now, size) },
				"DeleteDeadAPIKeys":       func() (int, error) { return db.DeleteDeadAPIKeys(ctx, now, size) },
				"DeleteAuditEventsBefore": func() (int, error) { return db.DeleteAuditEventsBefore(ctx, now, size) },
				"DeleteExpiredSignIns":    func() (int, error) { return db.DeleteExpiredSignIns(ctx, now, size) },
				"DeleteExpiredWebAuthnChallenges": func() (int, error) {
					return db.DeleteExpiredWebAuthnChallenges(ctx, now, size)
				},
			}
			for name, del := range deletes {
				if n, err := del(); err != nil || n != 0 {
					t.Fatalf("%s(%d): deleted %d, %v", name, size, n, err)
				}
			}
		}
		if after := dump(t, db); after != before {
			t.Fatalf("rows changed:\nbefore %s\nafter  %s", before, after)
		}
		// A size of one still works: the guard is for "nothing", not for small pages.
		if n, err := db.DeleteDeadSessions(ctx, now, now, 1); err != nil || n != 1 {
			t.Fatalf("DeleteDeadSessions(1): %d, %v", n, err)
		}
	})
}

func dump(t *testing.T, db *store.DB) string {
	t.Helper()
	out := ""
	for _, table := range []string{"users", "sessions", "api_keys", "audit_events", "sign_in_flows", "webauthn_challenges"} {
		rows, err := db.DumpTable(context.Background(), table)
		if err != nil {
			t.Fatal(err)
		}
		out += fmt.Sprintf("%s (%d rows): %v\n", table, len(rows), rows)
	}
	return out
}
