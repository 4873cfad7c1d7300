package tlsmgr

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
)

// On-demand TLS: a handshake for a hostname not in the config asks the
// operator's ask endpoint whether the name may have a certificate, and only
// then orders one, under a fleet-wide cap on new orders per minute. The
// names it obtains are recorded in storage and then managed like configured
// ones (both key types, renewal, ledger); they are dropped when the ask
// endpoint stops allowing them.

// askCacheFor is how long an ask answer (yes or no) is reused: a burst of
// handshakes for one name makes one request.
const askCacheFor = 30 * time.Second

// errOnDemandRate vetoes on-demand orders beyond max_per_minute.
var errOnDemandRate = errors.New("on-demand order cap reached (max_per_minute); try again in a minute")

type onDemand struct {
	ask       string
	perMinute int
	client    *http.Client
	v         *variant

	mu      sync.Mutex
	answers map[string]askAnswer
}

type askAnswer struct {
	err error // nil: allowed
	at  time.Time
}

func odNameKey(name string) string {
	return "portico/ondemand/names/" + certmagic.StorageKeys.Safe(name)
}

const odRateKey = "portico/ondemand/rate.json"

// setOnDemand configures on-demand TLS from cfg (nil turns it off).
func (m *Manager) setOnDemand(cfg *config.Config) {
	if cfg.OnDemand == nil {
		m.od.Store(nil)
		return
	}
	spec := defaultSpec(cfg)
	spec.onDemand = true
	v, err := m.variantFor(spec)
	if err != nil {
		m.logger.Error("on-demand TLS is off: cannot set up its challenges", zap.Error(err))
		m.od.Store(nil)
		return
	}
	old := m.od.Load()
	od := &onDemand{ask: cfg.OnDemand.Ask, perMinute: cfg.OnDemand.MaxPerMinute, v: v,
		client: &http.Client{Timeout: 5 * time.Second}, answers: map[string]askAnswer{}}
	if old != nil && old.ask == od.ask {
		old.mu.Lock()
		for k, a := range old.answers {
			od.answers[k] = a
		}
		old.mu.Unlock()
	}
	m.od.Store(od)
}

// allowed asks the ask endpoint whether name may have a certificate.
func (od *onDemand) allowed(ctx context.Context, name string) error {
	od.mu.Lock()
	if a, ok := od.answers[name]; ok && time.Since(a.at) < askCacheFor {
		od.mu.Unlock()
		return a.err
	}
	od.mu.Unlock()
	err := od.askNow(ctx, name)
	od.mu.Lock()
	od.answers[name] = askAnswer{err: err, at: time.Now()}
	if len(od.answers) > 100_000 { // bound the cache under a flood of names
		for k, a := range od.answers {
			if time.Since(a.at) >= askCacheFor {
				delete(od.answers, k)
			}
		}
	}
	od.mu.Unlock()
	return err
}

