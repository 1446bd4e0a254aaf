package graph_test

import (
	"context"
	"encoding/base32"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"gqlauth/account"
	"gqlauth/mfa"
	"gqlauth/model"
	"gqlauth/store/storetest"
)

// The flows of the second factors (§12) beyond the sign-in: enrolment rules, removal, recovery
// codes, an admin's reset, MFA_REQUIRED_ROLES and the notices.

func TestMFA_FactorChangesAreMailedToTheVerifiedAddress(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind)
		ann := s.registerWithEmail(t, "ann", "ann@example.com")
		wantTrue(t, s.sendVerification(t, ann.AccessToken), "sendEmailVerification")
		wantTrue(t, s.verifyEmail(t, tokenIn(t, smtp.waitFor(t, 1)[0])), "verifyEmail")

		_, codes := s.enrolTotp(t, ann.AccessToken)
		second := s.loginMFA(t, "ann")
		if r := s.verifyMfa(t, second.AccessToken, codes[0]); len(r.Errors) > 0 {
			t.Fatal(r.Errors)
		}
		s.query(t, second.AccessToken, `mutation { regenerateRecoveryCodes }`, nil)
		s.query(t, second.AccessToken, `mutation { removeTotp }`, nil)
		msgs := smtp.waitFor(t, 5)[1:] // after the verification link; delivered in any order
		for _, want := range []string{"A second factor was added: totp", "A recovery code was used to sign in; 9 left", "New recovery codes were made", "A second factor was removed: totp"} {
			found := 0
			for _, m := range msgs {
				if strings.Contains(m.Text, want) && len(m.To) == 1 && m.To[0] == "ann@example.com" {
					found++
				}
			}
			if found != 1 {
				t.Errorf("%d notices to ann@example.com say %q, want 1", found, want)
			}
		}
	})
}

func TestMFA_NoNoticeToAnUnverifiedAddress(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind)
		ann := s.registerWithEmail(t, "ann", "ann@example.com")
		s.enrolTotp(t, ann.AccessToken)
		if got := smtp.quiet(); len(got) != 0 {
			t.Fatalf("mailed %d messages to an unverified address", len(got))
		}
	})
}

func TestEnrollTotp_TheSecretIsSealedAtRest(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		ann := s.register(t, "ann", password)
		secret, _ := s.enrolTotp(t, ann.AccessToken)
		raw, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(secret)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := s.DB.DumpTable(context.Background(), "totp_factors")
		if err != nil || len(rows) != 1 {
			t.Fatalf("%d rows, %v", len(rows), err)
		}
		for col, v := range rows[0] {
			for _, clear := range []string{secret, string(raw), hex.EncodeToString(raw)} {
				if strings.Contains(strings.ToLower(v), strings.ToLower(clear)) {
					t.Fatalf("totp_factors.%s holds the secret in the clear", col)
				}
			}
		}
	})
}

func TestConfirmTotp_AWrongCodeActivatesNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		ann := s.register(t, "ann", password)
		var e struct{ Secret string }
		s.query(t, ann.AccessToken, `mutation { enrollTotp { secret } }`, nil).field(t, "enrollTotp", &e)
		wrong := totpCode(t, e.Secret, s.Clock.Now().Add(-5*time.Minute))
		s.do(t, call{Query: `mutation($c: String!) { confirmTotp(code: $c) }`, Variables: map[string]any{"c": wrong}, Token: ann.AccessToken}).
			wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
		if p := s.loginMFA(t, "ann"); p.MfaRequired {
			t.Fatal("a refused confirmation activated TOTP")
		}
		// Once active, a second enrolment is refused (remove it first).
		s.query(t, ann.AccessToken, `mutation($c: String!) { confirmTotp(code: $c) }`, map[string]any{"c": totpCode(t, e.Secret, s.Clock.Now())})
		s.do(t, call{Query: `mutation { enrollTotp { secret } }`, Token: ann.AccessToken}).wantError(t, "BAD_USER_INPUT", "")
	})
}

func TestRemoveTotp_NeedsARecentStepUpAndTakesTheRecoveryCodesWithTheLastFactor(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		ann := s.register(t, "ann", password)
		secret, _ := s.enrolTotp(t, ann.AccessToken)
		p := s.stepUp(t, "ann", secret)
		s.Clock.Advance(11 * time.Minute) // past REAUTH_WINDOW's default; the access token is still valid
		remove := `mutation { removeTotp }`
		s.do(t, call{Query: remove, Token: p.AccessToken}).wantError(t, "FORBIDDEN", "REAUTHENTICATION_REQUIRED")
		s.do(t, call{Query: `mutation { regenerateRecoveryCodes }`, Token: p.AccessToken}).wantError(t, "FORBIDDEN", "REAUTHENTICATION_REQUIRED")
		// A step-up renews the window.
		if r := s.verifyMfa(t, p.AccessToken, totpCode(t, secret, s.Clock.Now())); len(r.Errors) > 0 {
			t.Fatal(r.Errors)
		}
		s.query(t, p.AccessToken, remove, nil)
		var me struct {
			Mfa struct {
				Totp              bool
				RecoveryCodesLeft int
			}
		}
		s.query(t, p.AccessToken, `{ me { mfa { totp recoveryCodesLeft } } }`, nil).field(t, "me", &me)
		if me.Mfa.Totp || me.Mfa.RecoveryCodesLeft != 0 {
			t.Fatalf("after removing the last factor: %+v", me.Mfa)
		}
		if login := s.loginMFA(t, "ann"); login.MfaRequired {
			t.Fatal("a password alone still needs a second step")
		}
		if n := s.countEvents(t, "MFA_REMOVED"); n != 1 {
			t.Fatalf("%d MFA_REMOVED events", n)
		}
	})
}

