package tlsmgr

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/mholt/acmez/v3/acme"
)

// explain turns the common ACME failures into what an operator should check.
// The CA's own words stay in the error; this says where to look. It returns
// "" for failures it does not recognise. cas are the directory URLs of the
// CAs that were tried, so a failure to reach one of them is named as such.
//
// Two kinds of failure must never be confused, because they send the
// operator to opposite ends of the wire: Portico failing to reach the CA (its
// directory, account, order or finalize calls: the network between this
// server and the CA, or a wrong [acme] ca), and the CA failing to validate
// the site's name (a problem document the CA put on the authorization:
// the site's DNS, ports or firewall). Only the CA's problem document tells
// the second kind; a refused connection anywhere else is Portico's own.
func explain(name string, cas []string, err error) string {
	if err == nil {
		return ""
	}
	var p acme.Problem
	if errors.As(err, &p) {
		return explainProblem(name, cas, p, err)
	}
	if ca, cause, ok := caCallFailed(cas, err); ok {
		return explainCAUnreachable(ca, cause)
	}
	if strings.Contains(err.Error(), "x509") {
		return "Portico does not trust the CA's HTTPS certificate: for a private CA, list its root in [acme] ca_roots"
	}
	return ""
}

// explainProblem explains a problem document the CA sent.
func explainProblem(name string, cas []string, p acme.Problem, err error) string {
	d := strings.ToLower(p.Detail)
	switch {
	case p.Type == acme.ProblemTypeRateLimited || strings.Contains(p.Type, "rateLimited"):
		when := "after the time the CA gives"
		if t := rateLimitedUntil(err); !t.IsZero() {
			when = "after " + t.UTC().Format(time.RFC1123)
		}
		return fmt.Sprintf("the CA rate-limited this order; Portico retries %s. Check the CA's rate limits (Let's Encrypt: 5 certificates per identical set of names per 7 days, 50 per registered domain, 300 new orders per 3 hours) and whether something is re-ordering (storage lost? many instances without shared storage?)", when)
	case p.Type == acme.ProblemTypeCAA || strings.Contains(d, "caa record"):
		return fmt.Sprintf("a CAA record on %s or a parent domain forbids this CA: add one that allows it (for Let's Encrypt: %s CAA 0 issue \"letsencrypt.org\") or remove the restrictive record", name, registrable(name))
	case p.Type == acme.ProblemTypeServerInternal && !validationProblem(p):
		return fmt.Sprintf("the CA at %s failed with an internal error (%s); Portico retries on its schedule: check the CA's status page", caList(cas), p.Detail)
	case !validationProblem(p):
		return fmt.Sprintf("the CA at %s refused Portico's request (%s: %s): check [acme] ca, email, eab_key_id and eab_hmac, and the CA's status page", caList(cas), strings.TrimPrefix(p.Type, acme.ProblemTypeNamespace), p.Detail)
	case p.Type == acme.ProblemTypeDNS || strings.Contains(d, "nxdomain") || strings.Contains(d, "no valid a records") || strings.Contains(d, "no such host") || strings.Contains(d, "could not resolve"):
		return fmt.Sprintf("%s does not resolve in public DNS (the CA said: %q): create an A/AAAA record pointing at this server (or remove the name from the config)", name, p.Detail)
	case strings.Contains(d, "connection refused"):
		return fmt.Sprintf("the CA reached the address DNS gives for %s but nothing accepted the connection: check that DNS points at this server and that ports 80 (http-01) and 443 (tls-alpn-01) are open and forwarded to Portico", name)
	case strings.Contains(d, "timeout") || strings.Contains(d, "timed out") || strings.Contains(d, "deadline exceeded"):
		return fmt.Sprintf("the CA's connection to %s timed out: a firewall or security group drops traffic to port 80/443, or DNS points at an address that does not answer", name)
	case p.Type == acme.ProblemTypeConnection:
		return fmt.Sprintf("the CA could not connect to %s to validate it (the CA said: %q): check that DNS for %s points at this server and that ports 80 (http-01) and 443 (tls-alpn-01) are open and forwarded to Portico", name, p.Detail, name)
	case p.Type == acme.ProblemTypeUnauthorized || p.Type == acme.ProblemTypeIncorrectResponse || p.Type == acme.ProblemTypeTLS ||
		strings.Contains(d, "404") || strings.Contains(d, "key authorization") || strings.Contains(d, "incorrect tls-alpn"):
		return fmt.Sprintf("the CA reached a server that did not answer the challenge for %s: DNS points at another server (check the A/AAAA records), or a proxy or CDN in front of Portico does not pass /.well-known/acme-challenge/ (http-01) or TLS with acme-tls/1 (tls-alpn-01) through", name)
	}
	return ""
}

