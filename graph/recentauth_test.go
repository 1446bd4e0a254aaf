package graph_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"gqlauth/account"
	"gqlauth/store/storetest"
)

// The mutations that need a recent authentication (@recentAuth, §12): every one that mints a
// lasting credential, adds a way to sign in, changes how the account signs in, or grants
// privilege. The schema is the one source of the rule; this list is what a reviewer reads.
var recentAuthMutations = []string{
	"beginPasskeyRegistration", "changeEmail", "completeIdentityLink", "confirmTotp", "createApiKey",
	"createUser", "enrollTotp", "finishPasskeyRegistration", "linkIdentityStart", "regenerateRecoveryCodes",
	"removePasskey", "removeTotp", "setPassword", "setUserRole",
}

// recentAuthExempt are mutations whose names look like a credential change but that deliberately
// do not carry @recentAuth.
var recentAuthExempt = map[string]string{
	// It takes the current password, which is itself a fresh authentication.
	"changePassword": "checks the current password",
	// Disabling takes access away; re-enabling gives an account back its own ways in, and adds none.
	"setUserDisabled": "grants no credential and no privilege",
}

// credentialLike is the names of the mutations that must carry @recentAuth or be exempt.
var credentialLike = []string{"create", "set", "link", "enroll", "confirm", "remove", "regenerate", "change", "complete"}

func TestSchema_RecentAuthIsOnEveryMutationThatChangesHowTheAccountSignsIn(t *testing.T) {
	var carrying []string
	for _, f := range schema.Mutation.Fields {
		has := f.Directives.ForName("recentAuth") != nil
		if has {
			carrying = append(carrying, f.Name)
			if f.Directives.ForName("auth") == nil {
				t.Errorf("%s carries @recentAuth without @auth, which checks it", f.Name)
			}
		}
		matches := slices.ContainsFunc(credentialLike, func(p string) bool { return strings.HasPrefix(f.Name, p) })
		if _, exempt := recentAuthExempt[f.Name]; matches && !has && !exempt {
			t.Errorf("%s looks like a credential change but carries no @recentAuth and is not in recentAuthExempt", f.Name)
		}
		if _, exempt := recentAuthExempt[f.Name]; exempt && has {
			t.Errorf("%s is exempt from @recentAuth but carries it", f.Name)
		}
	}
	slices.Sort(carrying)
	if !slices.Equal(carrying, recentAuthMutations) {
		t.Errorf("mutations with @recentAuth:\n got %v\nwant %v", carrying, recentAuthMutations)
	}
}

// A session whose sign-in is older than REAUTH_WINDOW is refused on each @recentAuth mutation,
// before any of its rules run (FORBIDDEN/REAUTHENTICATION_REQUIRED), on HTTP and on a socket.
func TestRecentAuth_AStaleSessionIsRefusedOnEveryMarkedMutation(t *testing.T) {
	calls := map[string]string{
		"createUser":                `mutation { createUser(username: "backdoor", password: "thief's own password", role: ADMIN) { id } }`,
		"setUserRole":               `mutation($id: ID!) { setUserRole(id: $id, role: ADMIN) { id } }`,
		"createApiKey":              `mutation { createApiKey(name: "x") { secret } }`,
		"linkIdentityStart":         `mutation { linkIdentityStart(provider: "p", redirectTo: "https://app.example/cb", codeChallenge: "0123456789012345678901234567890123456789abc") }`,
		"completeIdentityLink":      `mutation { completeIdentityLink(code: "c", codeVerifier: "v") { provider } }`,
		"setPassword":               `mutation { setPassword(newPassword: "another fine password") }`,
		"changeEmail":               `mutation { changeEmail(newEmail: "new@example.com", currentPassword: "correct horse battery") }`,
		"enrollTotp":                `mutation { enrollTotp { secret } }`,
		"confirmTotp":               `mutation { confirmTotp(code: "123456") }`,
		"removeTotp":                `mutation { removeTotp }`,
		"regenerateRecoveryCodes":   `mutation { regenerateRecoveryCodes }`,
		"beginPasskeyRegistration":  `mutation { beginPasskeyRegistration { challengeId } }`,
		"finishPasskeyRegistration": `mutation { finishPasskeyRegistration(challengeId: "x", name: "k", credential: {}) { id } }`,
		"removePasskey":             `mutation($id: ID!) { removePasskey(id: $id) }`,
	}
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind, withMFA(account.MFAConfig{ReauthWindow: 10 * time.Minute}))
		admin := s.signedInAdmin(t)
		secret, _ := s.enrolTotp(t, admin.AccessToken)
		s.Clock.Advance(31 * time.Second)
		root := s.stepUp(t, "root", secret) // at AAL2: the level rule passes, the recent one is left
		s.Clock.Advance(11 * time.Minute)
		for _, name := range recentAuthMutations {
			q, ok := calls[name]
			if !ok {
				t.Fatalf("no call for %s", name)
			}
			s.do(t, call{Query: q, Variables: map[string]any{"id": admin.User.ID}, Token: root.AccessToken}).
				wantError(t, "FORBIDDEN", "REAUTHENTICATION_REQUIRED")
		}
	})
}

