package graph

import (
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// NewLogHandler is the server's log handler: slog's text handler (its JSON handler when json)
// writing to out with opts, wrapped by wrap (if not nil) and then by LogHandler.
//
// A request's access line costs a third of what slog takes to format it when it is appended
// straight into a buffer, so observe writes it to out itself, in one Write, byte for byte as the
// handler would (accesslog_test.go proves it for random values) — when it can guarantee that:
// not with a ReplaceAttr or AddSource in opts, nor on a handler that WithAttrs or WithGroup made.
// The line is a record at Info in a request's context, so wrap must pass such a record on to the
// handler and do nothing else for it (as logsink's Handler does): observe skips it.
func NewLogHandler(out io.Writer, json bool, opts *slog.HandlerOptions, wrap func(slog.Handler) slog.Handler) slog.Handler {
	var h slog.Handler
	if json {
		h = slog.NewJSONHandler(out, opts)
	} else {
		h = slog.NewTextHandler(out, opts)
	}
	if wrap != nil {
		h = wrap(h)
	}
	ids := requestIDHandler{Handler: h}
	if opts == nil || (opts.ReplaceAttr == nil && !opts.AddSource) {
		ids.lines = &accessLines{out: out, json: json}
	}
	return ids
}

// accessLines is where observe writes access lines itself, and in which of slog's formats.
type accessLines struct {
	out  io.Writer
	json bool
}

// accessLine is a request's access line: its record's time and attributes, in their order.
type accessLine struct {
	time      time.Time
	method    string
	operation string // left out when ""
	field     string
	status    int
	outcome   string
	duration  time.Duration
	user      string // left out when ""
	requestID string // left out when ""
}

// record is the line as a slog record (at Info, without a program counter, as observe logs it).
func (l *accessLine) record() slog.Record {
	rec := slog.NewRecord(l.time, slog.LevelInfo, "request", 0)
	rec.AddAttrs(slog.String("method", l.method))
	if l.operation != "" {
		rec.AddAttrs(slog.String("operation", l.operation))
	}
	rec.AddAttrs(slog.String("field", l.field), slog.Int("status", l.status),
		slog.String("outcome", l.outcome), slog.Duration("duration", l.duration))
	if l.user != "" {
		rec.AddAttrs(slog.String("user", l.user))
	}
	if l.requestID != "" {
		rec.AddAttrs(slog.String("request_id", l.requestID))
	}
	return rec
}

var lineBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// write writes l to out in one Write. It returns false, having written nothing, when it cannot
// format l as slog would (then the caller logs l.record()).
func (a *accessLines) write(l *accessLine) bool {
	bp := lineBuffers.Get().(*[]byte)
	var ok bool
	if a.json {
		*bp, ok = l.appendJSON((*bp)[:0])
	} else {
		*bp, ok = l.appendText((*bp)[:0]), true
	}
	if ok {
		a.out.Write(*bp) // as slog's handlers, which drop the error too: Handle's goes nowhere
	}
	if cap(*bp) <= 4<<10 { // a huge line (a long method): do not keep its buffer
		lineBuffers.Put(bp)
	}
	return ok
}

// appendText appends l as slog.TextHandler (without options) formats it.
func (l *accessLine) appendText(b []byte) []byte {
	b = append(b, "time="...)
	b = appendRFC3339Millis(b, l.time.Round(0))
	b = append(b, " level=INFO msg=request method="...)
	b = appendTextString(b, l.method)
	if l.operation != "" {
		b = append(b, " operation="...)
		b = appendTextString(b, l.operation)
	}
	b = append(b, " field="...)
	b = appendTextString(b, l.field)
	b = append(b, " status="...)
	b = strconv.AppendInt(b, int64(l.status), 10)
	b = append(b, " outcome="...)
	b = appendTextString(b, l.outcome)
	b = append(b, " duration="...) // a duration is never quoted
	b = appendDuration(b, l.duration)
	if l.user != "" {
		b = append(b, " user="...)
		b = appendTextString(b, l.user)
	}
	if l.requestID != "" {
		b = append(b, " request_id="...)
		b = appendTextString(b, l.requestID)
	}
	return append(b, '\n')
}

// appendJSON appends l as slog.JSONHandler (without options) formats it; false for a time whose
// year has no four digits, for which slog appends an error to the time.
func (l *accessLine) appendJSON(b []byte) ([]byte, bool) {
	t := l.time.Round(0)
	if y := t.Year(); y < 0 || y >= 10000 {
		return b, false
	}
	b = append(b, `{"time":"`...)
	b = t.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":"INFO","msg":"request","method":"`...)
	b = appendJSONString(b, l.method)
	if l.operation != "" {
		b = append(b, `","operation":"`...)
		b = appendJSONString(b, l.operation)
	}
	b = append(b, `","field":"`...)
	b = appendJSONString(b, l.field)
	b = append(b, `","status":`...)
	b = strconv.AppendInt(b, int64(l.status), 10)
	b = append(b, `,"outcome":"`...)
	b = appendJSONString(b, l.outcome)
	b = append(b, `","duration":`...) // in nanoseconds, as json.Marshal does
	b = strconv.AppendInt(b, int64(l.duration), 10)
	if l.user != "" {
		b = append(b, `,"user":"`...)
		b = appendJSONString(b, l.user)
		b = append(b, '"')
	}
	if l.requestID != "" {
		b = append(b, `,"request_id":"`...)
		b = appendJSONString(b, l.requestID)
		b = append(b, '"')
	}
	return append(b, "}\n"...), true
}

// The rest is log/slog's own formatting (Go 1.26: handler.go, text_handler.go, json_handler.go)
// and time.Duration.String's, copied because they are not exported; the fuzz tests in
// accesslog_test.go compare them with slog's handlers byte for byte.

// appendRFC3339Millis is slog's appendRFC3339Millis.
func appendRFC3339Millis(b []byte, t time.Time) []byte {
	// RFC3339Nano trims trailing zeros: add 1/10 ms for exactly 4 digits, and drop the 4th.
	const prefixLen = len("2006-01-02T15:04:05.000")
	n := len(b)
	t = t.Truncate(time.Millisecond).Add(time.Millisecond / 10)
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b[:n+prefixLen], b[n+prefixLen+1:]...)
}