func TestRegenerateRecoveryCodes_TheOldCodesStopWorking(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		ann := s.register(t, "ann", password)
		secret, old := s.enrolTotp(t, ann.AccessToken)
		p := s.stepUp(t, "ann", secret)
		var fresh []string
		s.query(t, p.AccessToken, `mutation { regenerateRecoveryCodes }`, nil).field(t, "regenerateRecoveryCodes", &fresh)
		if len(fresh) != 10 || fresh[0] == old[0] {
			t.Fatalf("new codes %v", fresh)
		}
		s.verifyMfa(t, s.loginMFA(t, "ann").AccessToken, old[0]).wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
		if r := s.verifyMfa(t, s.loginMFA(t, "ann").AccessToken, fresh[0]); len(r.Errors) > 0 {
			t.Fatal(r.Errors)
		}
		if n := s.countEvents(t, "RECOVERY_CODES_REGENERATED"); n != 1 {
			t.Fatalf("%d RECOVERY_CODES_REGENERATED events", n)
		}
	})
}

func TestResetUserMfa_AnAdminAtAAL2RemovesEveryFactorAndSignsTheUserOut(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		root := s.signedInAdmin(t)
		rootSecret, _ := s.enrolTotp(t, root.AccessToken)
		ann := s.register(t, "ann", password)
		s.enrolTotp(t, ann.AccessToken)
		reset := `mutation($id: ID!) { resetUserMfa(id: $id) { username mfa { totp recoveryCodesLeft } } }`
		vars := map[string]any{"id": ann.User.ID}

		// An admin's password alone is not enough.
		s.do(t, call{Query: reset, Variables: vars, Token: s.loginMFA(t, "root").AccessToken}).wantError(t, "FORBIDDEN", "MFA_REQUIRED")
		admin := s.stepUp(t, "root", rootSecret)
		var u struct {
			Mfa struct {
				Totp              bool
				RecoveryCodesLeft int
			}
		}
		s.query(t, admin.AccessToken, reset, vars).field(t, "resetUserMfa", &u)
		if u.Mfa.Totp || u.Mfa.RecoveryCodesLeft != 0 {
			t.Fatalf("after the reset: %+v", u.Mfa)
		}
		s.me(t, ann.AccessToken).wantError(t, "UNAUTHENTICATED", "SESSION_REVOKED")
		if p := s.loginMFA(t, "ann"); p.MfaRequired {
			t.Fatal("the reset user still needs a second step")
		}
		if n := s.countEvents(t, "MFA_RESET"); n != 1 {
			t.Fatalf("%d MFA_RESET events", n)
		}
		s.do(t, call{Query: reset, Variables: map[string]any{"id": "0190f4e0-0000-7000-8000-000000000000"}, Token: admin.AccessToken}).
			wantError(t, "NOT_FOUND", "")
	})
}

func TestMFARequiredRoles_AnAdminWithoutAFactorCanOnlyEnrol(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind, withMFA(account.MFAConfig{RequiredRoles: []model.Role{model.RoleAdmin}}))
		root := s.signedInAdmin(t)
		e := s.do(t, call{Query: `{ users { id } }`, Token: root.AccessToken}).wantError(t, "FORBIDDEN", "MFA_REQUIRED")
		if e.Extensions.RequiredAal != "AAL2" {
			t.Fatalf("requiredAal %q", e.Extensions.RequiredAal)
		}
		s.do(t, call{Query: `{ sessions { id } }`, Token: root.AccessToken}).wantError(t, "FORBIDDEN", "MFA_REQUIRED")
		s.query(t, root.AccessToken, `{ me { username } }`, nil)
		// Enrolment works, and the first factor raises this session.
		s.enrolTotp(t, root.AccessToken)
		s.query(t, root.AccessToken, `{ users { id } }`, nil)
		// A USER is not affected.
		ann := s.register(t, "ann", password)
		s.query(t, ann.AccessToken, `{ sessions { id } }`, nil)
	})
}

func TestVerifyMfa_OnAnAccountWithoutAFactorIsAWrongCode(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		ann := s.register(t, "ann", password)
		s.verifyMfa(t, ann.AccessToken, "123456").wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
		s.verifyMfa(t, ann.AccessToken, strings.Repeat("A", mfa.RecoveryCodeChars)).wantError(t, "UNAUTHENTICATED", "INVALID_CODE")
	})
}
