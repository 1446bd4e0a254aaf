package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"gqlauth/model"
)

// On Postgres, committed audit events reach every instance through LISTEN/NOTIFY: RecordEvent
// sends the event with pg_notify in the transaction that writes it, so the notification is
// delivered only if (and when) that transaction commits, and each instance's listener hands it to
// the sinks. With SQLite (one process) the sink is called after commit.

// eventChannel is the NOTIFY channel of the schema the pool uses (tests give every database a
// schema of its own in one Postgres database; channels are database-wide).
//
// The first call asks Postgres, on db's own executor: inside a transaction that is the
// transaction's connection, so that a transaction recording its first event never waits for a
// second connection from the pool it holds one of — with every connection held by such
// transactions, that wait was a deadlock (found by review with a pool of 3). No lock is held
// while asking: two first calls may both ask, and get the same answer.
func (db *DB) eventChannel(ctx context.Context) (string, error) {
	db.hot.mu.Lock()
	channel := db.hot.channel
	db.hot.mu.Unlock()
	if channel != "" {
		return channel, nil
	}
	var schema sql.NullString
	if err := db.idb.QueryRowContext(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		return "", wrap(err, "eventChannel")
	}
	if !schema.Valid {
		return "", errors.New("store: no schema of the search_path exists")
	}
	channel = "gqlauth_events_" + schema.String
	db.hot.mu.Lock()
	db.hot.channel = channel
	db.hot.mu.Unlock()
	return channel, nil
}

// notifyEvent sends e on the event channel, as part of db's transaction. The event travels whole
// (a few hundred bytes; NOTIFY takes 8000), so no instance queries for it.
func (db *DB) notifyEvent(ctx context.Context, e *model.AuditEvent) error {
	channel, err := db.eventChannel(ctx)
	if err != nil {
		return err
	}
	payload, err := json.Marshal(e)
	if err != nil {
		return err
	}
	_, err = db.idb.ExecContext(ctx, "SELECT pg_notify(?, ?)", channel, string(payload))
	return wrap(err, "notifyEvent")
}

// ListenForEvents delivers, until ctx ends, every audit event committed by any instance to the
// sink set with SetEventSink. A lost connection is re-established (after a second); resync runs
// each time the listener is (again) connected, because notifications sent while it was away are
// lost: whatever depends on them must look at the database instead. Only for Postgres.
func (db *DB) ListenForEvents(ctx context.Context, resync func(), onError func(error)) {
	if !db.pg || db.listenConfig == nil {
		return
	}
	for ctx.Err() == nil {
		err := db.listen(ctx, resync)
		if ctx.Err() != nil {
			return
		}
		if onError != nil {
			onError(err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (db *DB) listen(ctx context.Context, resync func()) error {
	channel, err := db.eventChannel(ctx)
	if err != nil {
		return err
	}
	cfg := db.listenConfig.Copy()
	cfg.RuntimeParams["application_name"] = "gqlauth-listener " + channel // to find it in pg_stat_activity
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		return err
	}
	if resync != nil {
		resync()
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		e := new(model.AuditEvent)
		if json.Unmarshal([]byte(n.Payload), e) != nil {
			continue
		}
		db.sinks.deliver(e)
	}
}