// Linking a provider identity adds a way to sign in to the account, yet neither
// linkIdentityStart nor completeIdentityLink asks for a recent authentication (§12: operations
// that "change how the account signs in" need one; "a stolen access token alone cannot mint a
// key or a factor"): a thief holding only an access token whose sign-in is older than
// REAUTH_WINDOW links their own provider account and signs in through it from then on, after
// the token has expired.
func TestLinkIdentity_NeedsARecentAuthentication(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		p := newProvider(t, providerUser("sub-t", "thief", "thief@corp.example", true))
		s := newServer(t, kind, withOIDC(p.oidcConfig(nil)), withMFA(account.MFAConfig{ReauthWindow: 10 * time.Minute}))
		ann := s.signedInUser(t, "ann")
		s.Clock.Advance(11 * time.Minute)
		s.do(t, call{Query: `mutation { createApiKey(name: "x") { secret } }`, Token: ann.AccessToken}).
			wantError(t, "FORBIDDEN", "REAUTHENTICATION_REQUIRED")
		s.do(t, call{Query: `mutation($c: String!, $r: String!) { linkIdentityStart(provider: "corp", redirectTo: $r, codeChallenge: $c) }`,
			Variables: map[string]any{"c": "0123456789012345678901234567890123456789abc", "r": "https://app.example/cb"}, Token: ann.AccessToken}).
			wantError(t, "FORBIDDEN", "REAUTHENTICATION_REQUIRED")
		s.do(t, call{Query: `mutation { completeIdentityLink(code: "c", codeVerifier: "v") { provider } }`, Token: ann.AccessToken}).
			wantError(t, "FORBIDDEN", "REAUTHENTICATION_REQUIRED")
		// Reauthenticated, the same session links.
		s.query(t, ann.AccessToken, `mutation($p: String!) { reauthenticate(password: $p) { aal } }`, map[string]any{"p": password})
		back, verifier := s.linkThrough(t, p, ann.AccessToken, "thief")
		if r := s.completeLink(t, ann.AccessToken, linkCodeOf(t, back), verifier); len(r.Errors) > 0 {
			t.Fatalf("a reauthenticated session could not link: %+v", r.Errors)
		}
	})
}

// An admin's access token whose sign-in is older than REAUTH_WINDOW cannot mint an API key, but
// it can mint a whole new ADMIN account with a password the thief chose (createUser), or make
// the thief's own account an ADMIN (setUserRole): a longer-lived credential than any key, which
// the thief then guards with a second factor of their own.
func TestAdmin_MintingAnAdminNeedsARecentAuthentication(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind, withMFA(account.MFAConfig{ReauthWindow: 10 * time.Minute}))
		root := s.signedInAdmin(t)
		s.Clock.Advance(11 * time.Minute)
		s.do(t, call{Query: `mutation { createApiKey(name: "x") { secret } }`, Token: root.AccessToken}).
			wantError(t, "FORBIDDEN", "REAUTHENTICATION_REQUIRED")
		r := s.do(t, call{Query: `mutation { createUser(username: "backdoor", password: "thief's own password", role: ADMIN) { id } }`, Token: root.AccessToken})
		if len(r.Errors) == 0 {
			t.Fatalf("an admin session signed in 11 minutes ago created an ADMIN account: %s", r.Data)
		}
	})
}

// On a socket the rule is the same per operation: a socket opened with a session whose sign-in
// is older than REAUTH_WINDOW cannot mint a key; a fresh one can.
func TestRecentAuth_TheSameRuleOnASocket(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind, withMFA(account.MFAConfig{ReauthWindow: 10 * time.Minute}))
		ann := s.signedInUser(t, "ann")
		const mint = `mutation { createApiKey(name: "socket") { secret } }`
		sock, _ := s.dialSocket(t, "", bearer(ann.AccessToken))
		sock.acked(t)
		if r := results(t, sock.operation(t, "1", mint, nil)); len(r) == 0 || len(r[0].Errors) > 0 {
			t.Fatalf("a fresh session on a socket: %+v", r)
		}
		s.Clock.Advance(11 * time.Minute)
		results(t, sock.operation(t, "2", mint, nil))[0].wantError(t, "FORBIDDEN", "REAUTHENTICATION_REQUIRED")
	})
}
