// Package notify tells the operator about certificate trouble: failed
// issuance or renewal, certificates that will expire soon, revocations, and
// recoveries after earlier failures.
//
// Let's Encrypt stopped sending expiry emails in 2025, so these
// notifications are the operator's safety net: a structured log line is
// always written by the caller, and every configured [[notify]] target
// (webhook or email) receives an Event as well.
//
// A Dispatcher queues events and delivers them in the background, one
// goroutine per target, so that certificate management never waits for a
// slow or dead receiver. Each Notifier retries a failed delivery with
// exponential backoff.
//
// Deduplication is not this package's job: every Event passed to
// Dispatcher.Send is delivered (queue space permitting). The caller decides
// what is worth reporting, using its failure ledger (for example one report
// per failed attempt on the 1 min / 10 min / 100 min / daily schedule, and
// one expiry warning per certificate and threshold), so that a fleet of
// instances does not flood the operator.
package notify

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Event kinds.
const (
	// KindFailure reports a failed attempt to obtain or renew a certificate.
	KindFailure = "failure"
	// KindExpiryWarning reports a certificate close to its NotAfter that has
	// not been renewed yet.
	KindExpiryWarning = "expiry_warning"
	// KindRevoked reports a certificate that its CA has revoked.
	KindRevoked = "revoked"
	// KindRecovered reports a certificate obtained after earlier failures.
	KindRecovered = "recovered"
)

// Event is one report to the operator.
//
// The zero NextRetry and NotAfter are left out of the JSON form.
type Event struct {
	// Kind is one of "failure", "expiry_warning", "revoked" or "recovered".
	Kind string `json:"kind"`
	// Name is the hostname the certificate is for.
	Name string `json:"name"`
	// KeyType is the certificate's key type, such as "p256" or "rsa2048".
	KeyType string `json:"key_type"`
	// CA is the ACME directory URL of the issuing CA.
	CA string `json:"ca,omitempty"`
	// Error is the last error, for failures.
	Error string `json:"error,omitempty"`
	// Failures is the number of consecutive failed attempts.
	Failures int `json:"failures,omitempty"`
	// NextRetry is when the next attempt is scheduled.
	NextRetry time.Time `json:"next_retry,omitzero"`
	// NotAfter is the current certificate's expiry, if there is one.
	NotAfter time.Time `json:"not_after,omitzero"`
	// Message is one line an operator understands. Dispatcher.Send writes
	// one from the other fields when it is empty.
	Message string `json:"message"`
	// Time is when the event happened; Dispatcher.Send sets it when zero.
	Time time.Time `json:"time"`
	// Instance is the hostname of the Portico instance that reports;
	// Dispatcher.Send sets it when empty.
	Instance string `json:"instance,omitempty"`
}

// Notifier delivers events to one target.
type Notifier interface {
	// Notify delivers e, retrying transient failures until it succeeds,
	// gives up, or ctx ends.
	Notify(ctx context.Context, e Event) error
	// String names the target for logs, without secrets, for example
	// "webhook https://hooks.example.net/… (path redacted)".
	String() string
}

// describe names the certificate: "app.example.net (p256)".
func describe(e Event) string {
	if e.KeyType == "" {
		return e.Name
	}
	return e.Name + " (" + e.KeyType + ")"
}

// defaultMessage writes the one-line Message for an event that has none.
// Relative times are measured from the event's Time.
func defaultMessage(e Event) string {
	now := e.Time
	if now.IsZero() {
		now = time.Now()
	}
	var b strings.Builder
	b.WriteString("certificate for ")
	b.WriteString(describe(e))
	switch e.Kind {
	case KindFailure:
		if e.NotAfter.IsZero() {
			b.WriteString(" could not be obtained")
		} else {
			b.WriteString(" could not be renewed")
		}
		if e.Error != "" {
			b.WriteString(": ")
			b.WriteString(oneLine(e.Error))
		}
		if e.Failures > 1 {
			fmt.Fprintf(&b, "; %d failures in a row", e.Failures)
		}
		if !e.NextRetry.IsZero() {
			b.WriteString("; next attempt in ")
			b.WriteString(human(e.NextRetry.Sub(now)))
		}
	case KindExpiryWarning:
		if e.NotAfter.IsZero() {
			b.WriteString(" expires soon and has not been renewed")
		} else if left := e.NotAfter.Sub(now); left > 0 {
			fmt.Fprintf(&b, " expires in %s (%s) and has not been renewed",
				human(left), e.NotAfter.UTC().Format(time.RFC3339))
		} else {
			fmt.Fprintf(&b, " expired at %s and has not been renewed",
				e.NotAfter.UTC().Format(time.RFC3339))
		}
		if e.Error != "" {
			b.WriteString("; last error: ")
			b.WriteString(oneLine(e.Error))
		}
	case KindRevoked:
		b.WriteString(" was revoked by its CA; Portico is replacing it")
		if e.Error != "" {
			b.WriteString(": ")
			b.WriteString(oneLine(e.Error))
		}
	case KindRecovered:
		b.WriteString(" was obtained again")
		if e.Failures > 0 {
			fmt.Fprintf(&b, " after %d failed attempt(s)", e.Failures)
		}
		if !e.NotAfter.IsZero() {
			b.WriteString("; valid until ")
			b.WriteString(e.NotAfter.UTC().Format(time.RFC3339))
		}
	default:
		b.WriteString(": ")
		b.WriteString(e.Kind)
		if e.Error != "" {
			b.WriteString(": ")
			b.WriteString(oneLine(e.Error))
		}
	}
	return b.String()
}

// human writes a duration the way an operator reads it: "45s", "10m",
// "1h40m", "36h", "26d3h".
func human(d time.Duration) string {
	const day = 24 * time.Hour
	if d < 0 {
		d = 0
	}
	if d < time.Minute {
		return d.Round(time.Second).String()
	}
	if d >= 2*day {
		d = d.Round(time.Hour)
		s := strconv.Itoa(int(d/day)) + "d"
		if h := d % day; h > 0 {
			s += strconv.Itoa(int(h/time.Hour)) + "h"
		}
		return s
	}
	s := d.Round(time.Minute).String()
	return strings.TrimSuffix(s, "0s")
}

// oneLine folds line breaks and control characters into spaces.
func oneLine(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool {
		return r == '\n' || r == '\r' || r == '\t' || r < ' ' || r == 0x7f
	}), " ")
}
