package account

import (
	"cmp"
	"context"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"gqlauth/model"
	"gqlauth/ratelimit"
	"gqlauth/store"
)

// Limits are the rate limits on credential operations. They are counted per operation field, in
// the service, so that aliases and repeated fields in one request count one by one.
type Limits struct {
	Counter ratelimit.Counter // nil disables every limit

	// PerClient attempts of login, register, refresh and changePassword per client IP in
	// ClientWindow.
	PerClient    int
	ClientWindow time.Duration

	// FailuresPerUser failed password checks of one username from one client (an IP, or an IPv6
	// /64) in UserWindow; then that client is refused for that username, before any password is
	// checked, until the window ends. Other clients are not: one client cannot lock the owner out.
	FailuresPerUser int
	UserWindow      time.Duration

	// FailuresPerUserAllClients failed password checks of one username from all clients together
	// in UserWindow (0: no such ceiling); then the username is refused, until the window ends, to
	// every client that has not signed in to it successfully in the last KnownClientTTL. A guesser
	// spread over many clients is throttled this way; the owner, from a network they signed in
	// from before, is not locked out.
	FailuresPerUserAllClients int

	// SecondFactorFailures failed second-factor checks of one user (a wrong TOTP or recovery code
	// in verifyMfa, a refused passkey step-up, a wrong reauthenticate password) from all clients
	// together in UserWindow (0: off); then every such check of the user is refused, from every
	// client, known or not, until the window ends. A second factor exists for the attacker who
	// has the password, so nothing the password alone earns may lift this ceiling. Over it, at
	// most SecondFactorFailuresPerDay failures count per day (NIST SP 800-63B §5.2.2: at most
	// 100 consecutive failures). A correct second factor clears both counts.
	SecondFactorFailures int

	// MailPerAddress messages of any kind to one address per MailWindow (an hour by default).
	MailPerAddress int
	MailWindow     time.Duration
}

// KnownClientTTL is how long a client (IP or IPv6 /64) stays known to a username after a
// sign-in at the user's full level from it (the password for a user without a second factor, the
// second step for one with): known clients pass the all-clients ceiling of passwords (never the
// per-client limit, never the ceiling of second-factor failures).
const KnownClientTTL = 30 * 24 * time.Hour

// SecondFactorFailuresPerDay is the daily ceiling of a user's second-factor failures (while
// SecondFactorFailures is on): NIST SP 800-63B §5.2.2 allows at most 100 consecutive failures.
const SecondFactorFailuresPerDay = 100

// LimitClient counts one credential attempt from the request's client IP (also the edge's
// provider sign-in pages count one).
func (s *Service) LimitClient(ctx context.Context) error {
	l := s.cfg.Limits
	if l.Counter == nil || l.PerClient <= 0 {
		return nil
	}
	n, left, err := l.Counter.Incr(ctx, clientKey(ClientIP(ctx)), l.ClientWindow)
	if err != nil {
		return s.limiterDown(ctx, err)
	}
	if n > int64(l.PerClient) {
		if n == int64(l.PerClient)+1 { // once per window, so that a flood is not a flood of writes
			s.recordAlone(ctx, s.event(ctx, model.AuditEventTypeRateLimited, CallerID(ctx), "", "", "credential attempts from one client IP"))
		}
		return tooMany(left)
	}
	return nil
}

// limitUser counts one credential operation of the signed-in user userID, with the limit and
// window of a client IP (RATE_LIMIT_PER_IP): an operation that writes for a user (createApiKey)
// is held to it per user as well as per client, so that one account cannot write without bound by
// spreading its calls over many addresses.
func (s *Service) limitUser(ctx context.Context, userID string) error {
	l := s.cfg.Limits
	if l.Counter == nil || l.PerClient <= 0 {
		return nil
	}
	n, left, err := l.Counter.Incr(ctx, "uid:"+userID, l.ClientWindow)
	if err != nil {
		return s.limiterDown(ctx, err)
	}
	if n > int64(l.PerClient) {
		if n == int64(l.PerClient)+1 {
			s.recordAlone(ctx, s.event(ctx, model.AuditEventTypeRateLimited, userID, userID, "", "credential operations of one user"))
		}
		return tooMany(left)
	}
	return nil
}

// clientKey is the limiter key of a client IP. An IPv6 client is counted by its /64: one
// subscriber usually holds a whole /64 and could otherwise take a fresh address per attempt.
func clientKey(ip string) string {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return "ip:" + ip
	}
	if addr = addr.Unmap(); addr.Is6() {
		prefix, _ := addr.WithZone("").Prefix(64)
		return "ip:" + prefix.String()
	}
	return "ip:" + addr.String()
}

