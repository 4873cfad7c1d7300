// Package dnsprovider turns the operator's [acme.dns] (or per-site
// [site.dns]) settings into a certmagic.DNSProvider: the client of the DNS
// provider's API that publishes and removes the _acme-challenge TXT records
// of the dns-01 challenge.
//
// Three providers are supported, each through its libdns package:
//
//   - "cloudflare" (github.com/libdns/cloudflare): an API token;
//   - "route53" (github.com/libdns/route53): static AWS credentials or the
//     AWS SDK's default chain, optionally a fixed hosted zone;
//   - "rfc2136" (github.com/libdns/rfc2136): dynamic updates signed with a
//     TSIG key, sent over TCP to the operator's own primary server.
//
// Check reports every problem with the settings as operator-facing messages
// and never echoes a secret; New refuses settings Check refuses, so a bad
// setting is a configuration error before any challenge is attempted rather
// than a failed order (and a rate-limit strike) at the CA.
//
// The package knows nothing about propagation checks: the zone of a name is
// found by certmagic with SOA queries to the configured resolvers, and
// certmagic polls those resolvers (every 2 s, up to the propagation timeout)
// until the TXT record is visible.
package dnsprovider

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/certmagic"
	"github.com/libdns/cloudflare"
	"github.com/libdns/rfc2136"

	"github.com/portico-proxy/portico/config"
)

// Options are the knobs of New that do not come from the configuration file.
type Options struct {
	// HTTPClient, when non-nil, is the client the Cloudflare provider sends
	// its API requests with (tests point its Transport at a local server;
	// the API base URL is a constant of libdns/cloudflare). Nil means
	// http.DefaultClient. The Route 53 provider always uses the AWS SDK's
	// own client (its endpoint can be overridden with the SDK's
	// AWS_ENDPOINT_URL_ROUTE_53 variable), and RFC 2136 speaks DNS, not HTTP.
	HTTPClient *http.Client
}

// New returns the DNS provider d configures. It first runs Check and returns
// its problems as one error, so a provider is never built from settings that
// would fail (or, for Route 53, exit the process) later.
//
// The returned provider is safe for concurrent use.
func New(d *config.DNS, opts Options) (certmagic.DNSProvider, error) {
	if d == nil {
		return nil, errors.New("dns-01: no [acme.dns] settings")
	}
	if problems := Check(d); len(problems) > 0 {
		return nil, fmt.Errorf("dns-01 provider %q: %s", d.Provider, strings.Join(problems, "; "))
	}
	switch d.Provider {
	case "cloudflare":
		p := &cloudflare.Provider{APIToken: d.APIToken}
		// Assign only a non-nil client: a nil *http.Client stored in the
		// HTTPClient interface would not be nil, and the provider would
		// call a method on a nil pointer.
		if opts.HTTPClient != nil {
			p.HTTPClient = opts.HTTPClient
		}
		return p, nil
	case "route53":
		return newRoute53(d)
	case "rfc2136":
		return &rfc2136.Provider{
			Server:  d.Server,
			KeyName: d.KeyName,
			// The library appends the trailing dot; miekg/dns compares
			// algorithm names case-insensitively.
			KeyAlg: strings.ToLower(strings.TrimSuffix(d.KeyAlg, ".")),
			Key:    d.Key,
		}, nil
	}
	// Unreachable: Check refuses unknown providers.
	return nil, unknownProvider(d.Provider)
}

func unknownProvider(name string) error {
	return fmt.Errorf("unknown dns-01 provider %q: supported are %s", name, strings.Join(config.DNSProviders(), ", "))
}
