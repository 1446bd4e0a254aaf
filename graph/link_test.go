package graph_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"gqlauth/account"
	"gqlauth/store/storetest"
)

// Linking a provider to a signed-in account (CONTRACT §10): linkIdentityStart, the link code of
// the callback, completeIdentityLink, unlinkIdentity.

func TestLinkIdentity_SignedInUserLinksAndUnlinksAProvider(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		p := newProvider(t, providerUser("sub-l", "linus", "linus@corp.example", true), providerUser("sub-o", "other", "other@corp.example", true))
		var logs strings.Builder
		var mu sync.Mutex
		s := newServer(t, kind, withOIDC(p.oidcConfig(nil)), withLogs(lockedWriter{&mu, &logs}))
		linus := s.signedInUser(t, "linus")

		back, verifier := s.linkThrough(t, p, linus.AccessToken, "linus")
		code := linkCodeOf(t, back)
		if ids := s.identities(t, linus.AccessToken); len(ids) != 0 {
			t.Fatalf("the callback linked %v; only completeIdentityLink may", ids)
		}
		var linked map[string]any
		s.completeLink(t, linus.AccessToken, code, verifier).field(t, "completeIdentityLink", &linked)
		if linked["provider"] != "corp" || linked["subject"] != "sub-l" || linked["email"] != "linus@corp.example" || linked["linkedAt"] == nil {
			t.Errorf("completeIdentityLink returned %v", linked)
		}
		if ids := s.identities(t, linus.AccessToken); len(ids) != 1 || ids[0]["subject"] != "sub-l" {
			t.Fatalf("identities after linking: %v", ids)
		}
		s.completeLink(t, linus.AccessToken, code, verifier).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS") // replayed
		if got := s.signInThrough(t, p, "linus"); got.User.ID != linus.User.ID {
			t.Errorf("the linked identity signs in to %s, want %s", got.User.ID, linus.User.ID)
		}
		// The code is stored only as a hash and appears in no log line.
		mu.Lock()
		logged := logs.String()
		mu.Unlock()
		if strings.Contains(logged, code) {
			t.Error("the link code appears in the log")
		}

		// Linking the same identity again succeeds and changes nothing.
		before := s.identityRows(t)
		back, verifier = s.linkThrough(t, p, linus.AccessToken, "linus")
		s.completeLink(t, linus.AccessToken, linkCodeOf(t, back), verifier).field(t, "completeIdentityLink", &linked)
		if s.identityRows(t) != before || linked["subject"] != "sub-l" {
			t.Errorf("relinking changed the identities or returned %v", linked)
		}

		// An identity that belongs to another account is not moved.
		other := s.signInThrough(t, p, "other")
		if back, _ := s.linkThrough(t, p, linus.AccessToken, "other"); back.RawQuery != "error=account_exists" {
			t.Errorf("linking another account's identity: %q, want error=account_exists", back.RawQuery)
		}
		if ids := s.identities(t, other.AccessToken); len(ids) != 1 {
			t.Errorf("the other account lost its identity: %v", ids)
		}
		// The refusal happened in whichever browser came back from the provider, which need not be
		// the starter's: the starter's own events show nothing of it (no stranger's IP or user
		// agent, no "that person has an account here"); it is recorded for admins only.
		for _, e := range s.securityEvents(t, linus.AccessToken, nil).events() {
			if e.Type == "SIGN_IN_FAILED" {
				t.Errorf("the link starter sees a refusal caused by another browser: %+v", e)
			}
		}
		var n int
		if err := s.DB.QueryRow(context.Background(), `SELECT count(*) FROM audit_events WHERE type = 'SIGN_IN_FAILED' AND user_id IS NULL AND detail LIKE 'corp (account `+linus.User.ID+`)%'`, &n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("%d admin-only SIGN_IN_FAILED events naming the starter, want 1", n)
		}

		// Refusals of linkIdentityStart itself.
		_, challenge := pkce()
		for _, c := range []struct{ provider, redirect, challenge, field string }{
			{"nope", spaURL, challenge, "provider"},
			{"corp", "https://evil.example/", challenge, "redirectTo"},
			{"corp", spaURL, "short", "codeChallenge"},
		} {
			r := s.do(t, call{Token: linus.AccessToken, Query: `mutation($p: String!, $c: String!, $r: String!) { linkIdentityStart(provider: $p, redirectTo: $r, codeChallenge: $c) }`,
				Variables: map[string]any{"p": c.provider, "c": c.challenge, "r": c.redirect}})
			if e := r.wantError(t, "BAD_USER_INPUT", ""); e.Extensions.Field != c.field {
				t.Errorf("field %q, want %q", e.Extensions.Field, c.field)
			}
		}
		s.do(t, call{Query: `mutation($c: String!) { linkIdentityStart(provider: "corp", redirectTo: "` + spaURL + `", codeChallenge: $c) }`,
			Variables: map[string]any{"c": challenge}}).wantError(t, "UNAUTHENTICATED", "MISSING_TOKEN")

		// A link whose session ended before the callback gets no code.
		mary := s.signedInUser(t, "mary")
		authURL, _ := s.linkStart(t, p, mary.AccessToken)
		providerRedirect := p.authorize(t, authURL, "linus")
		s.query(t, mary.AccessToken, `mutation { logout }`, nil)
		if back := s.callback(t, providerRedirect); back.RawQuery != "error=access_denied" {
			t.Errorf("link after logout: %q, want error=access_denied", back.RawQuery)
		}

		// Linus has a password, so the identity can go.
		var unlinked bool
		s.query(t, linus.AccessToken, `mutation { unlinkIdentity(provider: "corp") }`, nil).field(t, "unlinkIdentity", &unlinked)
		if ids := s.identities(t, linus.AccessToken); !unlinked || len(ids) != 0 {
			t.Errorf("after unlinking: %v %v", unlinked, ids)
		}
		if e := s.do(t, call{Token: linus.AccessToken, Query: `mutation { unlinkIdentity(provider: "corp") }`}).wantError(t, "BAD_USER_INPUT", ""); e.Extensions.Field != "provider" {
			t.Errorf("unlinking twice: field %q", e.Extensions.Field)
		}
		events := strings.Join(s.eventTypes(t), ",")
		if strings.Count(events, "IDENTITY_LINKED corp") != 2 || !strings.Contains(events, "IDENTITY_UNLINKED corp") {
			// Linus's link and the other account's sign-up; the relink records nothing.
			t.Errorf("audit: %s", events)
		}
	})
}

