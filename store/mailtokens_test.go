package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"gqlauth/model"
	"gqlauth/store"
	"gqlauth/store/storetest"
)

func newMailUser(t *testing.T, db *store.DB) *model.User {
	t.Helper()
	email := "ann@example.com"
	u := &model.User{ID: uuid.Must(uuid.NewV7()).String(), Username: "ann", Email: &email, Role: model.RoleUser, PasswordHash: "x", CreatedAt: time.Now().UTC()}
	if err := db.CreateUser(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	return u
}

// "A newer token voids the older" holds for replacements that race: each in its own
// transaction, at once, and one token is left (DELETE then INSERT left several under READ
// COMMITTED); and so for sign-in codes, with no error.
func TestMailTokens_ConcurrentReplacementsLeaveOne(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		db := storetest.Open(t, kind)
		ctx := context.Background()
		u := newMailUser(t, db)
		now := time.Now().UTC()
		var wg sync.WaitGroup
		errs := make([]error, 20)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = db.Transact(ctx, func(tx *store.Tx) error {
					if i%2 == 0 {
						return tx.ReplaceMailToken(ctx, &store.MailToken{Hash: fmt.Sprintf("hash-%d", i), UserID: u.ID, Purpose: "reset_password",
							Email: *u.Email, CreatedAt: now, ExpiresAt: now.Add(time.Hour)})
					}
					return tx.ReplaceSignInCode(ctx, &store.SignInCode{EmailKey: "ann@example.com", Email: *u.Email, CodeHash: fmt.Sprintf("code-%d", i),
						CreatedAt: now, ExpiresAt: now.Add(time.Hour)}, now)
				})
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("replacement %d: %v", i, err)
			}
		}
		var tokens, codes int
		if err := db.QueryRow(ctx, "SELECT count(*) FROM mail_tokens", &tokens); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRow(ctx, "SELECT count(*) FROM sign_in_codes", &codes); err != nil {
			t.Fatal(err)
		}
		if tokens != 1 || codes != 1 {
			t.Fatalf("%d tokens and %d codes left; want one of each", tokens, codes)
		}
	})
}

// The migration that adds the unique key (user_id, purpose) keeps the newest of the duplicates
// an older release could leave.
func TestMigrate_DuplicateMailTokensKeepTheNewest(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		db := storetest.Open(t, kind)
		ctx := context.Background()
		u := newMailUser(t, db)
		// Back to the schema before the migration, with duplicates in it.
		for _, q := range []string{
			"DROP INDEX mail_tokens_user_purpose_key",
			"CREATE INDEX mail_tokens_user_purpose_idx ON mail_tokens (user_id, purpose)",
			"DELETE FROM bun_migrations WHERE name = '20261216000002'",
		} {
			if err := db.Exec(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		base := time.Now().UTC().Truncate(time.Second)
		for i, purpose := range []string{"reset_password", "reset_password", "reset_password", "change_email"} {
			err := db.Exec(ctx, fmt.Sprintf("INSERT INTO mail_tokens (token_hash, user_id, purpose, email, created_at, expires_at) VALUES ('hash-%d', '%s', '%s', 'ann@example.com', '%s', '%s')",
				i, u.ID, purpose, stamp(base.Add(time.Duration(i)*time.Second)), stamp(base.Add(time.Hour))))
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := db.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		rows, err := db.DumpTable(ctx, "mail_tokens")
		if err != nil {
			t.Fatal(err)
		}
		left := map[string]string{}
		for _, r := range rows {
			left[r["purpose"]] = r["token_hash"]
		}
		if len(rows) != 2 || left["reset_password"] != "hash-2" || left["change_email"] != "hash-3" {
			t.Fatalf("left %v; want the newest reset token and the change token", rows)
		}
		err = db.Exec(ctx, fmt.Sprintf("INSERT INTO mail_tokens (token_hash, user_id, purpose, email, created_at, expires_at) VALUES ('hash-9', '%s', 'change_email', 'ann@example.com', '%s', '%s')",
			u.ID, stamp(base), stamp(base.Add(time.Hour))))
		if err == nil {
			t.Fatal("a second token of one purpose was stored: no unique key")
		}
	})
}

// stamp is a timestamp literal both databases read.
func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05+00:00") }

// The count of wrong codes outlives the code: the sweep keeps the address's row while the count
// still holds (else the cap would end with the code, ten minutes on), and a new code is refused
// (ErrCodesBlocked) until the window is over.
func TestSignInCodes_FailureCountOutlivesTheCodeUntilTheWindowEnds(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		db := storetest.Open(t, kind)
		ctx := context.Background()
		now := time.Now().UTC()
		code := func(at time.Time) error {
			return db.ReplaceSignInCode(ctx, &store.SignInCode{EmailKey: "ann@example.com", Email: "ann@example.com", CodeHash: "right",
				CreatedAt: at, ExpiresAt: at.Add(10 * time.Minute)}, at)
		}
		for i := range store.MaxCodeFailures {
			if i%store.MaxCodeTries == 0 {
				if err := code(now); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := db.TakeSignInCode(ctx, "ann@example.com", "wrong", now); err != store.ErrNotFound {
				t.Fatalf("wrong code %d: %v", i, err)
			}
		}
		if err := code(now); err != store.ErrCodesBlocked {
			t.Fatalf("a new code over the cap: %v", err)
		}
		later := now.Add(time.Hour)
		if _, err := db.DeleteExpiredSignInCodes(ctx, later, 100); err != nil {
			t.Fatal(err)
		}
		if err := code(later); err != store.ErrCodesBlocked {
			t.Fatalf("after the sweep, a new code: %v (the count was swept with the code)", err)
		}
		next := now.Add(store.CodeFailureWindow + time.Hour)
		if n, err := db.DeleteExpiredSignInCodes(ctx, next, 100); err != nil || n != 1 {
			t.Fatalf("swept %d, %v; want the row once the window is over", n, err)
		}
		if err := code(next); err != nil {
			t.Fatal(err)
		}
		if _, err := db.TakeSignInCode(ctx, "ann@example.com", "right", next); err != nil {
			t.Fatalf("the right code the next day: %v", err)
		}
	})
}
