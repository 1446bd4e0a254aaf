package graph_test

import (
	"fmt"
	"sync"
	"testing"

	"gqlauth/mfa/softauthn"
	"gqlauth/store/storetest"
)

// Two accounts that register one credential id at the same moment both pass the "already
// registered" check, and the second insert meets the unique index: INTERNAL_SERVER_ERROR, where
// §12 wants every refused WebAuthn response to be INVALID_CODE.
func TestFinishPasskeyRegistration_OneCredentialIdTwiceAtOnceIsInvalidCode(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		for i := range 20 {
			id := []byte(fmt.Sprintf("the same credential id, try %02d", i))
			type prepared struct {
				token, challenge string
				cred             []byte
			}
			var ps []prepared
			for j := range 2 {
				u := s.register(t, fmt.Sprintf("u%d_%d", i, j), password)
				c := s.begin(t, u.AccessToken, "beginPasskeyRegistration")
				cred, _, err := softauthn.New(passkeyOrigin).Create(c.Options, softauthn.WithCredentialID(id))
				if err != nil {
					t.Fatal(err)
				}
				ps = append(ps, prepared{u.AccessToken, c.ChallengeID, cred})
			}
			rs := make([]response, len(ps))
			var wg sync.WaitGroup
			for j, p := range ps {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rs[j] = s.finishRegistration(t, p.token, p.challenge, "k", p.cred)
				}()
			}
			wg.Wait()
			for _, r := range rs {
				if len(r.Errors) > 0 && r.Errors[0].Extensions.Code == "INTERNAL_SERVER_ERROR" {
					t.Fatalf("try %d: %+v", i, r.Errors)
				}
			}
		}
	})
}

// One credential id registered by a second account, one after the other, is INVALID_CODE.
func TestFinishPasskeyRegistration_ACredentialIdOfAnotherAccountIsInvalidCode(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		id := []byte("one credential id for two accounts")
		for j, want := range []string{"", "INVALID_CODE"} {
			u := s.register(t, fmt.Sprintf("user%d", j), password)
			c := s.begin(t, u.AccessToken, "beginPasskeyRegistration")
			cred, _, err := softauthn.New(passkeyOrigin).Create(c.Options, softauthn.WithCredentialID(id))
			if err != nil {
				t.Fatal(err)
			}
			r := s.finishRegistration(t, u.AccessToken, c.ChallengeID, "k", cred)
			if want == "" && len(r.Errors) > 0 {
				t.Fatalf("first registration: %+v", r.Errors)
			} else if want != "" {
				r.wantError(t, "UNAUTHENTICATED", want)
			}
		}
	})
}
