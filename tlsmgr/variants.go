package tlsmgr

import (
	"fmt"

	"github.com/caddyserver/certmagic"
	"slices"
	"strings"

	"github.com/portico-proxy/portico/config"
)

// challengeSpec is how a site's names are validated: the challenge types and,
// for dns-01, the DNS provider. Sites that share a spec share certmagic
// Configs (one per key type): a variant.
type challengeSpec struct {
	challenges []string
	dns        *config.DNS
	onDemand   bool // the families of on-demand names (certmagic's OnDemand set)
}

// key identifies a spec. It holds secrets (API tokens) and is only ever
// used as a map key, never logged.
func (s challengeSpec) key() string {
	c := slices.Clone(s.challenges)
	slices.Sort(c)
	k := strings.Join(c, ",")
	if s.dns != nil {
		k += fmt.Sprintf("|%+v", *s.dns)
	}
	if s.onDemand {
		k += "|on-demand"
	}
	return k
}

// variant is the set of families (one per key type) for one challengeSpec.
type variant struct {
	spec     challengeSpec
	families []*family
}

func defaultSpec(cfg *config.Config) challengeSpec {
	return challengeSpec{challenges: cfg.ACME.Challenges, dns: acmeDNS(cfg)}
}

// siteSpec is a site's own challenges and DNS settings where it has them,
// the [acme] ones otherwise.
func siteSpec(cfg *config.Config, s config.Site) challengeSpec {
	spec := defaultSpec(cfg)
	if c := siteChallenges(s); len(c) > 0 {
		spec.challenges = c
	}
	if d := siteDNS(s); d != nil {
		spec.dns = d
	}
	return spec
}

// variantFor returns the variant for spec, building it on first use.
func (m *Manager) variantFor(spec challengeSpec) (*variant, error) {
	key := spec.key()
	m.mu.RLock()
	v := m.variants[key]
	m.mu.RUnlock()
	if v != nil {
		return v, nil
	}
	v = &variant{spec: spec}
	for _, kt := range m.acmeCfg.ACME.KeyTypes {
		f, err := m.newFamily(m.acmeCfg, kt, m.roots, spec)
		if err != nil {
			return nil, err
		}
		v.families = append(v.families, f)
	}
	m.mu.Lock()
	if existing := m.variants[key]; existing != nil {
		v = existing
	} else {
		m.variants[key] = v
	}
	m.mu.Unlock()
	return v, nil
}

// familiesFor returns the families managing name: its site's variant, or
// the default one.
func (m *Manager) familiesFor(name string) []*family {
	m.mu.RLock()
	v := m.nameVar[name]
	m.mu.RUnlock()
	if v == nil {
		return m.families
	}
	return v.families
}

// httpIssuers lists the ACME issuers of every variant that may answer
// http-01 challenges.
func (m *Manager) httpIssuers() []*certmagic.ACMEIssuer {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []*certmagic.ACMEIssuer
	for _, v := range m.variants {
		for _, f := range v.families {
			for _, iss := range f.issuers {
				if !iss.DisableHTTPChallenge {
					out = append(out, iss)
				}
			}
		}
	}
	return out
}