// The attack of the security review (issue 21, item 3): Mallory starts a link and sends its URL
// to Victor, who is signed in at the provider. Victor's browser goes through the provider and
// lands on the SPA with the link code; Mallory holds the session and the verifier but never sees
// that code. Whatever Victor's app does with it, nothing is linked to anyone, the code is used
// up, and Mallory redeeming it afterwards (had it leaked from Victor's history) gets nothing.
func TestLinkIdentity_LinkURLOpenedInAnotherBrowserLinksNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		p := newProvider(t, providerUser("sub-victor", "victor", "victor@corp.example", true))
		s := newServer(t, kind, withOIDC(p.oidcConfig(nil)))
		for i, c := range []struct {
			name string
			// victimsApp is what the app in Victor's browser does with a link code it did not ask for.
			victimsApp func(t *testing.T, code string)
		}{
			{"signed in, redeems it with its own session", func(t *testing.T, code string) {
				victor := s.signedInUser(t, "victor")
				_, ownChallenge := pkce()
				s.completeLink(t, victor.AccessToken, code, ownChallenge).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
				s.completeLink(t, victor.AccessToken, code, "").wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
				if ids := s.identities(t, victor.AccessToken); len(ids) != 0 {
					t.Errorf("Victor's local account got %v", ids)
				}
			}},
			{"signed out, kills it through the public exchange", func(t *testing.T, code string) {
				s.completeLink(t, "", code, "").wantError(t, "UNAUTHENTICATED", "MISSING_TOKEN")
				before := s.snapshot(t)
				s.exchangeCode(t, code, "").wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
				if s.snapshot(t) != before {
					t.Error("a link code started a session at the sign-in exchange")
				}
			}},
		} {
			t.Run(c.name, func(t *testing.T) {
				mallory := s.signedInUser(t, fmt.Sprintf("mallory-%d", i))
				before := s.identityRows(t)
				authURL, verifier := s.linkStart(t, p, mallory.AccessToken)
				back := s.callback(t, p.authorize(t, authURL, "victor")) // Victor's browser
				code := linkCodeOf(t, back)
				if s.identityRows(t) != before {
					t.Fatal("the callback linked the identity")
				}
				c.victimsApp(t, code)
				s.completeLink(t, mallory.AccessToken, code, verifier).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
				if ids := s.identities(t, mallory.AccessToken); len(ids) != 0 || s.identityRows(t) != before {
					t.Errorf("Mallory's account got %v", ids)
				}
				for _, e := range s.securityEvents(t, mallory.AccessToken, nil).events() {
					if e.Type == "IDENTITY_LINKED" || strings.Contains(deref(e.Detail), code) {
						t.Errorf("Mallory's events show %s %q", e.Type, deref(e.Detail))
					}
				}
			})
		}
		// Victor's provider account still belongs to Victor alone: it signs up on its own.
		if got := s.signInThrough(t, p, "victor"); strings.HasPrefix(got.User.Username, "mallory") {
			t.Errorf("Victor's provider account signs in to %s", got.User.Username)
		}
	})
}

