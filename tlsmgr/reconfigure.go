package tlsmgr

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
)

// acmeSet is what every family is built from: the config whose [acme] (and
// listen addresses and renewal ratio) they follow, the CA roots it names
// and the local CA when ca = "local", with the variants built so far.
//
// A reload that changes any of these settings builds a whole new set and
// swaps it in, rather than patching families in place: certmagic copies an
// issuer's CA, email, profile and key settings when it is made, so a
// family built from the old [acme] would keep ordering with them (it once
// did: a key type added by SIGHUP was never ordered).
type acmeSet struct {
	cfg      *config.Config
	key      string
	roots    *x509.CertPool
	local    *LocalCA
	variants map[string]*variant
	families []*family // the default variant's
}

// acmeSettingsKey identifies the settings an acmeSet is built from. It
// holds secrets (EAB, DNS tokens) and is only compared, never logged.
func acmeSettingsKey(cfg *config.Config) string {
	b, err := json.Marshal(struct {
		ACME        config.ACME
		HTTP, HTTPS string
		Ratio       float64
	}{cfg.ACME, cfg.Listen.HTTP, cfg.Listen.HTTPS, cfg.Renewal.Ratio})
	if err != nil {
		return fmt.Sprintf("unencodable %p", cfg) // never equal: rebuild
	}
	return string(b)
}

// newACMESet builds the families of cfg's default variant, and of every
// site and on-demand variant when sites is true, without touching the
// running ones. The local CA is kept across reloads (it holds its root).
func (m *Manager) newACMESet(cfg *config.Config, sites bool) (*acmeSet, error) {
	set := &acmeSet{cfg: cfg, key: acmeSettingsKey(cfg), variants: map[string]*variant{}}
	roots, err := loadRoots(cfg.ACME.CARoots)
	if err != nil {
		return nil, fmt.Errorf("[acme] ca_roots: %w", err)
	}
	set.roots = roots
	if cfg.ACME.CA == "local" {
		m.mu.RLock()
		set.local = m.local
		m.mu.RUnlock()
		if set.local == nil {
			set.local = NewLocalCA(m.storage)
		}
	}
	def, err := m.buildVariant(set, defaultSpec(cfg))
	if err != nil {
		return nil, fmt.Errorf("[acme]: %w", err)
	}
	set.variants[def.spec.key()] = def
	set.families = def.families
	if !sites {
		return set, nil
	}
	var errs []error
	for _, u := range specsOf(cfg) {
		if set.variants[u.spec.key()] != nil {
			continue
		}
		v, err := m.buildVariant(set, u.spec)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", u.what, err))
			continue
		}
		set.variants[u.spec.key()] = v
	}
	return set, errors.Join(errs...)
}

// specUse is a challenge spec and who uses it, for error messages.
type specUse struct {
	what string
	spec challengeSpec
}

// specsOf lists the challenge specs cfg's sites and on-demand TLS need.
func specsOf(cfg *config.Config) []specUse {
	var out []specUse
	for i, s := range cfg.Sites {
		out = append(out, specUse{fmt.Sprintf("site[%d] (%s)", i+1, strings.Join(s.Hosts, ", ")), siteSpec(cfg, s)})
	}
	if cfg.OnDemand != nil {
		spec := defaultSpec(cfg)
		spec.onDemand = true
		out = append(out, specUse{"[on_demand]", spec})
	}
	return out
}

// Check reports whether Apply(cfg) can set up every site of cfg (its
// challenge solvers, DNS provider and, when [acme] changed, its CA
// settings), changing nothing. A reload asks it before it swaps anything,
// so a config the certificates cannot follow is refused as a whole.
func (m *Manager) Check(cfg *config.Config) error {
	_, err := m.prepare(cfg)
	return err
}

// prepare returns a new acmeSet when cfg changes the settings families are
// built from, nil when the running one serves; either way every variant
// cfg needs is built, and the first failure is returned.
func (m *Manager) prepare(cfg *config.Config) (*acmeSet, error) {
	m.mu.RLock()
	same := m.acmeKey == acmeSettingsKey(cfg)
	m.mu.RUnlock()
	if !same {
		return m.newACMESet(cfg, true)
	}
	var errs []error
	for _, u := range specsOf(cfg) {
		if _, err := m.variantFor(u.spec); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", u.what, err))
		}
	}
	return nil, errors.Join(errs...)
}

