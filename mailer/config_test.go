package mailer_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gqlauth/internal/smtptest"
	"gqlauth/mailer"
	"gqlauth/store/storetest"
)

// newWith builds a Mailer on a fresh SQLite database from cfg, returning New's error.
func newWith(t *testing.T, cfg mailer.Config) (*mailer.Mailer, error) {
	t.Helper()
	d := newDatabase(t, storetest.SQLite)
	return mailer.New(d.open(t), mailer.SQLite, cfg)
}

func TestNew_ChecksSMTPURL(t *testing.T) {
	cases := []struct {
		url, wantErr string
	}{
		{"smtp://localhost:2525", ""},
		{"smtp://user:p%40ss@127.0.0.1:2525", ""},
		{"smtp://[::1]:25", ""},
		{"smtp://mail.example.com", ""},
		{"smtps://user:secret-pw@mail.example.com", ""},
		{"smtps://mail.example.com:2465", ""},
		{"http://mail.example.com", "scheme"},
		{"mail.example.com:25", "scheme"},
		{"smtp://", "no host"},
		{"smtp://:secret-pw@mail.example.com", "user name"},
		{"smtp://mail.example.com:0", "port"},
		{"smtp://user:secret-pw@mail.example.com:99999", "port"},
		{"smtp://mail.example.com/path", "no path"},
		{"smtp://mail.example.com?tls=off", "no path"},
		{"smtp://user:secret-pw@mail.example.com:25%zz", "not a valid URL"},
	}
	for _, c := range cases {
		t.Run(c.url, func(t *testing.T) {
			cfg := testConfig(nil)
			cfg.SMTPURL = c.url
			_, err := newWith(t, cfg)
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr) || !strings.HasPrefix(err.Error(), "SMTP_URL: ")):
				t.Fatalf("error %v, want SMTP_URL: …%s…", err, c.wantErr)
			case err != nil && strings.Contains(err.Error(), "secret-pw"):
				t.Fatalf("the error repeats the password: %v", err)
			}
		})
	}
}

func TestNew_ChecksMailFrom(t *testing.T) {
	cases := []struct {
		from string
		ok   bool
	}{
		{"no-reply@example.com", true},
		{"Acme <no-reply@example.com>", true},
		{`"Acme, Inc." <no-reply@example.com>`, true},
		{"", false}, // required with SMTP_URL
		{"not an address", false},
		{"Acme <no-reply@example.com>\r\nBcc: victim@example.com", false},
		{"Acme\n <no-reply@example.com>", false},
		{"no-reply@example.com\x00", false},
		{"a@b.com, c@d.com", false},
		{strings.Repeat("a", 250) + "@example.com", false},
	}
	for _, c := range cases {
		t.Run(c.from, func(t *testing.T) {
			cfg := testConfig(nil)
			cfg.SMTPURL, cfg.From = "smtp://localhost:2525", c.from
			_, err := newWith(t, cfg)
			if c.ok != (err == nil) || (err != nil && !strings.HasPrefix(err.Error(), "MAIL_FROM: ")) {
				t.Fatalf("New: %v, want ok=%v", err, c.ok)
			}
		})
	}
}

func TestNew_RefusesAShortSecretAndAnAppNameWithALineBreak(t *testing.T) {
	cfg := testConfig(nil)
	cfg.Secret = []byte("short")
	if _, err := newWith(t, cfg); err == nil {
		t.Fatal("a 5-byte secret was accepted")
	}
	cfg = testConfig(nil)
	cfg.AppName = "Acme\r\nBcc: victim@example.com"
	if _, err := newWith(t, cfg); err == nil || !strings.HasPrefix(err.Error(), "APP_NAME: ") {
		t.Fatalf("New: %v", err)
	}
}

