package graph_test

import (
	"fmt"
	"testing"
	"time"

	"gqlauth/store/storetest"
)

// TestOutbox_ThroughputWithTestPolling measures messages per second from the first request to
// the SMTP server's accepting the last message: 100 sendEmailVerification mutations, one after
// the other, on the server as the tests build it (the outbox polls every 50 ms). The root
// package's TestOutbox_ThroughputThroughTheServer is the same on the server binary.
func TestOutbox_ThroughputWithTestPolling(t *testing.T) {
	if testing.Short() {
		t.Skip("a measurement")
	}
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		s, smtp := mailServer(t, kind)
		const n = 100
		tokens := make([]string, n)
		for i := range tokens {
			tokens[i] = s.registerWithEmail(t, fmt.Sprintf("user%d", i), fmt.Sprintf("u%d@example.com", i)).AccessToken
		}
		start := time.Now()
		for _, tok := range tokens {
			if r := s.sendVerification(t, tok); len(r.Errors) > 0 {
				t.Fatalf("sendEmailVerification: %+v", r.Errors)
			}
		}
		queued := time.Since(start)
		got := smtp.WaitFor(t, n, 60*time.Second)
		took := got[n-1].At.Sub(start)
		t.Logf("%s: %d messages requested in %s, delivered in %s: %.0f messages/s", kind, n, queued.Round(time.Millisecond),
			took.Round(time.Millisecond), float64(n)/took.Seconds())
	})
}
