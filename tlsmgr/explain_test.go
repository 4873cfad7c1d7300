package tlsmgr

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/integration/testkit"
)

func TestExplain(t *testing.T) {
	// validation problems come on the authorization, as acmez returns them
	wrap := func(p acme.Problem) error {
		p.Resource = acme.Authorization{Status: acme.StatusInvalid}
		return fmt.Errorf("[a.example.net] Obtain: [a.example.net] authorization failed: %w", p)
	}
	const ca = "https://acme.example.org/directory"
	reachCA := func(err error) error {
		return fmt.Errorf("[a.example.net] Obtain: registering account: provisioning client: performing request: %w",
			&url.Error{Op: "Get", URL: ca, Err: err})
	}
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
		{"step-ca connection", wrap(acme.Problem{Type: acme.ProblemTypeConnection, Detail: "The server could not connect to validation target"}),
			[]string{"could not connect to a.example.net", "The server could not connect to validation target", "ports 80"}},
		{"CA refused", reachCA(&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}),
			[]string{"could not reach the CA at " + ca, "nothing accepted the connection", "[acme] ca"}},
		{"CA name", reachCA(&net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "acme.example.org", IsNotFound: true}}),
			[]string{"could not reach the CA at " + ca, "does not resolve", "[acme] ca for a typo"}},
		{"CA untrusted", reachCA(errors.New("tls: failed to verify certificate: x509: certificate signed by unknown authority")),
			[]string{ca, "ca_roots"}},
		{"CA not a directory", errors.New("[a.example.net] Obtain: provisioning client: HTTP 404: <html>not found</html>"),
			[]string{"ACME directory of the CA at " + ca}},
		{"account refused", fmt.Errorf("registering account: %w", acme.Problem{Type: acme.ProblemTypeUnauthorized, Detail: "invalid EAB MAC"}),
			[]string{"CA at " + ca + " refused", "invalid EAB MAC", "eab_hmac"}},
	} {
		got := explain("a.example.net", []string{ca}, tc.err)
		if strings.HasPrefix(tc.name, "CA ") && strings.Contains(got, "a.example.net") {
			t.Errorf("%s: %q blames the site", tc.name, got)
		}
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: %q does not say %q", tc.name, got, w)
			}
		}
	}
	if got := explain("a.example.net", []string{ca}, errors.New("something else")); got != "" {
		t.Errorf("unknown failure explained as %q", got)
	}
}

// TestHintNamesUnreachableCA: when Portico cannot reach the CA (nothing
// listens at the CA's address, or the CA's host name does not resolve), the
// failure's hint names the CA's URL and does not send the operator to the
// site's DNS, whatever the network error says.
func TestHintNamesUnreachableCA(t *testing.T) {
	for _, ca := range []string{"https://127.0.0.1:1/dir", "https://acme-v02.api.letsencrpt.invalid/directory"} {
		t.Run(ca, func(t *testing.T) {
			cfg, err := config.Parse("test.toml", fmt.Appendf(nil, `
[acme]
email = "ops@example.net"
agree_tos = true
ca = %q
[listen]
http = "127.0.0.1:0"
https = "127.0.0.1:0"
[storage]
path = %q
[renewal]
check_interval = "1h"
[[site]]
hosts = ["n.test"]
respond = "ok"
`, ca, t.TempDir()))
			if err != nil {
				t.Fatal(err)
			}
			core, logs := observer.New(zap.InfoLevel)
			m, err := New(cfg, zap.New(core))
			if err != nil {
				t.Fatal(err)
			}
			m.Start()
			defer m.Stop()
			m.Apply(context.Background(), cfg)
			var hint string
			testkit.Eventually(t, 60*time.Second, "a failed attempt for n.test", func() bool {
				for _, e := range logs.FilterMessage("certificate attempt failed").All() {
					hint, _ = e.ContextMap()["what_to_check"].(string)
					return true
				}
				return false
			})
			if !strings.Contains(hint, "could not reach the CA at "+ca) {
				t.Errorf("hint %q does not name the CA %s", hint, ca)
			}
			for _, wrong := range []string{"DNS points at this server", "does not resolve in public DNS", "n.test"} {
				if strings.Contains(hint, wrong) {
					t.Errorf("hint %q blames the site (%q)", hint, wrong)
				}
			}
		})
	}
}
