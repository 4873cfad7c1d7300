// Package tlsmgr manages Portico's certificates: one certmagic Config per key
// type over one shared cache, storage backends, the local CA, the renewal
// scheduler and its failure ledger. It knows nothing of upstreams or routing;
// the proxy asks it for certificates and for ACME challenge answers.
package tlsmgr

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/tlsmgr/notify"
)

// family is everything about one certificate key type: its certmagic Config
// (with a storage view that keeps its certificates apart) and its issuers.
type family struct {
	keyType string // from the key policy, e.g. "p256"
	ecdsa   bool
	cfg     *certmagic.Config
	acme    *certmagic.ACMEIssuer   // the first CA's issuer; nil with the local CA
	issuers []*certmagic.ACMEIssuer // the CA, then the fallback CAs
	// onDemand marks the families of on-demand names
	onDemand bool
}

// Manager obtains, caches, renews and serves certificates for the names in
// the config. Create it with New, give it names with Apply, and use
// GetCertificate in a tls.Config.
type Manager struct {
	logger  *zap.Logger
	storage certmagic.Storage
	cache   *certmagic.Cache
	ledger  *ledger
	sched   *scheduler
	index   *certIndex
	loader  *storeLoader
	slots   orderSlots
	notYet  notYetLog

	defaultSNI atomic.Pointer[string]     // [listen] default_sni, for hellos without SNI
	tickets    atomic.Pointer[tls.Config] // holds the fleet's session ticket keys
	orders     atomic.Pointer[prometheus.CounterVec]

	staticMu    sync.Mutex
	static      map[string]*staticCert // by cert+key path
	staticNames map[string]bool

	notifyMu  sync.RWMutex
	notifier  *notify.Dispatcher
	notifyKey string

	ctx    context.Context
	cancel context.CancelFunc

	mu sync.RWMutex
	// the acmeSet in force (see reconfigure.go): a reload of [acme]
	// replaces them together
	families  []*family // the default variant's, by key type
	local     *LocalCA
	roots     *x509.CertPool
	acmeCfg   *config.Config      // the ACME, listen and renewal settings variants are built from
	acmeKey   string              // acmeSettingsKey(acmeCfg)
	variants  map[string]*variant // by challengeSpec.key()
	names     map[string]struct{} // managed names
	nameVar   map[string]*variant // each managed name's variant
	odNames   map[string]bool     // names obtained on demand (also in nameVar)
	od        atomic.Pointer[onDemand]
	san       map[string]*sanGroup // shared (SAN) certificates, by group id
	sanByName map[string]*sanGroup // the same, by label and by each name
	caURL     string
}

// New builds a Manager for cfg. It opens storage but contacts no CA: a CA or
// storage outage never stops Portico from starting.
func New(cfg *config.Config, logger *zap.Logger) (*Manager, error) {
	storage, err := OpenStorage(cfg.Storage, logger)
	if err != nil {
		return nil, err
	}
	return NewWithStorage(cfg, storage, logger)
}

// NewWithStorage is New on a storage the caller opened (tests use it to
// inject faults).
func NewWithStorage(cfg *config.Config, storage certmagic.Storage, logger *zap.Logger) (*Manager, error) {
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		logger:   logger,
		storage:  storage,
		ctx:      ctx,
		cancel:   cancel,
		names:    map[string]struct{}{},
		variants: map[string]*variant{},
		nameVar:  map[string]*variant{},
		odNames:  map[string]bool{},
		caURL:    cfg.ACME.CA,
		index:    newCertIndex(),
		slots:    orderSlots{storage: storage, n: cfg.Renewal.MaxConcurrent},
	}
	m.loader = newStoreLoader(m)
	m.ledger = newLedger(storage, durations(cfg.Renewal.Backoff))
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   m.configForCert,
		RenewCheckInterval: cfg.Renewal.CheckInterval.Std(),
		// staples are refreshed halfway through their validity; checking
		// as often as renewals (at most hourly) keeps them fresh
		OCSPCheckInterval: min(cfg.Renewal.CheckInterval.Std(), time.Hour),
		Logger:            logger.Named("certmagic"),
	})
	set, err := m.newACMESet(cfg, false)
	if err != nil {
		cancel()
		return nil, err
	}
	m.install(set)
	m.sched = newScheduler(m, cfg.Renewal)
	m.setNotifiers(cfg)
	// until the fleet's ticket keys are read from storage, a key of our own
	var own [32]byte
	if _, err := rand.Read(own[:]); err != nil {
		cancel()
		return nil, err
	}
	tc := &tls.Config{}
	tc.SetSessionTicketKeys([][32]byte{own})
	m.tickets.Store(tc)
	return m, nil
}

