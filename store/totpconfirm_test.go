package store_test

import (
	"context"
	"testing"
	"time"

	"gqlauth/store"
	"gqlauth/store/storetest"
)

// ConfirmPendingTOTP confirms only the exact pending secret the code was checked against, and
// only for the session that started the enrolment: a replaced secret or another session's
// confirmation changes nothing.
func TestConfirmPendingTOTP_OnlyTheSecretAndSessionOfTheEnrolment(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		db := storetest.Open(t, kind)
		ctx := context.Background()
		u := newUser(t, db)
		now := time.Now().UTC()
		mine := "session-a"
		if ok, err := db.PutPendingTOTP(ctx, &store.TOTPFactor{UserID: u.ID, Secret: []byte("sealed-2"), CreatedAt: now, SessionID: &mine}); err != nil || !ok {
			t.Fatal(ok, err)
		}
		for _, c := range []struct {
			name, session, secret string
		}{
			{"a replaced secret", mine, "sealed-1"},
			{"another session", "session-b", "sealed-2"},
		} {
			if ok, err := db.ConfirmPendingTOTP(ctx, u.ID, c.session, []byte(c.secret), 100, now); err != nil || ok {
				t.Fatalf("%s confirmed the pending secret: %v %v", c.name, ok, err)
			}
		}
		if ok, err := db.ConfirmPendingTOTP(ctx, u.ID, mine, []byte("sealed-2"), 100, now); err != nil || !ok {
			t.Fatalf("the enrolment's own secret and session: %v %v", ok, err)
		}
		if ok, err := db.ConfirmPendingTOTP(ctx, u.ID, mine, []byte("sealed-2"), 101, now); err != nil || ok {
			t.Fatalf("a confirmed factor was confirmed again: %v %v", ok, err)
		}
	})
}