// validationProblem reports whether the CA's problem is about validating
// the name (found on an authorization, or of a type only validation gives)
// rather than about Portico's request itself (account, order, finalize).
func validationProblem(p acme.Problem) bool {
	switch p.Resource.(type) {
	case acme.Authorization, *acme.Authorization, acme.Challenge, *acme.Challenge:
		return true
	}
	switch p.Type {
	case acme.ProblemTypeConnection, acme.ProblemTypeDNS, acme.ProblemTypeIncorrectResponse, acme.ProblemTypeTLS:
		return true
	}
	return false
}

// caCallFailed finds, in an error without a problem document, an HTTP call
// to one of the CAs that failed below HTTP (no connection, no name, no
// trusted certificate), or the CA's directory that could not be read. It
// returns the CA's directory URL and the cause.
func caCallFailed(cas []string, err error) (string, error, bool) {
	var ue *url.Error
	if errors.As(err, &ue) {
		u, perr := url.Parse(ue.URL)
		if perr != nil {
			return "", nil, false
		}
		for _, ca := range cas {
			if c, perr := url.Parse(ca); perr == nil && strings.EqualFold(c.Host, u.Host) {
				return ca, ue.Err, true
			}
		}
		if len(cas) == 0 {
			return u.Scheme + "://" + u.Host, ue.Err, true
		}
		return "", nil, false
	}
	// acmez reads the directory first, and says so, also when the CA
	// answered with something that is not one
	if strings.Contains(err.Error(), "provisioning client") && len(cas) > 0 {
		return caList(cas), err, true
	}
	return "", nil, false
}

// explainCAUnreachable says why Portico could not talk to the CA at ca.
func explainCAUnreachable(ca string, cause error) string {
	var dnsErr *net.DNSError
	c := strings.ToLower(cause.Error())
	switch {
	case errors.As(cause, &dnsErr) || strings.Contains(c, "no such host"):
		return fmt.Sprintf("Portico could not reach the CA at %s: its host name does not resolve from this server. Check [acme] ca for a typo, and this server's DNS resolver (this is not about the site's DNS)", ca)
	case strings.Contains(c, "connection refused"):
		return fmt.Sprintf("Portico could not reach the CA at %s: nothing accepted the connection. Check [acme] ca (host and port) and that the CA is running; an outbound firewall or HTTP proxy may also refuse it (this is not about the site's DNS)", ca)
	case strings.Contains(c, "timeout") || strings.Contains(c, "timed out") || strings.Contains(c, "deadline exceeded"):
		return fmt.Sprintf("Portico's connection to the CA at %s timed out: check this server's outbound access to the CA (firewall, HTTP proxy) and the CA's status page", ca)
	case strings.Contains(c, "x509") || strings.Contains(c, "certificate"):
		return fmt.Sprintf("Portico does not trust the HTTPS certificate of the CA at %s: for a private CA, list its root in [acme] ca_roots", ca)
	case strings.Contains(c, "provisioning client"):
		return fmt.Sprintf("Portico could not read the ACME directory of the CA at %s: check that [acme] ca is the CA's directory URL", ca)
	}
	return fmt.Sprintf("Portico could not reach the CA at %s: check [acme] ca and this server's outbound access to it", ca)
}

func caList(cas []string) string {
	if len(cas) == 0 {
		return "[acme] ca"
	}
	return strings.Join(cas, ", ")
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