func (m *Manager) newFamily(set *acmeSet, keyType string, spec challengeSpec) (*family, error) {
	cfg, roots := set.cfg, set.roots
	f := &family{keyType: keyType, ecdsa: !config.IsRSA(keyType), onDemand: spec.onDemand}
	f.cfg = certmagic.New(m.cache, certmagic.Config{
		RenewalWindowRatio: cfg.Renewal.Ratio,
		KeySource:          keyGenerator(keyType),
		Storage:            newFamilyStorage(m.storage, keyType),
		Logger:             m.logger.Named("certmagic").With(zap.String("key_type", keyType)),
		OnEvent:            m.eventHandler(f),
		ShouldEmitFunc:     wantEvent,
		CertSelection:      selector{},
	})
	if spec.onDemand {
		f.cfg.OnDemand = &certmagic.OnDemandConfig{DecisionFunc: m.onDemandDecision}
	}
	if set.local != nil {
		f.cfg.Issuers = []certmagic.Issuer{set.local}
		return f, nil
	}
	var solver acmez.Solver
	if slices.Contains(spec.challenges, "dns-01") {
		var err error
		solver, err = dnsSolver(spec.dns, m.logger.Named("dns").With(zap.String("key_type", keyType)))
		if err != nil {
			return nil, err
		}
	}
	// the CA first, then each fallback CA in order; certmagic tries the
	// next issuer when one fails, and each CA keeps its own account.
	// (certmagic.New filled in its default issuer: replace it.)
	f.cfg.Issuers = nil
	for _, ca := range append([]string{cfg.ACME.CA}, cfg.ACME.FallbackCA...) {
		iss := m.newACMEIssuer(cfg, f, ca, keyType, roots, spec)
		if solver != nil {
			iss.DNS01Solver = solver
		}
		f.issuers = append(f.issuers, iss)
		f.cfg.Issuers = append(f.cfg.Issuers, iss)
	}
	f.acme = f.issuers[0]
	return f, nil
}

func (m *Manager) newACMEIssuer(cfg *config.Config, f *family, ca, keyType string, roots *x509.CertPool, spec challengeSpec) *certmagic.ACMEIssuer {
	httpHost, httpPort := splitListen(cfg.Listen.HTTP, 80)
	_, tlsPort := splitListen(cfg.Listen.HTTPS, 443)
	accountKeyType := cfg.ACME.AccountKeyType
	var eab *acme.EAB
	if cfg.ACME.EABKeyID != "" {
		eab = &acme.EAB{KeyID: cfg.ACME.EABKeyID, MACKey: cfg.ACME.EABHMAC}
	}
	iss := certmagic.NewACMEIssuer(f.cfg, certmagic.ACMEIssuer{
		CA:                      ca,
		Email:                   cfg.ACME.Email,
		Agreed:                  cfg.ACME.AgreeTOS,
		Profile:                 cfg.ACME.Profile,
		TrustedRoots:            roots,
		DisableHTTPChallenge:    !slices.Contains(spec.challenges, "http-01") || cfg.Listen.HTTP == "",
		DisableTLSALPNChallenge: !slices.Contains(spec.challenges, "tls-alpn-01"),
		// Portico's own listeners answer challenges; pointing certmagic at
		// them makes its solver see the port in use and leave it to us.
		ListenHost:     httpHost,
		AltHTTPPort:    httpPort,
		AltTLSALPNPort: tlsPort,
		Logger:         m.logger.Named("acme").With(zap.String("key_type", keyType), zap.String("ca", ca)),
		NewAccountFunc: func(ctx context.Context, iss *certmagic.ACMEIssuer, acct acme.Account) (acme.Account, error) {
			// certmagic always makes P-256 account keys; the policy lets
			// the operator choose, and the account key is never a
			// certificate key because it is made here, apart.
			key, err := generateKey(accountKeyType)
			if err != nil {
				return acct, err
			}
			acct.PrivateKey = key
			// the external account binding goes to the CAs whose
			// directory asks for one, not to every CA in the list
			if eab != nil {
				if dir, err := readDirectory(ctx, iss.CA, roots); err == nil && dir.Meta.ExternalAccountRequired {
					iss.ExternalAccount = eab
				}
			}
			return acct, nil
		},
	})
	if !watchAuthorizations(iss, m.logger.Named("acme").With(zap.String("ca", ca))) {
		m.logger.Warn("cannot watch authorizations (certmagic's ACMEIssuer changed): a CA that leaves a failed challenge pending is waited for until the order times out",
			zap.String("ca", ca))
	}
	return iss
}

