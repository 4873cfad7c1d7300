package tlsmgr

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
)

// A site with certificate = "shared" gets one SAN certificate for all its
// hosts. certmagic manages one name per certificate, so Portico orders SAN
// certificates with the ACME issuer itself and provides what certmagic would
// otherwise: storage (one blob per certificate and key type, so the
// certificate and its key are always written together), the fleet lock,
// renewal on the same schedule, and the same failure ledger and order slots
// as every other certificate. Changing the host list makes a new group and
// replaces the certificate.

// sanGroup is one shared certificate's names.
type sanGroup struct {
	id    string   // stable id from the sorted names
	names []string // sorted
	v     *variant
}

// sanLedgerName is the group's name in the ledger, the admin API and
// notifications: its first name and how many more it covers.
func (g *sanGroup) label() string {
	if len(g.names) == 1 {
		return g.names[0]
	}
	return fmt.Sprintf("%s (+%d SAN)", g.names[0], len(g.names)-1)
}

func newSANGroup(hosts []string, v *variant) *sanGroup {
	names := slices.Clone(hosts)
	slices.Sort(names)
	sum := sha256.Sum256([]byte(strings.Join(names, "\n")))
	return &sanGroup{id: hex.EncodeToString(sum[:8]), names: names, v: v}
}

// sanBlob is what storage holds for one SAN certificate and key type.
type sanBlob struct {
	Names       []string  `json:"names"`
	Issuer      string    `json:"issuer"`
	CertPEM     string    `json:"certificate_pem"`
	KeyPEM      string    `json:"private_key_pem"`
	NotAfter    time.Time `json:"not_after"`
	ObtainedAt  time.Time `json:"obtained_at"`
	ObtainedFor string    `json:"obtained_for,omitempty"` // the CA directory
}

func sanKey(id, keyType string) string { return "portico/san/" + keyType + "/" + id + ".json" }

// sanCached returns the cached certificate of a group for a family.
func (m *Manager) sanCached(g *sanGroup, f *family) (certmagic.Certificate, bool) {
	var best certmagic.Certificate
	found := false
	for _, c := range m.cache.AllMatchingCertificates(g.names[0]) {
		if c.Leaf == nil || (c.Leaf.PublicKeyAlgorithm == x509.ECDSA) != f.ecdsa || !c.HasTag("portico-san-"+g.id) {
			continue
		}
		if !found || c.Leaf.NotAfter.After(best.Leaf.NotAfter) {
			best, found = c, true
		}
	}
	return best, found
}

// loadSAN caches a group's stored certificate for a family, if storage has
// one for exactly these names.
func (m *Manager) loadSAN(ctx context.Context, g *sanGroup, f *family) (certmagic.Certificate, error) {
	data, err := m.storage.Load(ctx, sanKey(g.id, f.keyType))
	if err != nil {
		return certmagic.Certificate{}, err
	}
	var b sanBlob
	if err := json.Unmarshal(data, &b); err != nil {
		return certmagic.Certificate{}, fmt.Errorf("stored SAN certificate %s: %w", g.id, err)
	}
	if !slices.Equal(b.Names, g.names) {
		return certmagic.Certificate{}, fmt.Errorf("stored SAN certificate %s is for other names: %w", g.id, fs.ErrNotExist)
	}
	if old, ok := m.sanCached(g, f); ok && old.Leaf.NotAfter.Equal(b.NotAfter) {
		return old, nil
	}
	if _, err := f.cfg.CacheUnmanagedCertificatePEMBytes(ctx, []byte(b.CertPEM), []byte(b.KeyPEM), []string{"portico-san", "portico-san-" + g.id}); err != nil {
		return certmagic.Certificate{}, fmt.Errorf("cache SAN certificate %s: %w", g.id, err)
	}
	// keep only the newest of this group and family in the cache
	var stale []string
	var fresh certmagic.Certificate
	for _, c := range m.cache.AllMatchingCertificates(g.names[0]) {
		if c.Leaf == nil || (c.Leaf.PublicKeyAlgorithm == x509.ECDSA) != f.ecdsa || !c.HasTag("portico-san-"+g.id) {
			continue
		}
		if c.Leaf.NotAfter.Equal(b.NotAfter) {
			fresh = c
		} else {
			stale = append(stale, c.Hash())
		}
	}
	m.cache.Remove(stale)
	m.refresh(g.names...)
	return fresh, nil
}

