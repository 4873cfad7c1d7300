package tlsmgr

import (
	"errors"
	"strings"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/tlsmgr/dnsprovider"
)

func acmeDNS(cfg *config.Config) *config.DNS { return cfg.ACME.DNS }
func siteChallenges(s config.Site) []string  { return s.Challenges }
func siteDNS(s config.Site) *config.DNS      { return s.DNS }

// dnsSolver builds certmagic's dns-01 solver on a libdns provider. certmagic
// deletes the TXT record it created after validation, also when the order
// fails, so the CA's query stays small as the guide asks.
func dnsSolver(d *config.DNS, logger *zap.Logger) (acmez.Solver, error) {
	if d == nil {
		return nil, errors.New("dns-01 needs a DNS provider ([acme.dns] or [site.dns])")
	}
	if problems := dnsprovider.Check(d); len(problems) > 0 {
		return nil, errors.New("dns provider settings: " + strings.Join(problems, "; "))
	}
	provider, err := dnsprovider.New(d, dnsprovider.Options{})
	if err != nil {
		return nil, err
	}
	return &certmagic.DNS01Solver{DNSManager: certmagic.DNSManager{
		DNSProvider:        provider,
		PropagationTimeout: d.PropagationTimeout.Std(),
		Resolvers:          d.Resolvers,
		Logger:             logger,
	}}, nil
}
