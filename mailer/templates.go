package mailer

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"os"
	"path/filepath"
	"sort"
	"strings"
	texttemplate "text/template"
	"time"
)

// The default templates. Each message has a plain-text template NAME.txt, which also defines the
// subject ({{define "subject"}}…{{end}}), and an HTML template NAME.html (html/template: every
// value is escaped for where it lands). A file of the same name in MAIL_TEMPLATES replaces one.
//
//go:embed templates/*.txt templates/*.html
var defaultTemplates embed.FS

// TemplateData is what a template sees.
type TemplateData struct {
	AppName   string
	To        string // the recipient's address
	Link      string // the link to open (verify_email, reset_password; optional in a notice)
	Code      string // the code to type (sign_in_code)
	ExpiresIn string // how long the link or code works, in words: "30 minutes"
	Event     string // a notice's kind: password_changed, email_changed, mfa_changed or api_key_created
	What      string // a notice's sentence: "Your password was changed."
	Detail    string // a notice's optional extra line
}

// templateNames are the template files, by the kinds that use them.
var templateNames = map[Kind]string{
	VerifyEmail: "verify_email", ResetPassword: "reset_password", SignInCode: "sign_in_code",
	PasswordChanged: "security_notice", EmailChanged: "security_notice", MFAChanged: "security_notice",
	APIKeyCreated: "security_notice",
}

var noticeSentences = map[Kind]string{
	PasswordChanged: "The password of your account was changed.",
	EmailChanged:    "The email address of your account is being changed.",
	MFAChanged:      "The sign-in methods of your account (second factors or passkeys) were changed.",
	APIKeyCreated:   "A new API key was created for your account.",
}

type templatePair struct {
	text *texttemplate.Template
	html *htmltemplate.Template
}

type templates struct{ byName map[string]templatePair }

type rendered struct{ To, Subject, Text, HTML string }

// loadTemplates parses the embedded templates, replaces those dir has, and renders every kind
// with sample values: a template that does not parse, fails, has no subject or leaves out the
// link or code of its message is an error naming its file.
func loadTemplates(dir, appName string) (*templates, error) {
	sources := map[string][]byte{} // file name → text
	entries, _ := defaultTemplates.ReadDir("templates")
	for _, e := range entries {
		b, _ := defaultTemplates.ReadFile("templates/" + e.Name())
		sources[e.Name()] = b
	}
	origin := func(file string) string { return "embedded template " + file }
	if dir != "" {
		overrides, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("MAIL_TEMPLATES: %w", err)
		}
		for _, e := range overrides {
			if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
				continue
			}
			if _, known := sources[e.Name()]; !known {
				return nil, fmt.Errorf("MAIL_TEMPLATES: %s is not a template name (known: %s)", filepath.Join(dir, e.Name()), knownFiles(sources))
			}
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				return nil, fmt.Errorf("MAIL_TEMPLATES: %w", err)
			}
			sources[e.Name()] = b
		}
		origin = func(file string) string {
			if _, err := os.Stat(filepath.Join(dir, file)); err == nil {
				return filepath.Join(dir, file)
			}
			return "embedded template " + file
		}
	}
	t := &templates{byName: map[string]templatePair{}}
	for _, name := range templateNames {
		if _, done := t.byName[name]; done {
			continue
		}
		var pair templatePair
		var err error
		if pair.text, err = texttemplate.New(name + ".txt").Option("missingkey=error").Parse(string(sources[name+".txt"])); err != nil {
			return nil, fmt.Errorf("mail template %s: %w", origin(name+".txt"), err)
		}
		if pair.text.Lookup("subject") == nil {
			return nil, fmt.Errorf(`mail template %s: defines no subject ({{define "subject"}}…{{end}})`, origin(name+".txt"))
		}
		if pair.html, err = htmltemplate.New(name + ".html").Option("missingkey=error").Parse(string(sources[name+".html"])); err != nil {
			return nil, fmt.Errorf("mail template %s: %w", origin(name+".html"), err)
		}
		t.byName[name] = pair
	}
	for kind, name := range templateNames {
		sample := Message{Kind: kind, To: "someone@example.com", ExpiresIn: 30 * time.Minute}
		switch kind {
		case VerifyEmail, ResetPassword:
			sample.Link = "https://app.example.com/#sample-link-token"
		case SignInCode:
			sample.Code = "493817"
		}
		r, err := t.render(sample, appName)
		if err != nil {
			return nil, fmt.Errorf("mail template %s: %w", origin(name+".txt or "+name+".html"), err)
		}
		for _, part := range []struct{ file, out string }{{name + ".txt", r.Text}, {name + ".html", r.HTML}} {
			if sample.Link != "" && !strings.Contains(part.out, sample.Link) {
				return nil, fmt.Errorf("mail template %s: leaves out the link ({{.Link}})", origin(part.file))
			}
			if sample.Code != "" && !strings.Contains(part.out, sample.Code) {
				return nil, fmt.Errorf("mail template %s: leaves out the code ({{.Code}})", origin(part.file))
			}
		}
		if r.Subject == "" {
			return nil, fmt.Errorf("mail template %s: the subject is empty", origin(name+".txt"))
		}
	}
	return t, nil
}

func knownFiles(sources map[string][]byte) string {
	names := make([]string, 0, len(sources))
	for n := range sources {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// render makes the subject and both bodies of msg. The subject is one line whatever a template
// writes: its white space, line breaks included, collapses to single spaces.
func (t *templates) render(msg Message, appName string) (*rendered, error) {
	pair, ok := t.byName[templateNames[msg.Kind]]
	if !ok {
		return nil, fmt.Errorf("no template for %q", msg.Kind)
	}
	data := TemplateData{
		AppName: appName, To: msg.To, Link: msg.Link, Code: msg.Code, ExpiresIn: inWords(msg.ExpiresIn),
		Detail: msg.Detail, What: noticeSentences[msg.Kind],
	}
	if data.What != "" {
		data.Event = string(msg.Kind)
	}
	var subject, text, html bytes.Buffer
	if err := pair.text.ExecuteTemplate(&subject, "subject", data); err != nil {
		return nil, err
	}
	if err := pair.text.Execute(&text, data); err != nil {
		return nil, err
	}
	if err := pair.html.Execute(&html, data); err != nil {
		return nil, err
	}
	r := &rendered{To: msg.To, Subject: strings.Join(strings.Fields(subject.String()), " "), Text: text.String(), HTML: html.String()}
	if strings.ContainsRune(r.Subject, 0) {
		return nil, errors.New("the subject contains a NUL byte")
	}
	return r, nil
}

// inWords says a duration the way a person would: "30 minutes", "24 hours", "1 hour 30 minutes".
func inWords(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	unit := func(n int64, one string) string {
		if n == 1 {
			return "1 " + one
		}
		return fmt.Sprintf("%d %ss", n, one)
	}
	d = d.Round(time.Minute)
	h, m := int64(d/time.Hour), int64(d%time.Hour/time.Minute)
	switch {
	case h == 0:
		return unit(max(m, 1), "minute")
	case m == 0 && h%24 == 0 && h > 24:
		return unit(h/24, "day")
	case m == 0:
		return unit(h, "hour")
	}
	return unit(h, "hour") + " " + unit(m, "minute")
}
