// Package smtptest is a real SMTP server (emersion/go-smtp) for tests: it listens on a loopback
// port, records every message it accepts, and plays the faults an outbox must survive — down
// (connection refused) and back on the same address, slow or stalled in DATA, slow to answer
// EHLO, refusing recipients, requiring authentication.
//
// It is test support only: no production package imports it, and it checks nothing about the
// messages beyond parsing them (the tests do that).
package smtptest

import (
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Message is one message as the server accepted it.
type Message struct {
	From    string
	To      []string
	Header  mail.Header
	Subject string // decoded
	Text    string // the decoded text/plain part
	HTML    string // the decoded text/html part
	Raw     []byte
	At      time.Time // when the server accepted it
}

// MessageID is the message's Message-ID header, with its angle brackets.
func (m Message) MessageID() string { return m.Header.Get("Message-Id") }

// Server is a recording SMTP server. Its zero value is not usable; call Start.
type Server struct {
	t    testing.TB
	addr string

	mu        sync.Mutex
	srv       *smtp.Server
	ln        net.Listener
	msgs      []Message
	errs      []error
	rejectTo  func(rcpt string) error
	hold      chan struct{} // when set, DATA waits for it to close, then fails with 451
	dataDelay time.Duration // DATA waits this long before reading the message
	ehloDelay time.Duration // the answer to EHLO waits this long
	user      string        // when set, AUTH PLAIN with user and pass is required before MAIL
	pass      string
	rcpts     int
	mails     int
	inData    chan struct{}
}

// Start starts a server on a free loopback port; it stops when the test ends, and then fails the
// test if a message it got could not be parsed.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, inData: make(chan struct{}, 10000)}
	s.listen("127.0.0.1:0")
	t.Cleanup(func() {
		s.Stop()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, err := range s.errs {
			t.Errorf("SMTP server: %v", err)
		}
	})
	return s
}

// StartOn is Start on a given address (e.g. a non-loopback interface's, port 0).
func StartOn(t testing.TB, addr string) *Server {
	t.Helper()
	s := &Server{t: t, inData: make(chan struct{}, 10000)}
	s.listen(addr)
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) listen(addr string) {
	s.t.Helper()
	var ln net.Listener
	var err error
	// The port was ours a moment ago; a restart may race the kernel's release of it.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if ln, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		s.t.Fatalf("smtptest: listen: %v", err)
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		s.mu.Lock()
		d := s.ehloDelay
		s.mu.Unlock()
		time.Sleep(d) // NewSession runs after EHLO and before its answer
		return &session{s: s}, nil
	}))
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	s.mu.Lock()
	s.addr, s.srv, s.ln = ln.Addr().String(), srv, ln
	s.mu.Unlock()
	go srv.Serve(ln)
}

// Addr is host:port.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// URL is the server's smtp:// URL, as SMTP_URL takes it.
func (s *Server) URL() string { return "smtp://" + s.Addr() }

// Stop closes the listener and every open session: connections are refused until Restart.
func (s *Server) Stop() {
	s.mu.Lock()
	srv, ln := s.srv, s.ln
	s.mu.Unlock()
	ln.Close() // Serve may not have registered it yet
	srv.Close()
}

// Restart listens again on the same address.
func (s *Server) Restart() { s.listen(s.Addr()) }

// Hold makes DATA wait until release is called, and then fail with 451: a send in progress that
// the server never accepts. InData tells when a session has reached DATA.
func (s *Server) Hold() (release func()) {
	hold := make(chan struct{})
	s.mu.Lock()
	s.hold = hold
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			if s.hold == hold {
				s.hold = nil
			}
			s.mu.Unlock()
			close(hold)
		})
	}
}

// SlowData makes DATA wait d before taking the message (a slow but working server).
func (s *Server) SlowData(d time.Duration) {
	s.mu.Lock()
	s.dataDelay = d
	s.mu.Unlock()
}

