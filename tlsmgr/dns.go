package tlsmgr

import (
	"errors"

	"github.com/mholt/acmez/v3"
	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
)

// Filled in with dns-01 support.
func acmeDNS(cfg *config.Config) *config.DNS { return nil }
func siteChallenges(s config.Site) []string  { return nil }
func siteDNS(s config.Site) *config.DNS      { return nil }
func dnsSolver(d *config.DNS, logger *zap.Logger) (acmez.Solver, error) {
	return nil, errors.New("dns-01 is not supported yet")
}
