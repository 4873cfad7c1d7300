package tlsmgr

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/tlsmgr/notify"
)

// errVetoed marks an attempt that the failure ledger did not allow yet. It is
// wrapped in certmagic.ErrNoRetry so that certmagic's own retry loop (which
// would otherwise hold the issuance lock and retry on its schedule for
// days) ends at once; Portico's scheduler retries on the guide's schedule.
var errVetoed = errors.New("not yet: the failure ledger schedules the next attempt later")

// errScheduled refuses renewals that certmagic's maintenance starts on its
// own: Portico's scheduler makes them, within the fleet's order slots.
var errScheduled = errors.New("renewal is scheduled by Portico")

type ctxKey int

// ctxOwnAttempt marks attempts started by Portico's scheduler, whose outcome
// the scheduler records itself.
const ctxOwnAttempt ctxKey = 1

type unitKey struct {
	name, keyType string
}

// scheduler decides when each certificate is obtained or renewed: on Apply,
// and every check interval (started at a random offset, not on the minute).
// certmagic's maintenance loop still runs (it refreshes ARI, reloads
// certificates that another instance renewed, and staples OCSP); both go
// through the same failure ledger and the same storage lock, so they never
// issue twice.
type scheduler struct {
	m        *Manager
	interval time.Duration
	ratio    float64
	kickCh   chan struct{}
	now      func() time.Time

	mu       sync.Mutex
	inflight map[unitKey]bool
	ariCache map[unitKey]ariEntry
	wg       sync.WaitGroup // the loop and every attempt
	attempts sync.WaitGroup // attempts only
	stopping atomic.Bool
}

func newScheduler(m *Manager, r config.Renewal) *scheduler {
	return &scheduler{
		m:        m,
		interval: r.CheckInterval.Std(),
		ratio:    r.Ratio,
		kickCh:   make(chan struct{}, 1),
		now:      time.Now,
		inflight: map[unitKey]bool{},
		ariCache: map[unitKey]ariEntry{},
	}
}

// kick asks for a pass now (after Apply or an operator's retry).
func (s *scheduler) kick() {
	select {
	case s.kickCh <- struct{}{}:
	default:
	}
}

func (s *scheduler) start(ctx context.Context) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		// the first periodic pass at a random offset, so a fleet started at
		// once does not check (and order) in lockstep
		timer := time.NewTimer(time.Duration(rand.Int64N(int64(s.interval) + 1)))
		defer timer.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
				timer.Reset(s.interval)
			case <-s.kickCh:
			}
			s.pass(ctx)
		}
	}()
}

func (s *scheduler) wait() { s.wg.Wait() }

// ordering reports whether an attempt for unit (a name, or "san:<id>") is in
// flight for any key type.
func (s *scheduler) ordering(unit string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.inflight {
		if k.name == unit {
			return true
		}
	}
	return false
}

// drain starts no new attempts and waits, at most until limit, for those in
// flight: an order the CA has already signed must reach storage, or a
// restart would order it again.
func (s *scheduler) drain(limit time.Duration) {
	s.mu.Lock()
	s.stopping.Store(true)
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.attempts.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(limit):
	}
}

// pass looks at every managed certificate once and starts the attempts that
// are due and allowed.
func (s *scheduler) pass(ctx context.Context) {
	s.m.reloadChangedStatic(ctx)
	s.m.recheckOnDemand(ctx)
	s.m.refreshTicketKeys(ctx)
	names := s.m.managedNames()
	// certmagic may have replaced certificates or staples since the last
	// pass (maintenance renewals, OCSP refreshes): mirror them
	s.m.refresh(names...)
	for _, name := range names {
		for _, f := range s.m.familiesFor(name) {
			s.consider(ctx, name, f)
		}
	}
	for _, g := range s.m.sanGroupList() {
		s.m.refresh(g.names...)
		for _, f := range g.v.families {
			s.considerSAN(ctx, g, f)
		}
	}
}

// start runs fn as an attempt for key unless one is in flight or the
// scheduler is stopping.
func (s *scheduler) startAttempt(key unitKey, fn func()) {
	s.mu.Lock()
	if s.inflight[key] || s.stopping.Load() {
		s.mu.Unlock()
		return
	}
	s.inflight[key] = true
	s.wg.Add(1)
	s.attempts.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer s.attempts.Done()
		defer func() {
			s.mu.Lock()
			delete(s.inflight, key)
			s.mu.Unlock()
		}()
		fn()
	}()
}