// attempt is a password check of a username, counted before it runs: its place in this client's
// count and in the all-clients count of the username (0 where that limit is off), and, for a
// second-factor check, its places under the ceilings of second-factor failures
// (countSecondFactor).
type attempt struct {
	client, all int64
	second      []int64
}

// countAttempt counts a password check of username from this client and from all clients, and
// then refuses it when a count is over its limit: count first, then decide. A check that only
// read the counts and added the failure after bcrypt let every guess already in flight through
// (40 parallel guesses from one client got 35 checks against a limit of 10). Counted first, N
// parallel attempts hold N distinct places, and exactly the limit's worth are checked.
//
// Every attempt counts, also one refused here (it may hold a place past the limit, which changes
// nothing: the window is fixed at its first attempt) and one whose password turns out right
// (forgetFailures then clears this client's count, never the all-clients one). A client known to
// the username passes the all-clients ceiling, never its own limit.
func (s *Service) countAttempt(ctx context.Context, username string) (attempt, error) {
	l := s.cfg.Limits
	var a attempt
	if l.Counter == nil {
		return a, nil
	}
	var left time.Duration
	var err error
	if l.FailuresPerUser > 0 {
		if a.client, left, err = l.Counter.Incr(ctx, userClientKey(username, ClientIP(ctx)), l.UserWindow); err != nil {
			return a, s.limiterDown(ctx, err)
		}
		if a.client > int64(l.FailuresPerUser) {
			return a, tooMany(left)
		}
	}
	if l.FailuresPerUserAllClients > 0 {
		if a.all, left, err = l.Counter.Incr(ctx, userKey(username), l.UserWindow); err != nil {
			return a, s.limiterDown(ctx, err)
		}
		if a.all > int64(l.FailuresPerUserAllClients) {
			known, _, err := l.Counter.Count(ctx, knownClientKey(username, ClientIP(ctx)))
			if err != nil {
				return a, s.limiterDown(ctx, err)
			}
			if known == 0 {
				return a, tooMany(left)
			}
		}
	}
	return a, nil
}

// attemptFailed records that the counted attempt a found a wrong password. Each limit records
// one RATE_LIMITED event per window, at the failure that reaches it (the attempt that held the
// limit's last place).
func (s *Service) attemptFailed(ctx context.Context, username string, a attempt) {
	l := s.cfg.Limits
	if l.Counter == nil {
		return
	}
	name := strconv.Quote(model.Truncate(username, 64))
	if l.FailuresPerUser > 0 && a.client == int64(l.FailuresPerUser) {
		s.recordAlone(ctx, s.event(ctx, model.AuditEventTypeRateLimited, CallerID(ctx), "", "",
			"username locked for this client after failed sign-ins: "+name))
	}
	if l.FailuresPerUserAllClients > 0 && a.all == int64(l.FailuresPerUserAllClients) {
		s.recordAlone(ctx, s.event(ctx, model.AuditEventTypeRateLimited, CallerID(ctx), "", "",
			"username locked for unknown clients after failed sign-ins from all clients: "+name))
	}
}

// forgetFailures clears this client's failures of a username after a correct password, so that a
// user who mistyped a few times is not locked out later in the window, and, when signedIn (the
// sign-in reached the user's full level), makes the client known to the username. The
// all-clients count is left to its window: one correct password must not give a guesser spread
// over many clients a fresh allowance. A password alone never makes a client known to a user
// with a second factor: it is what a password thief has.
func (s *Service) forgetFailures(ctx context.Context, username string, signedIn bool) {
	l := s.cfg.Limits
	if l.Counter == nil {
		return
	}
	var err error
	if l.FailuresPerUser > 0 {
		err = l.Counter.Reset(ctx, userClientKey(username, ClientIP(ctx)))
	}
	if l.FailuresPerUserAllClients > 0 && signedIn && err == nil {
		// Reset, then count: the client stays known for KnownClientTTL after its latest sign-in.
		known := knownClientKey(username, ClientIP(ctx))
		if err = l.Counter.Reset(ctx, known); err == nil {
			_, _, err = l.Counter.Incr(ctx, known, KnownClientTTL)
		}
	}
	if err != nil {
		s.log.ErrorContext(ctx, "rate limiter unavailable", "err", err)
	}
}

// ceiling is a limit of failures per window, counted under key and an id.
type ceiling struct {
	key    string
	limit  int64
	window time.Duration
}

