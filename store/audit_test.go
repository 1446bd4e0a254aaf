package store_test

import (
	"context"
	"testing"
	"time"

	"gqlauth/model"
	"gqlauth/store/storetest"
)

// BenchmarkRecordEvent is the cost of the one insert a failed sign-in adds (written on its own,
// outside any transaction), on each database.
func BenchmarkRecordEvent(b *testing.B) {
	for _, kind := range storetest.Kinds(b) {
		b.Run(string(kind), func(b *testing.B) {
			db := storetest.Open(b, kind)
			ctx := context.Background()
			ip, ua, detail := "203.0.113.9", "Mozilla/5.0 (X11; Linux x86_64)", `unknown username "mallory"`
			b.ReportAllocs()
			for b.Loop() {
				e := &model.AuditEvent{At: time.Now().UTC(), Type: model.AuditEventTypeSignInFailed, IP: &ip, UserAgent: &ua, Detail: &detail}
				if err := db.RecordStandaloneEvent(ctx, e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
