package tlsmgr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/caddyserver/certmagic"
)

// LedgerEntry is the failure record of one certificate (one name and key
// type). It lives in storage so every instance of a fleet, and every
// restart, honours the same retry schedule; a success deletes it.
type LedgerEntry struct {
	Name        string    `json:"name"`
	KeyType     string    `json:"key_type"`
	Attempts    int       `json:"attempts"`
	Failures    int       `json:"failures"` // consecutive
	LastError   string    `json:"last_error,omitempty"`
	LastAttempt time.Time `json:"last_attempt"`
	NextAttempt time.Time `json:"next_attempt"`
	CA          string    `json:"ca,omitempty"` // the CA of the last failed attempt
	// NotifiedFailures is the failure count the operator was last told
	// about, so each backoff step is reported once across the fleet.
	NotifiedFailures int `json:"notified_failures,omitempty"`
}

// ledger reads and writes LedgerEntries. Backoff is the guide's schedule:
// the n-th consecutive failure waits backoff[n-1], the last step repeating.
type ledger struct {
	storage certmagic.Storage
	backoff []time.Duration
	now     func() time.Time
}

func newLedger(s certmagic.Storage, backoff []time.Duration) *ledger {
	return &ledger{storage: s, backoff: backoff, now: time.Now}
}

func ledgerKey(name, keyType string) string {
	return "portico/ledger/" + keyType + "/" + certmagic.StorageKeys.Safe(name) + ".json"
}

// delay is the wait after the n-th consecutive failure (n >= 1).
func (l *ledger) delay(n int) time.Duration {
	if len(l.backoff) == 0 {
		return 24 * time.Hour
	}
	if n < 1 {
		n = 1
	}
	if n > len(l.backoff) {
		n = len(l.backoff)
	}
	return l.backoff[n-1]
}

// get returns the entry for a certificate; ok is false when it has none.
func (l *ledger) get(ctx context.Context, name, keyType string) (e LedgerEntry, ok bool, err error) {
	data, err := l.storage.Load(ctx, ledgerKey(name, keyType))
	if errors.Is(err, fs.ErrNotExist) {
		return LedgerEntry{Name: name, KeyType: keyType}, false, nil
	}
	if err != nil {
		return e, false, fmt.Errorf("load ledger for %s (%s): %w", name, keyType, err)
	}
	if err := json.Unmarshal(data, &e); err != nil {
		// a corrupt entry must not block renewals forever
		return LedgerEntry{Name: name, KeyType: keyType}, false, nil
	}
	return e, true, nil
}

func (l *ledger) put(ctx context.Context, e LedgerEntry) error {
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := l.storage.Store(ctx, ledgerKey(e.Name, e.KeyType), data); err != nil {
		return fmt.Errorf("store ledger for %s (%s): %w", e.Name, e.KeyType, err)
	}
	return nil
}

// allowed reports whether an attempt may start now, and when the next one
// may if not. A ledger that cannot be read allows the attempt: storage
// trouble must not stop renewals that would otherwise succeed.
func (l *ledger) allowed(ctx context.Context, name, keyType string) (bool, time.Time) {
	e, ok, err := l.get(ctx, name, keyType)
	if err != nil || !ok {
		return true, time.Time{}
	}
	return !l.now().Before(e.NextAttempt), e.NextAttempt
}

// failure records a failed attempt and returns the updated entry.
func (l *ledger) failure(ctx context.Context, name, keyType, ca string, cause error) (LedgerEntry, error) {
	e, _, err := l.get(ctx, name, keyType)
	if err != nil {
		e = LedgerEntry{Name: name, KeyType: keyType}
	}
	now := l.now()
	e.Attempts++
	e.Failures++
	e.LastError = cause.Error()
	e.LastAttempt = now
	e.NextAttempt = now.Add(l.delay(e.Failures))
	if until := rateLimitedUntil(cause); until.After(e.NextAttempt) {
		e.NextAttempt = until // the CA's Retry-After wins over the schedule
	}
	e.CA = ca
	return e, l.put(ctx, e)
}

// success clears a certificate's failures.
func (l *ledger) success(ctx context.Context, name, keyType string) error {
	if err := l.storage.Delete(ctx, ledgerKey(name, keyType)); err != nil {
		return fmt.Errorf("clear ledger for %s (%s): %w", name, keyType, err)
	}
	return nil
}

// retryNow moves a certificate's next attempt to now (an operator's early
// retry). It keeps the failure count so the backoff resumes where it was.
func (l *ledger) retryNow(ctx context.Context, name, keyType string) error {
	e, ok, err := l.get(ctx, name, keyType)
	if err != nil || !ok {
		return err
	}
	e.NextAttempt = l.now()
	return l.put(ctx, e)
}

// markNotified records that the operator was told of the entry's current
// failure count; it reports false if someone already was.
func (l *ledger) markNotified(ctx context.Context, e LedgerEntry) (bool, error) {
	cur, ok, err := l.get(ctx, e.Name, e.KeyType)
	if err != nil {
		return false, err
	}
	if ok && cur.NotifiedFailures >= e.Failures {
		return false, nil
	}
	if !ok {
		cur = e
	}
	cur.NotifiedFailures = e.Failures
	return true, l.put(ctx, cur)
}

// entries returns the storage keys of every ledger entry, so that listing
// many certificates reads only the few that have failures (one List per key
// type instead of one Load per certificate).
func (l *ledger) entries(ctx context.Context, keyTypes []string) map[string]bool {
	out := map[string]bool{}
	for _, kt := range keyTypes {
		keys, err := l.storage.List(ctx, "portico/ledger/"+kt, false)
		if err != nil {
			continue
		}
		for _, k := range keys {
			out[k] = true
		}
	}
	return out
}
