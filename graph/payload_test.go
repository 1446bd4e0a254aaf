package graph_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/vektah/gqlparser/v2/ast"

	"gqlauth/graph"
	"gqlauth/mfa/softauthn"
	"gqlauth/store/storetest"
)

// The user inside an AuthPayload is the caller (issue 21, item 6): a public mutation that signs
// someone in resolves every field of that user — "the user themself or an admin" ones included —
// for them, whatever credentials the request came with.

// schema is the server's schema, as parsed from schema.graphqls.
var schema = graph.NewExecutableSchema(graph.Config{}).Schema()

// everyField selects every field of the object type name, and of each object field, every field
// without a selection of its own: a field added to the schema tomorrow is selected too.
func everyField(name string, depth int) string {
	var b strings.Builder
	for _, f := range schema.Types[name].Fields {
		if strings.HasPrefix(f.Name, "__") {
			continue
		}
		switch def := schema.Types[f.Type.Name()]; {
		case def.Kind == ast.Scalar || def.Kind == ast.Enum:
			b.WriteString(f.Name + " ")
		case depth > 0:
			fmt.Fprintf(&b, "%s { %s} ", f.Name, everyField(def.Name, depth-1))
		}
	}
	return b.String()
}

// authPayloadMutations lists the public mutations that return an AuthPayload.
func authPayloadMutations() []string {
	var out []string
	for _, f := range schema.Mutation.Fields {
		if f.Type.Name() == "AuthPayload" && f.Directives.ForName("public") != nil {
			out = append(out, f.Name)
		}
	}
	return out
}

type payloadUser struct {
	Username   string
	Identities []struct{ Provider string }
}

func (u payloadUser) providers() []string {
	var out []string
	for _, id := range u.Identities {
		out = append(out, id.Provider)
	}
	return out
}

func TestAuthPayload_UserResolvesEveryFieldForThePayloadsUser(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		p := newProvider(t, providerUser("sub-k", "katherine", "k@corp.example", true))
		smtp := startSMTP(t)
		s := newServer(t, kind, withOIDC(p.oidcConfig(nil)), withMail(smtp, linkURL))
		alice := s.signedInUser(t, "alice")
		s.link(t, alice.User.ID, "corp")
		s.registerWithEmail(t, "dora", "dora@example.com")
		bob := s.signedInUser(t, "bob")   // not an admin: he may not see alice's identities
		dave := s.signedInUser(t, "dave") // signs in with a passkey
		daveKey := softauthn.New(passkeyOrigin)
		s.addPasskey(t, dave.AccessToken, daveKey, "laptop")

		selection := "accessToken user { " + everyField("User", 1) + "}"
		n := 0
		// How to call each mutation; the user the payload is for, and that user's providers.
		calls := map[string]func() (call, string, []string){
			"register": func() (call, string, []string) {
				n++
				return call{Query: fmt.Sprintf(`mutation { register(username: "carol%d", password: "correct horse battery") { %s } }`, n, selection)},
					fmt.Sprintf("carol%d", n), nil
			},
			"login": func() (call, string, []string) {
				return call{Query: `mutation { login(username: "alice", password: "correct horse battery") { ` + selection + ` } }`},
					"alice", []string{"corp"}
			},
			"refresh": func() (call, string, []string) {
				r := s.login(t, "alice", "correct horse battery").RefreshToken
				return call{Query: `mutation($r: String) { refresh(refreshToken: $r) { ` + selection + ` } }`, Variables: map[string]any{"r": r}},
					"alice", []string{"corp"}
			},
			"signInWithCode": func() (call, string, []string) {
				code := s.mailedCode(t, smtp, "dora@example.com", len(smtp.messages()))
				return call{Query: `mutation($c: String!) { signInWithCode(email: "dora@example.com", code: $c) { ` + selection + ` } }`,
					Variables: map[string]any{"c": code}}, "dora", nil
			},
			"finishPasskeySignIn": func() (call, string, []string) {
				c := s.begin(t, "", "beginPasskeySignIn")
				cred, err := daveKey.Get(c.Options, nil)
				if err != nil {
					t.Fatal(err)
				}
				return call{Query: `mutation($c: ID!, $k: JSON!) { finishPasskeySignIn(challengeId: $c, credential: $k) { ` + selection + ` } }`,
					Variables: map[string]any{"c": c.ChallengeID, "k": cred}}, "dave", nil
			},
			"exchangeAuthCode": func() (call, string, []string) {
				back, verifier := s.providerSignIn(t, p, "katherine")
				return call{Query: `mutation($c: String!, $v: String!) { exchangeAuthCode(code: $c, codeVerifier: $v) { ` + selection + ` } }`,
					Variables: map[string]any{"c": back.Query().Get("code"), "v": verifier}}, "katherine", []string{"corp"}
			},
		}
		for _, name := range authPayloadMutations() {
			if calls[name] == nil {
				t.Errorf("Mutation.%s returns an AuthPayload: add it to this test", name)
			}
		}
		for _, name := range authPayloadMutations() {
			for _, cred := range []struct{ name, token string }{
				{"no token", ""}, {"someone else's token", bob.AccessToken}, {"a bad token", "not-a-token"},
			} {
				t.Run(name+"/"+cred.name, func(t *testing.T) {
					c, username, providers := calls[name]()
					c.Token = cred.token
					r := s.do(t, c)
					if len(r.Errors) > 0 {
						t.Fatalf("errors: %+v", r.Errors)
					}
					var payload struct{ User payloadUser }
					r.field(t, name, &payload)
					if payload.User.Username != username || !slices.Equal(payload.User.providers(), providers) {
						t.Fatalf("user %+v, want %s with identities %v", payload.User, username, providers)
					}
				})
			}
		}
	})
}

