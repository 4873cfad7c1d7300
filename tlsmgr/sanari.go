package tlsmgr

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3/acme"
	"go.uber.org/zap"
)

// certmagic keeps the CA's renewal information (ARI, RFC 9773) for the
// certificates it manages and Portico's scheduler reads it from their
// metadata. Shared (SAN) certificates are Portico's own, so Portico fetches
// their ARI itself, through the same ACME issuer certmagic would use, and
// keeps it in storage next to the certificate: every instance of a fleet
// then renews at the one time selected in the window, honours the CA's
// Retry-After, and a restart does not fetch again.
//
// One thing certmagic does that this cannot: its renewal orders name the
// certificate they replace (ARI's "replaces"), which makes a renewal inside
// the window exempt from Let's Encrypt's rate limits. It sets that through
// an unexported context key that only its own renewals carry, so a shared
// certificate's renewal is an ordinary order as far as rate limits go.

// sanARI is the stored renewal information of one shared certificate and
// key type.
type sanARI struct {
	Serial string           `json:"serial"` // the certificate it describes, in hex
	Info   acme.RenewalInfo `json:"renewal_info"`
	// NextCheck is when to ask the CA again: its Retry-After, but at least
	// twice a day (as the integration guide asks), and an hour after a
	// failed fetch.
	NextCheck time.Time `json:"next_check"`
}

const (
	// ariMaxAge is the longest the CA's renewal information is trusted
	// without asking again.
	ariMaxAge = 12 * time.Hour
	// ariRetryAfterError is how long a failed fetch waits before the next.
	ariRetryAfterError = time.Hour
	// ariFetchTimeout bounds one fetch (acmez retries within it).
	ariFetchTimeout = 30 * time.Second
)

func sanARIKey(id, keyType string) string {
	return "portico/san/" + keyType + "/" + id + ".ari.json"
}

func serialHex(cert certmagic.Certificate) string {
	if cert.Leaf == nil || cert.Leaf.SerialNumber == nil {
		return ""
	}
	return cert.Leaf.SerialNumber.Text(16)
}

// loadSANARI reads the stored renewal information of a group's certificate
// for a family; ok is false when storage has none for this certificate.
func (m *Manager) loadSANARI(ctx context.Context, id string, f *family, cert certmagic.Certificate) (sanARI, bool) {
	data, err := m.storage.Load(ctx, sanARIKey(id, f.keyType))
	if err != nil {
		return sanARI{}, false
	}
	var rec sanARI
	if json.Unmarshal(data, &rec) != nil || rec.Serial != serialHex(cert) {
		return sanARI{}, false // another (older) certificate's, or damaged
	}
	return rec, true
}

// storedSANARI is the renewal time the CA selected for a group's
// certificate, if storage holds its renewal information.
func (m *Manager) storedSANARI(ctx context.Context, id string, f *family, cert certmagic.Certificate) (time.Time, bool) {
	rec, ok := m.loadSANARI(ctx, id, f, cert)
	if !ok || !rec.Info.HasWindow() || rec.Info.SelectedTime.IsZero() {
		return time.Time{}, false
	}
	return rec.Info.SelectedTime, true
}

// sanARIStale reports whether a group's certificate needs its renewal
// information fetched: storage has none for it, or its NextCheck passed.
func (m *Manager) sanARIStale(ctx context.Context, g *sanGroup, f *family, cert certmagic.Certificate, now time.Time) bool {
	if cert.Leaf == nil || m.ariGetter(f, "") == nil {
		return false // the local CA has no ARI
	}
	rec, ok := m.loadSANARI(ctx, g.id, f, cert)
	return !ok || !now.Before(rec.NextCheck)
}

// ariGetter returns the family's issuer that can fetch renewal information
// for certificates issued by issuerKey (any ACME issuer when empty).
func (m *Manager) ariGetter(f *family, issuerKey string) certmagic.RenewalInfoGetter {
	for _, iss := range f.cfg.Issuers {
		if g, ok := iss.(certmagic.RenewalInfoGetter); ok && (issuerKey == "" || iss.IssuerKey() == issuerKey) {
			return g
		}
	}
	return nil
}