// jsonSafe is slog's (and encoding/json's) safeSet: the ASCII bytes a JSON string holds as they
// are. Text values with any other ASCII byte but a backslash, or with a space or '=', are quoted.
func jsonSafe(b byte) bool { return b >= ' ' && b != '"' && b != '\\' }

// appendTextString is slog's text handler's appendString: s as it is, or quoted with
// strconv.Quote when needsQuoting.
func appendTextString(b []byte, s string) []byte {
	if textNeedsQuoting(s) {
		return strconv.AppendQuote(b, s)
	}
	return append(b, s...)
}

// textNeedsQuoting is slog's needsQuoting.
func textNeedsQuoting(s string) bool {
	if len(s) == 0 {
		return true
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c != '\\' && (c == ' ' || c == '=' || !jsonSafe(c)) {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return true
		}
		i += size
	}
	return false
}

// appendJSONString is slog's appendEscapedJSONString: s escaped for a JSON string, without quotes.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if jsonSafe(c) {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			b = append(b, '\\')
			switch c {
			case '\\', '"':
				b = append(b, c)
			case '\n':
				b = append(b, 'n')
			case '\r':
				b = append(b, 'r')
			case '\t':
				b = append(b, 't')
			default:
				b = append(b, 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' { // valid JSON, but not JavaScript (JSONP)
			b = append(b, s[start:i]...)
			b = append(b, `\u202`...)
			b = append(b, hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(b, s[start:]...)
}

// appendDuration appends d.String() without allocating it.
func appendDuration(b []byte, d time.Duration) []byte {
	var buf [32]byte
	w := len(buf)
	u := uint64(d)
	neg := d < 0
	if neg {
		u = -u
	}
	if u < uint64(time.Second) {
		// Below a second, the unit is the largest with a non-zero leading digit: 1.2ms.
		var prec int
		w--
		buf[w] = 's'
		w--
		switch {
		case u == 0:
			buf[w] = '0'
			return append(b, buf[w:]...)
		case u < uint64(time.Microsecond):
			prec = 0
			buf[w] = 'n'
		case u < uint64(time.Millisecond):
			prec = 3
			w-- // 'µ' is two bytes
			copy(buf[w:], "µ")
		default:
			prec = 6
			buf[w] = 'm'
		}
		w, u = fmtFrac(buf[:w], u, prec)
		w = fmtInt(buf[:w], u)
	} else {
		w--
		buf[w] = 's'
		w, u = fmtFrac(buf[:w], u, 9)
		w = fmtInt(buf[:w], u%60) // seconds
		u /= 60
		if u > 0 { // minutes
			w--
			buf[w] = 'm'
			w = fmtInt(buf[:w], u%60)
			u /= 60
			if u > 0 { // hours, the largest unit: days differ in length
				w--
				buf[w] = 'h'
				w = fmtInt(buf[:w], u)
			}
		}
	}
	if neg {
		w--
		buf[w] = '-'
	}
	return append(b, buf[w:]...)
}

// fmtFrac formats the fraction of v/10**prec (".12345") into the tail of buf without its
// trailing zeros (nor the point when it is 0), and returns where it starts and v/10**prec.
func fmtFrac(buf []byte, v uint64, prec int) (int, uint64) {
	w := len(buf)
	print := false
	for range prec {
		digit := v % 10
		print = print || digit != 0
		if print {
			w--
			buf[w] = byte(digit) + '0'
		}
		v /= 10
	}
	if print {
		w--
		buf[w] = '.'
	}
	return w, v
}

// fmtInt formats v into the tail of buf and returns where it starts.
func fmtInt(buf []byte, v uint64) int {
	w := len(buf)
	if v == 0 {
		w--
		buf[w] = '0'
		return w
	}
	for v > 0 {
		w--
		buf[w] = byte(v%10) + '0'
		v /= 10
	}
	return w
}
