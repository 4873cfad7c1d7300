package tlsmgr

import (
	"errors"
	"regexp"
	"time"

	"github.com/mholt/acmez/v3/acme"
)

// retryAfterDetail finds the "retry after <time>" that Let's Encrypt writes
// into the detail of rateLimited problems (it mirrors the Retry-After
// header, which acmez does not hand up to its callers).
var retryAfterDetail = regexp.MustCompile(`(?i)retry after (\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?: ?UTC|Z)?)`)

// rateLimitedUntil returns when the CA said a rate-limited request may be
// retried, or the zero time when err is not a rate limit or names no time.
func rateLimitedUntil(err error) time.Time {
	var p acme.Problem
	if !errors.As(err, &p) || p.Type != acme.ProblemTypeRateLimited {
		return time.Time{}
	}
	m := retryAfterDetail.FindStringSubmatch(p.Detail)
	if m == nil {
		return time.Time{}
	}
	for _, layout := range []string{"2006-01-02 15:04:05 UTC", "2006-01-02 15:04:05.999999999 UTC", time.RFC3339Nano, "2006-01-02 15:04:05"} {
		if t, err := time.Parse(layout, m[1]); err == nil {
			return t
		}
	}
	return time.Time{}
}