// refreshSANARI fetches a group's renewal information from the CA that
// issued its certificate and stores it. One instance of a fleet fetches at
// a time (under a storage lock that others do not wait for); the selected
// time is kept while the CA's window stays the same, as certmagic does, so
// the renewal does not wander within the window at every fetch. It reports
// whether the selected renewal time changed.
func (m *Manager) refreshSANARI(ctx context.Context, g *sanGroup, f *family, cert certmagic.Certificate) (bool, error) {
	lock := "portico_san_ari_" + f.keyType + "_" + g.id
	if tl, ok := m.storage.(certmagic.TryLocker); ok {
		got, err := tl.TryLock(ctx, lock)
		if err != nil {
			return false, fmt.Errorf("lock %s: %w", lock, err)
		}
		if !got {
			return false, nil // a peer is at it; its result is read at the next pass
		}
		defer m.storage.Unlock(context.WithoutCancel(ctx), lock)
	}
	now := time.Now()
	old, had := m.loadSANARI(ctx, g.id, f, cert)
	if had && now.Before(old.NextCheck) {
		return false, nil // a peer refreshed it meanwhile
	}
	issuerKey, err := m.sanIssuer(ctx, g, f)
	if err != nil {
		return false, err
	}
	getter := m.ariGetter(f, issuerKey)
	if getter == nil {
		return false, fmt.Errorf("renewal information for %s: its issuer %s is no longer configured", g.label(), issuerKey)
	}
	fctx, cancel := context.WithTimeout(ctx, ariFetchTimeout)
	info, ferr := getter.GetRenewalInfo(fctx, cert)
	cancel()
	rec := newSANARI(serialHex(cert), info, now)
	switch {
	case ferr != nil:
		rec.Info, rec.NextCheck = old.Info, now.Add(ariRetryAfterError)
		if errors.Is(ferr, acme.ErrUnsupported) {
			rec.NextCheck = now.Add(ariMaxAge) // the CA offers no ARI: the backstop alone decides
		}
	case had && info.SameWindow(old.Info) && !old.Info.SelectedTime.IsZero():
		rec.Info.SelectedTime = old.Info.SelectedTime
	}
	if err := m.saveSANARI(ctx, g, f, rec); err != nil {
		return false, err
	}
	if errors.Is(ferr, acme.ErrUnsupported) {
		return false, nil // nothing to warn about, twice a day
	}
	if ferr != nil {
		return false, fmt.Errorf("renewal information for %s from %s: %w", g.label(), issuerKey, ferr)
	}
	changed := !rec.Info.SelectedTime.Equal(old.Info.SelectedTime)
	log := m.logger.Info
	if had && !info.SameWindow(old.Info) {
		log = m.logger.Warn // a moved window may mean trouble at the CA (a revocation, say)
	}
	log("renewal information (ARI) for shared certificate", zap.String("certificate", g.label()), zap.String("key_type", f.keyType),
		zap.Time("window_start", info.SuggestedWindow.Start), zap.Time("window_end", info.SuggestedWindow.End),
		zap.Time("selected_time", rec.Info.SelectedTime), zap.Time("next_check", rec.NextCheck),
		zap.String("explanation_url", info.ExplanationURL))
	return changed, nil
}

// newSANARI is the record of renewal information fetched at now: asked
// again at the CA's Retry-After, or after ariMaxAge if that is sooner.
func newSANARI(serial string, info acme.RenewalInfo, now time.Time) sanARI {
	rec := sanARI{Serial: serial, Info: info, NextCheck: now.Add(ariMaxAge)}
	if ra := info.RetryAfter; ra != nil && ra.Before(rec.NextCheck) {
		rec.NextCheck = *ra
	}
	return rec
}

func (m *Manager) saveSANARI(ctx context.Context, g *sanGroup, f *family, rec sanARI) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := m.storage.Store(ctx, sanARIKey(g.id, f.keyType), data); err != nil {
		return fmt.Errorf("store renewal information for %s: %w", g.label(), err)
	}
	return nil
}

// saveIssuedSANARI keeps the renewal information acmez fetched when it
// downloaded a new certificate (certmagic passes it on as the issued
// certificate's metadata), so the first due date already follows the CA's
// window without another request.
func (m *Manager) saveIssuedSANARI(ctx context.Context, g *sanGroup, f *family, issued *certmagic.IssuedCertificate, leaf *x509.Certificate) {
	chain, ok := issued.Metadata.(acme.Certificate)
	if !ok || chain.RenewalInfo == nil || !chain.RenewalInfo.HasWindow() {
		return // fetched at the next pass
	}
	rec := newSANARI(leaf.SerialNumber.Text(16), *chain.RenewalInfo, time.Now())
	if err := m.saveSANARI(ctx, g, f, rec); err != nil {
		m.logger.Warn("could not keep the new shared certificate's renewal information; it is fetched again at the next pass",
			zap.String("certificate", g.label()), zap.String("key_type", f.keyType), zap.Error(err))
	}
}

// sanIssuer reads which issuer a group's stored certificate came from.
func (m *Manager) sanIssuer(ctx context.Context, g *sanGroup, f *family) (string, error) {
	data, err := m.storage.Load(ctx, sanKey(g.id, f.keyType))
	if err != nil {
		return "", fmt.Errorf("read shared certificate %s: %w", g.label(), err)
	}
	var b sanBlob
	if err := json.Unmarshal(data, &b); err != nil {
		return "", fmt.Errorf("stored SAN certificate %s: %w", g.id, err)
	}
	return b.Issuer, nil
}
