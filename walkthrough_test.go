package main

import (
	"bytes"
	"fmt"
	"go/format"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// walkthroughSection is the README section that TestWalkthrough_AddYourOwnField keeps true.
const walkthroughSection = "## Add your own field"

// TestWalkthrough_AddYourOwnField follows the README's "Add your own field" in a copy of the
// repository: it copies the tracked files into a temporary directory, applies the section's code
// blocks in order (each names on its first line the file it goes to, and where), runs the section's
// `go` commands (gqlgen, then the walkthrough's own test) in the copy, and then `go vet ./...`.
// An anchor that is missing or not unique, a command that fails, a test that did not run or a
// file left unformatted fails it. It runs whenever the suite runs: the Go build cache keeps it to
// well under a minute once the dependencies are built.
func TestWalkthrough_AddYourOwnField(t *testing.T) {
	t.Parallel()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the walkthrough runs go commands, and go is not on PATH: %v", err)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	steps, err := walkthroughSteps(string(readme), walkthroughSection)
	if err != nil {
		t.Fatal(err)
	}
	dir := copyTracked(t)

	var touched []string // Go files the steps wrote
	ranTest := false
	for _, s := range steps {
		if s.command != nil {
			out := runGo(t, goBin, dir, s.command...)
			if s.command[1] == "test" {
				if bytes.Contains(out, []byte("no tests to run")) {
					t.Fatalf("README line %d: %q ran no test:\n%s", s.line, strings.Join(s.command, " "), out)
				}
				ranTest = true
			}
			continue
		}
		if err := s.apply(dir); err != nil {
			t.Fatalf("README line %d: %v", s.line, err)
		}
		if strings.HasSuffix(s.path, ".go") && !slices.Contains(touched, s.path) {
			touched = append(touched, s.path)
		}
	}
	if !ranTest {
		t.Fatalf("README %q runs no go test: nothing shows that the walkthrough works", walkthroughSection)
	}
	runGo(t, goBin, dir, "go", "vet", "./...")
	for _, path := range touched {
		src, err := os.ReadFile(filepath.Join(dir, path))
		if err != nil {
			t.Fatal(err)
		}
		if formatted, err := format.Source(src); err != nil || !bytes.Equal(formatted, src) {
			t.Errorf("%s is not gofmt-formatted after the walkthrough's steps (%v): fix the README's blocks for it", path, err)
		}
	}
}

// runGo runs a go command in dir and returns its output; it fails the test if the command fails.
func runGo(t *testing.T, goBin, dir string, args ...string) []byte {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), goBin, args[1:]...)
	cmd.Dir = dir
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s (in a copy of the repository with the walkthrough applied): %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("%s: %s\n%s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), out)
	return out
}

