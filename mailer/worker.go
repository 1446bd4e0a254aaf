package mailer

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/riverqueue/river"
	gomail "github.com/wneessen/go-mail"
)

// worker is River's worker for queued mail: it opens the sealed parts, renders the message and
// hands it to the sender (SMTP or the development inbox).
type worker struct {
	river.WorkerDefaults[sendArgs]
	m           *Mailer
	send        sendFunc
	backoff     func(attempt int) time.Duration
	giveUpAfter time.Duration
	rescueAfter time.Duration // River's RescueStuckJobsAfter
}

// Work delivers one message. A temporary failure is returned for River to retry; a message that
// cannot be opened or rendered, one the server refuses for good, and one older than the retry
// limit are cancelled (River keeps the row, with the error, for a week).
func (w *worker) Work(ctx context.Context, job *river.Job[sendArgs]) error {
	msg, err := w.m.open(&job.Args)
	if err != nil {
		return river.JobCancel(err)
	}
	r, err := w.m.tmpl.render(msg, w.m.appName)
	if err != nil {
		return river.JobCancel(fmt.Errorf("render: %w", err))
	}
	gm, err := w.m.compose(job.Args.MessageID, job.CreatedAt, msg.To, r)
	if err != nil {
		return river.JobCancel(err)
	}
	err = w.send(ctx, gm, r)
	var permanent *permanentError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &permanent):
		w.m.log.Warn("mail refused by the SMTP server; not retried", "kind", msg.Kind, "message_id", job.Args.MessageID, "err", err)
		return river.JobCancel(err)
	case time.Since(job.CreatedAt) >= w.giveUpAfter:
		w.m.log.Warn("mail not delivered; giving up", "kind", msg.Kind, "message_id", job.Args.MessageID, "queued_at", job.CreatedAt, "err", err)
		return river.JobCancel(err)
	}
	return err
}

// NextRetry spaces the retries (Backoff), the last one at the retry limit. A message rescued
// from a dead process (its attempt began RescueAfter ago or earlier: no live attempt runs that
// long) is due at once: the SMTP server did not fail, and the wait for the rescue was long enough.
func (w *worker) NextRetry(job *river.Job[sendArgs]) time.Time {
	if job.AttemptedAt != nil && time.Since(*job.AttemptedAt) >= w.rescueAfter {
		return time.Now()
	}
	next := time.Now().Add(w.backoff(max(len(job.Errors)+1, job.Attempt)))
	return minTime(next, job.CreatedAt.Add(w.giveUpAfter))
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// defaultBackoff waits 15 s after the first failure and doubles up to an hour, each wait ±10 %
// so that instances do not retry in step.
func defaultBackoff(attempt int) time.Duration {
	d := 15 * time.Second << min(attempt-1, 8)
	d = min(d, time.Hour)
	return d - d/10 + time.Duration(rand.Int64N(int64(d/5)+1))
}

// compose builds the MIME message: a multipart/alternative of the text and HTML bodies with the
// message's fixed Message-ID and its queueing time as Date, so that a resent copy is the same
// message to the recipient's client.
func (m *Mailer) compose(messageID string, queuedAt time.Time, to string, r *rendered) (*gomail.Msg, error) {
	msg := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	if err := msg.From(m.from); err != nil {
		return nil, fmt.Errorf("sender: %w", err)
	}
	if err := msg.To(to); err != nil {
		return nil, fmt.Errorf("recipient: %w", err)
	}
	msg.Subject(r.Subject)
	msg.SetMessageIDWithValue(messageID)
	msg.SetDateWithValue(queuedAt)
	msg.SetGenHeader(gomail.Header("Auto-Submitted"), "auto-generated")
	msg.SetGenHeader(gomail.HeaderXAutoResponseSuppress, "All")
	msg.SetBodyString(gomail.TypeTextPlain, r.Text)
	msg.AddAlternativeString(gomail.TypeTextHTML, r.HTML)
	return msg, nil
}

// deliverToInbox is the sender of the development inbox.
func (m *Mailer) deliverToInbox(ctx context.Context, _ *gomail.Msg, r *rendered) error {
	return m.inbox.Add(ctx, DevMessage{To: r.To, Subject: r.Subject, Text: r.Text, HTML: r.HTML, At: time.Now().UTC()})
}
