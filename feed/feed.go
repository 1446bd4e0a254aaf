// Package feed fans out the committed audit events of this process to the subscriptions that
// asked for them (securityEvents, auditEvents). It is fed in one place, graph.WireEvents
// (the store, after a commit or through Postgres LISTEN), and must not decide who may see what:
// account filters and redacts what a subscriber gets.
package feed

import (
	"context"
	"sync"
	"sync/atomic"

	"gqlauth/model"
)

// Feed hands every committed audit event to the subscribers it concerns (each securityEvents
// subscription gets its user's events, each auditEvents subscription every event). Events arrive
// only after their transaction committed.
type Feed struct {
	mu   sync.Mutex
	subs map[*feedSub]struct{}
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

// New returns a feed with no subscribers.
func New() *Feed { return &Feed{subs: map[*feedSub]struct{}{}} }

// Publish hands e to every subscriber it concerns, without waiting for any of them.
func (f *Feed) Publish(e *model.AuditEvent) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for sub := range f.subs {
		if sub.userID == "" || (e.UserID != nil && *e.UserID == sub.userID) {
			select {
			case sub.ch <- e:
			default: // a full buffer: drop rather than block the committing request
				sub.stale.Store(true)
			}
		}
	}
}

// MarkStale makes every subscriber check its authority again before its next event: events may
// have been missed (the Postgres listener reconnected), or the signing keys changed.
func (f *Feed) MarkStale() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for sub := range f.subs {
		sub.stale.Store(true)
	}
}

// Subscribe returns the events concerning userID (every event for "") until ctx ends. A nil event
// says that the subscriber's authority must be checked again before the events that follow it.
func (f *Feed) Subscribe(ctx context.Context, userID string) <-chan *model.AuditEvent {
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
