package dnsprovider

import (
	"github.com/portico-proxy/portico/config"
)

// TSIGAlgorithms are the key_alg values accepted for rfc2136 (see
// config.TSIGAlgorithms).
func TSIGAlgorithms() []string { return config.TSIGAlgorithms() }

// Check returns every problem with d as operator-facing messages, each of
// the form "<key>: <what is wrong>; <how to fix it>", where <key> is the
// setting's name inside [acme.dns] (or [site.dns]): the caller adds where
// the table is. An empty result means New will accept d (the AWS SDK's
// environment aside, which New checks).
//
// The judge is config.CheckDNS, the one `portico validate` asks: what
// validate accepts, New builds, and what New refuses, validate refuses.
func Check(d *config.DNS) []string {
	var out []string
	for _, p := range config.CheckDNS(d) {
		out = append(out, p.String())
	}
	return out
}
