package mailer

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"
	"github.com/riverqueue/river/riverdriver/riversqlite"
)

// A Request is mail asked for by someone who must not learn whether the address has an account
// (a password reset, a sign-in code): the request is queued as it is, the same job for a known
// and an unknown address, and the sender resolves it later through the Resolver, which decides
// what (if anything) to mail. So the request's own writes, and its time, say nothing about the
// address.
type Request struct {
	Kind RequestKind
	// To is the address asked about (checked like a message's recipient).
	To string
	// IP and UserAgent are the requester's, for the record the resolver may write.
	IP, UserAgent string
}

// RequestKind is what a request asks for.
type RequestKind string

const (
	RequestPasswordReset RequestKind = "password_reset" // a reset link, if an account has the address
	RequestSignInCode    RequestKind = "sign_in_code"   // a sign-in code
)

// Resolver resolves a queued request: it looks the address up and queues what it mails (with
// Enqueue, in a transaction of its own) or does nothing. It must call complete with that
// transaction, so that the request is marked done in the same commit as its outcome and a crash
// in between resolves it once, not twice. An error is retried like a failed delivery.
type Resolver func(ctx context.Context, req Request, complete func(tx *sql.Tx) error) error

// SetResolver sets the function that resolves queued requests; set it before Start.
func (m *Mailer) SetResolver(r Resolver) { m.resolver.Store(&r) }

// requestArgs is a queued request as River stores it: everything, the address included, sealed.
type requestArgs struct {
	Sealed []byte `json:"sealed"`
}

func (requestArgs) Kind() string { return "gqlauth.mail_request" }

var requestAD = []byte("gqlauth mail request v1")

// EnqueueRequest checks req and queues it in tx; a refused request wraps ErrInvalid and writes
// nothing. Without delivery (Enabled false) nothing is queued: nothing would be sent anyway.
func (m *Mailer) EnqueueRequest(ctx context.Context, tx *sql.Tx, req Request) error {
	if err := validAddress(req.To); err != nil {
		return invalid("recipient: %v", err)
	}
	if req.Kind != RequestPasswordReset && req.Kind != RequestSignInCode {
		return invalid("unknown request %q", req.Kind)
	}
	if !m.enabled {
		return nil
	}
	plain, err := json.Marshal(req)
	if err != nil {
		return err
	}
	nonce := make([]byte, m.sealer.aead.NonceSize())
	randRead(nonce)
	args := &requestArgs{Sealed: m.sealer.aead.Seal(nonce, nonce, plain, requestAD)}
	if _, err := m.client.InsertTx(ctx, tx, args, &river.InsertOpts{Queue: queueName, MaxAttempts: maxAttempts}); err != nil {
		return fmt.Errorf("mailer: enqueue request: %w", err)
	}
	return nil
}

// requestWorker resolves queued requests.
type requestWorker struct {
	river.WorkerDefaults[requestArgs]
	m           *Mailer
	giveUpAfter time.Duration // as for messages: a request older than this is dropped
}

func (w *requestWorker) Work(ctx context.Context, job *river.Job[requestArgs]) error {
	n := w.m.sealer.aead.NonceSize()
	if len(job.Args.Sealed) < n {
		return river.JobCancel(errors.New("sealed request is truncated"))
	}
	plain, err := w.m.sealer.aead.Open(nil, job.Args.Sealed[:n], job.Args.Sealed[n:], requestAD)
	if err != nil {
		return river.JobCancel(errors.New("sealed request does not open (another secret, or altered)"))
	}
	var req Request
	if err := json.Unmarshal(plain, &req); err != nil {
		return river.JobCancel(err)
	}
	if time.Since(job.CreatedAt) >= w.giveUpAfter {
		return river.JobCancel(errors.New("mail request not resolved within the retry limit"))
	}
	r := w.m.resolver.Load()
	if r == nil {
		return errors.New("no resolver for mail requests yet")
	}
	return (*r)(ctx, req, func(tx *sql.Tx) error {
		var err error
		switch w.m.engine {
		case Postgres:
			_, err = river.JobCompleteTx[*riverdatabasesql.Driver](ctx, tx, job)
		case SQLite:
			_, err = river.JobCompleteTx[*riversqlite.Driver](ctx, tx, job)
		}
		return err
	})
}

// resolverSlot holds the Resolver.
type resolverSlot = atomic.Pointer[Resolver]
