package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"gqlauth/store"
	"gqlauth/store/storetest"
)

func TestWebAuthnChallenge_ConcurrentTakersGetItOnce(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		name := storetest.NewName(t, kind)
		a := storetest.OpenShared(t, kind, name)
		if err := a.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
		b := storetest.OpenShared(t, kind, name) // a second instance on the same database
		ctx := context.Background()
		now := time.Now().UTC().Truncate(time.Microsecond)
		id := uuid.NewString()
		if err := a.PutWebAuthnChallenge(ctx, &store.WebAuthnChallenge{ID: id, Kind: "sign_in", SessionData: `{"challenge":"x"}`, CreatedAt: now, ExpiresAt: now.Add(5 * time.Minute)}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.TakeWebAuthnChallenge(ctx, "registration", id); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("taken as another kind: %v", err)
		}
		const takers = 8
		var wg sync.WaitGroup
		got := make(chan *store.WebAuthnChallenge, takers)
		for i := range takers {
			db := a
			if i%2 == 1 {
				db = b
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := db.TakeWebAuthnChallenge(ctx, "sign_in", id)
				switch {
				case err == nil:
					got <- c
				case !errors.Is(err, store.ErrNotFound):
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		close(got)
		var won []*store.WebAuthnChallenge
		for c := range got {
			won = append(won, c)
		}
		if len(won) != 1 {
			t.Fatalf("%d of %d concurrent takers got the challenge, want exactly 1", len(won), takers)
		}
		if c := won[0]; c.SessionData != `{"challenge":"x"}` || !c.ExpiresAt.Equal(now.Add(5*time.Minute)) || c.UserID != nil {
			t.Fatalf("taken %+v", c)
		}
	})
}

func TestWebAuthnChallenge_DeleteExpiredLeavesLiveOnes(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		db := storetest.Open(t, kind)
		ctx := context.Background()
		now := time.Now().UTC().Truncate(time.Microsecond)
		for i, exp := range []time.Duration{-time.Minute, -time.Second, time.Minute} {
			c := &store.WebAuthnChallenge{ID: []string{"old", "older", "live"}[i], Kind: "sign_in", SessionData: "{}", CreatedAt: now, ExpiresAt: now.Add(exp)}
			if err := db.PutWebAuthnChallenge(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
		if n, err := db.DeleteExpiredWebAuthnChallenges(ctx, now, 1000); err != nil || n != 2 {
			t.Fatalf("deleted %d, %v; want the 2 expired", n, err)
		}
		if _, err := db.TakeWebAuthnChallenge(ctx, "sign_in", "live"); err != nil {
			t.Fatalf("the live challenge: %v", err)
		}
	})
}