// splitListen returns the host and port of a listen address, with def when
// the port cannot be read (the listener is then disabled anyway).
func splitListen(addr string, def int) (string, int) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", def
	}
	n, err := strconv.Atoi(port)
	if err != nil || n == 0 {
		return host, def
	}
	return host, n
}

func loadRoots(files []string) (*x509.CertPool, error) {
	if len(files) == 0 {
		return nil, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read ca_roots %s: %w", f, err)
		}
		if !pool.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("ca_roots %s: no PEM certificate", f)
		}
	}
	return pool, nil
}

func durations(ds []config.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Std()
	}
	return out
}

// configForCert tells the shared cache which family manages a certificate:
// the one whose key algorithm the leaf has.
func (m *Manager) configForCert(cert certmagic.Certificate) (*certmagic.Config, error) {
	if cert.Leaf != nil && len(cert.Names) > 0 {
		isEC := cert.Leaf.PublicKeyAlgorithm == x509.ECDSA
		for _, f := range m.familiesFor(cert.Names[0]) {
			if f.ecdsa == isEC {
				return f.cfg, nil
			}
		}
	}
	return nil, fmt.Errorf("no key type configured for certificate %v", cert.Names)
}

// Start runs the renewal scheduler and certmagic's maintenance until Stop.
// With the local CA it also makes sure the root exists and logs where it is.
func (m *Manager) Start() {
	if p, ok := m.storage.(pinger); ok {
		ctx, cancel := context.WithTimeout(m.ctx, 3*time.Second)
		if err := p.Ping(ctx); err != nil {
			m.logger.Error("storage unreachable: serving only what is cached; certificates will load and orders resume when it answers",
				zap.String("storage", fmt.Sprint(m.storage)), zap.Error(err))
		} else {
			m.logger.Info("storage reachable", zap.String("storage", fmt.Sprint(m.storage)))
		}
		cancel()
	}
	m.mu.RLock()
	local, acmeDefined := m.local, m.acmeCfg.ACMEDefined
	m.mu.RUnlock()
	if local != nil {
		if _, err := local.Root(m.ctx); err != nil {
			m.logger.Error("local CA root unavailable", zap.Error(err))
		} else if fs, ok := m.storage.(*certmagic.FileStorage); ok {
			m.logger.Info("local CA root: trust this certificate in clients",
				zap.String("root_cert", fs.Filename(localCARootCert)))
		} else {
			m.logger.Info("local CA root is in storage; export it with `portico certs -root`",
				zap.String("storage_key", localCARootCert))
		}
	} else if acmeDefined {
		go m.logTermsOfService()
	}
	go m.refreshTicketKeys(m.ctx)
	m.sched.start(m.ctx)
}

// Stop ends background work and waits for it, letting orders in flight
// finish (for up to 15 s) so nothing the CA signed is lost.
func (m *Manager) Stop() {
	m.sched.drain(15 * time.Second)
	m.cancel()
	m.sched.wait()
	m.cache.Stop()
	nctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	m.closeNotifiers(nctx)
	cancel()
	if c, ok := m.storage.(closer); ok {
		c.Close()
	}
}

// LocalRootPEM returns the local CA's root certificate, when ca = "local".
func (m *Manager) LocalRootPEM(ctx context.Context) ([]byte, error) {
	m.mu.RLock()
	local := m.local
	m.mu.RUnlock()
	if local == nil {
		return nil, errors.New("the local CA is not in use (ca is not \"local\")")
	}
	return local.RootPEM(ctx)
}

