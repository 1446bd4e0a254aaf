package mailer_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"gqlauth/mailer"
	"gqlauth/store/storetest"
)

// enqueueRequest queues req in its own committed transaction.
func enqueueRequest(t testing.TB, db *sql.DB, m *mailer.Mailer, req mailer.Request) error {
	t.Helper()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.EnqueueRequest(context.Background(), tx, req); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

func TestRequest_ResolverGetsTheSealedRequestOnceAndItsMailIsSent(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		srv := startSMTP(t)
		d := newDatabase(t, kind)
		db := d.open(t)
		m := newMailer(t, db, d.engine(), testConfig(srv), false)
		var mu sync.Mutex
		var got []mailer.Request
		failOnce := true
		m.SetResolver(func(ctx context.Context, req mailer.Request, complete func(*sql.Tx) error) error {
			mu.Lock()
			defer mu.Unlock()
			if failOnce { // a failure is retried
				failOnce = false
				return errors.New("database hiccup")
			}
			got = append(got, req)
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer tx.Rollback()
			if err := m.Enqueue(ctx, tx, mailer.Message{Kind: mailer.SignInCode, To: req.To, Code: "123456", ExpiresIn: time.Minute}); err != nil {
				return err
			}
			if err := complete(tx); err != nil {
				return err
			}
			return tx.Commit()
		})
		if err := m.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Stop(context.Background()) })
		req := mailer.Request{Kind: mailer.RequestSignInCode, To: "ann@example.com", IP: "192.0.2.1", UserAgent: "test"}
		if err := enqueueRequest(t, db, m, req); err != nil {
			t.Fatal(err)
		}
		for _, row := range jobs(t, db) {
			if strings.Contains(row, "ann@example.com") || strings.Contains(row, "192.0.2.1") {
				t.Fatalf("a queued request holds the address or IP in the clear: %s", row)
			}
		}
		if msgs := srv.WaitFor(t, 1, 20*time.Second); len(msgs) != 1 {
			t.Fatalf("%d messages", len(msgs))
		}
		time.Sleep(500 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		if len(got) != 1 || got[0] != req || len(srv.Messages()) != 1 {
			t.Fatalf("resolved %+v, %d messages; want the request once and one message", got, len(srv.Messages()))
		}
	})
}

func TestRequest_MalformedIsRefusedAndQueuesNothing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		d := newDatabase(t, kind)
		db := d.open(t)
		m := newMailer(t, db, d.engine(), testConfig(startSMTP(t)), false)
		for _, req := range []mailer.Request{
			{Kind: mailer.RequestPasswordReset, To: "ann@example.com\r\nBcc: eve@example.com"},
			{Kind: mailer.RequestPasswordReset, To: "Ann <ann@example.com>"},
			{Kind: mailer.RequestPasswordReset, To: ""},
			{Kind: "something_else", To: "ann@example.com"},
		} {
			if err := enqueueRequest(t, db, m, req); !errors.Is(err, mailer.ErrInvalid) {
				t.Fatalf("%+v: %v, want ErrInvalid", req, err)
			}
		}
		if rows := jobs(t, db); len(rows) != 0 {
			t.Fatalf("%d jobs", len(rows))
		}
	})
}
