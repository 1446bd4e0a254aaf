package graph_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"gqlauth/store/storetest"
)

const challenge = `Bearer error="invalid_token"`

// wantChallenge fails the test unless the response carries exactly the RFC 6750 invalid_token
// challenge (want) or none (!want).
func (r response) wantChallenge(t testing.TB, want bool) {
	t.Helper()
	got := r.Header.Values("WWW-Authenticate")
	if want && (len(got) != 1 || got[0] != challenge) {
		t.Fatalf("WWW-Authenticate: got %q, want %q", got, challenge)
	}
	if !want && len(got) != 0 {
		t.Fatalf("WWW-Authenticate: got %q, want none", got)
	}
}

// A credential that turns out unusable only when the database is asked (its session logged out,
// its API key revoked or expired) is as invalid as a bad signature (RFC 6750 §3.1: "expired,
// revoked"), so the response says invalid_token too. A disabled account is not: the credential is
// fine, its owner lacks the authority (ACCOUNT_DISABLED, FORBIDDEN), as with a role too low.
func TestChallenge_SentWheneverTheCredentialTurnsOutUnusable(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		admin := s.signedInAdmin(t)
		alice := s.signedInUser(t, "alice")
		loggedOut := s.login(t, "alice", "correct horse battery")
		s.query(t, loggedOut.AccessToken, `mutation { logout }`, nil)
		revokedKey := s.createAPIKey(t, alice.AccessToken, "revoked", nil)
		s.query(t, alice.AccessToken, `mutation($id: ID!) { revokeApiKey(id: $id) }`, map[string]any{"id": revokedKey.APIKey.ID})
		var shortKey apiKeySecret
		s.query(t, alice.AccessToken, createKey, map[string]any{"n": "short", "e": 120}).field(t, "createApiKey", &shortKey)
		liveKey := s.createAPIKey(t, alice.AccessToken, "live", nil)
		bob := s.signedInUser(t, "bob")
		bobKey := s.createAPIKey(t, bob.AccessToken, "bob's", nil)
		s.setDisabled(t, admin.AccessToken, bob.User.ID, true)

		type c struct {
			call         call
			code, reason string // "" : no error
			challenge    bool
		}
		me := `{ me { id } }`
		key := func(k string) http.Header { return http.Header{"X-Api-Key": {k}} }
		cases := map[string]c{
			"LoggedOutSession":        {call{Query: me, Token: loggedOut.AccessToken}, "UNAUTHENTICATED", "SESSION_REVOKED", true},
			"LoggedOutSessionMixed":   {call{Query: `{ me { id } __typename }`, Token: loggedOut.AccessToken}, "UNAUTHENTICATED", "SESSION_REVOKED", true},
			"RevokedAPIKey":           {call{Query: me, Header: key(revokedKey.Secret)}, "UNAUTHENTICATED", "SESSION_REVOKED", true},
			"RevokedAPIKeyAsBearer":   {call{Query: me, Token: revokedKey.Secret}, "UNAUTHENTICATED", "SESSION_REVOKED", true},
			"GarbageToken":            {call{Query: me, Token: "not.a.token"}, "UNAUTHENTICATED", "INVALID_TOKEN", true},
			"DisabledUserToken":       {call{Query: me, Token: bob.AccessToken}, "FORBIDDEN", "ACCOUNT_DISABLED", false},
			"DisabledUserAPIKey":      {call{Query: me, Header: key(bobKey.Secret)}, "FORBIDDEN", "ACCOUNT_DISABLED", false},
			"InsufficientRole":        {call{Query: `{ users { id } }`, Token: alice.AccessToken}, "FORBIDDEN", "INSUFFICIENT_ROLE", false},
			"ValidToken":              {call{Query: me, Token: alice.AccessToken}, "", "", false},
			"ValidAPIKey":             {call{Query: me, Header: key(liveKey.Secret)}, "", "", false},
			"NoCredential":            {call{Query: me}, "UNAUTHENTICATED", "MISSING_TOKEN", false},
			"PublicFieldOnly":         {call{Query: `{ __typename }`}, "", "", false},
			"LoggedOutButNotAskedFor": {call{Query: `{ __typename }`, Token: loggedOut.AccessToken}, "", "", false},
		}
		check := func(t *testing.T, c c) {
			t.Helper()
			r := s.do(t, c.call)
			if c.code == "" {
				if len(r.Errors) > 0 {
					t.Fatalf("errors: %+v", r.Errors)
				}
			} else {
				r.wantError(t, c.code, c.reason)
			}
			r.wantChallenge(t, c.challenge)
		}
		for name, c := range cases {
			t.Run(name, func(t *testing.T) { check(t, c) })
		}
		s.Clock.Advance(16 * time.Minute) // alice's access token and the short key have expired
		for name, c := range map[string]c{
			"ExpiredAccessToken": {call{Query: me, Token: alice.AccessToken}, "UNAUTHENTICATED", "TOKEN_EXPIRED", true},
			"ExpiredAPIKey":      {call{Query: me, Header: key(shortKey.Secret)}, "UNAUTHENTICATED", "TOKEN_EXPIRED", true},
			"StillValidAPIKey":   {call{Query: me, Header: key(liveKey.Secret)}, "", "", false},
		} {
			t.Run(name, func(t *testing.T) { check(t, c) })
		}
	})
}

