package auth

import (
	"context"
	"math"
	"sync/atomic"
	"time"

	"gqlauth/model"
)

// pool bounds concurrent bcrypt work. bcrypt is the most expensive thing the server does (tens of
// milliseconds of CPU per call at cost 10); without a bound a login flood queues unboundedly, and
// every cheap request waits behind it for CPU.
type pool struct {
	slots        chan struct{}
	queueTimeout time.Duration
	maxQueue     int64
	waiting      atomic.Int64
}

func newPool(workers int, queueTimeout time.Duration) *pool {
	return &pool{slots: make(chan struct{}, workers), queueTimeout: queueTimeout, maxQueue: int64(64 * workers)}
}

// acquire takes a slot, waiting at most the queue timeout; over capacity it is TOO_MANY_REQUESTS.
func (p *pool) acquire(ctx context.Context) error {
	select {
	case p.slots <- struct{}{}:
		return nil
	default:
	}
	if p.waiting.Add(1) > p.maxQueue {
		p.waiting.Add(-1)
		return p.busy()
	}
	defer p.waiting.Add(-1)
	timer := time.NewTimer(p.queueTimeout)
	defer timer.Stop()
	select {
	case p.slots <- struct{}{}:
		return nil
	case <-timer.C:
		return p.busy()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pool) release() { <-p.slots }

func (p *pool) busy() error {
	return model.TooManyRequests(int(math.Ceil(p.queueTimeout.Seconds())))
}

// QueueDepth is the number of password operations waiting for a bcrypt slot.
func (p *Passwords) QueueDepth() int64 { return p.pool.waiting.Load() }
