package store

import (
	"context"
	"time"

	"github.com/uptrace/bun"

	"gqlauth/model"
)

// RecordEvent writes one audit event in the transaction of the change it records: the event
// commits or rolls back with it.
func (tx *Tx) RecordEvent(ctx context.Context, e *model.AuditEvent) error {
	return tx.recordEvent(ctx, "RecordEvent", e)
}

// RecordStandaloneEvent writes one audit event that records no change (a failed sign-in, a rate
// limit): there is no transaction for it to join, so it is written on its own, one statement (and
// on Postgres its NOTIFY). Every event that records a change is written with Tx.RecordEvent.
func (db *DB) RecordStandaloneEvent(ctx context.Context, e *model.AuditEvent) error {
	return db.recordEvent(ctx, "RecordStandaloneEvent", e)
}

func (db *DB) recordEvent(ctx context.Context, op string, e *model.AuditEvent) error {
	if _, err := db.idb.NewInsert().Model(e).Exec(ctx); err != nil {
		return wrap(err, op)
	}
	if db.pg {
		return db.notifyEvent(ctx, e) // delivered by the listeners, on commit
	}
	db.afterCommit(func() { db.sinks.deliver(e) })
	return nil
}

// AuditFilter selects audit events.
type AuditFilter struct {
	UserID string                 // only events concerning this user; "" for all
	Types  []model.AuditEventType // only these types; empty for all
	Except []model.AuditEventType // none of these types
	Before int64                  // only events with a smaller id; 0 for no bound
	Limit  int
}

// AuditEvents returns the events f selects, newest first, with their actors and users loaded (in
// one more query for the whole page).
func (db *DB) AuditEvents(ctx context.Context, f AuditFilter) ([]*model.AuditEvent, error) {
	events := []*model.AuditEvent{}
	if noRows(f.Limit) {
		return events, nil
	}
	q := db.idb.NewSelect().Model(&events).Order("id DESC").Limit(int64(f.Limit))
	if f.UserID != "" {
		q = q.Where("user_id = ?", f.UserID)
	}
	if len(f.Types) > 0 {
		q = q.Where("type IN (?)", bun.In(f.Types))
	}
	if len(f.Except) > 0 {
		q = q.Where("type NOT IN (?)", bun.In(f.Except))
	}
	if f.Before > 0 {
		q = q.Where("id < ?", f.Before)
	}
	if err := q.Scan(ctx); err != nil {
		return nil, wrap(err, "AuditEvents")
	}
	ids := map[string]bool{}
	for _, e := range events {
		for _, id := range []*string{e.ActorID, e.UserID} {
			if id != nil {
				ids[*id] = true
			}
		}
	}
	if len(ids) == 0 {
		return events, nil
	}
	list := make([]string, 0, len(ids))
	for id := range ids {
		list = append(list, id)
	}
	users := []*model.User{}
	if err := db.idb.NewSelect().Model(&users).Where("id IN (?)", bun.In(list)).Scan(ctx); err != nil {
		return nil, wrap(err, "AuditEvents")
	}
	byID := map[string]*model.User{}
	for _, u := range users {
		byID[u.ID] = u
	}
	for _, e := range events {
		if e.ActorID != nil {
			e.Actor = byID[*e.ActorID]
		}
		if e.UserID != nil {
			e.User = byID[*e.UserID]
		}
	}
	return events, nil
}

// DeleteAuditEventsBefore deletes up to limit events recorded before t and returns how many it
// deleted. Bounded, so that a sweep never holds locks for long.
func (db *DB) DeleteAuditEventsBefore(ctx context.Context, t time.Time, limit int) (int, error) {
	if noRows(limit) {
		return 0, nil
	}
	old := db.idb.NewSelect().Model((*model.AuditEvent)(nil)).Column("id").Where("at < ?", t).
		Order("id").Limit(int64(limit))
	res, err := db.idb.NewDelete().Model((*model.AuditEvent)(nil)).Where("id IN (?)", old).Exec(ctx)
	if err != nil {
		return 0, wrap(err, "DeleteAuditEventsBefore")
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// APIKeyName returns the name of the user's key id, "" if there is none.
func (db *DB) APIKeyName(ctx context.Context, userID, id string) (string, error) {
	var name string
	err := db.idb.NewSelect().Model((*model.APIKey)(nil)).Column("name").
		Where("id = ?", id).Where("user_id = ?", userID).Scan(ctx, &name)
	if err != nil {
		if err = wrap(err, "APIKeyName"); err == ErrNotFound {
			return "", nil
		}
	}
	return name, err
}
