package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"gqlauth/model"
	"gqlauth/store"
	"gqlauth/store/storetest"
)

// The principal query reads the session's level, methods and last authentication and the
// user's factor count with the rest, in one query whose plan is key lookups: the session and user
// (two primary-key lookups; §12 adds columns to them, not a join or a subquery) and, since issue
// #25, the token's signing key by its primary key (a LEFT JOIN, still no subquery). The plan is
// logged (go test -v -run TestPrincipal_OneQueryOfTwoKeyLookups ./store/) and quoted in the README.
func TestPrincipal_OneQueryOfTwoKeyLookups(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		db := storetest.Open(t, kind)
		ctx := context.Background()
		now, u, sid := annWithASession(t, db)
		if err := db.SetSessionAuth(ctx, sid, model.AuthLevelAal2, "pwd otp mfa", now.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		gotSess, gotUser, err := db.Principal(ctx, sid, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if gotSess.AAL != model.AuthLevelAal2 || gotSess.AMR != "pwd otp mfa" || !gotSess.AuthTime.Equal(now.Add(time.Minute)) || gotUser.MFAFactors != 0 {
			t.Fatalf("principal: aal %s amr %q auth_time %s factors %d", gotSess.AAL, gotSess.AMR, gotSess.AuthTime, gotUser.MFAFactors)
		}
		plan, err := db.ExplainPrincipal(ctx, sid, u.ID, "some-kid")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s plan of the principal query:\n%s", kind, plan)
		if strings.Contains(plan, "Seq Scan") || strings.Contains(plan, "SCAN ") || strings.Contains(plan, "SubPlan") {
			t.Fatalf("the principal query scans a table or runs a subquery:\n%s", plan)
		}
	})
}

// TestPrincipal_TokenOfARevokedSigningKeyIsRefusedByTheSameQuery: the principal query checks the
// token's kid against signing_keys (issue #25: a revocation made on another instance must count
// before this instance's key ring reloads), in the one query it already runs. A kid that is not
// stored counts as revoked; "" (HS256) checks nothing.
func TestPrincipal_TokenOfARevokedSigningKeyIsRefusedByTheSameQuery(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		db := storetest.Open(t, kind)
		ctx := context.Background()
		now, u, sid := annWithASession(t, db)
		for _, kid := range []string{"k1", "k2"} {
			if err := db.InsertSigningKey(ctx, &model.SigningKey{Kid: kid, Alg: "ES256", PublicKey: []byte("p"), PrivateKey: []byte("s"), CreatedAt: now, ActivatesAt: now}); err != nil {
				t.Fatal(err)
			}
		}
		queries := &countQueries{}
		db.AddQueryHook(queries)
		for _, kid := range []string{"", "k1", "k2"} {
			if _, _, err := db.TokenPrincipal(ctx, sid, u.ID, kid); err != nil {
				t.Fatalf("kid %q, live: %v", kid, err)
			}
		}
		if queries.n != 3 {
			t.Fatalf("%d queries for 3 principals, want 3", queries.n)
		}
		if ok, err := db.RevokeSigningKey(ctx, "k1", now); err != nil || !ok {
			t.Fatalf("revoke: %v %v", ok, err)
		}
		for kid, want := range map[string]error{"k1": store.ErrSigningKeyRevoked, "gone": store.ErrSigningKeyRevoked, "k2": nil, "": nil} {
			if _, _, err := db.TokenPrincipal(ctx, sid, u.ID, kid); !errors.Is(err, want) {
				t.Errorf("kid %q: %v, want %v", kid, err, want)
			}
		}
		if _, _, err := db.TokenPrincipal(ctx, "no-such-session", u.ID, "k1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("no session, revoked key: %v, want ErrNotFound", err)
		}
	})
}

// countQueries counts the queries run through the hooks (the principal query runs them too).
type countQueries struct{ n int }

func (c *countQueries) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context {
	c.n++
	return ctx
}

func (c *countQueries) AfterQuery(context.Context, *bun.QueryEvent) {}

// BenchmarkTokenPrincipal compares the principal query of an HS256 token (kid "", no key row
// matches) with one of an asymmetric key (the LEFT JOIN finds the key's row), on Postgres:
// go test -run '^$' -bench TokenPrincipal ./store/ (TEST_DATABASE_URL set).
func BenchmarkTokenPrincipal(b *testing.B) {
	if !contains(storetest.Kinds(b), storetest.Postgres) {
		b.Skip("TEST_DATABASE_URL not set")
	}
	db := storetest.Open(b, storetest.Postgres)
	ctx := context.Background()
	now := time.Now().UTC()
	u := &model.User{ID: uuid.Must(uuid.NewV7()).String(), Username: "ann", Role: model.RoleUser, PasswordHash: "x", CreatedAt: now}
	sid := uuid.Must(uuid.NewV7()).String()
	if err := db.CreateUser(ctx, u); err != nil {
		b.Fatal(err)
	}
	if err := db.CreateSession(ctx, &model.Session{ID: sid, UserID: u.ID, RefreshHash: sid, CreatedAt: now, LastUsedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		b.Fatal(err)
	}
	if err := db.InsertSigningKey(ctx, &model.SigningKey{Kid: "k1", Alg: "ES256", PublicKey: []byte("p"), PrivateKey: []byte("s"), CreatedAt: now, ActivatesAt: now}); err != nil {
		b.Fatal(err)
	}
	for _, kid := range []string{"", "k1"} {
		b.Run("kid="+kid, func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, _, err := db.TokenPrincipal(ctx, sid, u.ID, kid); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// annWithASession stores a user, ann, with one live session (amr pwd), and returns the time they
// were made at, the user and the session's id.
func annWithASession(t *testing.T, db *store.DB) (time.Time, *model.User, string) {
	t.Helper()
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	u := &model.User{ID: uuid.Must(uuid.NewV7()).String(), Username: "ann", Role: model.RoleUser, PasswordHash: "x", CreatedAt: now}
	if err := db.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	sid := uuid.Must(uuid.NewV7()).String()
	sess := &model.Session{ID: sid, UserID: u.ID, RefreshHash: sid, CreatedAt: now, LastUsedAt: now, ExpiresAt: now.Add(time.Hour), AMR: "pwd"}
	if err := db.CreateSession(ctx, sess); err != nil {
		t.Fatal(err)
	}
	return now, u, sid
}