func TestAuthPayload_CallerItMakesStaysWithinItsField(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		admin := s.signedInAdmin(t)
		before := s.snapshot(t)
		for _, c := range []struct{ name, query, field string }{
			{"a guarded sibling", `mutation { login(username: "root", password: "correct horse battery") { user { id } } createUser(username: "mallory", password: "correct horse battery") { id } }`, "createUser"},
			{"a sibling that signs out", `mutation { login(username: "root", password: "correct horse battery") { user { id } } logout(scope: ALL) }`, "logout"},
		} {
			t.Run(c.name, func(t *testing.T) {
				r := s.do(t, call{Query: c.query})
				e := r.wantError(t, "UNAUTHENTICATED", "MISSING_TOKEN")
				if len(e.Path) != 1 || e.Path[0] != c.field {
					t.Fatalf("error at %v, want %s", e.Path, c.field)
				}
			})
		}
		// Only the two sign-ins' sessions were written: no user, and the admin's sessions all live.
		var sessions []struct{ ID string }
		s.query(t, admin.AccessToken, `{ sessions { id } }`, nil).field(t, "sessions", &sessions)
		if len(sessions) != 3 {
			t.Fatalf("%d live sessions, want the first and the two sign-ins'", len(sessions))
		}
		if after := s.snapshot(t); strings.Count(after, "mallory") > 0 || strings.Count(after, "username:") != strings.Count(before, "username:") {
			t.Fatalf("users changed:\nbefore %s\nafter  %s", before, after)
		}
	})
}

func TestIdentities_VisibleToTheUserThemselfAndAdminsOnly(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		admin := s.signedInAdmin(t)
		alice := s.signedInUser(t, "alice")
		s.link(t, admin.User.ID, "corp")
		s.link(t, alice.User.ID, "corp")
		s.seedEvents(t, 3, alice.User.ID, func(int) string { return admin.User.ID }) // the admin acted on alice

		const fields = `{ id identities { provider } }`
		identitiesOf := func(raw json.RawMessage) map[string][]string {
			t.Helper()
			out := map[string][]string{}
			var walk func(v any)
			walk = func(v any) {
				switch v := v.(type) {
				case map[string]any:
					if id, ok := v["id"].(string); ok {
						if ids, ok := v["identities"].([]any); ok {
							out[id] = []string{}
							for _, i := range ids {
								out[id] = append(out[id], i.(map[string]any)["provider"].(string))
							}
						}
					}
					for _, x := range v {
						walk(x)
					}
				case []any:
					for _, x := range v {
						walk(x)
					}
				}
			}
			var v any
			json.Unmarshal(raw, &v)
			walk(v)
			return out
		}
		for _, c := range []struct {
			name, token, query string
			want               map[string][]string
		}{
			{"a user sees their own, not an admin's", alice.AccessToken,
				`{ securityEvents(first: 10) { edges { node { user ` + fields + ` actor ` + fields + ` } } } }`,
				map[string][]string{alice.User.ID: {"corp"}, admin.User.ID: {}}},
			{"an admin sees everyone's", admin.AccessToken, `{ users ` + fields + ` }`,
				map[string][]string{alice.User.ID: {"corp"}, admin.User.ID: {"corp"}}},
			{"an admin sees actors' and users'", admin.AccessToken,
				`{ auditEvents(first: 100, userId: "` + alice.User.ID + `") { edges { node { user ` + fields + ` actor ` + fields + ` } } } }`,
				map[string][]string{alice.User.ID: {"corp"}, admin.User.ID: {"corp"}}},
			{"a payload's user is not an admin", "",
				`mutation { login(username: "alice", password: "correct horse battery") { user ` + fields + ` } }`,
				map[string][]string{alice.User.ID: {"corp"}}},
		} {
			t.Run(c.name, func(t *testing.T) {
				r := s.query(t, c.token, c.query, nil)
				got := map[string][]string{}
				for _, raw := range r.Data {
					for id, providers := range identitiesOf(raw) {
						got[id] = providers
					}
				}
				if fmt.Sprint(got) != fmt.Sprint(c.want) {
					t.Fatalf("identities by user: %v, want %v", got, c.want)
				}
			})
		}
	})
}
