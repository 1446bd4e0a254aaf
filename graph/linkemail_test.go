package graph_test

import (
	"testing"

	"gqlauth/store/storetest"
)

func TestSignIn_LinkVerifiedEmailTrustsOnlyAnAddressVerifiedThroughTheMailedLink(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		p := newProvider(t, providerUser("sub-ann", "ann-at-corp", "ann@corp.example", true),
			providerUser("sub-bob", "bob-at-corp", "bob@corp.example", true))
		smtp := startSMTP(t)
		s := newServer(t, kind, withMail(smtp, linkURL), withOIDC(p.oidcConfig(nil)), withLinkVerifiedEmail(true))
		// ann verifies her address the real way: the mailed link, used through verifyEmail.
		ann := s.verifiedUser(t, smtp, "ann", "ann@corp.example", 0)
		bob := s.registerWithEmail(t, "bob", "bob@corp.example") // never verified

		pair := s.signInThrough(t, p, "ann-at-corp")
		if pair.User.ID != ann.User.ID {
			t.Fatalf("the provider sign-in reached %s (%s), want ann's account", pair.User.Username, pair.User.ID)
		}
		if ids := s.identities(t, ann.AccessToken); len(ids) != 1 || ids[0]["subject"] != "sub-ann" {
			t.Fatalf("ann's identities: %v", ids)
		}

		if back, _ := s.providerSignIn(t, p, "bob-at-corp"); back.RawQuery != "error=account_exists" {
			t.Fatalf("the SPA got %q, want error=account_exists for an unverified address", back.RawQuery)
		}
		if ids := s.identities(t, bob.AccessToken); len(ids) != 0 {
			t.Fatalf("bob's identities: %v", ids)
		}
	})
}
