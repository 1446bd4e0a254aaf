package graph_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"gqlauth/store/storetest"
)

func TestLogin_ReturnsTokensForValidCredentials(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		reg := s.register(t, "Alice", "correct horse battery")

		p := s.login(t, "alice", "correct horse battery") // usernames compare ignoring case
		if p.TokenType != "Bearer" || p.ExpiresIn != 900 || p.AccessToken == "" || p.RefreshToken == "" {
			t.Fatalf("payload: %+v", p)
		}
		if got, want := p.User.ID, reg.User.ID; got != want {
			t.Fatalf("user id: got %s, want %s", got, want)
		}
		if got, want := p.User.Username, "Alice"; got != want {
			t.Fatalf("username: got %q, want %q (stored as given)", got, want)
		}
		var me user
		s.query(t, p.AccessToken, `{ me { id username role } }`, nil).field(t, "me", &me)
		if me.ID != reg.User.ID || me.Role != "USER" {
			t.Fatalf("me: %+v", me)
		}
	})
}

func TestLogin_FailuresLookAlike(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		s.register(t, "alice", "correct horse battery")
		s.register(t, "maxlen", strings.Repeat("p", 72))

		cases := []struct{ name, username, password string }{
			{"WrongPassword", "alice", "wrong horse battery"},
			{"UnknownUser", "bob", "correct horse battery"},
			{"MalformedUsername", "a b", "correct horse battery"},
			{"EmptyPassword", "alice", ""},
			// bcrypt compares only 72 bytes; a longer password must not match the stored 72 bytes.
			{"PasswordBeyond72Bytes", "maxlen", strings.Repeat("p", 72) + "extra"},
		}
		var message string
		for _, c := range cases {
			r := s.do(t, call{
				Query:     `mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken } }`,
				Variables: map[string]any{"u": c.username, "p": c.password},
			})
			e := r.wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
			if message == "" {
				message = e.Message
			}
			if e.Message != message {
				t.Errorf("%s: message %q differs from %q", c.name, e.Message, message)
			}
		}
	})
}

func TestLogin_UnknownUserCostsABcryptComparison(t *testing.T) {
	// At cost 10 a comparison takes tens of milliseconds; an unknown username that skipped it would
	// answer in well under a tenth of that.
	s := newServer(t, storetest.SQLite, withBcryptCost(10))
	s.register(t, "alice", "correct horse battery")
	timeLogin := func(username string) time.Duration {
		best := time.Hour
		for range 3 {
			start := time.Now()
			s.do(t, call{Query: `mutation($u: String!) { login(username: $u, password: "wrong password") { accessToken } }`, Variables: map[string]any{"u": username}})
			best = min(best, time.Since(start))
		}
		return best
	}
	known, unknown := timeLogin("alice"), timeLogin("nobody")
	if unknown < known/2 {
		t.Fatalf("unknown username answered in %v, wrong password in %v: timing reveals which usernames exist", unknown, known)
	}
}

func TestLogin_RehashesPasswordAtConfiguredCost(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		db := storetest.Open(t, kind)
		clk := &clock{now: time.Now().UTC()}
		old := newServerOn(t, db, clk, withBcryptCost(4))
		old.register(t, "alice", "correct horse battery")

		current := newServerOn(t, db, clk, withBcryptCost(5))
		current.login(t, "alice", "correct horse battery")

		u, err := db.UserByUsername(context.Background(), "alice")
		if err != nil {
			t.Fatal(err)
		}
		if cost, _ := bcrypt.Cost([]byte(u.PasswordHash)); cost != 5 {
			t.Fatalf("cost after login: got %d, want 5", cost)
		}
		current.login(t, "alice", "correct horse battery")
	})
}

func TestLogin_DisabledUserRefused(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		admin := s.signedInAdmin(t)
		alice := s.signedInUser(t, "alice")
		s.setDisabled(t, admin.AccessToken, alice.User.ID, true)

		r := s.do(t, call{Query: `mutation { login(username: "alice", password: "correct horse battery") { accessToken } }`})
		r.wantError(t, "FORBIDDEN", "ACCOUNT_DISABLED")
		s.me(t, alice.AccessToken).wantError(t, "FORBIDDEN", "ACCOUNT_DISABLED")
		// A wrong password says nothing about the account's state.
		r = s.do(t, call{Query: `mutation { login(username: "alice", password: "wrong horse battery") { accessToken } }`})
		r.wantError(t, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
	})
}