// secondFactorWindows are the ceilings of a user's second-factor failures: SecondFactorFailures
// per UserWindow, and SecondFactorFailuresPerDay per day.
func (l *Limits) secondFactorWindows() []ceiling {
	if l.Counter == nil || l.SecondFactorFailures <= 0 {
		return nil
	}
	return []ceiling{
		{"2fa:", int64(l.SecondFactorFailures), cmp.Or(l.UserWindow, 15*time.Minute)},
		{"2fa-day:", SecondFactorFailuresPerDay, 24 * time.Hour},
	}
}

// countSecondFactor counts a second-factor check of user u from any client, before it is
// decided (as countAttempt: N parallel checks hold N places, and exactly the ceiling's worth are
// decided), and refuses it over a ceiling. It returns the check's places, for
// secondFactorFailed.
func (s *Service) countSecondFactor(ctx context.Context, u *model.User) ([]int64, error) {
	windows := s.cfg.Limits.secondFactorWindows()
	places := make([]int64, len(windows))
	for i, w := range windows {
		n, left, err := s.cfg.Limits.Counter.Incr(ctx, w.key+u.ID, w.window)
		if err != nil {
			return places, s.limiterDown(ctx, err)
		}
		places[i] = n
		if n > w.limit {
			return places, tooMany(left)
		}
	}
	return places, nil
}

// secondFactorFailed records that the check counted at places failed. The failure that reaches
// a ceiling (it held the ceiling's last place) records RATE_LIMITED and mails the owner, once per
// lock-out window.
func (s *Service) secondFactorFailed(ctx context.Context, p *Principal, places []int64) {
	for i, w := range s.cfg.Limits.secondFactorWindows() {
		if i >= len(places) || places[i] != w.limit {
			continue
		}
		what := "Your second factor was refused " + strconv.FormatInt(w.limit, 10) +
			" times; it is locked for " + w.window.String() + ". If this was not you, your password is known: change it."
		err := s.db.Transact(ctx, func(tx *store.Tx) error {
			if err := tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeRateLimited, p.User.ID, p.User.ID, p.Session.ID,
				"second factor locked after failures from all clients")); err != nil {
				return err
			}
			return s.mfaNotice(ctx, tx, p.User, what)
		})
		if err != nil {
			s.log.ErrorContext(ctx, "second-factor lock-out not recorded", "err", err)
		}
	}
}

// forgetSecondFactorFailures clears a user's second-factor failures after a correct second
// factor: the ceilings bound consecutive failures.
func (s *Service) forgetSecondFactorFailures(ctx context.Context, u *model.User) {
	for _, w := range s.cfg.Limits.secondFactorWindows() {
		if err := s.cfg.Limits.Counter.Reset(ctx, w.key+u.ID); err != nil {
			s.log.ErrorContext(ctx, "rate limiter unavailable", "err", err)
		}
	}
}

// limiterDown fails closed: without its limiter, the server would check passwords unboundedly.
func (s *Service) limiterDown(ctx context.Context, err error) error {
	s.log.ErrorContext(ctx, "rate limiter unavailable", "err", err)
	return model.Unavailable()
}

// userKey is the limiter key of a username: case-folded like usernames, and bounded in length so
// that garbage usernames cannot blow up the key space.
func userKey(username string) string {
	if len(username) > 64 {
		username = username[:64]
	}
	return "user:" + strings.ToLower(username)
}

// userClientKey is the limiter key of a username's failures from one client.
func userClientKey(username, ip string) string { return userKey(username) + "|" + clientKey(ip) }

// knownClientKey marks a client that signed in to a username with its password.
func knownClientKey(username, ip string) string { return "known:" + userClientKey(username, ip) }

// limitAddress counts one message to address (RATE_LIMIT_EMAIL_PER_ADDRESS) and refuses it, as
// TOO_MANY_REQUESTS, over the limit.
func (s *Service) limitAddress(ctx context.Context, address string) error {
	l := s.cfg.Limits
	if l.Counter == nil || l.MailPerAddress <= 0 {
		return nil
	}
	n, left, err := l.Counter.Incr(ctx, "mail:"+strings.ToLower(address), cmp.Or(l.MailWindow, time.Hour))
	if err != nil {
		return s.limiterDown(ctx, err)
	}
	if n > int64(l.MailPerAddress) {
		if n == int64(l.MailPerAddress)+1 {
			s.recordAlone(ctx, s.event(ctx, model.AuditEventTypeRateLimited, CallerID(ctx), "", "", "messages to one address"))
		}
		return tooMany(left)
	}
	return nil
}

func tooMany(left time.Duration) error {
	return model.TooManyRequests(int(math.Ceil(left.Seconds())))
}
