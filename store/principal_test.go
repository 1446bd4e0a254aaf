package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"gqlauth/model"
	"gqlauth/store/storetest"
)

// The principal query reads the session's level, methods and last authentication and the
// user's factor count with the rest, in one query whose plan is two primary-key lookups: §12 adds
// columns to it, not a join or a subquery. The plan is logged (go test -v -run
// TestPrincipal_OneQueryOfTwoKeyLookups ./store/) and quoted in the README.
func TestPrincipal_OneQueryOfTwoKeyLookups(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		db := storetest.Open(t, kind)
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
		plan, err := db.ExplainPrincipal(ctx, sid, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s plan of the principal query:\n%s", kind, plan)
		if strings.Contains(plan, "Seq Scan") || strings.Contains(plan, "SCAN ") || strings.Contains(plan, "SubPlan") {
			t.Fatalf("the principal query scans a table or runs a subquery:\n%s", plan)
		}
	})
}
