package tlsmgr

import (
	"fmt"
	"slices"
	"strings"

	"github.com/caddyserver/certmagic"

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

// variantFor returns the variant for spec, building it on first use from
// the [acme] settings in force.
func (m *Manager) variantFor(spec challengeSpec) (*variant, error) {
	key := spec.key()
	for {
		m.mu.RLock()
		set := acmeSet{cfg: m.acmeCfg, roots: m.roots, local: m.local}
		v := m.variants[key]
		m.mu.RUnlock()
		if v != nil {
			return v, nil
		}
		v, err := m.buildVariant(&set, spec)
		if err != nil {
			return nil, err
		}
		m.mu.Lock()
		if m.acmeCfg != set.cfg {
			// a reload replaced [acme] while this was built: build
			// again from the new settings
			m.mu.Unlock()
			continue
		}
		if existing := m.variants[key]; existing != nil {
			v = existing
		} else {
			m.variants[key] = v
		}
		m.mu.Unlock()
		return v, nil
	}
}

// buildVariant makes the families of spec, one per key type of set.
func (m *Manager) buildVariant(set *acmeSet, spec challengeSpec) (*variant, error) {
	v := &variant{spec: spec}
	for _, kt := range set.cfg.ACME.KeyTypes {
		f, err := m.newFamily(set, kt, spec)
		if err != nil {
			return nil, err
		}
		v.families = append(v.families, f)
	}
	return v, nil
}

// familiesFor returns the families managing name: its site's variant, or
// the default one.
func (m *Manager) familiesFor(name string) []*family {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if v := m.nameVar[name]; v != nil {
		return v.families
	}
	return m.families
}

// defaultFamilies returns the default variant's families (a reload of
// [acme] replaces them).
func (m *Manager) defaultFamilies() []*family {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.families
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