func TestCompleteIdentityLink_OnlyTheStartingSessionWithItsVerifierWithinAMinute(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		p := newProvider(t, providerUser("sub-g", "grace", "grace@corp.example", true))
		s := newServer(t, kind, withOIDC(p.oidcConfig(nil)))
		grace := s.signedInUser(t, "grace")
		henry := s.signedInUser(t, "henry")
		invalid := func(t *testing.T, r response) { t.Helper(); r.wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS") }
		for _, c := range []struct {
			name   string
			redeem func(t *testing.T, code, verifier string) // a refused redemption
		}{
			{"another verifier", func(t *testing.T, code, _ string) {
				other, _ := pkce()
				invalid(t, s.completeLink(t, grace.AccessToken, code, other))
			}},
			{"no verifier", func(t *testing.T, code, _ string) {
				invalid(t, s.completeLink(t, grace.AccessToken, code, ""))
			}},
			{"the challenge instead of its verifier", func(t *testing.T, code, verifier string) {
				sum := sha256.Sum256([]byte(verifier))
				invalid(t, s.completeLink(t, grace.AccessToken, code, base64.RawURLEncoding.EncodeToString(sum[:])))
			}},
			{"expired", func(t *testing.T, code, verifier string) {
				s.Clock.Advance(account.AuthCodeTTL + time.Second)
				invalid(t, s.completeLink(t, grace.AccessToken, code, verifier))
			}},
			{"another session of the same user", func(t *testing.T, code, verifier string) {
				elsewhere := s.login(t, "grace", "correct horse battery")
				invalid(t, s.completeLink(t, elsewhere.AccessToken, code, verifier))
			}},
			{"another user", func(t *testing.T, code, verifier string) {
				invalid(t, s.completeLink(t, henry.AccessToken, code, verifier))
			}},
			{"the sign-in exchange", func(t *testing.T, code, verifier string) {
				invalid(t, s.exchangeCode(t, code, verifier))
			}},
		} {
			t.Run(c.name, func(t *testing.T) {
				before := s.identityRows(t)
				back, verifier := s.linkThrough(t, p, grace.AccessToken, "grace")
				code := linkCodeOf(t, back)
				c.redeem(t, code, verifier)
				// Used up: not even the starting session with the right verifier can use it now.
				invalid(t, s.completeLink(t, grace.AccessToken, code, verifier))
				if s.identityRows(t) != before {
					t.Error("a refused redemption linked something")
				}
			})
		}
		t.Run("two redemptions at once link once", func(t *testing.T) {
			back, verifier := s.linkThrough(t, p, grace.AccessToken, "grace")
			code := linkCodeOf(t, back)
			ok := 0
			for _, r := range inParallel(8, func() response { return s.completeLink(t, grace.AccessToken, code, verifier) }) {
				if len(r.Errors) == 0 {
					ok++
				} else {
					invalid(t, r)
				}
			}
			if ids := s.identities(t, grace.AccessToken); ok != 1 || len(ids) != 1 {
				t.Errorf("%d redemptions succeeded, identities %v; want exactly one", ok, ids)
			}
		})
	})
}

