package auth

import (
	"context"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"gqlauth/model"
	"gqlauth/ratelimit"
)

// Limits are the rate limits on credential operations. They are counted per operation field, in
// the service, so that aliases and repeated fields in one request count one by one.
type Limits struct {
	Counter ratelimit.Counter // nil disables every limit

	// PerClient attempts of login, register, refresh and changePassword per client IP in
	// ClientWindow.
	PerClient    int
	ClientWindow time.Duration

	// FailuresPerUser failed password checks per username in UserWindow; then the username is
	// refused before any password is checked until the window ends.
	FailuresPerUser int
	UserWindow      time.Duration
}

// limitClient counts one credential attempt from the request's client IP.
func (s *Service) limitClient(ctx context.Context) error {
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

// limitFailures refuses a username that has failed too often in its window.
func (s *Service) limitFailures(ctx context.Context, username string) error {
	l := s.cfg.Limits
	if l.Counter == nil || l.FailuresPerUser <= 0 {
		return nil
	}
	n, left, err := l.Counter.Count(ctx, userKey(username))
	if err != nil {
		return s.limiterDown(ctx, err)
	}
	if n >= int64(l.FailuresPerUser) {
		return tooMany(left)
	}
	return nil
}

func (s *Service) recordFailure(ctx context.Context, username string) {
	l := s.cfg.Limits
	if l.Counter == nil || l.FailuresPerUser <= 0 {
		return
	}
	n, _, err := l.Counter.Incr(ctx, userKey(username), l.UserWindow)
	if err != nil {
		s.log.ErrorContext(ctx, "rate limiter unavailable", "err", err)
	}
	if n == int64(l.FailuresPerUser) { // the failure that locks the username, once per window
		s.recordAlone(ctx, s.event(ctx, model.AuditEventTypeRateLimited, CallerID(ctx), "", "",
			"username locked after failed sign-ins: "+strconv.Quote(truncate(username, 64))))
	}
}

// forgetFailures clears a username's failures after a correct password, so that a user who
// mistyped a few times is not locked out later in the window.
func (s *Service) forgetFailures(ctx context.Context, username string) {
	if l := s.cfg.Limits; l.Counter != nil && l.FailuresPerUser > 0 {
		if err := l.Counter.Reset(ctx, userKey(username)); err != nil {
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

func tooMany(left time.Duration) error {
	return model.TooManyRequests(int(math.Ceil(left.Seconds())))
}