func TestRegister_ValidatesInput(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		s.register(t, "Taken", "correct horse battery")
		s.do(t, call{Query: `mutation { register(username: "withmail", password: "correct horse battery", email: "Taken@Example.com") { accessToken } }`})

		cases := []struct {
			name, username, password string
			email                    any
			field                    string // "" means accepted
		}{
			{"UsernameTooShort", "ab", "password", nil, "username"},
			{"UsernameMinLength", "abc", "password", nil, ""},
			{"UsernameMaxLength", strings.Repeat("a", 64), "password", nil, ""},
			{"UsernameTooLong", strings.Repeat("a", 65), "password", nil, "username"},
			{"UsernameSpace", "a b c", "password", nil, "username"},
			{"UsernameNonASCII", "jürgen", "password", nil, "username"},
			{"UsernameNullByte", "abc\x00def", "password", nil, "username"},
			{"UsernamePunctuationAllowed", "a.b_c-d", "password", nil, ""},
			{"UsernameTakenOtherCase", "tAKEN", "password", nil, "username"},
			{"Password7Bytes", "pw7", "1234567", nil, "password"},
			{"Password8Bytes", "pw8", "12345678", nil, ""},
			{"Password72Bytes", "pw72", strings.Repeat("x", 72), nil, ""},
			{"Password73Bytes", "pw73", strings.Repeat("x", 73), nil, "password"},
			// 36 two-byte characters are 72 bytes; one more is 74 bytes.
			{"Password72BytesMultibyte", "pwmb72", strings.Repeat("é", 36), nil, ""},
			{"Password74BytesMultibyte", "pwmb74", strings.Repeat("é", 37), nil, "password"},
			// NFD "e" + combining acute is 3 bytes per letter, 2 after NFC: 30 letters are 60 bytes.
			{"PasswordNormalizedToNFC", "pwnfc", strings.Repeat("e\u0301", 30), nil, ""},
			{"EmailInvalid", "mail1", "password", "not-an-email", "email"},
			{"EmailWithSpace", "mail2", "password", "a b@example.com", "email"},
			{"EmailValid", "mail3", "password", "a@example.com", ""},
			{"EmailBlankMeansNone", "mail4", "password", "", ""},
			{"EmailTakenOtherCase", "mail5", "password", "taken@example.COM", "email"},
		}
		accepted := 0
		for _, c := range cases {
			r := s.do(t, call{
				Query:     `mutation($u: String!, $p: String!, $e: String) { register(username: $u, password: $p, email: $e) { user { id } } }`,
				Variables: map[string]any{"u": c.username, "p": c.password, "e": c.email},
			})
			if c.field == "" {
				if len(r.Errors) > 0 {
					t.Errorf("%s: want accepted, got %+v", c.name, r.Errors)
				}
				accepted++
				continue
			}
			if len(r.Errors) != 1 || r.Errors[0].Extensions.Code != "BAD_USER_INPUT" || r.Errors[0].Extensions.Field != c.field {
				t.Errorf("%s: want BAD_USER_INPUT on %s, got %+v", c.name, c.field, r.Errors)
			}
		}
		count, err := s.DB.CountUsers(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got, want := count, 2+accepted; got != want { // Taken, withmail and the accepted cases
			t.Fatalf("users after the table: got %d, want %d (a refused registration wrote a row?)", got, want)
		}
	})
}

func TestRegister_ConcurrentSameUsernameOneWins(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s := newServer(t, kind)
		results := inParallel(8, func() response {
			return s.do(t, call{Query: `mutation { register(username: "race", password: "correct horse battery") { user { id } } }`})
		})
		won := 0
		for _, r := range results {
			switch {
			case len(r.Errors) == 0:
				won++
			case r.Errors[0].Extensions.Code != "BAD_USER_INPUT" || r.Errors[0].Extensions.Field != "username":
				t.Errorf("loser got %+v, want BAD_USER_INPUT on username", r.Errors)
			}
		}
		if won != 1 {
			t.Fatalf("%d registrations succeeded, want exactly 1", won)
		}
	})
}

func TestRegister_RefusedWhenSignupDisabled(t *testing.T) {
	s := newServer(t, storetest.SQLite, withSignupDisabled())
	r := s.do(t, call{Query: `mutation { register(username: "alice", password: "correct horse battery") { accessToken } }`})
	r.wantError(t, "FORBIDDEN", "")
}
