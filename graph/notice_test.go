package graph_test

import (
	"strings"
	"testing"

	"gqlauth/store/storetest"
)

func TestSecurityNotice_PasswordChangeIsMailedToTheVerifiedAddressOnly(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind)
		change := `mutation { changePassword(currentPassword: "correct horse battery", newPassword: "another horse battery") }`
		bob := s.registerWithEmail(t, "bob", "bob@example.com") // never verified
		wantTrue(t, s.do(t, call{Query: change, Token: bob.AccessToken}), "changePassword")
		ann := s.verifiedUser(t, smtp, "ann", "ann@example.com", 0)
		wantTrue(t, s.do(t, call{Query: change, Token: ann.AccessToken}), "changePassword")
		msgs := smtp.waitFor(t, 2)
		n := msgs[1]
		if n.To[0] != "ann@example.com" || !strings.Contains(n.Text, "password of your account was changed") ||
			!strings.Contains(n.Text, "every other session was signed out") || !strings.Contains(n.Text, "If this wasn't you") {
			t.Fatalf("notice %+v", n)
		}
		if got := smtp.quiet(); len(got) != 2 {
			t.Fatalf("%d messages; want the link and ann's notice only (bob's address is not verified)", len(got))
		}
	})
}

func TestSecurityNotice_FirstPasswordOfAProviderAccountIsMailed(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		p := newProvider(t, providerUser("sub-k", "katherine", "k@corp.example", true))
		smtp := startSMTP(t)
		s := newServer(t, kind, withMail(smtp, linkURL), withOIDC(p.oidcConfig(nil)))
		k := s.signInThrough(t, p, "katherine")
		// The provider's word does not verify the address here; the mailed link does.
		wantTrue(t, s.sendVerification(t, k.AccessToken), "sendEmailVerification")
		wantTrue(t, s.verifyEmail(t, tokenIn(t, smtp.waitFor(t, 1)[0])), "verifyEmail")
		wantTrue(t, s.do(t, call{Query: `mutation { setPassword(newPassword: "a first horse battery") }`, Token: k.AccessToken}), "setPassword")
		n := smtp.waitFor(t, 2)[1]
		if n.To[0] != "k@corp.example" || !strings.Contains(n.Text, "password of your account was changed") || !strings.Contains(n.Text, "first password") {
			t.Fatalf("notice %+v", n)
		}
	})
}