// Apply makes the managed names those of cfg's sites: new names are loaded
// from storage at once (so a restart serves what storage holds even with the
// CA down) and ordered in the background when storage has none; removed names
// stop being managed and leave the cache. A changed [acme] is applied as a
// whole (see reconfigure.go).
//
// When a site cannot be set up (its challenge solver or DNS provider cannot
// be built), Apply changes nothing and says which site: a reload that would
// leave names silently unmanaged is refused, and the running config stays.
func (m *Manager) Apply(ctx context.Context, cfg *config.Config) error {
	set, err := m.prepare(cfg)
	if err != nil {
		return fmt.Errorf("certificates cannot be set up: %w", err)
	}
	if set != nil {
		m.install(set)
	}
	m.setNotifiers(cfg)
	sni := cfg.Listen.DefaultSNI
	m.defaultSNI.Store(&sni)
	covered := m.applyStatic(ctx, cfg.Certificates)
	sanAdded := m.applySAN(ctx, m.sanGroupsOf(cfg, covered))
	want := map[string]struct{}{}
	vars := map[string]*variant{}
	for _, s := range cfg.Sites {
		if s.SharedCertificate() {
			continue // one certificate for all its hosts: see san.go
		}
		v, err := m.variantFor(siteSpec(cfg, s))
		if err != nil {
			m.logger.Error("cannot set up the site's challenges; its names are not managed", zap.Strings("hosts", s.Hosts), zap.Error(err))
			continue
		}
		for _, h := range s.Hosts {
			if coveredBy(covered, h) {
				continue // served from the operator's [[certificate]]
			}
			want[h] = struct{}{}
			vars[h] = v
		}
	}
	m.setOnDemand(cfg)
	m.mu.Lock()
	var retired []string // on-demand names now in a shared or an operator's certificate
	for n := range m.odNames {
		if _, configured := want[n]; configured {
			delete(m.odNames, n) // now in the config
			continue
		}
		if m.sanCoversLocked(n) || coveredBy(covered, n) {
			delete(m.odNames, n)
			retired = append(retired, n)
			continue
		}
		vars[n] = m.nameVar[n]
		if od := m.od.Load(); od != nil {
			vars[n] = od.v // (rebuilt when [acme] changed)
		}
	}
	m.nameVar = vars
	var added, removed []string
	for n := range want {
		if _, ok := m.names[n]; !ok {
			added = append(added, n)
		}
	}
	for n := range m.names {
		if _, ok := want[n]; !ok {
			removed = append(removed, n)
		}
	}
	// pending before managed: a handshake for a new name loads it if the
	// bulk load below has not yet
	m.loader.forget(removed)
	m.loader.add(added)
	m.names = want
	m.mu.Unlock()

	m.retireOnDemand(retired)
	if len(removed) > 0 {
		subjects := make([]certmagic.SubjectIssuer, len(removed))
		for i, n := range removed {
			subjects[i] = certmagic.SubjectIssuer{Subject: n}
		}
		m.cache.RemoveManaged(subjects)
		for _, n := range removed {
			m.index.set(n, nil)
		}
		m.logger.Info("names no longer managed", zap.Strings("names", removed))
	}
	added = append(added, m.loadOnDemandNames(ctx)...)
	if len(added) > 0 {
		slices.Sort(added)
		start := time.Now()
		m.logger.Info("loading stored certificates; until a name is loaded, its first handshake loads it",
			zap.Int("names", len(added)), zap.Int("workers", m.loader.workers()))
		m.loader.loadAll(ctx, added)
		m.refresh(added...)
		m.logger.Info("names managed", zap.Strings("names", added), zap.Duration("load_took", time.Since(start)))
	}
	// a pass now: new names (shared certificates' too: sanAdded), and new
	// key types or CA settings, are ordered
	_ = sanAdded
	m.sched.kick()
	return nil
}

// managed reports whether name is in the config.
func (m *Manager) managed(name string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, ok := m.names[name]
	return ok || m.odNames[name]
}

