package auth

import (
	"context"
	"sync"
	"sync/atomic"

	"gqlauth/model"
)

// Feed fans out committed audit events in this process: to securityEvents subscriptions (each
// gets its user's events) and to watchers (the socket registry, which re-checks the sockets of the
// user an event concerns). Events arrive only after their transaction committed.
type Feed struct {
	mu          sync.Mutex
	subs        map[*feedSub]struct{}
	watchers    []func(*model.AuditEvent)
	resyncers   []func()
	keyWatchers []func()
}

type feedSub struct {
	userID string
	ch     chan *model.AuditEvent
	// stale is set when the subscriber may have missed an event that ends its authority (one was
	// dropped for it, the listener reconnected) or the signing keys changed: its authority is
	// checked again before it gets another event.
	stale atomic.Bool
}

// feedBuffer is how many events a slow subscriber may fall behind before events are dropped for
// it (a subscriber that does not read must not hold up the writer of an event).
const feedBuffer = 64

func newFeed() *Feed { return &Feed{subs: map[*feedSub]struct{}{}} }

func (f *Feed) publish(e *model.AuditEvent) {
	f.mu.Lock()
	watchers := f.watchers
	for sub := range f.subs {
		if sub.userID == "" || (e.UserID != nil && *e.UserID == sub.userID) {
			select {
			case sub.ch <- e:
			default: // a full buffer: drop rather than block the committing request
				sub.stale.Store(true)
			}
		}
	}
	f.mu.Unlock()
	for _, w := range watchers {
		w(e)
	}
}

// Watch calls fn with every committed event, after the subscribers got theirs.
func (f *Feed) Watch(fn func(*model.AuditEvent)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watchers = append(f.watchers, fn)
}

// OnResync calls fn whenever events may have been missed (the Postgres listener reconnected), so
// that what depends on them can look at the database instead.
func (f *Feed) OnResync(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resyncers = append(f.resyncers, fn)
}

func (f *Feed) resync() {
	f.mu.Lock()
	resyncers := f.resyncers
	f.markStale()
	f.mu.Unlock()
	for _, fn := range resyncers {
		fn()
	}
}

// OnKeyChange calls fn after this process reloaded its signing keys because an instance rotated
// or revoked one, or events may have been missed: what holds a verified token (a socket) verifies
// it again.
func (f *Feed) OnKeyChange(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keyWatchers = append(f.keyWatchers, fn)
}

func (f *Feed) keysChanged() {
	f.mu.Lock()
	watchers := f.keyWatchers
	f.markStale()
	f.mu.Unlock()
	for _, fn := range watchers {
		fn()
	}
}

// markStale makes every subscriber check its authority again before its next event. f.mu is held.
func (f *Feed) markStale() {
	for sub := range f.subs {
		sub.stale.Store(true)
	}
}

// ListenForEvents feeds this process the audit events every instance commits (Postgres
// LISTEN/NOTIFY), until ctx ends; connected is called each time the listener is (re)connected,
// after the resync. With SQLite the feed is fed after each commit and this returns at once.
func (s *Service) ListenForEvents(ctx context.Context, connected func(), onError func(error)) {
	s.db.ListenForEvents(ctx, func() {
		s.feed.resync()
		if connected != nil {
			connected()
		}
	}, onError)
}

// subscribe returns the events concerning userID (every event for "") until ctx ends. A nil event
// says that the subscriber's authority must be checked again before the events that follow it.
func (f *Feed) subscribe(ctx context.Context, userID string) <-chan *model.AuditEvent {
	sub := &feedSub{userID: userID, ch: make(chan *model.AuditEvent, feedBuffer)}
	f.mu.Lock()
	f.subs[sub] = struct{}{}
	f.mu.Unlock()
	out := make(chan *model.AuditEvent)
	go func() {
		defer func() {
			f.mu.Lock()
			delete(f.subs, sub)
			f.mu.Unlock()
			close(out)
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case e := <-sub.ch:
				if sub.stale.Swap(false) {
					select {
					case out <- nil:
					case <-ctx.Done():
						return
					}
				}
				select {
				case out <- e:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

// Feed is the service's feed of committed audit events.
func (s *Service) Feed() *Feed { return s.feed }

// SubscribeSecurityEvents streams the caller's own audit events as they are committed. Each event
// is shown with the caller as they are after it, read again for it (one query): the event's user
// is the caller now, not when the subscription started. (The fields of its response resolve with
// a caller of their own, no older than the event either: see WithEventScope.)
func (s *Service) SubscribeSecurityEvents(ctx context.Context) (<-chan *model.AuditEvent, error) {
	p, err := s.Authenticate(ctx)
	if err != nil {
		return nil, err
	}
	events := s.feed.subscribe(ctx, p.User.ID)
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
			if e == nil {
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
	p, err := s.Authorize(ctx, model.RoleAdmin)
	if err != nil {
		return nil, err
	}
	events := s.feed.subscribe(ctx, "")
	out := make(chan *model.AuditEvent)
	go func() {
		defer close(out)
		for e := range events {
			if e == nil || (e.UserID != nil && *e.UserID == p.User.ID) {
				now, err := s.Recheck(ctx)
				if err == nil && !now.Role.Satisfies(model.RoleAdmin) {
					err = model.InsufficientRole(model.RoleAdmin)
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
