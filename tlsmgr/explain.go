package tlsmgr

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mholt/acmez/v3/acme"
)

// explain turns the common ACME failures into what an operator should check.
// The CA's own words stay in the error; this says where to look. It returns
// "" for failures it does not recognise.
func explain(name string, err error) string {
	if err == nil {
		return ""
	}
	var p acme.Problem
	detail := err.Error()
	typ := ""
	if errors.As(err, &p) {
		typ, detail = p.Type, p.Detail+" "+detail
	}
	d := strings.ToLower(detail)
	switch {
	case typ == acme.ProblemTypeRateLimited || strings.Contains(typ, "rateLimited"):
		when := "after the time the CA gives"
		if t := rateLimitedUntil(err); !t.IsZero() {
			when = "after " + t.UTC().Format(time.RFC1123)
		}
		return fmt.Sprintf("the CA rate-limited this order; Portico retries %s. Check the CA's rate limits (Let's Encrypt: 5 certificates per identical set of names per 7 days, 50 per registered domain, 300 new orders per 3 hours) and whether something is re-ordering (storage lost? many instances without shared storage?)", when)
	case typ == acme.ProblemTypeCAA || strings.Contains(d, "caa record"):
		return fmt.Sprintf("a CAA record on %s or a parent domain forbids this CA: add one that allows it (for Let's Encrypt: %s CAA 0 issue \"letsencrypt.org\") or remove the restrictive record", name, registrable(name))
	case strings.Contains(d, "nxdomain") || strings.Contains(d, "no valid a records") || strings.Contains(d, "no such host") || strings.Contains(d, "could not resolve"):
		return fmt.Sprintf("%s does not resolve in public DNS: create an A/AAAA record pointing at this server (or remove the name from the config)", name)
	case strings.Contains(d, "connection refused"):
		return fmt.Sprintf("the CA reached the address DNS gives for %s but nothing accepted the connection: check that DNS points at this server and that ports 80 (http-01) and 443 (tls-alpn-01) are open and forwarded to Portico", name)
	case strings.Contains(d, "timeout") || strings.Contains(d, "timed out") || strings.Contains(d, "deadline exceeded"):
		return fmt.Sprintf("the CA's connection to %s timed out: a firewall or security group drops traffic to port 80/443, or DNS points at an address that does not answer", name)
	case strings.Contains(d, "unauthorized") || strings.Contains(d, "404") || strings.Contains(d, "key authorization") || strings.Contains(d, "incorrect tls-alpn"):
		return fmt.Sprintf("the CA reached a server that did not answer the challenge for %s: DNS points at another server (check the A/AAAA records), or a proxy or CDN in front of Portico does not pass /.well-known/acme-challenge/ (http-01) or TLS with acme-tls/1 (tls-alpn-01) through", name)
	case strings.Contains(d, "x509") || strings.Contains(d, "certificate signed by unknown authority"):
		return "Portico does not trust the CA's HTTPS certificate: for a private CA, list its root in [acme] ca_roots"
	}
	return ""
}

// registrable is a rough registrable domain (the last two labels), for
// the example in a CAA hint.
func registrable(name string) string {
	labels := strings.Split(strings.TrimPrefix(name, "*."), ".")
	if len(labels) <= 2 {
		return strings.Join(labels, ".")
	}
	return strings.Join(labels[len(labels)-2:], ".")
}
