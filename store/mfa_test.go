package store_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"gqlauth/model"
	"gqlauth/store"
	"gqlauth/store/storetest"
)

func newUser(t *testing.T, db *store.DB) *model.User {
	t.Helper()
	u := &model.User{ID: uuid.Must(uuid.NewV7()).String(), Username: "u" + uuid.NewString()[:8], Role: model.RoleUser, PasswordHash: "x", CreatedAt: time.Now().UTC()}
	if err := db.CreateUser(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	return u
}

// The accepted time step only moves forward, by a compare-and-set: of concurrent acceptances of
// one step, on separate connections, exactly one wins; an earlier or equal step never does.
func TestAcceptTOTPStep_OnlyForwardAndOnceUnderConcurrency(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		db := storetest.Open(t, kind)
		ctx := context.Background()
		u := newUser(t, db)
		now := time.Now().UTC()
		sid := "session"
		if ok, err := db.PutPendingTOTP(ctx, &store.TOTPFactor{UserID: u.ID, Secret: []byte("sealed"), SessionID: &sid, CreatedAt: now}); err != nil || !ok {
			t.Fatal(ok, err)
		}
		if ok, err := db.AcceptTOTPStep(ctx, u.ID, 100); err != nil || ok {
			t.Fatalf("a pending factor was used: %v %v", ok, err)
		}
		if ok, err := db.ConfirmPendingTOTP(ctx, u.ID, sid, []byte("sealed"), 100, now); err != nil || !ok {
			t.Fatalf("confirm: %v %v", ok, err)
		}
		const n = 8
		var wins atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				err := db.Transact(ctx, func(tx *store.Tx) error {
					ok, err := tx.AcceptTOTPStep(ctx, u.ID, 101)
					if ok {
						wins.Add(1)
					}
					return err
				})
				if err != nil {
					t.Error(err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if got := wins.Load(); got != 1 {
			t.Fatalf("%d of %d concurrent acceptances of one step won, want 1", got, n)
		}
		for _, step := range []int64{101, 100, 50} {
			if ok, _ := db.AcceptTOTPStep(ctx, u.ID, step); ok {
				t.Fatalf("step %d accepted after step 101", step)
			}
		}
	})
}

// Of concurrent uses of one recovery code, exactly one marks it used.
func TestUseRecoveryCode_OnceUnderConcurrency(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		db := storetest.Open(t, kind)
		ctx := context.Background()
		u := newUser(t, db)
		now := time.Now().UTC()
		if err := db.ReplaceRecoveryCodes(ctx, u.ID, []string{"h1", "h2"}, now); err != nil {
			t.Fatal(err)
		}
		const n = 8
		var wins atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if ok, err := db.UseRecoveryCode(ctx, u.ID, "h1", now); err != nil {
					t.Error(err)
				} else if ok {
					wins.Add(1)
				}
			}()
		}
		close(start)
		wg.Wait()
		if got := wins.Load(); got != 1 {
			t.Fatalf("%d of %d concurrent uses won, want 1", got, n)
		}
		if left, err := db.RecoveryCodesLeft(ctx, u.ID); err != nil || left != 1 {
			t.Fatalf("%d left, %v", left, err)
		}
	})
}

// The factor count follows every change of the factor tables it is recounted after.
func TestRecountFactors_CountsConfirmedTOTPAndPasskeys(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		db := storetest.Open(t, kind)
		ctx := context.Background()
		u := newUser(t, db)
		now := time.Now().UTC()
		count := func() int {
			n, err := db.RecountFactors(ctx, u.ID)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		sid := "session"
		db.PutPendingTOTP(ctx, &store.TOTPFactor{UserID: u.ID, Secret: []byte("s"), SessionID: &sid, CreatedAt: now})
		if n := count(); n != 0 {
			t.Fatalf("a pending TOTP counts: %d", n)
		}
		db.ConfirmPendingTOTP(ctx, u.ID, sid, []byte("s"), 1, now)
		for i := range 2 {
			if _, err := db.CreatePasskey(ctx, &model.Passkey{ID: uuid.NewString(), UserID: u.ID, Name: "key", CreatedAt: now,
				CredentialID: []byte{byte(i)}, PublicKey: []byte{1}}); err != nil {
				t.Fatal(err)
			}
		}
		if n := count(); n != 3 {
			t.Fatalf("count %d, want 3", n)
		}
		if _, err := db.DeleteFactors(ctx, u.ID); err != nil {
			t.Fatal(err)
		}
		if n := count(); n != 0 {
			t.Fatalf("count %d after deleting every factor", n)
		}
		got, err := db.UserByID(ctx, u.ID)
		if err != nil || got.MFAFactors != 0 {
			t.Fatalf("user row: %d, %v", got.MFAFactors, err)
		}
	})
}