func (od *onDemand) askNow(ctx context.Context, name string) error {
	u, err := url.Parse(od.ask)
	if err != nil {
		return fmt.Errorf("ask endpoint: %w", err)
	}
	q := u.Query()
	q.Set("domain", name)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := od.client.Do(req)
	if err != nil {
		return fmt.Errorf("ask endpoint unreachable, so %s is refused: %w", name, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("ask endpoint refused %s (HTTP %d)", name, resp.StatusCode)
	}
	return nil
}

// onDemandDecision is certmagic's DecisionFunc for the on-demand families.
func (m *Manager) onDemandDecision(ctx context.Context, name string) error {
	od := m.od.Load()
	if od == nil {
		return errors.New("on-demand TLS is not configured")
	}
	return od.allowed(ctx, name)
}

// takeOnDemandOrder counts one new on-demand order against the fleet-wide
// cap, under a storage lock so every instance shares one count.
func (m *Manager) takeOnDemandOrder(ctx context.Context, perMinute int) error {
	const lock = "portico_ondemand_rate"
	if err := m.storage.Lock(ctx, lock); err != nil {
		return fmt.Errorf("on-demand rate lock: %w", err)
	}
	defer m.storage.Unlock(context.WithoutCancel(ctx), lock)
	var w struct {
		Start time.Time `json:"start"`
		Count int       `json:"count"`
	}
	if data, err := m.storage.Load(ctx, odRateKey); err == nil {
		json.Unmarshal(data, &w)
	}
	now := time.Now()
	if now.Sub(w.Start) >= time.Minute {
		w.Start, w.Count = now, 0
	}
	if w.Count >= perMinute {
		return errOnDemandRate
	}
	w.Count++
	data, _ := json.Marshal(w)
	return m.storage.Store(ctx, odRateKey, data)
}

// addOnDemandName starts managing a name that got an on-demand certificate.
func (m *Manager) addOnDemandName(ctx context.Context, name string) {
	od := m.od.Load()
	if od == nil || m.managed(name) {
		return
	}
	m.mu.Lock()
	m.odNames[name] = true
	m.nameVar[name] = od.v
	m.mu.Unlock()
	if err := m.storage.Store(ctx, odNameKey(name), []byte(time.Now().UTC().Format(time.RFC3339))); err != nil {
		m.logger.Warn("could not record on-demand name", zap.String("name", name), zap.Error(err))
	}
	m.logger.Info("on-demand name managed", zap.String("name", name))
	m.sched.kick() // the other key type
}

// loadOnDemandNames restores the on-demand names recorded in storage.
func (m *Manager) loadOnDemandNames(ctx context.Context) []string {
	od := m.od.Load()
	if od == nil {
		return nil
	}
	keys, err := m.storage.List(ctx, "portico/ondemand/names", false)
	if err != nil {
		return nil
	}
	var names []string
	recorded := make([]string, 0, len(keys))
	for _, k := range keys {
		if name := k[strings.LastIndexByte(k, '/')+1:]; !m.staticCovers(name) {
			recorded = append(recorded, name)
		}
	}
	m.mu.Lock()
	for _, name := range recorded {
		if _, configured := m.names[name]; configured || m.odNames[name] || m.sanCoversLocked(name) {
			continue // (the record stays: if the config drops the name, it is on-demand again)
		}
		m.odNames[name] = true
		m.nameVar[name] = od.v
		names = append(names, name)
	}
	m.loader.add(names)
	m.mu.Unlock()
	return names
}

// retireOnDemand stops serving on-demand certificates for names the config
// now puts in a shared certificate or an operator's: they leave the cache,
// so the handshake index holds the configured certificate, and, no longer
// on-demand, the names are never asked about again.
func (m *Manager) retireOnDemand(names []string) {
	for _, n := range names {
		m.cache.RemoveManaged([]certmagic.SubjectIssuer{{Subject: n}})
		m.refresh(n)
		m.logger.Info("on-demand name now configured; its on-demand certificate is no longer served", zap.String("name", n))
	}
}

// recheckOnDemand drops on-demand names the ask endpoint no longer allows.
func (m *Manager) recheckOnDemand(ctx context.Context) {
	od := m.od.Load()
	m.mu.RLock()
	names := make([]string, 0, len(m.odNames))
	for n := range m.odNames {
		names = append(names, n)
	}
	m.mu.RUnlock()
	for _, n := range names {
		var reason error
		if od == nil {
			reason = errors.New("on-demand TLS was turned off")
		} else if err := od.allowed(ctx, n); err != nil && !strings.Contains(err.Error(), "unreachable") {
			reason = err // an unreachable endpoint is no reason to drop a name
		}
		if reason == nil {
			continue
		}
		m.mu.Lock()
		delete(m.odNames, n)
		delete(m.nameVar, n)
		m.mu.Unlock()
		m.cache.RemoveManaged([]certmagic.SubjectIssuer{{Subject: n}})
		m.index.set(n, nil)
		if err := m.storage.Delete(ctx, odNameKey(n)); err != nil {
			m.logger.Warn("could not forget on-demand name", zap.String("name", n), zap.Error(err))
		}
		m.logger.Info("on-demand name dropped", zap.String("name", n), zap.NamedError("reason", reason))
	}
}

// onDemandCertificate answers a handshake for a name not in the config:
// from the cache or storage, or by ordering one if the ask endpoint allows.
// The key type follows the client: ECDSA when it can use it.
func (m *Manager) onDemandCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, bool, error) {
	od := m.od.Load()
	if od == nil {
		return nil, false, nil
	}
	name := strings.ToLower(hello.ServerName)
	if m.mayHold(name) {
		// configured (per-host, wildcard, shared or operator
		// certificate) or already obtained on demand: never asked
		// about, even while its certificate is still being ordered
		return nil, false, nil
	}
	fams := od.v.families
	f := fams[0]
	for _, c := range fams {
		if c.ecdsa && supportsECDSAP256(hello) {
			f = c
		}
	}
	cert, err := f.cfg.GetCertificate(hello)
	return cert, true, err
}

func supportsECDSAP256(hello *tls.ClientHelloInfo) bool {
	p := certPair{ecdsaCurve: tls.CurveP256, ecdsaScheme: tls.ECDSAWithP256AndSHA256}
	return p.ecdsaOK(hello)
}

func (m *Manager) staticCovers(name string) bool {
	m.staticMu.Lock()
	defer m.staticMu.Unlock()
	return coveredBy(m.staticNames, name)
}
