package tlsmgr

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3/acme"
)

func TestBackoffSchedule(t *testing.T) {
	l := newLedger(nil, []time.Duration{time.Minute, 10 * time.Minute, 100 * time.Minute, 24 * time.Hour})
	want := []time.Duration{time.Minute, 10 * time.Minute, 100 * time.Minute, 24 * time.Hour, 24 * time.Hour, 24 * time.Hour}
	for i, w := range want {
		if got := l.delay(i + 1); got != w {
			t.Errorf("failure %d: wait %v, want %v", i+1, got, w)
		}
	}
}

func TestLedgerPersistsAndClears(t *testing.T) {
	storage := &certmagic.FileStorage{Path: t.TempDir()}
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	backoff := []time.Duration{time.Minute, 10 * time.Minute, 100 * time.Minute, 24 * time.Hour}
	l := newLedger(storage, backoff)
	l.now = func() time.Time { return now }
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if _, err := l.failure(ctx, "a.example.net", "p256", "https://ca.example/dir", errors.New("connection refused")); err != nil {
			t.Fatal(err)
		}
	}
	// a restart: a new ledger on the same storage
	l2 := newLedger(storage, backoff)
	l2.now = func() time.Time { return now.Add(99 * time.Minute) }
	e, ok, err := l2.get(ctx, "a.example.net", "p256")
	if err != nil || !ok {
		t.Fatalf("entry lost across restart: %v", err)
	}
	if e.Failures != 3 || e.Attempts != 3 || e.LastError != "connection refused" || !e.NextAttempt.Equal(now.Add(100*time.Minute)) || e.CA != "https://ca.example/dir" {
		t.Fatalf("entry after restart: %+v", e)
	}
	if ok, next := l2.allowed(ctx, "a.example.net", "p256"); ok || !next.Equal(now.Add(100*time.Minute)) {
		t.Fatalf("allowed 1 minute early (next %v)", next)
	}
	l2.now = func() time.Time { return now.Add(100 * time.Minute) }
	if ok, _ := l2.allowed(ctx, "a.example.net", "p256"); !ok {
		t.Fatal("not allowed at the scheduled time")
	}
	// the other key type is independent
	if ok, _ := l2.allowed(ctx, "a.example.net", "rsa2048"); !ok {
		t.Fatal("one key type's failures held back the other")
	}
	// an operator's retry moves the next attempt to now, keeping the count
	l2.now = func() time.Time { return now.Add(time.Hour) }
	if err := l2.retryNow(ctx, "a.example.net", "p256"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := l2.allowed(ctx, "a.example.net", "p256"); !ok {
		t.Fatal("retry did not allow an attempt now")
	}
	if e, _, _ := l2.get(ctx, "a.example.net", "p256"); e.Failures != 3 {
		t.Fatalf("retry reset the failure count: %d", e.Failures)
	}
	if err := l2.success(ctx, "a.example.net", "p256"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := l2.get(ctx, "a.example.net", "p256"); ok {
		t.Fatal("success did not clear the entry")
	}
}

func TestNotificationDeduplication(t *testing.T) {
	storage := &certmagic.FileStorage{Path: t.TempDir()}
	l := newLedger(storage, []time.Duration{time.Minute})
	ctx := context.Background()
	e, _ := l.failure(ctx, "b.example.net", "rsa2048", "ca", errors.New("x"))
	// two instances race to tell the operator of the same step
	first, _ := l.markNotified(ctx, e)
	second, _ := l.markNotified(ctx, e)
	if !first || second {
		t.Fatalf("step 1 notified first=%v second=%v, want exactly once", first, second)
	}
	e, _ = l.failure(ctx, "b.example.net", "rsa2048", "ca", errors.New("x"))
	if again, _ := l.markNotified(ctx, e); !again {
		t.Fatal("the next backoff step was not notified")
	}
}

func TestExpiryWarningThreshold(t *testing.T) {
	for _, tc := range []struct{ life, want time.Duration }{
		{90 * 24 * time.Hour, 7 * 24 * time.Hour},
		{6 * 24 * time.Hour, 2 * 24 * time.Hour},
		{time.Minute, 20 * time.Second},
	} {
		if got := expiryWarning(tc.life); got != tc.want {
			t.Errorf("lifetime %v: warn at %v, want %v", tc.life, got, tc.want)
		}
	}
}

func TestRenewAt(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// 90 days, ratio 1/3: due 30 days before expiry, up to 3 days earlier
	na := nb.Add(90 * 24 * time.Hour)
	for i := uint64(0); i < 100; i++ {
		at := renewAt(nb, na, 1.0/3, i*7919*1e9)
		left := na.Sub(at)
		if left < 30*24*time.Hour-time.Second || left > 33*24*time.Hour {
			t.Fatalf("90-day certificate due with %v left", left)
		}
	}
	// a 6-day (shortlived) certificate renews at half its lifetime, not a third
	na = nb.Add(6 * 24 * time.Hour)
	if left := na.Sub(renewAt(nb, na, 1.0/3, 0)); left != 3*24*time.Hour {
		t.Fatalf("6-day certificate due with %v left, want 72h", left)
	}
	// a 45-day certificate (tlsserver, classic from 2028) keeps the ratio
	na = nb.Add(45 * 24 * time.Hour)
	if left := na.Sub(renewAt(nb, na, 1.0/3, 0)); left != 15*24*time.Hour {
		t.Fatalf("45-day certificate due with %v left, want 15 days", left)
	}
}

// TestRenewalSpreadSimulation: 10,000 certificates issued on one day renew
// over a spread window. An injected clock steps through the renewal period
// an hour at a time and counts the certificates that become due in each
// hour; no hour may hold more than maxHourlyShare of them.
func TestRenewalSpreadSimulation(t *testing.T) {
	const (
		certs          = 10_000
		maxHourlyShare = 0.02
	)
	m := testManager(t)
	f := m.families[0]
	s := m.sched
	day := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	type sim struct {
		cert certmagic.Certificate
		name string
		due  bool
	}
	all := make([]*sim, certs)
	for i := range all {
		// issued through one day, 90 days of validity
		nb := day.Add(time.Duration(i) * 24 * time.Hour / certs)
		leaf := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 1)), NotBefore: nb, NotAfter: nb.Add(90 * 24 * time.Hour)}
		name := fmt.Sprintf("site%05d.example.net", i)
		all[i] = &sim{cert: certmagic.Certificate{Certificate: tls.Certificate{Leaf: leaf}, Names: []string{name}}, name: name}
	}
	perHour := map[int]int{}
	first, last := -1, -1
	ctx := context.Background()
	for h := 0; h < 91*24; h++ {
		now := day.Add(time.Duration(h) * time.Hour)
		s.now = func() time.Time { return now }
		for _, c := range all {
			if !c.due && s.due(ctx, f, c.name, c.cert) {
				c.due = true
				perHour[h]++
				if first < 0 {
					first = h
				}
				last = h
			}
		}
	}
	busiest := 0
	for _, n := range perHour {
		busiest = max(busiest, n)
	}
	for _, c := range all {
		if !c.due {
			t.Fatalf("%s never became due", c.name)
		}
	}
	share := float64(busiest) / certs
	t.Logf("10,000 certificates issued on one day become due over %d hours (day %.1f to %.1f of 90); busiest hour %d (%.2f%%)",
		last-first+1, float64(first)/24, float64(last)/24, busiest, share*100)
	if share > maxHourlyShare {
		t.Fatalf("busiest hour holds %.2f%% of renewals, more than %.0f%%", share*100, maxHourlyShare*100)
	}
	if last-first+1 < 72 {
		t.Fatalf("renewals spread over only %d hours", last-first+1)
	}
}

func TestRateLimitRetryAfterHonoured(t *testing.T) {
	storage := &certmagic.FileStorage{Path: t.TempDir()}
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	l := newLedger(storage, []time.Duration{time.Minute})
	l.now = func() time.Time { return now }
	limited := fmt.Errorf("obtain: %w", acme.Problem{Type: acme.ProblemTypeRateLimited, Status: 429,
		Detail: "too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s, retry after 2026-11-30 18:59:07 UTC: see https://letsencrypt.org/docs/rate-limits/"})
	e, err := l.failure(context.Background(), "c.example.net", "p256", "ca", limited)
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 11, 30, 18, 59, 7, 0, time.UTC); !e.NextAttempt.Equal(want) {
		t.Fatalf("next attempt %v, want the CA's retry-after %v", e.NextAttempt, want)
	}
	e, _ = l.failure(context.Background(), "d.example.net", "p256", "ca", errors.New("connection refused"))
	if !e.NextAttempt.Equal(now.Add(time.Minute)) {
		t.Fatalf("plain failure: next attempt %v", e.NextAttempt)
	}
}
