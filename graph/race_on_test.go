//go:build race

package graph_test

// raceDetector is whether the tests run under -race (which slows every request several times).
const raceDetector = true
