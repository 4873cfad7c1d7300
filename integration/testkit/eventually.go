package testkit

import (
	"testing"
	"time"
)

// Poll intervals: Eventually first tries again after minPoll, doubling up
// to maxPoll, so a condition that holds in a millisecond costs about a
// millisecond and one that takes seconds (a certificate issued by Pebble)
// is not asked a thousand times.
const (
	minPoll = time.Millisecond
	maxPoll = 50 * time.Millisecond
)

// Eventually calls cond until it returns true, and fails the test with
// "timed out after <within> waiting for <what>" if within passes first.
// The wait between calls is a polling interval, never synchronisation:
// cond decides. Call it from the test's goroutine (it calls tb.Fatalf).
func Eventually(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for wait := minPoll; !cond(); wait = min(2*wait, maxPoll) {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(wait)
	}
}