// considerSAN is consider for a shared certificate.
func (s *scheduler) considerSAN(ctx context.Context, g *sanGroup, f *family) {
	cert, have := s.m.sanCached(g, f)
	if !have {
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := s.m.loadSAN(lctx, g, f)
		cancel()
		if err == nil && c.Leaf != nil {
			cert, have = c, true
		}
	}
	if have {
		s.m.checkExpiry(ctx, f, g.label(), cert, s.now())
		s.refreshSANARI(ctx, g, f, cert)
		if !s.due(ctx, f, "san:"+g.id, cert) {
			return
		}
	}
	if ok, _ := s.m.ledger.allowed(ctx, g.label(), f.keyType); !ok {
		return
	}
	s.startAttempt(unitKey{"san:" + g.id, f.keyType}, func() {
		release, err := s.m.slots.acquire(ctx)
		if err != nil {
			return
		}
		defer release()
		err = s.m.obtainSAN(ctx, g, f, have)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if !errors.Is(err, errVetoed) {
				s.m.countOrder(f.keyType, have, false)
				s.m.recordFailure(ctx, g.label(), f, err)
			}
			return
		}
		s.m.countOrder(f.keyType, have, true)
		s.succeeded(ctx, g.label(), f)
	})
}

// refreshSANARI fetches a shared certificate's renewal information (ARI)
// when the stored one is stale, apart from the pass, so that a slow CA holds
// up no other certificate. When the CA's selected time changes, the cached
// due date is dropped and a pass started: a window that opened now is acted
// on at once, not one check interval later.
func (s *scheduler) refreshSANARI(ctx context.Context, g *sanGroup, f *family, cert certmagic.Certificate) {
	if !s.m.sanARIStale(ctx, g, f, cert, s.now()) {
		return
	}
	s.startAttempt(unitKey{"ari:" + g.id, f.keyType}, func() {
		changed, err := s.m.refreshSANARI(ctx, g, f, cert)
		if err != nil && ctx.Err() == nil {
			s.m.logger.Warn("could not read the CA's renewal information (ARI); the backstop renewal time applies meanwhile",
				zap.String("certificate", g.label()), zap.String("key_type", f.keyType), zap.Error(err))
		}
		if changed {
			s.mu.Lock()
			delete(s.ariCache, unitKey{"san:" + g.id, f.keyType})
			s.mu.Unlock()
			s.kick()
		}
	})
}

// succeeded clears a certificate's failures and tells the operator it
// recovered, if it had failed.
func (s *scheduler) succeeded(ctx context.Context, name string, f *family) {
	if e, failed, _ := s.m.ledger.get(ctx, name, f.keyType); failed {
		s.m.notify(notify.Event{Kind: notify.KindRecovered, Name: name, KeyType: f.keyType, CA: e.CA, Failures: e.Failures,
			Message: fmt.Sprintf("certificate for %s (%s) obtained after %d failed attempts", name, f.keyType, e.Failures)})
	}
	if err := s.m.ledger.success(ctx, name, f.keyType); err != nil {
		s.m.logger.Warn("could not clear failure ledger", zap.String("name", name), zap.Error(err))
	}
}

func (s *scheduler) consider(ctx context.Context, name string, f *family) {
	key := unitKey{name, f.keyType}
	s.mu.Lock()
	busy := s.inflight[key]
	s.mu.Unlock()
	if busy {
		return
	}
	cert, have := s.m.cached(f, name)
	if !have && s.m.loader.load(ctx, name) {
		// still pending from Apply: loaded now (or by whoever was at it)
		cert, have = s.m.cached(f, name)
	} else if !have {
		// maybe another instance (or an earlier load that failed) has it
		lctx, cancel := context.WithTimeout(ctx, loadTimeout)
		c, err := f.cfg.CacheManagedCertificate(withSiteReads(lctx), name)
		cancel()
		if err == nil {
			cert, have = c, true
		}
	}
	if have {
		s.m.checkExpiry(ctx, f, name, cert, s.now())
		if !s.due(ctx, f, name, cert) {
			return
		}
	}
	if ok, _ := s.m.ledger.allowed(ctx, name, f.keyType); !ok {
		return
	}
	s.startAttempt(key, func() { s.attempt(ctx, name, f, have) })
}

// due reports whether a cached certificate should be renewed now.
func (s *scheduler) due(ctx context.Context, f *family, name string, cert certmagic.Certificate) bool {
	if cert.Leaf == nil {
		return false
	}
	return !s.now().Before(s.dueAt(ctx, f, name, cert))
}

// dueAt is when a certificate should be renewed: the time selected in the
// CA's ARI window when it offered one, but never later than the backstop of
// ratio of its lifetime left (half for certificates shorter than 10 days),
// which is moved earlier by a per-certificate spread so that certificates
// issued together are not renewed together.
func (s *scheduler) dueAt(ctx context.Context, f *family, name string, cert certmagic.Certificate) time.Time {
	due := renewAt(cert.Leaf.NotBefore, cert.Leaf.NotAfter, s.ratio, spreadKey(cert.Names, f.keyType))
	if ari, ok := s.ari(ctx, f, name, cert); ok && ari.Before(due) {
		due = ari
	}
	return due
}

