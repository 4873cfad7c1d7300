package tlsmgr

import (
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"
)

// TestSANARINextCheck: a shared certificate's renewal information is asked
// for again at the CA's Retry-After, but at least twice a day whatever the
// CA says, as the integration guide asks.
func TestSANARINextCheck(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { x := now.Add(d); return &x }
	for _, tc := range []struct {
		retryAfter *time.Time
		want       time.Time
	}{
		{nil, now.Add(ariMaxAge)},
		{at(6 * time.Hour), now.Add(6 * time.Hour)},
		{at(2 * time.Second), now.Add(2 * time.Second)},
		{at(72 * time.Hour), now.Add(ariMaxAge)},
	} {
		if got := newSANARI("1f", acme.RenewalInfo{RetryAfter: tc.retryAfter}, now).NextCheck; !got.Equal(tc.want) {
			t.Errorf("Retry-After %v: next check %v, want %v", tc.retryAfter, got, tc.want)
		}
	}
}
