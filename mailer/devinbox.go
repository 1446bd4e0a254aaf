package mailer

import (
	"context"
	"slices"
	"sync"
	"time"
)

// DevMessage is a message in the development inbox, in the clear (which is why the inbox is for
// development only).
type DevMessage struct {
	To      string    `json:"to"`
	Subject string    `json:"subject"`
	Text    string    `json:"text"`
	HTML    string    `json:"html"`
	At      time.Time `json:"at"`
}

// DevInboxStore keeps the development inbox. The store package can keep it in a table, so that
// every instance shows the same inbox; NewMemoryInbox keeps it in one process.
type DevInboxStore interface {
	// Add keeps a delivered message.
	Add(ctx context.Context, m DevMessage) error
	// List returns the messages kept, newest first.
	List(ctx context.Context) ([]DevMessage, error)
}

// MemoryInbox is a DevInboxStore in this process's memory, keeping the newest messages only.
type MemoryInbox struct {
	mu   sync.Mutex
	max  int
	msgs []DevMessage // oldest first
}

// NewMemoryInbox returns an inbox that keeps the last max messages.
func NewMemoryInbox(max int) *MemoryInbox { return &MemoryInbox{max: max} }

func (b *MemoryInbox) Add(_ context.Context, m DevMessage) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.msgs = append(b.msgs, m)
	if over := len(b.msgs) - b.max; over > 0 {
		b.msgs = slices.Delete(b.msgs, 0, over)
	}
	return nil
}

func (b *MemoryInbox) List(context.Context) ([]DevMessage, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := slices.Clone(b.msgs)
	slices.Reverse(out)
	return out, nil
}