// ariEntry caches the ARI-selected renewal time of one certificate: it is
// read from the certificate's metadata in storage (where certmagic keeps it
// fresh, following the CA's Retry-After; for shared certificates, from the
// record refreshSANARI keeps) at most every ariRecheck.
type ariEntry struct {
	hash     string
	selected time.Time
	ok       bool
	read     time.Time
}

const ariRecheck = 30 * time.Minute

func (s *scheduler) ari(ctx context.Context, f *family, name string, cert certmagic.Certificate) (time.Time, bool) {
	key := unitKey{name, f.keyType}
	now := time.Now()
	s.mu.Lock()
	e, cached := s.ariCache[key]
	s.mu.Unlock()
	if cached && e.hash == cert.Hash() && now.Sub(e.read) < ariRecheck {
		return e.selected, e.ok
	}
	var sel time.Time
	var ok bool
	if id, shared := strings.CutPrefix(name, "san:"); shared {
		sel, ok = s.m.storedSANARI(ctx, id, f, cert)
	} else {
		sel, ok = s.m.storedARI(ctx, f, name)
	}
	s.mu.Lock()
	s.ariCache[key] = ariEntry{hash: cert.Hash(), selected: sel, ok: ok, read: now}
	s.mu.Unlock()
	return sel, ok
}

// renewAt is when a certificate is due without ARI. The spread moves it
// earlier by up to a tenth of the renewal window, by a stable hash of the
// certificate, so a batch issued on one day renews over several days.
func renewAt(notBefore, notAfter time.Time, ratio float64, spread uint64) time.Time {
	life := notAfter.Sub(notBefore)
	if life < 10*24*time.Hour {
		ratio = max(ratio, 0.5)
	}
	left := time.Duration(float64(life) * ratio)
	window := left / 10
	var early time.Duration
	if window > 0 {
		early = time.Duration(spread % uint64(window))
	}
	return notAfter.Add(-left - early)
}

func spreadKey(names []string, keyType string) uint64 {
	h := fnv.New64a()
	for _, n := range names {
		h.Write([]byte(n))
	}
	h.Write([]byte(keyType))
	return h.Sum64()
}

// renew replaces a due certificate unless another instance of the fleet
// already did. certmagic's own "already renewed?" check uses its ratio, not
// Portico's due date, so Portico takes its own lock, compares storage with
// the cache, and forces the renewal only when storage has nothing newer.
func (s *scheduler) renew(ctx context.Context, name string, f *family) error {
	lock := "portico_renew_" + f.keyType + "_" + certmagic.StorageKeys.Safe(name)
	if err := s.m.storage.Lock(ctx, lock); err != nil {
		return fmt.Errorf("lock %s: %w", lock, err)
	}
	defer s.m.storage.Unlock(context.WithoutCancel(ctx), lock)
	cached, _ := s.m.cached(f, name)
	if stored, err := s.m.storedLeaf(ctx, f, name); err == nil && cached.Leaf != nil &&
		stored.SerialNumber.Cmp(cached.Leaf.SerialNumber) != 0 && stored.NotAfter.After(cached.Leaf.NotAfter) {
		return nil // renewed elsewhere: attempt() loads it
	}
	return f.cfg.RenewCertSync(ctx, name, true)
}

// attempt obtains or renews one certificate and records the outcome.
func (s *scheduler) attempt(ctx context.Context, name string, f *family, renew bool) {
	log := s.m.logger.With(zap.String("name", name), zap.String("key_type", f.keyType))
	release, err := s.m.slots.acquire(ctx)
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("no order slot; will try again at the next pass", zap.Error(err))
		}
		return
	}
	defer release()
	actx := context.WithValue(ctx, ctxOwnAttempt, true)
	if renew {
		err = s.renew(actx, name, f)
	} else {
		err = f.cfg.ObtainCertSync(actx, name)
	}
	if ctx.Err() != nil {
		return
	}
	switch {
	case errors.Is(err, errVetoed):
		return
	case err != nil:
		s.m.countOrder(f.keyType, renew, false)
		s.m.recordFailure(ctx, name, f, err)
		return
	}
	s.m.countOrder(f.keyType, renew, true)
	old, hadOld := s.m.cached(f, name)
	fresh, cerr := f.cfg.CacheManagedCertificate(ctx, name)
	if cerr != nil {
		log.Error("certificate obtained but could not be loaded from storage", zap.Error(cerr))
		return
	}
	if hadOld && old.Hash() != fresh.Hash() {
		s.m.cache.Remove([]string{old.Hash()})
	}
	s.m.refresh(name)
	s.succeeded(ctx, name, f)
	log.Info("certificate ready", zap.Time("not_after", fresh.Leaf.NotAfter), zap.Bool("renewal", renew))
}