// copyTracked copies the files git tracks, as they are in the working tree, into a temporary
// directory, and returns it.
func copyTracked(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range repoFiles(t) {
		info, err := os.Lstat(name)
		if os.IsNotExist(err) {
			continue // deleted in the working tree
		}
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if info.Mode()&os.ModeSymlink != 0 {
			target, err := os.Readlink(name)
			if err == nil {
				err = os.Symlink(target, dst)
			}
			if err != nil {
				t.Fatal(err)
			}
			continue
		}
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, info.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// A step is one thing the walkthrough does: a go command, or an edit of one file.
type step struct {
	line    int      // in the README, for messages
	command []string // a go command; nil for an edit

	path   string // the file the edit is to
	action string // "new file", "append", "after" or "instead"
	anchor string // "after" and "instead": the text of the one line the edit is at
	text   string // what is written
}

// marker is the first line of an edit: "// path: action" in Go, "# path: action" in GraphQL and
// YAML, where action is "new file", "append", "after the line with ANCHOR" or "instead of the
// line with ANCHOR".
var marker = regexp.MustCompile(`^(?://|#) ([\w./-]+): (new file|append|after the line with (.+)|instead of the line with (.+))$`)

// walkthroughSteps reads the steps of the README section headed heading, in order: each ```sh
// block's lines are go commands; each ```go, ```graphql and ```yaml block is one or more edits,
// each starting at a marker line. Blocks in other languages are illustrations.
func walkthroughSteps(readme, heading string) ([]step, error) {
	lines := strings.Split(readme, "\n")
	start := slices.Index(lines, heading)
	if start < 0 {
		return nil, fmt.Errorf("README has no section %q", heading)
	}
	var steps []step
	for i := start + 1; i < len(lines) && !strings.HasPrefix(lines[i], "## "); i++ {
		fence := strings.TrimLeft(lines[i], " ")
		if !strings.HasPrefix(fence, "```") {
			continue
		}
		indent := len(lines[i]) - len(fence)
		lang := strings.TrimPrefix(fence, "```")
		var body []string
		first := i + 1
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			body = append(body, strings.TrimPrefix(lines[i], strings.Repeat(" ", indent)))
		}
		if i == len(lines) {
			return nil, fmt.Errorf("README line %d: the block never ends", first-1)
		}
		switch lang {
		case "sh":
			for j, l := range body {
				l, _, _ = strings.Cut(l, "#")
				args := strings.Fields(l)
				switch {
				case len(args) == 0:
				case args[0] != "go" || len(args) < 2:
					return nil, fmt.Errorf("README line %d: %q: the walkthrough runs go commands only", first+j, l)
				default:
					steps = append(steps, step{line: first + j, command: args})
				}
			}
		case "go", "graphql", "yaml":
			edits, err := edits(body, first)
			if err != nil {
				return nil, err
			}
			steps = append(steps, edits...)
		}
	}
	if len(steps) == 0 {
		return nil, fmt.Errorf("README section %q has no steps", heading)
	}
	return steps, nil
}

// edits reads a code block (starting at README line first) as edits, one per marker line.
func edits(body []string, first int) ([]step, error) {
	var out []step
	for j, l := range body {
		m := marker.FindStringSubmatch(l)
		if m == nil {
			if len(out) == 0 {
				return nil, fmt.Errorf("README line %d: %q is not a marker (`// path: new file`, `append`, `after the line with …`, `instead of the line with …`): a walkthrough block must say where it goes", first+j, l)
			}
			last := &out[len(out)-1]
			last.text += l + "\n"
			continue
		}
		s := step{line: first + j, path: m[1], action: m[2]}
		switch {
		case m[3] != "":
			s.action, s.anchor = "after", m[3]
		case m[4] != "":
			s.action, s.anchor = "instead", m[4]
		}
		out = append(out, s)
	}
	return out, nil
}

// apply makes the edit in the copy in dir.
func (s step) apply(dir string) error {
	path := filepath.Join(dir, filepath.FromSlash(s.path))
	if s.action == "new file" {
		if _, err := os.Stat(path); err == nil {
			return fmt.Errorf("%s: a new file, but it exists already", s.path)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		return os.WriteFile(path, []byte(strings.TrimLeft(s.text, "\n")), 0o644)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%s: %v", s.path, err)
	}
	if s.action == "append" {
		return os.WriteFile(path, append(data, s.text...), 0o644)
	}
	lines := strings.SplitAfter(string(data), "\n")
	at := -1
	for i, l := range lines {
		if strings.Contains(l, s.anchor) {
			if at >= 0 {
				return fmt.Errorf("%s: the anchor %q is on more than one line (%d and %d): make it unique", s.path, s.anchor, at+1, i+1)
			}
			at = i
		}
	}
	if at < 0 {
		return fmt.Errorf("%s: no line has the anchor %q: the README's step no longer matches the code", s.path, s.anchor)
	}
	var b strings.Builder
	for i, l := range lines {
		if i != at || s.action == "after" {
			b.WriteString(l)
		}
		if i == at {
			if s.action == "after" && !strings.HasSuffix(l, "\n") {
				b.WriteString("\n")
			}
			b.WriteString(s.text)
		}
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// repoFiles names the files of the repository: those git tracks, or — where git or the checkout is
// missing (the contract's "a machine with nothing but Go") — every file but version control,
// installed npm packages and local build and database files.
func repoFiles(t *testing.T) []string {
	t.Helper()
	if out, err := exec.Command("git", "ls-files", "-z").Output(); err == nil && len(out) > 0 {
		return strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	}
	var names []string
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "node_modules", "artifacts", "bench-results":
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".db") || strings.Contains(path, ".db-") {
			return nil
		}
		names = append(names, path)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}
