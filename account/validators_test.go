package account_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"gqlauth/account"
	"gqlauth/token"
)

// FuzzValidators: the input rules hold for every string, and normalization is idempotent.
func FuzzValidators(f *testing.F) {
	for _, seed := range []string{"alice", "a.b_c-d", "ab", "jürgen", "e\u0301", strings.Repeat("x", 73), "\x00", "\xff\xfe",
		"\x00correct horse", "correct\x00horse", "correct horse\x00", "correct \xc0\xaf horse", "correct \xed\xa0\x80 horse",
		"correct \xe2\x82 horse", "0190f0f0-0000-7000-8000-000000000000.c2VjcmV0", "0190f0f0-0000-7000-8000-00000000000\x00.c2VjcmV0",
		"0190f0f0-0000-7000-8000-000000000000.c2Vj\x00cmV0", "alice\x00@example.com"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if account.ValidateUsername(s) == nil {
			if len(s) < 3 || len(s) > 64 || strings.ContainsFunc(s, func(r rune) bool {
				return !(r < utf8.RuneSelf && (r == '.' || r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'))
			}) {
				t.Fatalf("username %q accepted", s)
			}
		}
		n := account.NormalizePassword(s)
		if account.NormalizePassword(n) != n {
			t.Fatalf("NFC not idempotent on %q", s)
		}
		err := account.ValidatePassword("password", n)
		text := utf8.ValidString(n) && !strings.ContainsRune(n, 0)
		if ok := len(n) >= account.MinPasswordBytes && len(n) <= account.MaxPasswordBytes && text; ok != (err == nil) {
			t.Fatalf("password %q of %d bytes: err %v", n, len(n), err)
		}
		email := s
		if e, err := account.NormalizeEmail(&email); err == nil && e != nil && (!strings.Contains(*e, "@") || len(*e) > 254 || strings.ContainsRune(*e, 0)) {
			t.Fatalf("email %q accepted", s)
		}
		// A refresh token that is looked up at all is printable ASCII naming a UUID or nothing.
		if sid, ok := token.RefreshTokenSession(s); ok {
			if strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r >= utf8.RuneSelf }) || len(s) > token.MaxRefreshTokenLength {
				t.Fatalf("refresh token %q accepted", s)
			}
			if sid != "" && len(sid) != 36 {
				t.Fatalf("refresh token %q names session %q", s, sid)
			}
		}
	})
}