// Each credential header is read with all its values (several header lines of one name): one
// credential sent twice, or two different ones, is INVALID_TOKEN with the challenge, never the
// first line counting — as two credentials of different kinds already were.
func TestCredentials_RepeatedHeaderIsInvalidToken(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		alice := s.signedInUser(t, "alice")
		bob := s.signedInUser(t, "bob")
		key := s.createAPIKey(t, alice.AccessToken, "k", nil)
		bobKey := s.createAPIKey(t, bob.AccessToken, "k", nil)
		for name, h := range map[string]http.Header{
			"TwoAuthorizations":        {"Authorization": {"Bearer " + alice.AccessToken, "Bearer " + bob.AccessToken}},
			"SameAuthorizationTwice":   {"Authorization": {"Bearer " + alice.AccessToken, "Bearer " + alice.AccessToken}},
			"AuthorizationThenGarbage": {"Authorization": {"Bearer " + alice.AccessToken, "Bearer not.a.token"}},
			"EmptyThenAuthorization":   {"Authorization": {"", "Bearer " + alice.AccessToken}},
			"TwoAPIKeys":               {"X-Api-Key": {key.Secret, bobKey.Secret}},
			"SameAPIKeyTwice":          {"X-Api-Key": {key.Secret, key.Secret}},
			"APIKeyAndBearerKey":       {"Authorization": {"Bearer " + key.Secret}, "X-Api-Key": {key.Secret}},
		} {
			t.Run(name, func(t *testing.T) {
				r := s.do(t, call{Query: `{ me { username } }`, Header: h})
				r.wantError(t, "UNAUTHENTICATED", "INVALID_TOKEN")
				r.wantChallenge(t, true)
			})
		}
		for name, h := range map[string]http.Header{
			"OneAuthorization": {"Authorization": {"Bearer " + alice.AccessToken}},
			"OneAPIKey":        {"X-Api-Key": {key.Secret}},
		} {
			t.Run("Accepted/"+name, func(t *testing.T) {
				r := s.do(t, call{Query: `{ me { username } }`, Header: h})
				if len(r.Errors) > 0 || !strings.Contains(string(r.Data["me"]), `"alice"`) {
					t.Fatalf("got %+v %s", r.Errors, r.Data["me"])
				}
				r.wantChallenge(t, false)
			})
		}
	})
}

// connection_init's payload is read as HTTP reads headers: member names match whatever their case,
// a credential named twice (in two spellings) or two credentials are refused, and a value that is
// not a string closes the socket with 4401 INVALID_TOKEN instead of the socket going on as
// anonymous. null is no credential (what JavaScript clients send when signed out).
func TestSocket_ConnectionInitReadsCredentialsAsHTTPDoes(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		alice := s.signedInUser(t, "alice")
		key := s.createAPIKey(t, alice.AccessToken, "socket", nil)
		tok := "Bearer " + alice.AccessToken
		for name, payload := range map[string]map[string]any{
			"authorization":        {"authorization": tok},
			"AUTHORIZATION":        {"AUTHORIZATION": tok},
			"x-api-key":            {"x-api-key": key.Secret},
			"X-API-KEY":            {"X-API-KEY": key.Secret},
			"APIKeyAsBearer":       {"aUtHoRiZaTiOn": "Bearer " + key.Secret},
			"NullBesideCredential": {"Authorization": tok, "X-API-Key": nil},
			"OtherMembers":         {"Authorization": tok, "locale": "fr", "authorization-hint": 1},
		} {
			t.Run("SignsIn/"+name, func(t *testing.T) {
				sock, _ := s.dialSocket(t, "", payload)
				rs := results(t, sock.acked(t).operation(t, "1", `{ me { username } }`, nil))
				if len(rs) != 1 || len(rs[0].Errors) > 0 || !strings.Contains(string(rs[0].Data["me"]), `"alice"`) {
					t.Fatalf("me over the socket: %+v", rs)
				}
			})
		}
		for name, payload := range map[string]map[string]any{
			"None":          nil,
			"NullAuth":      {"Authorization": nil},
			"NullKey":       {"x-api-key": nil},
			"EmptyAuth":     {"Authorization": ""},
			"UnrelatedOnly": {"token": tok},
		} {
			t.Run("Anonymous/"+name, func(t *testing.T) {
				sock, _ := s.dialSocket(t, "", payload)
				rs := results(t, sock.acked(t).operation(t, "1", `{ me { username } }`, nil))
				if len(rs) != 1 {
					t.Fatalf("results: %+v", rs)
				}
				rs[0].wantError(t, "UNAUTHENTICATED", "MISSING_TOKEN")
			})
		}
		for name, payload := range map[string]map[string]any{
			"LowerBearerAndLowerKey": {"authorization": tok, "x-api-key": key.Secret},
			"MixedBearerAndKey":      {"AUTHORIZATION": tok, "X-Api-Key": key.Secret},
			"TwoSpellingsOfAuth":     {"authorization": tok, "Authorization": tok},
			"TwoSpellingsOfKey":      {"x-api-key": key.Secret, "X-API-Key": key.Secret},
			"NullAndAuth":            {"authorization": nil, "Authorization": tok},
			"AuthNumber":             {"Authorization": 123},
			"AuthBool":               {"Authorization": true},
			"AuthList":               {"Authorization": []any{tok}},
			"AuthObject":             {"Authorization": map[string]any{"token": alice.AccessToken}},
			"KeyList":                {"X-API-Key": []any{key.Secret}},
			"KeyNumber":              {"x-api-key": 42},
		} {
			t.Run("Refused/"+name, func(t *testing.T) {
				sock, _ := s.dialSocket(t, "", payload)
				sock.wantClosed(t, 3*time.Second, 4401, "INVALID_TOKEN")
			})
		}
	})
}
