package graph_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"gqlauth/account"
	"gqlauth/model"
	"gqlauth/store/storetest"
	"gqlauth/token"
)

// An API key acts at most at the level of the session that minted it, and the owner's first
// enrolment and an admin's resetUserMfa revoke the user's keys (§12).

// A thief with the password signs in before the owner has a factor and mints an API key; the
// owner's first enrolment leaves it acting at AAL2 on no field of the owner's own level.
func TestMFA_AKeyMintedBeforeTheFirstFactorDoesNotActAtAAL2(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		ann := s.register(t, "ann", password)
		thief := s.login(t, "ann", password)
		key := s.createAPIKey(t, thief.AccessToken, "thief", nil)
		s.enrolTotp(t, ann.AccessToken)
		s.do(t, call{Query: `{ sessions { id } }`, Token: thief.AccessToken}).wantError(t, "UNAUTHENTICATED", "SESSION_REVOKED")
		s.do(t, call{Query: `{ sessions { id } }`, Token: s.loginMFA(t, "ann").AccessToken}).wantError(t, "FORBIDDEN", "MFA_REQUIRED")
		r := s.withKey(t, key.Secret, `{ sessions { id } apiKeys { id } }`)
		if len(r.Errors) == 0 {
			t.Fatalf("the key minted at AAL1 before the first factor still acts at the owner's level (AAL2): %s", r.Data)
		}
	})
}

// The first enrolment revokes every API key of the user (a stolen password may have minted
// them), as it revokes the other sessions.
func TestMFA_TheFirstEnrolmentRevokesTheUsersAPIKeys(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		ann := s.signedInUser(t, "ann")
		key := s.createAPIKey(t, ann.AccessToken, "ci", nil)
		s.withKey(t, key.Secret, `{ me { id } }`).field(t, "me", new(struct{ ID string }))
		s.enrolTotp(t, ann.AccessToken)
		s.withKey(t, key.Secret, `{ me { id } }`).wantError(t, "UNAUTHENTICATED", "SESSION_REVOKED")
	})
}

// A key minted at AAL1 that is still live when its owner has a factor (one minted before keys
// recorded their level: the migration gives those AAL1) acts at AAL1: refused on the fields of
// the owner's own level. A key minted at AAL2 acts at AAL2 there.
func TestMFA_AKeyActsAtMostAtTheLevelItWasMintedAt(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		ann := s.register(t, "ann", password)
		secret, _ := s.enrolTotp(t, ann.AccessToken)
		s.Clock.Advance(31 * time.Second)
		at2 := s.stepUp(t, "ann", secret)
		minted := s.createAPIKey(t, at2.AccessToken, "at AAL2", nil)
		s.withKey(t, minted.Secret, `{ sessions { id } }`).field(t, "sessions", new([]struct{ ID string }))

		old := account.APIKeyPrefix + token.Random(32)
		now := s.Clock.Now()
		if err := s.DB.CreateAPIKey(context.Background(), &model.APIKey{
			ID: uuid.NewString(), UserID: ann.User.ID, Name: "old", Prefix: old[:12], SecretHash: token.HashRefreshToken(old),
			Role: model.RoleUser, AAL: model.AuthLevelAal1, CreatedAt: now, ExpiresAt: now.Add(time.Hour),
		}); err != nil {
			t.Fatal(err)
		}
		s.withKey(t, old, `{ sessions { id } }`).wantError(t, "FORBIDDEN", "MFA_REQUIRED")
	})
}

// An admin's resetUserMfa revokes the user's API keys with the sessions: whoever holds one may
// be the reason for the reset.
func TestResetUserMfa_RevokesTheUsersAPIKeys(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		root := s.signedInAdmin(t)
		rootSecret, _ := s.enrolTotp(t, root.AccessToken)
		ann := s.register(t, "ann", password)
		annSecret, _ := s.enrolTotp(t, ann.AccessToken)
		s.Clock.Advance(31 * time.Second)
		key := s.createAPIKey(t, s.stepUp(t, "ann", annSecret).AccessToken, "ci", nil)
		s.query(t, s.stepUp(t, "root", rootSecret).AccessToken, `mutation($id: ID!) { resetUserMfa(id: $id) { id } }`,
			map[string]any{"id": ann.User.ID}).field(t, "resetUserMfa", new(struct{ ID string }))
		s.withKey(t, key.Secret, `{ me { id } }`).wantError(t, "UNAUTHENTICATED", "SESSION_REVOKED")
	})
}
