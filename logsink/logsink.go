// Package logsink is the server's log output: a line is copied into a buffer in memory and one
// goroutine writes the buffer to the real output (stdout) in batches, every Interval or sooner
// when it fills, so that a request pays a copy instead of a system call made under the log
// handler's lock, and requests do not queue behind each other's writes or behind a slow reader of
// the output (a pipe, a terminal, journald). Lines that must not wait — warnings and errors, and
// whatever is logged outside a request — are written through at once by Handler.
//
// It must not drop, reorder or split a line, nor hold one back longer than Interval: when the
// reader cannot keep up and the buffer is full, a writer waits, as it would for a direct write.
// What it cannot do is write lines still in memory when the process dies without Close (a crash
// of the runtime, SIGKILL): at most Interval of request lines.
package logsink

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

const (
	// Interval is how long a line may wait in memory before it is written.
	Interval = 100 * time.Millisecond
	// Size is the buffer a Sink fills before writers wait for the output; it is written out when
	// half full.
	Size = 1 << 20
)

// Sink is an io.Writer that batches the lines written to it (whole slog records: a slog handler
// writes each record with one Write).
type Sink struct {
	out  io.Writer
	size int

	mu      sync.Mutex
	buf     []byte     // lines not yet taken by a flush
	spare   []byte     // the other buffer, idle between flushes (nil while one is being written)
	drained *sync.Cond // a flush took buf: writers waiting for room may go on
	closed  bool

	flushing  sync.Mutex // one write to out at a time, in order
	closeOnce sync.Once
	kick      chan struct{}
	stop      chan struct{}
	done      chan struct{}
}

// New returns a Sink that writes to out every interval, or sooner once size/2 bytes wait. Close
// stops it and writes what is left.
func New(out io.Writer, interval time.Duration, size int) *Sink {
	s := &Sink{out: out, size: size, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	s.drained = sync.NewCond(&s.mu)
	go s.run(interval)
	return s
}

func (s *Sink) run(interval time.Duration) {
	defer close(s.done)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			s.Flush()
			return
		case <-tick.C:
		case <-s.kick:
		}
		s.Flush()
	}
}

// Write copies p into the buffer; it waits only when the buffer is full. After Close it writes
// p through.
func (s *Sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	for !s.closed && len(s.buf) > 0 && len(s.buf)+len(p) > s.size {
		s.signal()
		s.drained.Wait()
	}
	if s.closed {
		s.mu.Unlock()
		s.flushing.Lock()
		defer s.flushing.Unlock()
		return s.out.Write(p)
	}
	s.buf = append(s.buf, p...)
	if len(s.buf) >= s.size/2 {
		s.signal()
	}
	s.mu.Unlock()
	return len(p), nil
}

func (s *Sink) signal() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Flush writes every line written so far to the output before it returns.
func (s *Sink) Flush() error {
	s.flushing.Lock()
	defer s.flushing.Unlock()
	s.mu.Lock()
	b := s.buf
	if len(b) == 0 {
		s.mu.Unlock()
		return nil
	}
	s.buf, s.spare = s.spare[:0], nil
	s.drained.Broadcast()
	s.mu.Unlock()

	_, err := s.out.Write(b)
	if cap(b) > 2*s.size {
		b = nil // one huge line: do not keep its buffer
	}
	s.mu.Lock()
	s.spare = b[:0]
	s.mu.Unlock()
	return err
}

// Close writes what is left and makes every later Write go straight to the output.
func (s *Sink) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.done
		s.flushing.Lock() // later writes go through, after what is left
		defer s.flushing.Unlock()
		s.mu.Lock()
		b := s.buf
		s.buf, s.closed = nil, true
		s.drained.Broadcast()
		s.mu.Unlock()
		if len(b) > 0 {
			_, err = s.out.Write(b)
		}
	})
	return err
}

// Handler wraps h, whose output is s, so that a record at level Warn or above, or one for which
// batched(its context) is false, is written out before Handle returns (with every line before it).
func (s *Sink) Handler(h slog.Handler, batched func(context.Context) bool) slog.Handler {
	return handler{h, s, batched}
}

type handler struct {
	slog.Handler
	sink    *Sink
	batched func(context.Context) bool
}

func (h handler) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelWarn || !h.batched(ctx) {
		h.sink.Flush()
	}
	return err
}

func (h handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return handler{h.Handler.WithAttrs(attrs), h.sink, h.batched}
}

func (h handler) WithGroup(name string) slog.Handler {
	return handler{h.Handler.WithGroup(name), h.sink, h.batched}
}