func TestMailer_RefusesInvalidMessagesAndQueuesNothing(t *testing.T) {
	ok := mailer.Message{Kind: mailer.ResetPassword, To: "ann@example.com", Link: resetLink, ExpiresIn: time.Minute}
	with := func(f func(*mailer.Message)) mailer.Message { m := ok; f(&m); return m }
	cases := map[string]mailer.Message{
		"CRLF in address":        with(func(m *mailer.Message) { m.To = "ann@example.com\r\nBcc: victim@example.com" }),
		"LF in address":          with(func(m *mailer.Message) { m.To = "ann@example.com\nBcc: x@y.z" }),
		"CR in address":          with(func(m *mailer.Message) { m.To = "ann@exa\rmple.com" }),
		"NUL in address":         with(func(m *mailer.Message) { m.To = "ann@example.com\x00" }),
		"tab in address":         with(func(m *mailer.Message) { m.To = "ann@exam\tple.com" }),
		"address of 255 bytes":   with(func(m *mailer.Message) { m.To = strings.Repeat("a", 64) + "@" + strings.Repeat("b", 186) + ".com" }),
		"no at sign":             with(func(m *mailer.Message) { m.To = "ann.example.com" }),
		"no domain":              with(func(m *mailer.Message) { m.To = "ann@" }),
		"no local part":          with(func(m *mailer.Message) { m.To = "@example.com" }),
		"display name":           with(func(m *mailer.Message) { m.To = "Ann <ann@example.com>" }),
		"two addresses":          with(func(m *mailer.Message) { m.To = "ann@example.com, bob@example.com" }),
		"empty address":          with(func(m *mailer.Message) { m.To = "" }),
		"invalid UTF-8":          with(func(m *mailer.Message) { m.To = "ann\xff@example.com" }),
		"unknown kind":           with(func(m *mailer.Message) { m.Kind = "welcome" }),
		"reset without link":     with(func(m *mailer.Message) { m.Link = "" }),
		"link with CRLF":         with(func(m *mailer.Message) { m.Link = "https://app.example.com/\r\nBcc: x@y.z" }),
		"javascript link":        with(func(m *mailer.Message) { m.Link = "javascript:alert(1)" }),
		"relative link":          with(func(m *mailer.Message) { m.Link = "/reset#token=abc" }),
		"link without expiry":    with(func(m *mailer.Message) { m.ExpiresIn = 0 }),
		"code with letters":      {Kind: mailer.SignInCode, To: "ann@example.com", Code: "12a456", ExpiresIn: time.Minute},
		"code without digits":    {Kind: mailer.SignInCode, To: "ann@example.com", ExpiresIn: time.Minute},
		"code with LF":           {Kind: mailer.SignInCode, To: "ann@example.com", Code: "123\n456", ExpiresIn: time.Minute},
		"notice with a code":     {Kind: mailer.PasswordChanged, To: "ann@example.com", Code: "123456"},
		"detail with CRLF":       {Kind: mailer.EmailChanged, To: "ann@example.com", Detail: "x\r\nBcc: victim@example.com"},
		"detail with NUL":        {Kind: mailer.EmailChanged, To: "ann@example.com", Detail: "x\x00"},
		"detail with U+2028":     {Kind: mailer.EmailChanged, To: "ann@example.com", Detail: "x\u2028y"},
		"detail over 200 bytes":  {Kind: mailer.EmailChanged, To: "ann@example.com", Detail: strings.Repeat("x", 201)},
		"link over 2048 bytes":   with(func(m *mailer.Message) { m.Link = "https://app.example.com/#" + strings.Repeat("t", 2048) }),
		"address with a space":   with(func(m *mailer.Message) { m.To = `"ann smith"@example.com` }),
		"address with a comment": with(func(m *mailer.Message) { m.To = "ann@example.com (Ann)" }),
	}
	storetest.Each(t, func(t *testing.T, kind storetest.Kind) {
		srv := startSMTP(t)
		d := newDatabase(t, kind)
		db := d.open(t)
		m := newMailer(t, db, d.engine(), testConfig(srv), true)
		for name, msg := range cases {
			err := enqueue(t, db, m, true, msg)
			if !errors.Is(err, mailer.ErrInvalid) {
				t.Errorf("%s: error %v, want ErrInvalid", name, err)
			}
		}
		// The longest accepted address, for contrast.
		longest := strings.Repeat("a", 64) + "@" + strings.Repeat("b", 185) + ".com"
		if err := enqueue(t, db, m, true, with(func(m *mailer.Message) { m.To = longest })); err != nil {
			t.Fatalf("a 254-byte address: %v", err)
		}
		srv.WaitFor(t, 1, 10*time.Second)
		time.Sleep(200 * time.Millisecond)
		if n, sent := len(jobs(t, db)), len(srv.Messages()); n != 1 || sent != 1 {
			t.Fatalf("%d jobs and %d messages, want only the valid one", n, sent)
		}
	})
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestNew_TemplateOverrideReplacesOneFile(t *testing.T) {
	srv := startSMTP(t)
	d := newDatabase(t, storetest.SQLite)
	db := d.open(t)
	cfg := testConfig(srv)
	cfg.TemplatesDir = writeFiles(t, map[string]string{
		"reset_password.txt": `{{define "subject"}}{{.AppName}}: new password{{end}}Custom: {{.Link}} ({{.ExpiresIn}})`,
	})
	m := newMailer(t, db, d.engine(), cfg, true)
	if err := enqueue(t, db, m, true, mailer.Message{Kind: mailer.ResetPassword, To: "ann@example.com", Link: resetLink, ExpiresIn: 30 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	got := srv.WaitFor(t, 1, 10*time.Second)[0]
	if got.Header.Get("Subject") != "Acme: new password" || got.Text != "Custom: "+resetLink+" (30 minutes)" {
		t.Fatalf("override not used: %q / %q", got.Header.Get("Subject"), got.Text)
	}
	if !strings.Contains(got.HTML, "Choose a new password") {
		t.Fatalf("the default HTML part was not kept:\n%s", got.HTML)
	}
}

func TestNew_RefusesABadTemplateNamingTheFile(t *testing.T) {
	cases := map[string]struct {
		files         map[string]string
		file, problem string
	}{
		"does not parse":    {map[string]string{"verify_email.html": "<p>{{.Link}</p>"}, "verify_email.html", "verify_email.html:1"},
		"unknown field":     {map[string]string{"sign_in_code.txt": `{{define "subject"}}x{{end}}{{.Code}} {{.Nope}}`}, "sign_in_code", "Nope"},
		"no subject":        {map[string]string{"security_notice.txt": "{{.What}}"}, "security_notice.txt", "subject"},
		"empty subject":     {map[string]string{"security_notice.txt": `{{define "subject"}} {{end}}{{.What}}`}, "security_notice.txt", "subject is empty"},
		"leaves out link":   {map[string]string{"reset_password.html": "<p>Reset it</p>"}, "reset_password.html", "leaves out the link"},
		"leaves out code":   {map[string]string{"sign_in_code.txt": `{{define "subject"}}x{{end}}Your code`}, "sign_in_code.txt", "leaves out the code"},
		"unknown file name": {map[string]string{"reset_pasword.txt": "x"}, "reset_pasword.txt", "not a template name"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(nil)
			cfg.TemplatesDir = writeFiles(t, c.files)
			_, err := newWith(t, cfg)
			if err == nil || !strings.Contains(err.Error(), c.file) || !strings.Contains(err.Error(), c.problem) {
				t.Fatalf("New: %v, want an error naming %s and %q", err, c.file, c.problem)
			}
			if !strings.Contains(err.Error(), cfg.TemplatesDir) && name != "unknown field" {
				t.Fatalf("the error does not give the file's path: %v", err)
			}
		})
	}
	cfg := testConfig(nil)
	cfg.TemplatesDir = filepath.Join(t.TempDir(), "missing")
	if _, err := newWith(t, cfg); err == nil || !strings.HasPrefix(err.Error(), "MAIL_TEMPLATES: ") {
		t.Fatalf("a missing directory: %v", err)
	}
}

func TestMailer_AuthenticatesWithTheURLsCredentials(t *testing.T) {
	srv := startSMTP(t)
	srv.RequireAuth("mailer", "p@ss word")
	d := newDatabase(t, storetest.SQLite)
	db := d.open(t)
	cfg := testConfig(srv)
	cfg.SMTPURL = "smtp://mailer:p%40ss%20word@" + srv.Addr()
	m := newMailer(t, db, d.engine(), cfg, true)
	if err := enqueue(t, db, m, true, notice("ann@example.com")); err != nil {
		t.Fatal(err)
	}
	srv.WaitFor(t, 1, 10*time.Second)
}

func TestMailer_RequiresSTARTTLSTowardsANonLoopbackHost(t *testing.T) {
	var ip net.IP
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			ip = n.IP
			break
		}
	}
	if ip == nil {
		t.Skip("no non-loopback IPv4 address on this machine")
	}
	srv := smtptest.StartOn(t, net.JoinHostPort(ip.String(), "0")) // offers no STARTTLS
	d := newDatabase(t, storetest.SQLite)
	db := d.open(t)
	cfg := testConfig(srv)
	cfg.SMTPURL = "smtp://mailer:secret@" + srv.Addr()
	m := newMailer(t, db, d.engine(), cfg, true)
	if err := enqueue(t, db, m, true, notice("ann@example.com")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "two failed attempts", func() bool {
		_, attempts := jobStates(t, db)
		return attempts[0] >= 2
	})
	mails, _ := srv.Commands()
	if mails != 0 || len(srv.Messages()) != 0 {
		t.Fatalf("%d MAIL commands over a connection without TLS", mails)
	}
	if dump := strings.Join(jobs(t, db), ""); !strings.Contains(dump, "STARTTLS") {
		t.Fatalf("the recorded error does not name STARTTLS: %s", dump)
	}
}

func TestDefaultBackoff_RetriesWithin30SecondsAndSpansADay(t *testing.T) {
	for range 100 {
		if d := mailer.DefaultBackoff(1); d > 25*time.Second || d <= 0 {
			t.Fatalf("first retry after %s: with the 5 s scheduler tick, over 30 s", d)
		}
	}
	var total time.Duration
	attempts := 0
	for total < 24*time.Hour {
		attempts++
		d := mailer.DefaultBackoff(attempts)
		if d > time.Hour+6*time.Minute {
			t.Fatalf("wait %s after attempt %d exceeds the 1 h cap", d, attempts)
		}
		total += d
	}
	if attempts > 60 {
		t.Fatalf("%d attempts in 24 h", attempts)
	}
}
