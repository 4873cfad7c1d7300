package notify

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Defaults for the retry schedule shared by Webhook and Email.
const (
	// DefaultAttempts is how often a delivery is tried before giving up.
	DefaultAttempts = 5
	// DefaultBaseDelay is the wait after the first failed attempt; it
	// doubles after each further failure.
	DefaultBaseDelay = time.Second
	// DefaultMaxDelay caps the wait between attempts.
	DefaultMaxDelay = 30 * time.Second
)

// permanentError marks a failure that another attempt cannot fix, such as
// a malformed URL or an SMTP 5xx reply.
type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

func permanent(err error) error { return permanentError{err: err} }

// retry runs op until it succeeds, fails permanently, has been tried
// attempts times, or ctx ends. The wait between attempts starts at base and
// doubles up to max.
func retry(ctx context.Context, attempts int, base, max time.Duration, op func(context.Context) error) error {
	if attempts <= 0 {
		attempts = DefaultAttempts
	}
	if base <= 0 {
		base = DefaultBaseDelay
	}
	if max <= 0 {
		max = DefaultMaxDelay
	}
	delay := min(base, max)
	for n := 1; ; n++ {
		err := op(ctx)
		if err == nil {
			return nil
		}
		var p permanentError
		switch {
		case errors.As(err, &p):
			return fmt.Errorf("attempt %d failed permanently: %w", n, p.err)
		case n >= attempts:
			return fmt.Errorf("gave up after %d attempts: %w", n, err)
		case ctx.Err() != nil:
			return fmt.Errorf("stopped after %d attempt(s): %w (last error: %w)", n, context.Cause(ctx), err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("stopped after %d attempt(s): %w (last error: %w)", n, context.Cause(ctx), err)
		case <-t.C:
		}
		delay = min(2*delay, max)
	}
}
