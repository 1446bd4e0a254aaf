package main

// -fault-tests: the principal cache's fault tests, run from the same command as the load, so that
// one run shows every target of #25: the cache must be fast (the scenarios) and must never serve a
// revoked principal when an instance is paused, killed or frozen (these tests).

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// faultTestPattern selects the fault tests of cache_fault_test.go and cache_attack_test.go (server
// processes paused past their lease, killed holding one, frozen between barrier and commit,
// writes from another search_path or in replica mode) and the cache's other root-package tests.
const faultTestPattern = "TestPrincipalCache|TestCache"

// faultResult is the outcome of the fault tests.
type faultResult struct {
	passed, failed, skipped []string
	err                     error // the go command itself failed (not a test)
	log                     string
	elapsed                 time.Duration
}

// runFaultTests runs `go test -count=1 -run faultTestPattern .` in the module's root with
// TEST_DATABASE_URL set to databaseURL, and reads each top-level test's outcome from -v's output.
func runFaultTests(databaseURL string) *faultResult {
	res := &faultResult{}
	if databaseURL == "" {
		res.err = fmt.Errorf("needs -database-url (the tests run on Postgres)")
		return res
	}
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" || strings.TrimSpace(string(gomod)) == os.DevNull {
		res.err = fmt.Errorf("run the bench from gqlauth's source tree: the fault tests are its root package's (go env GOMOD: %v)", err)
		return res
	}
	fmt.Printf("\nfault tests: go test -count=1 -run '%s' . (TEST_DATABASE_URL from -database-url) …\n", faultTestPattern)
	cmd := exec.Command("go", "test", "-count=1", "-v", "-run", faultTestPattern, ".")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	cmd.Env = append(os.Environ(), "TEST_DATABASE_URL="+databaseURL)
	start := time.Now()
	out, runErr := cmd.CombinedOutput()
	res.elapsed = time.Since(start)
	if f, err := os.CreateTemp("", "gqlauth-fault-tests-*.log"); err == nil {
		f.Write(out)
		f.Close()
		res.log = f.Name()
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// Top-level tests only: a subtest's line is indented.
		line, ok := strings.CutPrefix(sc.Text(), "--- ")
		if !ok {
			continue
		}
		verdict, rest, _ := strings.Cut(line, ": ")
		name, _, _ := strings.Cut(rest, " ")
		switch verdict {
		case "PASS":
			res.passed = append(res.passed, name)
		case "FAIL":
			res.failed = append(res.failed, name)
		case "SKIP":
			res.skipped = append(res.skipped, name)
		}
	}
	if runErr != nil && len(res.failed) == 0 {
		res.err = fmt.Errorf("go test: %v", runErr) // a build failure, a panic, a timeout
	}
	return res
}

// print states the outcome as a target: every fault test passes (and at least one ran).
func (f *faultResult) print() (met bool) {
	verdict := "met"
	met = f.err == nil && len(f.failed) == 0 && len(f.passed) > 0
	if !met {
		verdict = "MISSED"
	}
	fmt.Printf("%-44s %d passed, %d failed, %d skipped   (target: all pass: %s)\n",
		"principal-cache fault tests", len(f.passed), len(f.failed), len(f.skipped), verdict)
	if f.err != nil {
		fmt.Printf("  %v\n", f.err)
	}
	for _, name := range f.failed {
		fmt.Printf("  FAIL %s\n", name)
	}
	for _, name := range f.skipped {
		fmt.Printf("  skipped %s\n", name)
	}
	if f.log != "" {
		fmt.Printf("  %.0f s; go test -v output in %s\n", f.elapsed.Seconds(), f.log)
	}
	return met
}
