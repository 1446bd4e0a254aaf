package graph_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"gqlauth/account"
	"gqlauth/mfa"
	"gqlauth/mfa/softauthn"
	"gqlauth/model"
	"gqlauth/store/storetest"
)

// Every transaction that writes a second factor locks the user's row and checks again that the
// calling session is live; a TOTP confirmation activates only the secret its code was checked
// against, and only for the session that started the enrolment (§12).

// confirmTotp checks the code against the pending secret it reads before its transaction, and
// the transaction then confirms whatever pending secret the row holds: an enrollTotp of another
// session of the user (a thief with the password) that lands in between replaces the owner's
// secret with the thief's, and the owner's confirmation activates the thief's secret. The race
// is tried a number of times; it is won in a few percent of the tries.
func TestConfirmTotp_ActivatesOnlyTheSecretTheCodeWasCheckedAgainst(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		for i := range 150 {
			name := fmt.Sprintf("ann%d", i)
			owner := s.register(t, name, password)
			thief := s.login(t, name, password)
			var mine, theirs struct{ Secret string }
			s.query(t, owner.AccessToken, `mutation { enrollTotp { secret } }`, nil).field(t, "enrollTotp", &mine)
			code := totpCode(t, mine.Secret, s.Clock.Now())
			var wg sync.WaitGroup
			var confirmed, enrolled response
			wg.Add(2)
			go func() {
				defer wg.Done()
				confirmed = s.do(t, call{Query: `mutation($c: String!) { confirmTotp(code: $c) }`, Variables: map[string]any{"c": code}, Token: owner.AccessToken})
			}()
			go func() {
				defer wg.Done()
				time.Sleep(time.Duration(i%6) * time.Millisecond)
				enrolled = s.do(t, call{Query: `mutation { enrollTotp { secret } }`, Token: thief.AccessToken})
			}()
			wg.Wait()
			if len(confirmed.Errors) > 0 || len(enrolled.Errors) > 0 {
				continue
			}
			enrolled.field(t, "enrollTotp", &theirs)
			s.Clock.Advance(mfa.Period * time.Second)
			if r := s.verifyMfa(t, s.loginMFA(t, name).AccessToken, totpCode(t, theirs.Secret, s.Clock.Now())); len(r.Errors) == 0 {
				t.Fatalf("try %d: the owner's confirmTotp activated the thief's secret", i)
			}
		}
	})
}

// The owner's first enrolment revokes the thief's session, but a passkey registration the thief
// sent at the same moment passed its guard before the revocation and is not checked again in
// its transaction: the thief's passkey is added by a revoked session, and signs the thief in at
// AAL2 with no password. Tried a number of times; won in a few percent of the tries.
func TestFinishPasskeyRegistration_ARevokedSessionRegistersNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		for i := range 150 {
			name := fmt.Sprintf("ann%d", i)
			owner := s.register(t, name, password)
			thief := s.login(t, name, password)
			var mine struct{ Secret string }
			s.query(t, owner.AccessToken, `mutation { enrollTotp { secret } }`, nil).field(t, "enrollTotp", &mine)
			auth := softauthn.New(passkeyOrigin)
			c := s.begin(t, thief.AccessToken, "beginPasskeyRegistration")
			cred, _, err := auth.Create(c.Options)
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			var confirmed response
			wg.Add(2)
			go func() {
				defer wg.Done()
				confirmed = s.do(t, call{Query: `mutation($c: String!) { confirmTotp(code: $c) }`,
					Variables: map[string]any{"c": totpCode(t, mine.Secret, s.Clock.Now())}, Token: owner.AccessToken})
			}()
			go func() {
				defer wg.Done()
				time.Sleep(time.Duration(i%6) * time.Millisecond)
				s.finishRegistration(t, thief.AccessToken, c.ChallengeID, "thief", cred)
			}()
			wg.Wait()
			if len(confirmed.Errors) > 0 {
				continue
			}
			// The owner's session survived: the owner's TOTP was the first factor and the thief's
			// session was revoked by it.
			if r := s.do(t, call{Query: `{ sessions { id } }`, Token: owner.AccessToken}); len(r.Errors) > 0 {
				continue
			}
			if r := s.passkeySignIn(t, auth); len(r.Errors) == 0 {
				t.Fatalf("try %d: the thief's passkey, registered by a session the owner's enrolment revoked, signs in", i)
			}
		}
	})
}

// Another live session of the user cannot replace a pending TOTP enrolment (the owner's
// confirmation would otherwise meet a secret it never saw); the owner's own confirmation still
// works, and once that session is signed out its enrolment no longer stands in the way.
func TestEnrollTotp_AnotherSessionsPendingEnrolmentIsNotReplaced(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		owner := s.register(t, "ann", password)
		thief := s.login(t, "ann", password)
		var mine struct{ Secret string }
		s.query(t, owner.AccessToken, `mutation { enrollTotp { secret } }`, nil).field(t, "enrollTotp", &mine)
		s.do(t, call{Query: `mutation { enrollTotp { secret } }`, Token: thief.AccessToken}).wantError(t, "BAD_USER_INPUT", "")
		s.query(t, owner.AccessToken, `mutation($c: String!) { confirmTotp(code: $c) }`,
			map[string]any{"c": totpCode(t, mine.Secret, s.Clock.Now())}).field(t, "confirmTotp", new([]string))

		// A pending enrolment of a session that was signed out is replaced.
		bob := s.register(t, "bob", password)
		other := s.login(t, "bob", password)
		s.query(t, other.AccessToken, `mutation { enrollTotp { secret } }`, nil).field(t, "enrollTotp", new(struct{ Secret string }))
		s.query(t, other.AccessToken, `mutation { logout }`, nil)
		s.query(t, bob.AccessToken, `mutation { enrollTotp { secret } }`, nil).field(t, "enrollTotp", new(struct{ Secret string }))
	})
}

// A pending TOTP enrolment is confirmed only by the session that started it: another session of
// the user holding a right code gets INVALID_CODE and activates nothing.
func TestConfirmTotp_OnlyTheSessionThatStartedTheEnrolmentConfirmsIt(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		owner := s.register(t, "ann", password)
		other := s.login(t, "ann", password)
		var mine struct{ Secret string }
		s.query(t, owner.AccessToken, `mutation { enrollTotp { secret } }`, nil).field(t, "enrollTotp", &mine)
		s.do(t, call{Query: `mutation($c: String!) { confirmTotp(code: $c) }`, Variables: map[string]any{"c": totpCode(t, mine.Secret, s.Clock.Now())},
			Token: other.AccessToken}).wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
		s.query(t, owner.AccessToken, `mutation($c: String!) { confirmTotp(code: $c) }`,
			map[string]any{"c": totpCode(t, mine.Secret, s.Clock.Now())}).field(t, "confirmTotp", new([]string))
	})
}

// A user whose role needs a second factor (MFA_REQUIRED_ROLES) cannot remove their last one:
// BAD_USER_INPUT, and the factor stays.
func TestRemoveTotp_TheLastFactorOfARoleThatNeedsOneIsRefused(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind, withMFA(account.MFAConfig{RequiredRoles: []model.Role{model.RoleAdmin}}))
		root := s.signedInAdmin(t)
		secret, _ := s.enrolTotp(t, root.AccessToken)
		s.Clock.Advance(mfa.Period * time.Second)
		admin := s.stepUp(t, "root", secret)
		s.do(t, call{Query: `mutation { removeTotp }`, Token: admin.AccessToken}).wantError(t, "BAD_USER_INPUT", "")
		s.stepUp(t, "root", secret) // the factor is still there
	})
}
