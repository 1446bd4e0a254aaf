package account

import (
	"context"
	"fmt"
	"regexp"
	"runtime"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/text/unicode/norm"

	"gqlauth/model"
	"gqlauth/token"
)

// Password length limits, in bytes of the NFC form. bcrypt reads at most 72 bytes.
const (
	MinPasswordBytes = 8
	MaxPasswordBytes = 72
)

// Passwords hashes and checks passwords with bcrypt at one cost, at most Workers at a time.
type Passwords struct {
	cost int
	// dummy is a hash of a random password at cost, compared against when the user is unknown so
	// that an unknown username costs as much time as a wrong password.
	dummy []byte
	pool  *pool
}

// PasswordConfig configures Passwords.
type PasswordConfig struct {
	Cost         int           // bcrypt.MinCost–bcrypt.MaxCost
	Workers      int           // concurrent bcrypt operations; 0 means one per CPU
	QueueTimeout time.Duration // longest wait for a worker before TOO_MANY_REQUESTS; 0 means 2s
}

// NewPasswords returns Passwords for cfg.
func NewPasswords(cfg PasswordConfig) (*Passwords, error) {
	dummy, err := bcrypt.GenerateFromPassword([]byte(token.Random(16)), cfg.Cost)
	if err != nil {
		return nil, fmt.Errorf("bcrypt cost %d: %w", cfg.Cost, err)
	}
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.NumCPU()
	}
	if cfg.QueueTimeout <= 0 {
		cfg.QueueTimeout = 2 * time.Second
	}
	return &Passwords{cost: cfg.Cost, dummy: dummy, pool: newPool(cfg.Workers, cfg.QueueTimeout)}, nil
}

// NormalizePassword returns the form of a password that is hashed and compared: Unicode NFC, so
// that the same password typed on two keyboards matches.
func NormalizePassword(password string) string { return norm.NFC.String(password) }

// ValidatePassword checks the length rule on the normalized password; field names the argument.
func ValidatePassword(field, normalized string) error {
	switch n := len(normalized); {
	case n < MinPasswordBytes:
		return model.BadInput(field, fmt.Sprintf("password must be at least %d bytes", MinPasswordBytes))
	case n > MaxPasswordBytes:
		return model.BadInput(field, fmt.Sprintf("password must be at most %d bytes (bcrypt's limit)", MaxPasswordBytes))
	case !model.ValidText(normalized):
		return model.BadInput(field, "password must be valid UTF-8 text without NUL characters")
	}
	return nil
}

// Hash hashes a normalized password.
func (p *Passwords) Hash(ctx context.Context, normalized string) (string, error) {
	var (
		h   []byte
		err error
	)
	if perr := p.pool.run(ctx, func() { h, err = bcrypt.GenerateFromPassword([]byte(normalized), p.cost) }); perr != nil {
		return "", perr
	}
	return string(h), err
}

// Match reports whether a normalized password matches hash. A password longer than bcrypt's limit
// never matches: bcrypt would compare only its first 72 bytes. An empty hash (unknown user) costs
// the same time as a real comparison and never matches.
func (p *Passwords) Match(ctx context.Context, hash, normalized string) (bool, error) {
	h := []byte(hash)
	if len(h) == 0 {
		h = p.dummy
	}
	var ok bool
	if err := p.pool.run(ctx, func() { ok = bcrypt.CompareHashAndPassword(h, []byte(normalized)) == nil }); err != nil {
		return false, err
	}
	return ok && len(hash) > 0 && len(normalized) <= MaxPasswordBytes, nil
}

// NeedsRehash reports whether hash was made at another cost than the configured one.
func (p *Passwords) NeedsRehash(hash string) bool {
	cost, err := bcrypt.Cost([]byte(hash))
	return err != nil || cost != p.cost
}

var usernamePattern = regexp.MustCompile(`^[A-Za-z0-9._-]{3,64}$`)

// ValidateUsername checks the username rule: 3–64 ASCII letters, digits, '.', '_' or '-'.
func ValidateUsername(username string) error {
	if !usernamePattern.MatchString(username) {
		return model.BadInput("username", "username must be 3–64 characters of letters, digits, '.', '_' or '-'")
	}
	return nil
}

// NormalizeEmail validates an optional email loosely (one '@' with text on both sides, no spaces,
// at most 254 bytes) and returns it trimmed; an absent or blank email is nil.
func NormalizeEmail(email *string) (*string, error) {
	if email == nil || strings.TrimSpace(*email) == "" {
		return nil, nil
	}
	e := strings.TrimSpace(*email)
	local, domain, ok := strings.Cut(e, "@")
	if !ok || local == "" || domain == "" || strings.Contains(domain, "@") || len(e) > 254 ||
		strings.ContainsFunc(e, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return nil, model.BadInput("email", "email is not a valid address")
	}
	return &e, nil
}
