package store

import (
	"context"
	"database/sql"
	"time"

	"github.com/uptrace/bun"
)

// SQLDB is the pool under the store, for the outbox (mailer), whose jobs live in the same
// database. On SQLite it holds the store's single connection.
func (db *DB) SQLDB() *sql.DB { return db.root.DB }

// SQLTx is the transaction under tx, so that a message is queued (mailer.Enqueue) in the very
// transaction of the change that causes it.
func (tx *Tx) SQLTx() *sql.Tx { return tx.idb.(bun.Tx).Tx }

// DevMail is a message in the development inbox, in the clear.
type DevMail struct {
	bun.BaseModel `bun:"table:dev_mail"`

	ID      int64     `bun:"id,pk,autoincrement"`
	To      string    `bun:"to_addr"`
	Subject string    `bun:"subject"`
	Text    string    `bun:"text_body"`
	HTML    string    `bun:"html_body"`
	At      time.Time `bun:"at"`
}

// DevInboxSize is how many messages the development inbox keeps; older ones are deleted.
const DevInboxSize = 200

// AddDevMail keeps m in the development inbox (a table, so that every instance shows the same
// inbox) and deletes what is older than the newest DevInboxSize messages.
func (db *DB) AddDevMail(ctx context.Context, m *DevMail) error {
	return db.Transact(ctx, func(tx *Tx) error {
		if _, err := tx.idb.NewInsert().Model(m).Exec(ctx); err != nil {
			return wrap(err, "AddDevMail")
		}
		_, err := tx.idb.NewDelete().Model((*DevMail)(nil)).Where("id <= ?", m.ID-DevInboxSize).Exec(ctx)
		return wrap(err, "AddDevMail")
	})
}

// DevMails returns the development inbox, newest first.
func (db *DB) DevMails(ctx context.Context) ([]DevMail, error) {
	out := []DevMail{}
	err := db.idb.NewSelect().Model(&out).Order("at DESC", "id DESC").Limit(DevInboxSize).Scan(ctx)
	return out, wrap(err, "DevMails")
}
