package account

import (
	"context"
	"slices"

	"gqlauth/model"
)

// The two subscriptions of audit events. The feed hands over every committed event; what a
// subscriber may see, and in what form, is decided here.

// SubscribeSecurityEvents streams the caller's own audit events as they are committed. Each event
// is shown with the caller as they are after it, read again for it (one query): the event's user
// is the caller now, not when the subscription started. (The fields of its response resolve with
// a caller of their own, no older than the event either: see WithEventScope.)
func (s *Service) SubscribeSecurityEvents(ctx context.Context) (<-chan *model.AuditEvent, error) {
	events, _, err := s.subscribeThenCheck(ctx, false, Guard{Role: model.RoleUser})
	if err != nil {
		return nil, err
	}
	out := make(chan *model.AuditEvent)
	go func() {
		defer close(out)
		for e := range events {
			p, err := s.Recheck(ctx)
			if err != nil {
				// The caller's authority is gone (the socket is being closed), or could not be
				// read: end rather than show the event as an older caller would see it.
				return
			}
			if e == nil || slices.Contains(adminOnly, e.Type) {
				continue
			}
			// The feed's events are shared and carry ids only: give this subscriber its copy with
			// the people in it, as the securityEvents query shows them (ownView).
			c := *e
			c.User = p.User
			if c.ActorID != nil && *c.ActorID == p.User.ID {
				c.Actor = p.User
			} else if c.ActorID != nil {
				if actor, err := s.db.UserByID(ctx, *c.ActorID); err == nil {
					c.Actor = actor
				}
			}
			select {
			case out <- ownView(&c, p.User.ID):
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// SubscribeAuditEvents streams every committed audit event to an ADMIN. An event about the caller
// (their role changed, say), or a sign that one may have been missed or that the signing keys
// changed, makes the caller be checked again before the next event: once they may no longer run
// it, the stream ends and ended is told why (the socket itself stays, for what they still may
// run).
func (s *Service) SubscribeAuditEvents(ctx context.Context, ended func(error)) (<-chan *model.AuditEvent, error) {
	events, p, err := s.subscribeThenCheck(ctx, true, Guard{Role: model.RoleAdmin})
	if err != nil {
		return nil, err
	}
	out := make(chan *model.AuditEvent)
	go func() {
		defer close(out)
		for e := range events {
			if e == nil || (e.UserID != nil && *e.UserID == p.User.ID) {
				now, err := s.Recheck(ctx)
				if err == nil {
					err = s.allows(now, Guard{Role: model.RoleAdmin})
				}
				if err != nil {
					ended(err)
					return
				}
				if e == nil {
					continue
				}
			}
			c := *e
			if c.ActorID != nil {
				c.Actor, _ = s.db.UserByID(ctx, *c.ActorID)
			}
			if c.UserID != nil {
				c.User, _ = s.db.UserByID(ctx, *c.UserID)
			}
			select {
			case out <- &c:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// subscribeThenCheck opens the caller's feed (everyone's when all) and only then checks the
// caller against g, from the database (Recheck: never the principal cache). In that order a
// revocation or demotion committed before the check is seen by it, and one committed after it
// reaches the stream as an event, which makes the stream check the caller again. Checked first,
// or from memory that may lag a commit, a change could fall between the two and the stream would
// run on under an authority that is gone.
func (s *Service) subscribeThenCheck(ctx context.Context, all bool, g Guard) (_ <-chan *model.AuditEvent, _ *Principal, err error) {
	p, err := s.Authenticate(ctx) // who the caller is (a user's id never changes)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(ctx) // ends with the operation; at once if refused here
	defer func() {
		if err != nil {
			cancel()
		}
	}()
	feedUser := p.User.ID
	if all {
		feedUser = ""
	}
	events := s.feed.Subscribe(ctx, feedUser)
	if p, err = s.Recheck(ctx); err == nil {
		err = s.allows(p, g)
	}
	if err != nil {
		return nil, nil, err
	}
	return events, p, nil
}
