package model

import (
	"strings"
	"unicode/utf8"
)

// The rules of text that is stored, compared or logged, for every package that takes text from
// outside (the account rules, the edge, the OpenID relying party).

// ValidText reports whether s is UTF-8 text without NUL, as every stored or compared input must be.
func ValidText(s string) bool { return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 }

// Truncate cuts s to at most n bytes without splitting a UTF-8 sequence, and drops bytes the
// databases will not store.
func Truncate(s string, n int) string {
	s = strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }
