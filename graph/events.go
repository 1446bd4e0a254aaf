package graph

import (
	"context"
	"log/slog"

	"gqlauth/feed"
	"gqlauth/model"
	"gqlauth/store"
	"gqlauth/token"
)

// WireEvents lays the path of a committed audit event through this instance, in this one place,
// and returns the listener that feeds it from every instance (Postgres LISTEN; with SQLite there
// is one instance and the listener returns at once), to run until ctx ends; connected, if not
// nil, is called each time it is (re)connected.
//
//	store: the event, once its transaction committed (SQLite: right after the commit; Postgres:
//	       NOTIFY sent in the transaction, heard by every instance's listener)
//	  → feed: the securityEvents and auditEvents subscriptions it concerns
//	  → key ring (a rotation or revocation): the signing keys are reloaded, then every
//	    subscription checks its authority again and every socket verifies its token again
//	  → sockets: the open sockets of the user the event concerns are authenticated again
//	    (graph/ws.go), and closed if their authority is gone
//
// When the listener (re)connects, events may have been missed: every subscription and socket is
// checked again, and the keys are reloaded (a key change may be among the missed events).
func WireEvents(db *store.DB, events *feed.Feed, keys *token.KeyRing, sockets *Sockets, log *slog.Logger) func(ctx context.Context, connected func()) {
	// A key change on any instance reaches this one at once where events travel between
	// instances (Postgres); the key ring's periodic reload remains the bound everywhere else.
	reloadKeys := func() {
		err := keys.Reload(context.Background())
		events.MarkStale()
		if err != nil {
			log.Warn("signing keys could not be reloaded", "err", err)
			// The principal query refuses a revoked key's tokens whatever this ring holds: check
			// every socket against the database instead (review 3).
			sockets.RecheckAll()
			return
		}
		sockets.ReverifyAll()
	}
	db.AddEventSink(func(e *model.AuditEvent) {
		events.Publish(e)
		if keys != nil && (e.Type == model.AuditEventTypeSigningKeyRotated || e.Type == model.AuditEventTypeSigningKeyRevoked) {
			go reloadKeys()
		}
		sockets.Recheck(e)
	})
	return func(ctx context.Context, connected func()) {
		db.ListenForEvents(ctx, func() {
			events.MarkStale()
			if keys != nil {
				go reloadKeys()
			}
			sockets.RecheckAll()
			if connected != nil {
				connected()
			}
		}, func(err error) { log.Warn("event listener lost its connection; reconnecting", "err", err) })
	}
}
