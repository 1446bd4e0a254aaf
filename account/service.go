// Package account holds the account and session rules: sign-up and sign-in, sessions and refresh
// rotation, logout, roles, passwords (bcrypt on a bounded pool), API keys, rate limits, the audit
// log and its subscriptions, the principal of each request and socket, and what an identity a
// provider vouched for signs in to. It must not import net/http, write cookies or format HTTP
// errors: it reads the Request of plain values that the edge (web) put in the context, and leaves
// there what the edge must do with the response (CookieIntent).
package account

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"runtime"
	"time"

	"github.com/google/uuid"

	"gqlauth/feed"
	"gqlauth/model"
	"gqlauth/store"
	"gqlauth/token"
)

// Service holds the rules of authentication: sign-in, sessions, refresh rotation, roles.
// Resolvers call it; it calls the store.
type Service struct {
	db     *store.DB
	tokens *token.Tokens
	// refreshTurns: one refresh per session at a time waits for the session's row (Refresh).
	refreshTurns turns
	// chainWalks bounds the refresh-chain walks (Descends) running at once to half the cores: a
	// forged token of a much-refreshed session costs tens of milliseconds of CPU to refuse.
	chainWalks chan struct{}
	passwords  *Passwords
	cfg        ServiceConfig
	now        func() time.Time
	log        *slog.Logger
	feed       *feed.Feed
}

// ServiceConfig configures a Service.
type ServiceConfig struct {
	// Cores is how many CPUs the process may use, as the runtime first chose GOMAXPROCS (CPU
	// quota aware), before the server raises it for bcrypt's threads; 0: GOMAXPROCS now. Refresh
	// chain walks get half of them (chainWalks).
	Cores         int
	RefreshTTL    time.Duration    // absolute lifetime of a session
	ReuseInterval time.Duration    // grace window in which a retired refresh token still works
	SignupEnabled bool             // whether Register works
	Now           func() time.Time // nil means time.Now
	Logger        *slog.Logger     // nil means slog.Default()
	Limits        Limits
	// AuditRetention is how long audit events are kept; 0 keeps them for ever.
	AuditRetention time.Duration
	// Feed is where the subscriptions read committed audit events (graph.WireEvents feeds
	// it); nil: a feed of its own, which nothing feeds.
	Feed *feed.Feed
	// Providers are the names of the configured OpenID Connect providers (a user has at most one
	// identity of each); none by default.
	Providers []string
	// LinkVerifiedEmail lets a new identity whose provider asserts a verified email join the
	// account with that email, when this server verified the account's address too; otherwise
	// such a sign-in is refused.
	LinkVerifiedEmail bool
	// Mail is what the flows that mail need (#23).
	Mail MailConfig
	// MFA configures the second factors (§12).
	MFA MFAConfig
}

// NewService returns a Service.
func NewService(db *store.DB, tokens *token.Tokens, passwords *Passwords, cfg ServiceConfig) *Service {
	s := &Service{db: db, tokens: tokens, passwords: passwords, cfg: cfg, now: cfg.Now, log: cfg.Logger, feed: cfg.Feed,
		chainWalks: make(chan struct{}, max(1, cmp.Or(cfg.Cores, runtime.GOMAXPROCS(0))/2))}
	if s.feed == nil {
		s.feed = feed.New()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s
}

// clock is the current time as the databases store it: UTC, to the microsecond, so that a value
// returned right after a write equals the value read back later.
func (s *Service) clock() time.Time { return s.now().UTC().Truncate(time.Microsecond) }

// internal logs err with its operation and returns the opaque error clients see.
func (s *Service) internal(ctx context.Context, op string, err error) error {
	s.log.ErrorContext(ctx, "internal error", "op", op, "err", err)
	return model.Internal()
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

// SweepAPIKeys deletes API keys that were revoked or expired more than DeadAPIKeyRetention ago,
// in bounded batches, and returns how many it deleted. Live keys are never touched; the audit log
// keeps the history of the deleted ones (API_KEY_CREATED, API_KEY_REVOKED).
func (s *Service) SweepAPIKeys(ctx context.Context) (int, error) {
	before := s.clock().Add(-DeadAPIKeyRetention)
	total := 0
	for {
		n, err := s.db.DeleteDeadAPIKeys(ctx, before, 1000)
		total += n
		if err != nil || n < 1000 {
			return total, err
		}
	}
}

// DeadAPIKeyRetention is how long a revoked or expired API key is kept before the sweep deletes
// it: long enough that a weekly job still using it is told why it fails (SESSION_REVOKED or
// TOKEN_EXPIRED, rather than INVALID_TOKEN for a key that never existed).
const DeadAPIKeyRetention = 7 * 24 * time.Hour

func validateID(id string) error {
	if _, err := uuid.Parse(id); err != nil {
		return model.BadInput("id", "id is malformed")
	}
	return nil
}

// ClientError is err as a client may see it, after check: the edge maps it onto its own
// responses.
func (s *Service) ClientError(ctx context.Context, op string, err error) error {
	return s.check(ctx, op, err)
}

// check passes *model.Error through, maps store.ErrNotFound to NOT_FOUND, and turns anything else
// into an opaque internal error after logging it.
func (s *Service) check(ctx context.Context, op string, err error) error {
	var merr *model.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &merr):
		return merr
	case errors.Is(err, store.ErrNotFound):
		return model.NotFound("no user with this id")
	case errors.Is(err, store.ErrUnavailable):
		s.log.ErrorContext(ctx, "database unavailable", "op", op, "err", err)
		return model.Unavailable()
	case errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled):
		// The client went away; what failed after that (a rolled-back transaction, a closed
		// connection) is its consequence, not an error to log.
		return model.Internal()
	default:
		return s.internal(ctx, op, err)
	}
}
