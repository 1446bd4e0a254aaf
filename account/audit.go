package account

import (
	"context"
	"encoding/base64"
	"strconv"
	"strings"
	"time"

	"gqlauth/model"
	"gqlauth/store"
)

// Audit events are written with store.Tx.RecordEvent, in the transaction of the change they
// record, so a change and its record commit or roll back together: the plain store.DB cannot
// write one. Events that change nothing (a failed sign-in, a rate limit) are written on their own
// with store.DB.RecordStandaloneEvent (recordAlone).

// MaxAuditPage caps the first argument of the audit queries.
const MaxAuditPage = 100

// maxDetailLength bounds an event's detail (an attempted username, a key's name).
const maxDetailLength = 100

// event is an audit event of type typ that happened in the request in ctx. Empty ids and detail
// are left out.
func (s *Service) event(ctx context.Context, typ model.AuditEventType, actorID, userID, sessionID, detail string) *model.AuditEvent {
	e := &model.AuditEvent{
		At: s.clock(), Type: typ, ActorID: optional(actorID), UserID: optional(userID),
		SessionID: optional(sessionID), Detail: optional(model.Truncate(detail, maxDetailLength)),
	}
	if ra := fromContext(ctx); ra != nil && ra.ClientIP != nil {
		e.IP = optional(model.Truncate(ClientIP(ctx), 64))
		e.UserAgent = optional(UserAgent(ctx))
	}
	return e
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// recordAlone writes an event that records no change. A failure is logged, not returned: the
// request it describes has failed already, and must not fail differently because of the log.
func (s *Service) recordAlone(ctx context.Context, e *model.AuditEvent) {
	if err := s.db.RecordStandaloneEvent(context.WithoutCancel(ctx), e); err != nil {
		s.log.ErrorContext(ctx, "audit event not recorded", "type", e.Type, "err", err)
	}
}

// actorOf returns the id of the signed-in caller and of their session, if any, from what the
// guard already loaded (no query).
func actorOf(ctx context.Context) (userID, sessionID string) {
	ra := fromContext(ctx)
	if ra == nil || ra.principal == nil {
		return "", ""
	}
	if ra.principal.Session != nil {
		sessionID = ra.principal.Session.ID
	}
	return ra.principal.User.ID, sessionID
}

// AuditEvents returns a page of every event (ADMIN), newest first.
func (s *Service) AuditEvents(ctx context.Context, first int, after *string, userID *string, types []model.AuditEventType) (*model.AuditEventConnection, error) {
	if _, err := s.Authorize(ctx, model.RoleAdmin); err != nil {
		return nil, err
	}
	f := store.AuditFilter{Types: types}
	if userID != nil {
		if err := validateID(*userID); err != nil {
			return nil, model.BadInput("userId", "userId is malformed")
		}
		f.UserID = *userID
	}
	return s.auditPage(ctx, f, first, after, "")
}

// SecurityEvents returns a page of the caller's own events, newest first, as ownView shows them
// (to admins too: they read the whole record through AuditEvents).
func (s *Service) SecurityEvents(ctx context.Context, first int, after *string) (*model.AuditEventConnection, error) {
	p, err := s.Authenticate(ctx)
	if err != nil {
		return nil, err
	}
	return s.auditPage(ctx, store.AuditFilter{UserID: p.User.ID, Except: adminOnly}, first, after, p.User.ID)
}

// adminOnly are the types of event about a user that only admins see (AuditEvents), never the
// user (securityEvents, the query and the subscription): a PASSWORD_RESET_REQUESTED is recorded
// for known addresses only, and is no business of whoever asked.
var adminOnly = []model.AuditEventType{model.AuditEventTypePasswordResetRequested}

// auditPage reads one page: whole events for an admin (self ""), or the events of user self as
// ownView shows them to that user.
func (s *Service) auditPage(ctx context.Context, f store.AuditFilter, first int, after *string, self string) (*model.AuditEventConnection, error) {
	if first < 1 {
		return nil, model.BadInput("first", "first must be at least 1")
	}
	f.Limit = min(first, MaxAuditPage) + 1 // one more tells whether there is a next page
	if after != nil {
		seq, ok := parseCursor(*after)
		if !ok {
			return nil, model.BadInput("after", "after is not a cursor from this API")
		}
		f.Before = seq
	}
	events, err := s.db.AuditEvents(ctx, f)
	if err != nil {
		return nil, s.check(ctx, "AuditEvents", err)
	}
	page := &model.AuditEventConnection{Edges: []*model.AuditEventEdge{}, PageInfo: &model.PageInfo{}}
	if len(events) == f.Limit {
		events, page.PageInfo.HasNextPage = events[:f.Limit-1], true
	}
	for _, e := range events {
		if self != "" {
			e = ownView(e, self)
		}
		page.Edges = append(page.Edges, &model.AuditEventEdge{Cursor: cursor(e.Seq), Node: e})
		showUsers(ctx, e.Actor, e.User)
	}
	if n := len(page.Edges); n > 0 {
		page.PageInfo.EndCursor = &page.Edges[n-1].Cursor
	}
	return page, nil
}

// ownView is an event as the user it concerns (self) sees it, in the securityEvents query and
// subscription alike: what happened to their account, when, who did it and the detail. Where
// someone else acted (an admin changed their role, disabled or created them), the session id, IP
// and user agent are that person's, not the user's, and are left out, as is that person's email;
// who they are (id, username, role) stays, so the user knows who changed their account. An event
// without an actor (a failed sign-in, a replayed refresh token) is an attempt on the user's own
// account or credentials: where it came from is theirs to see. e itself is not changed.
func ownView(e *model.AuditEvent, self string) *model.AuditEvent {
	c := *e
	if c.ActorID != nil && *c.ActorID != self {
		c.SessionID, c.IP, c.UserAgent = nil, nil, nil
	}
	c.Actor, c.User = redacted(c.Actor, self), redacted(c.User, self)
	return &c
}

// redacted is u without its email unless u is self.
func redacted(u *model.User, self string) *model.User {
	if u == nil || u.ID == self {
		return u
	}
	c := *u
	c.Email = nil
	return &c
}

// Cursors are opaque to clients: a version and the event's id, base64url.
const cursorPrefix = "ae1:"

func cursor(seq int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorPrefix + strconv.FormatInt(seq, 10)))
}

func parseCursor(c string) (int64, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || !strings.HasPrefix(string(raw), cursorPrefix) {
		return 0, false
	}
	seq, err := strconv.ParseInt(strings.TrimPrefix(string(raw), cursorPrefix), 10, 64)
	return seq, err == nil && seq > 0
}

// SweepAuditEvents deletes events older than the retention period in bounded batches, and
// returns how many it deleted.
func (s *Service) SweepAuditEvents(ctx context.Context) (int, error) {
	if s.cfg.AuditRetention <= 0 {
		return 0, nil
	}
	before := s.clock().Add(-s.cfg.AuditRetention)
	total := 0
	for {
		n, err := s.db.DeleteAuditEventsBefore(ctx, before, 1000)
		total += n
		if err != nil || n < 1000 {
			return total, err
		}
	}
}

// DefaultAuditRetention is how long events are kept unless configured otherwise.
const DefaultAuditRetention = 90 * 24 * time.Hour
