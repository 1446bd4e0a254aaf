package graph

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"testing"
	"time"
)

// slogLine is l as slog's own handler (text or JSON, without options) writes it.
func slogLine(t testing.TB, l *accessLine, json bool) []byte {
	var buf bytes.Buffer
	var h slog.Handler = slog.NewTextHandler(&buf, nil)
	if json {
		h = slog.NewJSONHandler(&buf, nil)
	}
	if err := h.Handle(context.Background(), l.record()); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// fastLine is l as accessLines.write writes it, or nil when it would leave l to slog.
func fastLine(l *accessLine, json bool) []byte {
	var buf bytes.Buffer
	if !(&accessLines{out: &buf, json: json}).write(l) {
		return nil
	}
	return buf.Bytes()
}

// compareLine fails unless l is written byte for byte as slog writes it, in both formats. A
// JSON line the fast path leaves to slog (a year without four digits) is no failure.
func compareLine(t testing.TB, l *accessLine) {
	t.Helper()
	for _, json := range []bool{false, true} {
		want := slogLine(t, l, json)
		got := fastLine(l, json)
		if got == nil && json {
			if y := l.time.Year(); y >= 0 && y < 10000 {
				t.Errorf("json: the fast path declined a line of year %d", y)
			}
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("json=%v:\n got %q\nwant %q", json, got, want)
		}
	}
}

func TestAccessLine_MatchesSlog(t *testing.T) {
	at := time.Date(2026, 12, 5, 19, 39, 35, 866_123_456, time.UTC)
	base := accessLine{time: at, method: "POST", field: "me", status: 200, outcome: "ok",
		duration: 70634 * time.Nanosecond, user: "01a247b7-e41d-7348-b254-463cde00c571", requestID: "d676b21951e6b26a"}
	for name, change := range map[string]func(*accessLine){
		"typical":              func(*accessLine) {},
		"with operation":       func(l *accessLine) { l.operation = "Me" },
		"no user":              func(l *accessLine) { l.user = "" },
		"no request id":        func(l *accessLine) { l.requestID = "" },
		"error outcome":        func(l *accessLine) { l.outcome, l.status = "UNAUTHENTICATED", 401 },
		"operation with space": func(l *accessLine) { l.operation = "my op" },
		"operation with =":     func(l *accessLine) { l.operation = "a=b" },
		"operation with quote": func(l *accessLine) { l.operation = `say "hi"` },
		"backslash":            func(l *accessLine) { l.operation = `a\b` },
		"control bytes":        func(l *accessLine) { l.operation = "a\nb\rc\td\x00e\x1f\x7f" },
		"unicode":              func(l *accessLine) { l.operation = "héllo_世界" },
		"unicode space":        func(l *accessLine) { l.operation = "a\u00a0b\u2028c\u2029" },
		"not printable":        func(l *accessLine) { l.operation = "a\u200bb" },
		"invalid utf-8":        func(l *accessLine) { l.operation = "a\xffb\xc3" },
		"truncated rune":       func(l *accessLine) { l.operation = truncateName("x" + string(make([]byte, 62)) + "é") },
		"empty method":         func(l *accessLine) { l.method = "" },
		"empty field":          func(l *accessLine) { l.field = "" },
		"html":                 func(l *accessLine) { l.operation = "<a href='x'>&</a>" },
		"zero duration":        func(l *accessLine) { l.duration = 0 },
		"nanoseconds":          func(l *accessLine) { l.duration = 999 },
		"milliseconds":         func(l *accessLine) { l.duration = 12_345_678 },
		"seconds":              func(l *accessLine) { l.duration = 3*time.Second + 5 },
		"hours":                func(l *accessLine) { l.duration = 26*time.Hour + 3*time.Minute },
		"negative duration":    func(l *accessLine) { l.duration = -1500 * time.Microsecond },
		"min duration":         func(l *accessLine) { l.duration = math.MinInt64 },
		"max duration":         func(l *accessLine) { l.duration = math.MaxInt64 },
		"status 0":             func(l *accessLine) { l.status = 0 },
		"negative status":      func(l *accessLine) { l.status = -7 },
		"whole second":         func(l *accessLine) { l.time = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) },
		"999.9ms":              func(l *accessLine) { l.time = time.Date(2026, 1, 2, 3, 4, 5, 999_999_999, time.UTC) },
		"offset zone":          func(l *accessLine) { l.time = at.In(time.FixedZone("", -(3*3600 + 30*60))) },
		"local with monotonic": func(l *accessLine) { l.time = time.Now() },
		"year 10000":           func(l *accessLine) { l.time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) },
		"year -1":              func(l *accessLine) { l.time = time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC) },
	} {
		t.Run(name, func(t *testing.T) {
			l := base
			change(&l)
			compareLine(t, &l)
		})
	}
}

// FuzzAccessLine formats random lines both ways, text and JSON, and compares the bytes. The seed
// corpus is in testdata/fuzz/FuzzAccessLine.
func FuzzAccessLine(f *testing.F) {
	f.Add("POST", "", "me", "ok", "01a247b7-e41d-7348-b254-463cde00c571", "d676b21951e6b26a", 200, int64(70634), int64(1796499575866123456), 0)
	f.Add("GET", "my op", "__typename", "BAD_USER_INPUT", "", "", 400, int64(-5), int64(0), -12600)
	f.Fuzz(func(t *testing.T, method, operation, field, outcome, user, requestID string, status int, duration, unixNano int64, zone int) {
		l := accessLine{time: time.Unix(0, unixNano).In(time.FixedZone("", zone%(24*3600))), method: method,
			operation: operation, field: field, status: status, outcome: outcome, duration: time.Duration(duration),
			user: user, requestID: requestID}
		compareLine(t, &l)
	})
}

// A handler with a ReplaceAttr or AddSource, or one given attributes or a group, gets the line
// through slog: only slog knows what those do to it.
func TestNewLogHandler_LeavesLinesToSlogWhenItCannotMatchThem(t *testing.T) {
	var buf bytes.Buffer
	replace := func(_ []string, a slog.Attr) slog.Attr { return a }
	for name, h := range map[string]slog.Handler{
		"ReplaceAttr": NewLogHandler(&buf, false, &slog.HandlerOptions{ReplaceAttr: replace}, nil),
		"AddSource":   NewLogHandler(&buf, true, &slog.HandlerOptions{AddSource: true}, nil),
		"WithAttrs":   NewLogHandler(&buf, false, nil, nil).WithAttrs([]slog.Attr{slog.String("a", "b")}),
		"WithGroup":   NewLogHandler(&buf, true, nil, nil).WithGroup("g"),
	} {
		if h.(requestIDHandler).lines != nil {
			t.Errorf("%s: observe would write the line itself", name)
		}
	}
	for name, h := range map[string]slog.Handler{
		"text":            NewLogHandler(&buf, false, nil, nil),
		"json with level": NewLogHandler(&buf, true, &slog.HandlerOptions{Level: slog.LevelDebug}, nil),
		"no attributes":   NewLogHandler(&buf, false, nil, nil).WithAttrs(nil),
		"empty group":     NewLogHandler(&buf, false, nil, nil).WithGroup(""),
	} {
		if h.(requestIDHandler).lines == nil {
			t.Errorf("%s: observe would leave the line to slog", name)
		}
	}
}
