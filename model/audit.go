package model

import (
	"strconv"
	"time"
)

// AuditEvent is one recorded security event. Bun maps it to the audit_events table; its id is a
// database sequence, so events are ordered by when they were written, whichever instance wrote them.
type AuditEvent struct {
	Seq       int64          `bun:"id,pk,autoincrement"`
	At        time.Time      `bun:"at"`
	Type      AuditEventType `bun:"type"`
	ActorID   *string        `bun:"actor_id"`
	UserID    *string        `bun:"user_id"`
	SessionID *string        `bun:"session_id"`
	IP        *string        `bun:"ip"`
	UserAgent *string        `bun:"user_agent"`
	Detail    *string        `bun:"detail"`

	// Actor and User are loaded with the event for the API; they are not stored.
	Actor *User `bun:"-" json:"-"`
	User  *User `bun:"-" json:"-"`
}

// ID is the event's id as the API shows it.
func (e *AuditEvent) ID() string { return strconv.FormatInt(e.Seq, 10) }
