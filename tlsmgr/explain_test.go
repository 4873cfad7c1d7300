package tlsmgr

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/mholt/acmez/v3/acme"
)

func TestExplain(t *testing.T) {
	wrap := func(p acme.Problem) error { return fmt.Errorf("[a.example.net] Obtain: %w", p) }
	for _, tc := range []struct {
		name string
		err  error
		want []string
	}{
		{"connection refused", wrap(acme.Problem{Type: "urn:ietf:params:acme:error:connection",
			Detail: `Get "http://a.example.net/.well-known/acme-challenge/x": dial tcp 192.0.2.9:80: connect: connection refused`}),
			[]string{"nothing accepted the connection", "ports 80", "443"}},
		{"timeout", wrap(acme.Problem{Type: "urn:ietf:params:acme:error:connection", Detail: "192.0.2.9: Timeout during connect (likely firewall problem)"}),
			[]string{"timed out", "firewall"}},
		{"wrong IP", wrap(acme.Problem{Type: "urn:ietf:params:acme:error:unauthorized", Detail: "Invalid response from http://a.example.net/.well-known/acme-challenge/x: 404"}),
			[]string{"did not answer the challenge", "A/AAAA", "/.well-known/acme-challenge/"}},
		{"CAA", wrap(acme.Problem{Type: acme.ProblemTypeCAA, Detail: "CAA record for example.net prevents issuance"}),
			[]string{"CAA", `example.net CAA 0 issue "letsencrypt.org"`}},
		{"rate limit", wrap(acme.Problem{Type: acme.ProblemTypeRateLimited, Status: 429,
			Detail: "too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s, retry after 2026-12-01 10:00:00 UTC"}),
			[]string{"rate-limited", "Tue, 01 Dec 2026 10:00:00 UTC", "5 certificates per identical set"}},
		{"NXDOMAIN", wrap(acme.Problem{Type: "urn:ietf:params:acme:error:dns", Detail: "DNS problem: NXDOMAIN looking up A for a.example.net"}),
			[]string{"does not resolve", "create an A/AAAA record"}},
		{"untrusted CA", errors.New("x509: certificate signed by unknown authority"), []string{"ca_roots"}},
	} {
		got := explain("a.example.net", tc.err)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: %q does not say %q", tc.name, got, w)
			}
		}
	}
	if got := explain("a.example.net", errors.New("something else")); got != "" {
		t.Errorf("unknown failure explained as %q", got)
	}
}