func TestCompleteIdentityLink_LoggedOutSessionLinksNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		p := newProvider(t, providerUser("sub-j", "joan", "joan@corp.example", true))
		s := newServer(t, kind, withOIDC(p.oidcConfig(nil)))
		joan := s.signedInUser(t, "joan")
		back, verifier := s.linkThrough(t, p, joan.AccessToken, "joan")
		code := linkCodeOf(t, back)
		s.query(t, joan.AccessToken, `mutation { logout }`, nil)
		s.completeLink(t, joan.AccessToken, code, verifier).wantError(t, "UNAUTHENTICATED", "SESSION_REVOKED")
		// Signing in again makes another session, which is not the one that started the link.
		again := s.login(t, "joan", "correct horse battery")
		s.completeLink(t, again.AccessToken, code, verifier).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
		if ids := s.identities(t, again.AccessToken); len(ids) != 0 {
			t.Errorf("identities: %v", ids)
		}
	})
}

func TestCompleteIdentityLink_SignInCodesLinkNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		p := newProvider(t, providerUser("sub-i", "ida", "ida@corp.example", true))
		s := newServer(t, kind, withOIDC(p.oidcConfig(nil)))
		kim := s.signedInUser(t, "kim")
		back, verifier := s.providerSignIn(t, p, "ida")
		code := back.Query().Get("code")
		s.completeLink(t, kim.AccessToken, code, verifier).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
		s.exchangeCode(t, code, verifier).wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS") // used up
		if ids := s.identities(t, kim.AccessToken); len(ids) != 0 {
			t.Errorf("identities: %v", ids)
		}
	})
}

func TestUnlinkIdentity_RefusedWhenItIsTheLastWayToSignIn(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		p := newProvider(t, providerUser("sub-n", "nopass", "nopass@corp.example", true))
		s := newServer(t, kind, withOIDC(p.oidcConfig(nil)))
		pair := s.signInThrough(t, p, "nopass")

		before := s.snapshot(t)
		s.do(t, call{Token: pair.AccessToken, Query: `mutation { unlinkIdentity(provider: "corp") }`}).wantError(t, "BAD_USER_INPUT", "")
		if s.snapshot(t) != before {
			t.Error("a refused unlink changed something")
		}
		// Two unlinks at once cannot race past the rule either.
		for _, r := range inParallel(4, func() response {
			return s.do(t, call{Token: pair.AccessToken, Query: `mutation { unlinkIdentity(provider: "corp") }`})
		}) {
			r.wantError(t, "BAD_USER_INPUT", "")
		}

		s.do(t, call{Token: pair.AccessToken, Query: `mutation { setPassword(newPassword: "short") }`}).wantError(t, "BAD_USER_INPUT", "")
		s.query(t, pair.AccessToken, `mutation { setPassword(newPassword: "a-first-password") }`, nil)
		if e := s.do(t, call{Token: pair.AccessToken, Query: `mutation { setPassword(newPassword: "a-second-password") }`}).wantError(t, "BAD_USER_INPUT", ""); e.Extensions.Field != "newPassword" {
			t.Errorf("second setPassword: field %q", e.Extensions.Field)
		}
		s.query(t, pair.AccessToken, `mutation { unlinkIdentity(provider: "corp") }`, nil)
		if got := s.login(t, pair.User.Username, "a-first-password"); got.User.ID != pair.User.ID {
			t.Errorf("password login after setPassword: %+v", got.User)
		}
		if !strings.Contains(strings.Join(s.eventTypes(t), ","), "PASSWORD_CHANGED first password set") {
			t.Error("setPassword was not audited")
		}
	})
}