// obtainSAN orders a group's certificate for one family under the fleet
// lock, unless a peer stored a newer one meanwhile.
func (m *Manager) obtainSAN(ctx context.Context, g *sanGroup, f *family, renew bool) error {
	// one lock for both key types: their orders validate the same names,
	// and two challenges in flight for one name would replace each other's
	// answer (certmagic keeps one per name), as its own per-name lock avoids
	lock := "portico_san_" + g.id
	if err := m.storage.Lock(ctx, lock); err != nil {
		return fmt.Errorf("lock %s: %w", lock, err)
	}
	defer m.storage.Unlock(context.WithoutCancel(ctx), lock)
	// a peer may have stored a fresh one while this instance waited
	if _, err := m.loadSAN(ctx, g, f); err == nil {
		if c, ok := m.sanCached(g, f); ok && !m.sched.due(ctx, f, "san:"+g.id, c) {
			return nil
		}
	}
	key, err := generateKey(f.keyType)
	if err != nil {
		return err
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		DNSNames: g.names}, key) // no CommonName: the CA would see the first name twice
	if err != nil {
		return fmt.Errorf("SAN CSR: %w", err)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return err
	}
	var issued *certmagic.IssuedCertificate
	var issuerKey string
	var errs []error
	for _, iss := range f.cfg.Issuers {
		if pc, ok := iss.(certmagic.PreChecker); ok {
			if err := pc.PreCheck(ctx, g.names, false); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		issued, err = iss.Issue(ctx, csr)
		if err == nil {
			issuerKey = iss.IssuerKey()
			break
		}
		m.logger.Error("could not get SAN certificate from issuer", zap.String("certificate", g.label()),
			zap.String("issuer", iss.IssuerKey()), zap.Error(err))
		errs = append(errs, err)
	}
	if issued == nil {
		return fmt.Errorf("SAN certificate %s: %w", g.label(), errors.Join(errs...))
	}
	keyPEM, err := certmagic.PEMEncodePrivateKey(key)
	if err != nil {
		return err
	}
	pair, err := tls.X509KeyPair(issued.Certificate, keyPEM)
	if err != nil {
		return fmt.Errorf("SAN certificate %s from %s does not match its key: %w", g.label(), issuerKey, err)
	}
	blob, err := json.Marshal(sanBlob{Names: g.names, Issuer: issuerKey, CertPEM: string(issued.Certificate), KeyPEM: string(keyPEM),
		NotAfter: pair.Leaf.NotAfter, ObtainedAt: time.Now()})
	if err != nil {
		return err
	}
	// one write holds the certificate and its key: never a torn pair
	if err := m.storage.Store(ctx, sanKey(g.id, f.keyType), blob); err != nil {
		return fmt.Errorf("store SAN certificate %s: %w", g.label(), err)
	}
	m.saveIssuedSANARI(ctx, g, f, issued, pair.Leaf)
	if _, err := m.loadSAN(ctx, g, f); err != nil {
		return err
	}
	m.logger.Info("SAN certificate ready", zap.String("certificate", g.label()), zap.Strings("names", g.names),
		zap.String("key_type", f.keyType), zap.Time("not_after", pair.Leaf.NotAfter), zap.Bool("renewal", renew))
	return nil
}

// sanGroups returns the groups of cfg's shared-certificate sites.
func (m *Manager) sanGroupsOf(cfg *config.Config, covered map[string]bool) map[string]*sanGroup {
	out := map[string]*sanGroup{}
	for _, s := range cfg.Sites {
		if !s.SharedCertificate() {
			continue
		}
		var hosts []string
		for _, h := range s.Hosts {
			if !coveredBy(covered, h) {
				hosts = append(hosts, h)
			}
		}
		if len(hosts) == 0 {
			continue
		}
		v, err := m.variantFor(siteSpec(cfg, s))
		if err != nil {
			m.logger.Error("cannot set up the site's challenges; its names are not managed", zap.Strings("hosts", s.Hosts), zap.Error(err))
			continue
		}
		g := newSANGroup(hosts, v)
		out[g.id] = g
	}
	return out
}

// applySAN makes the managed SAN groups those of cfg: new groups are loaded
// from storage, removed groups leave the cache. It reports whether a group is
// new, so that Apply starts a pass that orders what storage did not have, as
// it does for new per-host names, instead of leaving it to the first
// periodic pass (up to check_interval later).
func (m *Manager) applySAN(ctx context.Context, groups map[string]*sanGroup) (added bool) {
	byName := map[string]*sanGroup{}
	for _, g := range groups {
		byName[g.label()] = g
		for _, n := range g.names {
			byName[n] = g
		}
	}
	m.mu.Lock()
	old := m.san
	m.san = groups
	m.sanByName = byName
	m.mu.Unlock()
	for id, g := range old {
		if _, keep := groups[id]; keep {
			continue
		}
		var drop []string
		for _, f := range g.v.families {
			if c, ok := m.sanCached(g, f); ok {
				drop = append(drop, c.Hash())
			}
		}
		m.cache.Remove(drop)
		m.refresh(g.names...)
		m.logger.Info("shared certificate no longer managed", zap.String("certificate", g.label()))
	}
	for id, g := range groups {
		if _, had := old[id]; had {
			continue
		}
		added = true
		for _, f := range g.v.families {
			if _, err := m.loadSAN(ctx, g, f); err != nil && !errors.Is(err, fs.ErrNotExist) {
				m.logger.Warn("could not load shared certificate; will retry", zap.String("certificate", g.label()), zap.Error(err))
			}
		}
		m.logger.Info("shared certificate managed", zap.String("certificate", g.label()), zap.Strings("names", g.names))
	}
	return added
}

func (m *Manager) sanGroupList() []*sanGroup {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]*sanGroup, 0, len(m.san))
	for _, g := range m.san {
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b *sanGroup) int { return strings.Compare(a.names[0], b.names[0]) })
	return out
}

// sanCoversLocked reports whether a shared certificate holds name, exactly
// or by a wildcard. m.mu must be held.
func (m *Manager) sanCoversLocked(name string) bool {
	if m.sanByName[name] != nil {
		return true
	}
	dot := strings.IndexByte(name, '.')
	return dot > 0 && m.sanByName["*"+name[dot:]] != nil
}

// sanGroupFor returns the group whose label or any name is name.
func (m *Manager) sanGroupFor(name string) *sanGroup {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.sanByName[name]
}