// install makes set the one families are taken from. Certificates of key
// types no longer configured leave the cache (and handshakes); the
// scheduler's next pass orders what the new families lack.
func (m *Manager) install(set *acmeSet) {
	m.mu.Lock()
	old := m.acmeCfg
	m.acmeCfg, m.acmeKey, m.roots, m.local = set.cfg, set.key, set.roots, set.local
	m.variants, m.families = set.variants, set.families
	m.mu.Unlock()
	if old == nil {
		return
	}
	changed := acmeChanges(old, set.cfg)
	m.logger.Info("[acme] changed: new orders use the new settings; certificates in service stay until renewed or replaced",
		zap.Strings("changed", changed), zap.Strings("key_types", set.cfg.ACME.KeyTypes))
	if slices.Contains(changed, "acme.account_key_type") && !slices.Contains(changed, "acme.ca") && !slices.Contains(changed, "acme.email") {
		// certmagic finds the account by CA and email: an account that
		// exists keeps its key, as it would across a restart
		m.logger.Warn("[acme] account_key_type changed: it applies to accounts created from now on; the existing account for this CA and email keeps its key (change email, or remove the account from storage, to get a new one)",
			zap.String("account_key_type", set.cfg.ACME.AccountKeyType))
	}
	if slices.Contains(changed, "acme.ca") && set.local == nil {
		go m.logTermsOfService()
	}
	m.dropUnconfiguredKeyTypes(set.cfg.ACME.KeyTypes)
}

// acmeChanges names the settings that differ between two configs.
func acmeChanges(a, b *config.Config) []string {
	fields := []struct {
		key string
		get func(*config.Config) any
	}{
		{"acme.email", func(c *config.Config) any { return c.ACME.Email }},
		{"acme.ca", func(c *config.Config) any { return c.ACME.CA }},
		{"acme.ca_roots", func(c *config.Config) any { return c.ACME.CARoots }},
		{"acme.fallback_ca", func(c *config.Config) any { return c.ACME.FallbackCA }},
		{"acme.challenges", func(c *config.Config) any { return c.ACME.Challenges }},
		{"acme.key_types", func(c *config.Config) any { return c.ACME.KeyTypes }},
		{"acme.account_key_type", func(c *config.Config) any { return c.ACME.AccountKeyType }},
		{"acme.profile", func(c *config.Config) any { return c.ACME.Profile }},
		{"acme.dns", func(c *config.Config) any { return c.ACME.DNS }},
		{"acme.validation_redirect", func(c *config.Config) any { return c.ACME.ValidationRedirect }},
		{"acme.eab_kid", func(c *config.Config) any { return c.ACME.EABKeyID }},
		{"acme.eab_hmac", func(c *config.Config) any { return c.ACME.EABHMAC }},
		{"acme.agree_tos", func(c *config.Config) any { return c.ACME.AgreeTOS }},
		{"listen.http", func(c *config.Config) any { return c.Listen.HTTP }},
		{"listen.https", func(c *config.Config) any { return c.Listen.HTTPS }},
		{"renewal.ratio", func(c *config.Config) any { return c.Renewal.Ratio }},
	}
	var out []string
	for _, f := range fields {
		if !reflect.DeepEqual(f.get(a), f.get(b)) {
			out = append(out, f.key)
		}
	}
	return out
}

// dropUnconfiguredKeyTypes removes from the cache the managed certificates
// whose key type is no longer in keyTypes, so handshakes stop getting them.
func (m *Manager) dropUnconfiguredKeyTypes(keyTypes []string) {
	names := m.managedNames()
	for _, g := range m.sanGroupList() {
		names = append(names, g.names...)
	}
	var drop []string
	var touched []string
	for _, n := range names {
		for _, c := range m.cache.AllMatchingCertificates(n) {
			if c.Leaf == nil || c.HasTag("portico-static") || slices.Contains(keyTypes, keyTypeOf(c.Leaf)) {
				continue // (portico-static: an operator's [[certificate]])
			}
			drop = append(drop, c.Hash())
			touched = append(touched, n)
		}
	}
	if len(drop) == 0 {
		return
	}
	m.cache.Remove(drop)
	m.refresh(touched...)
	m.logger.Info("certificates of key types no longer configured left service", zap.Strings("names", touched))
}

// keyTypeOf names a certificate's key type as the key policy does.
func keyTypeOf(leaf *x509.Certificate) string {
	switch k := leaf.PublicKey.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("rsa%d", k.N.BitLen())
	case *ecdsa.PublicKey:
		switch k.Curve.Params().BitSize {
		case 256:
			return "p256"
		case 384:
			return "p384"
		}
	}
	return ""
}