// SlowEHLO makes the answer to EHLO wait d.
func (s *Server) SlowEHLO(d time.Duration) {
	s.mu.Lock()
	s.ehloDelay = d
	s.mu.Unlock()
}

// InData receives a value each time a session reaches DATA.
func (s *Server) InData() <-chan struct{} { return s.inData }

// RejectTo has RCPT answer with reject's error for the recipients it returns one for.
func (s *Server) RejectTo(reject func(rcpt string) error) {
	s.mu.Lock()
	s.rejectTo = reject
	s.mu.Unlock()
}

// RequireAuth requires AUTH PLAIN with user and pass before MAIL.
func (s *Server) RequireAuth(user, pass string) {
	s.mu.Lock()
	s.user, s.pass = user, pass
	s.mu.Unlock()
}

// Commands counts the MAIL and RCPT commands the server got.
func (s *Server) Commands() (mails, rcpts int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mails, s.rcpts
}

// Messages returns the accepted messages, in the order of acceptance.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// WaitFor waits until the server holds at least n messages and returns them; it fails the test
// past timeout.
func (s *Server) WaitFor(t testing.TB, n int, timeout time.Duration) []Message {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := s.Messages()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("the SMTP server got %d messages in %s, want %d", len(got), timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type session struct {
	s      *Server
	from   string
	to     []string
	authed bool
}

func (x *session) AuthMechanisms() []string { return []string{sasl.Plain} }

func (x *session) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		x.s.mu.Lock()
		ok := user == x.s.user && pass == x.s.pass
		x.s.mu.Unlock()
		if !ok {
			return smtp.ErrAuthFailed
		}
		x.authed = true
		return nil
	}), nil
}

func (x *session) Reset()        { x.from, x.to = "", nil }
func (x *session) Logout() error { return nil }

func (x *session) Mail(from string, _ *smtp.MailOptions) error {
	x.s.mu.Lock()
	x.s.mails++
	needAuth := x.s.user != ""
	x.s.mu.Unlock()
	if needAuth && !x.authed {
		return smtp.ErrAuthRequired
	}
	x.from = from
	return nil
}

func (x *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	x.s.mu.Lock()
	x.s.rcpts++
	reject := x.s.rejectTo
	x.s.mu.Unlock()
	if reject != nil {
		if err := reject(to); err != nil {
			return err
		}
	}
	x.to = append(x.to, to)
	return nil
}

func (x *session) Data(r io.Reader) error {
	x.s.inData <- struct{}{}
	x.s.mu.Lock()
	hold, delay := x.s.hold, x.s.dataDelay
	x.s.mu.Unlock()
	if hold != nil {
		<-hold
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "held"}
	}
	time.Sleep(delay)
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	msg, err := parse(raw)
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	if err != nil {
		x.s.errs = append(x.s.errs, err)
		return err
	}
	msg.From, msg.To, msg.At = x.from, x.to, time.Now()
	x.s.msgs = append(x.s.msgs, msg)
	return nil
}

// parse reads a multipart/alternative message into its headers and decoded bodies.
func parse(raw []byte) (Message, error) {
	msg := Message{Raw: raw}
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return msg, err
	}
	msg.Header = m.Header
	msg.Subject, _ = new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
	mediaType, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mediaType != "multipart/alternative" {
		return msg, &badMessage{m.Header.Get("Content-Type")}
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			break
		}
		var body io.Reader = p
		if strings.EqualFold(p.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
			body = quotedprintable.NewReader(p)
		}
		b, _ := io.ReadAll(body)
		switch ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type")); ct {
		case "text/plain":
			msg.Text = string(b)
		case "text/html":
			msg.HTML = string(b)
		}
	}
	return msg, nil
}

type badMessage struct{ contentType string }

func (e *badMessage) Error() string {
	return "Content-Type " + e.contentType + ", want multipart/alternative"
}
