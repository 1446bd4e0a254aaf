package logsink_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"gqlauth/logsink"
)

// output is a log destination the test reads while the sink writes; slow makes each write take
// that long, as a reader that cannot keep up would.
type output struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
	slow   time.Duration
}

func (o *output) Write(p []byte) (int, error) {
	time.Sleep(o.slow)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.writes++
	return o.b.Write(p)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

func TestSink_KeepsEveryLineWholeAndInOrderBehindASlowReader(t *testing.T) {
	out := &output{slow: time.Millisecond}
	s := logsink.New(out, time.Millisecond, 512) // a small buffer: writers wait for room
	const writers, lines = 8, 300
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range lines {
				fmt.Fprintf(s, "writer=%d line=%d %s\n", w, i, strings.Repeat("x", i%50))
			}
		})
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	next := make([]int, writers)
	all := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	for _, line := range all {
		var w, i int
		var rest string
		if _, err := fmt.Sscanf(line, "writer=%d line=%d %s", &w, &i, &rest); err != nil && i%50 != 0 {
			t.Fatalf("a broken line %q: %v", line, err)
		}
		if i != next[w] || (i%50 != 0 && rest != strings.Repeat("x", i%50)) {
			t.Fatalf("writer %d: line %q where line %d was due", w, line, next[w])
		}
		next[w]++
	}
	if len(all) != writers*lines {
		t.Fatalf("%d lines, want %d", len(all), writers*lines)
	}
	if out.writes >= writers*lines/2 {
		t.Errorf("%d writes to the output for %d lines: not batched", out.writes, len(all))
	}
}

func TestSink_WritesALineWithinTheInterval(t *testing.T) {
	out := &output{}
	s := logsink.New(out, 20*time.Millisecond, logsink.Size)
	defer s.Close()
	start := time.Now()
	fmt.Fprintln(s, "one")
	for out.String() == "" {
		if time.Since(start) > 5*time.Second {
			t.Fatal("the line was not written")
		}
		time.Sleep(time.Millisecond)
	}
	if out.String() != "one\n" {
		t.Fatalf("output %q", out.String())
	}
}

func TestSink_WritesAfterCloseGoThrough(t *testing.T) {
	out := &output{}
	s := logsink.New(out, time.Hour, logsink.Size)
	fmt.Fprintln(s, "before")
	s.Close()
	fmt.Fprintln(s, "after")
	if got := out.String(); got != "before\nafter\n" {
		t.Fatalf("output %q", got)
	}
}

type batchedKey struct{}

func TestSinkHandler_WarningsAndLinesOutsideARequestAreWrittenAtOnce(t *testing.T) {
	out := &output{}
	s := logsink.New(out, time.Hour, logsink.Size) // nothing is written by the clock here
	defer s.Close()
	log := slog.New(s.Handler(slog.NewTextHandler(s, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}), func(ctx context.Context) bool { return ctx.Value(batchedKey{}) != nil }))
	request := context.WithValue(context.Background(), batchedKey{}, true)

	log.InfoContext(request, "request")
	if got := out.String(); got != "" {
		t.Fatalf("an info line of a request was written at once: %q", got)
	}
	log.WarnContext(request, "trouble")
	if got := out.String(); got != "level=INFO msg=request\nlevel=WARN msg=trouble\n" {
		t.Fatalf("after a warning: %q", got)
	}
	log.InfoContext(request, "request")
	log.Info("started")
	if got := out.String(); !strings.HasSuffix(got, "level=INFO msg=request\nlevel=INFO msg=started\n") {
		t.Fatalf("after a line outside a request: %q", got)
	}
}
