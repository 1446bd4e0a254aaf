package account_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"gqlauth/account"
	"gqlauth/model"
	"gqlauth/store/storetest"
	"gqlauth/token"
)

// Service.User shows a user to themself and to an ADMIN (its caller's role: an API key's caps
// its user's), refuses everyone else, and answers nil for an id that names no user.
func TestUser_ShowsAUserToThemselfAndToAdminsOnly(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		db := storetest.Open(t, kind)
		tokens, err := token.NewTokens(token.TokenConfig{Secret: []byte("test-secret-of-at-least-32-bytes!!"), Issuer: "gqlauth", Audience: "gqlauth", TTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		passwords, err := account.NewPasswords(account.PasswordConfig{Cost: 4})
		if err != nil {
			t.Fatal(err)
		}
		svc := account.NewService(db, tokens, passwords, account.ServiceConfig{SignupEnabled: true, RefreshTTL: time.Hour, Logger: slog.New(slog.DiscardHandler)})
		ctx := context.Background()
		register := func(name string) *model.AuthPayload {
			p, err := svc.Register(ctx, name, "correct horse battery", nil)
			if err != nil {
				t.Fatal(err)
			}
			return p
		}
		alice, bob, root := register("alice"), register("bob"), register("root")
		if _, err := db.SetUserRole(ctx, root.User.ID, model.RoleAdmin); err != nil {
			t.Fatal(err)
		}
		as := func(p *model.AuthPayload) context.Context {
			var auth []string
			if p != nil {
				auth = []string{"Bearer " + p.AccessToken}
			}
			return account.WithRequest(ctx, account.NewRequest(tokens, auth, nil))
		}
		userRole := model.RoleUser
		key, err := svc.CreateAPIKey(as(root), "reports", &userRole, nil)
		if err != nil {
			t.Fatal(err)
		}
		// An admin's API key with the role USER.
		rootAsUser := &model.AuthPayload{AccessToken: key.Secret}
		for _, c := range []struct {
			name   string
			caller *model.AuthPayload
			id     string
			want   string // the username shown; "" for nil
			code   model.ErrorCode
			reason model.AuthErrorReason
		}{
			{"themself", alice, alice.User.ID, "alice", "", ""},
			{"an admin, anyone", root, bob.User.ID, "bob", "", ""},
			{"an admin, an id of no user", root, "0b9c2b9e-6a4e-4c43-9d3e-7d0f2f4c1a11", "", "", ""},
			{"an admin, a malformed id", root, "not-an-id", "", "", ""},
			{"a USER, someone else", alice, bob.User.ID, "", model.ErrorCodeForbidden, model.AuthErrorReasonInsufficientRole},
			{"an admin's USER key, someone else", rootAsUser, bob.User.ID, "", model.ErrorCodeForbidden, model.AuthErrorReasonInsufficientRole},
			{"an admin's USER key, the admin", rootAsUser, root.User.ID, "root", "", ""},
			{"nobody signed in", nil, bob.User.ID, "", model.ErrorCodeUnauthenticated, model.AuthErrorReasonMissingToken},
		} {
			u, err := svc.User(as(c.caller), c.id)
			var merr *model.Error
			switch {
			case c.code != "":
				if !errors.As(err, &merr) || merr.Code != c.code || merr.Reason != c.reason || u != nil {
					t.Errorf("%s: got %v, %v; want %s/%s", c.name, u, err, c.code, c.reason)
				}
			case err != nil:
				t.Errorf("%s: %v", c.name, err)
			case c.want == "" && u != nil, c.want != "" && (u == nil || u.Username != c.want):
				t.Errorf("%s: got %+v, want %q", c.name, u, c.want)
			}
		}
	})
}