// managedNames lists the configured and the on-demand names.
func (m *Manager) managedNames() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]string, 0, len(m.names)+len(m.odNames))
	for n := range m.names {
		out = append(out, n)
	}
	for n := range m.odNames {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// GetCertificate serves the certificate for a handshake: ECDSA when the
// client supports it, RSA otherwise. The common case is answered from the
// index without allocating; ACME tls-alpn-01 handshakes and names the index
// does not hold go to certmagic, which answers challenges from shared storage
// (so any instance of a fleet can answer the CA).
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if hello.ServerName == "" {
		// clients without SNI get the default_sni certificate, or a
		// handshake error: never some other site's certificate
		sni := m.defaultSNI.Load()
		if sni == nil || *sni == "" {
			return nil, errNoSNI
		}
		h := *hello
		h.ServerName = *sni
		hello = &h
	}
	if name := hello.ServerName; !isACMEHello(hello) {
		if hasUpper(name) {
			name = strings.ToLower(name)
		}
		if p := m.index.get(name); p != nil {
			if c, ok := p.choose(hello, time.Now()); ok {
				return c, nil
			}
		}
		if c, handled, err := m.onDemandCertificate(hello); handled {
			return c, err
		}
		if !m.mayHold(name) {
			// a name Portico does not serve: refuse at once. certmagic's
			// lookup would hand every cached certificate to the selector
			// (time proportional to the cache, under its lock), which a
			// flood of random server names could use to load the server.
			return nil, errNoCertificate
		}
		// a managed name whose stored certificates the start-up (or
		// reload) has not loaded yet: load them now
		if m.loader.loadForHandshake(hello, name) {
			if p := m.index.get(name); p != nil {
				if c, ok := p.choose(hello, time.Now()); ok {
					return c, nil
				}
			}
		}
		c, err := m.families[0].cfg.GetCertificate(hello)
		if err != nil {
			if certificate, ok := m.configuredAs(name); ok {
				return nil, m.refuseNotYet(name, certificate)
			}
		}
		return c, err
	}
	return m.defaultFamilies()[0].cfg.GetCertificate(hello)
}

// mayHold reports whether name is one Portico serves: managed (exactly or by
// a managed wildcard), covered by an operator certificate, or in a shared
// certificate.
func (m *Manager) mayHold(name string) bool {
	if m.managed(name) || m.staticCovers(name) || m.sanGroupFor(name) != nil {
		return true
	}
	if w, ok := config.WildcardFor(name); ok {
		return m.managed(w) || m.sanGroupFor(w) != nil
	}
	return false
}

// errNoSNI fails handshakes without SNI when no default_sni is configured.
var errNoSNI = errors.New("the client sent no server name (SNI) and [listen] default_sni is not set")

func isACMEHello(hello *tls.ClientHelloInfo) bool {
	return len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == "acme-tls/1"
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return true
		}
	}
	return false
}

// refresh mirrors certmagic's cache into the handshake index for names.
func (m *Manager) refresh(names ...string) {
	for _, n := range names {
		m.index.set(n, pairFromCache(m.cache, n))
	}
}

// HTTPChallengeHandler answers ACME http-01 requests (from shared storage
// when another instance started the challenge) and passes the rest to next.
func (m *Manager) HTTPChallengeHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := r.URL.Query().Get("portico_host"); h != "" && strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") &&
			config.CheckHost(strings.ToLower(h)) == nil {
			// redirected here by a frontend's validation_redirect: answer
			// for the name being validated (from shared storage)
			r = r.Clone(r.Context())
			r.Host = strings.ToLower(h)
		}
		if strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
			// any variant may have started the challenge (sites can
			// override [acme] challenges)
			for _, iss := range m.httpIssuers() {
				if iss.HandleHTTPChallenge(w, r) {
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// cached returns the cached certificate of a family for name, if any.
func (m *Manager) cached(f *family, name string) (certmagic.Certificate, bool) {
	var best certmagic.Certificate
	found := false
	for _, c := range m.cache.AllMatchingCertificates(name) {
		if c.Leaf == nil || (c.Leaf.PublicKeyAlgorithm == x509.ECDSA) != f.ecdsa || !slices.Contains(c.Names, name) {
			continue
		}
		if !found || c.Leaf.NotAfter.After(best.Leaf.NotAfter) {
			best, found = c, true
		}
	}
	return best, found
}

// logTermsOfService reads the CA's directory and logs its terms of service
// URL, which agree_tos = true agrees to. The URL comes from the CA, never
// from Portico's code.
func (m *Manager) logTermsOfService() {
	for _, f := range m.defaultFamilies() {
		if f.acme == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(m.ctx, 30*time.Second)
		defer cancel()
		tos, err := termsOfService(ctx, f.acme.CA, f.acme.TrustedRoots)
		if err != nil {
			m.logger.Warn("could not read the CA's directory; will keep trying when ordering", zap.String("ca", f.acme.CA), zap.Error(err))
			return
		}
		m.logger.Info("ACME CA terms of service agreed to by agree_tos = true", zap.String("ca", f.acme.CA), zap.String("terms_of_service", tos))
		return
	}
}
