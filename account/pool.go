package account

import (
	"context"
	"math"
	"runtime"
	"sync/atomic"
	"time"

	"gqlauth/model"
)

// pool runs bcrypt on a fixed set of workers. bcrypt is the most expensive thing the server does
// (tens of milliseconds of CPU per call at cost 10): without a bound a login flood queues without
// limit, and every cheap request waits behind it for CPU. Each worker runs on its own OS thread at
// a lower scheduling priority (where the OS allows it), so that under a flood the cheap requests —
// and a database on the same machine — still get the CPU first, while an idle machine gives
// bcrypt every core.
type pool struct {
	jobs         chan func()
	queueTimeout time.Duration
	maxQueue     int64
	waiting      atomic.Int64
}

func newPool(workers int, queueTimeout time.Duration) *pool {
	p := &pool{jobs: make(chan func()), queueTimeout: queueTimeout, maxQueue: int64(64 * workers)}
	for range workers {
		go p.work()
	}
	return p
}

func (p *pool) work() {
	runtime.LockOSThread() // the priority below belongs to this thread; it must not run anything else
	lowerThreadPriority()
	for job := range p.jobs {
		job()
	}
}

// run runs fn on a worker, waiting at most the queue timeout for one; over capacity it is
// TOO_MANY_REQUESTS. fn must not block.
func (p *pool) run(ctx context.Context, fn func()) error {
	done := make(chan struct{})
	job := func() { fn(); close(done) }
	select {
	case p.jobs <- job:
		<-done
		return nil
	default:
	}
	if p.waiting.Add(1) > p.maxQueue {
		p.waiting.Add(-1)
		return p.busy()
	}
	timer := time.NewTimer(p.queueTimeout)
	defer timer.Stop()
	select {
	case p.jobs <- job:
		p.waiting.Add(-1)
		<-done
		return nil
	case <-timer.C:
		p.waiting.Add(-1)
		return p.busy()
	case <-ctx.Done():
		p.waiting.Add(-1)
		return ctx.Err()
	}
}

func (p *pool) busy() error {
	return model.TooManyRequests(int(math.Ceil(p.queueTimeout.Seconds())))
}

// QueueDepth is the number of password operations waiting for a bcrypt worker.
func (p *Passwords) QueueDepth() int64 { return p.pool.waiting.Load() }
