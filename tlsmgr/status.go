package tlsmgr

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/caddyserver/certmagic"
	"golang.org/x/crypto/ocsp"
)

// CertStatus is one certificate as the admin API and `portico certs` show it.
type CertStatus struct {
	Name string `json:"name"`
	// Names lists every name of a shared (SAN) certificate.
	Names     []string   `json:"names,omitempty"`
	KeyType   string     `json:"key_type"`
	Issuer    string     `json:"issuer"`
	NotBefore *time.Time `json:"not_before"`
	NotAfter  *time.Time `json:"not_after"`
	RenewAt   *time.Time `json:"renew_at"`
	Failures  int        `json:"failures"`
	LastError string     `json:"last_error"`
	NextRetry *time.Time `json:"next_retry"`
	// OCSP is the stapled response's status: "good", "revoked", "unknown",
	// or "" when the certificate names no responder.
	OCSP string `json:"ocsp"`
}

// ErrNotManaged is returned for a name Portico does not manage.
var ErrNotManaged = errors.New("not a managed name")

// Status lists every managed certificate (one per name and key type), with
// its failure ledger. Names without a certificate yet are listed too.
func (m *Manager) Status(ctx context.Context) []CertStatus {
	return m.status(ctx, true)
}

// Expiries is Status without what a metrics scrape does not export: the
// renewal time (which may read ARI metadata from storage: with 100,000
// names, seconds), issuer and OCSP status. It reads no storage but the
// failure ledger.
func (m *Manager) Expiries(ctx context.Context) []CertStatus {
	return m.status(ctx, false)
}

func (m *Manager) status(ctx context.Context, full bool) []CertStatus {
	var out []CertStatus
	var kts []string
	for _, f := range m.defaultFamilies() {
		kts = append(kts, f.keyType)
	}
	failing := m.ledger.entries(ctx, kts)
	for _, name := range m.managedNames() {
		for _, f := range m.familiesFor(name) {
			c, ok := m.cached(f, name)
			out = append(out, m.certStatus(ctx, CertStatus{Name: name, KeyType: f.keyType}, f, c, ok, name, failing, full))
		}
	}
	for _, g := range m.sanGroupList() {
		for _, f := range g.v.families {
			c, ok := m.sanCached(g, f)
			out = append(out, m.certStatus(ctx, CertStatus{Name: g.label(), Names: g.names, KeyType: f.keyType}, f, c, ok, "san:"+g.id, failing, full))
		}
	}
	return out
}

// certStatus fills st from a family's cached certificate c (when have) and,
// for certificates listed in failing, from the ledger. dueKey names the
// certificate for its due date (its name, or "san:<id>" for a shared one).
// Without full, only the validity and the ledger are filled.
func (m *Manager) certStatus(ctx context.Context, st CertStatus, f *family, c certmagic.Certificate, have bool, dueKey string, failing map[string]bool, full bool) CertStatus {
	if have {
		nb, na := c.Leaf.NotBefore, c.Leaf.NotAfter
		st.NotBefore, st.NotAfter = &nb, &na
		if full {
			st.Issuer = c.Leaf.Issuer.CommonName
			ra := m.sched.dueAt(ctx, f, dueKey, c)
			st.RenewAt = &ra
			st.OCSP = ocspStatus(c)
		}
	}
	if len(failing) == 0 || !failing[ledgerKey(st.Name, f.keyType)] {
		return st // (ledgerKey costs a string replacer: skipped when nothing fails)
	}
	if e, ok, _ := m.ledger.get(ctx, st.Name, f.keyType); ok {
		st.Failures, st.LastError = e.Failures, e.LastError
		next := e.NextAttempt
		st.NextRetry = &next
	}
	return st
}

func ocspStatus(c certmagic.Certificate) string {
	if len(c.Leaf.OCSPServer) == 0 {
		return ""
	}
	if len(c.OCSPStaple) == 0 {
		return "none"
	}
	resp, err := ocsp.ParseResponse(c.OCSPStaple, nil)
	if err != nil {
		return "invalid"
	}
	switch resp.Status {
	case ocsp.Good:
		return "good"
	case ocsp.Revoked:
		return "revoked"
	}
	return "unknown"
}

// storedARI reads the ARI-selected renewal time certmagic keeps in the
// certificate's metadata.
func (m *Manager) storedARI(ctx context.Context, f *family, name string) (time.Time, bool) {
	for _, iss := range f.cfg.Issuers {
		data, err := f.cfg.Storage.Load(ctx, certmagic.StorageKeys.SiteMeta(iss.IssuerKey(), name))
		if err != nil {
			continue
		}
		var meta struct {
			IssuerData struct {
				RenewalInfo struct {
					SelectedTime time.Time `json:"_selectedTime"`
				} `json:"renewal_info"`
			} `json:"issuer_data"`
		}
		if json.Unmarshal(data, &meta) == nil && !meta.IssuerData.RenewalInfo.SelectedTime.IsZero() {
			return meta.IssuerData.RenewalInfo.SelectedTime, true
		}
	}
	return time.Time{}, false
}

// Retry moves a name's next attempt (every key type) to now and starts a
// pass: the operator's early retry. It returns ErrNotManaged for unknown names.
func (m *Manager) Retry(ctx context.Context, name string) error {
	if g := m.sanGroupFor(name); g != nil {
		for _, f := range g.v.families {
			if err := m.ledger.retryNow(ctx, g.label(), f.keyType); err != nil {
				return err
			}
		}
		m.sched.kick()
		return nil
	}
	if !m.managed(name) {
		return fmt.Errorf("%s: %w", name, ErrNotManaged)
	}
	for _, f := range m.familiesFor(name) {
		if err := m.ledger.retryNow(ctx, name, f.keyType); err != nil {
			return err
		}
	}
	m.sched.kick()
	return nil
}

// RetryAll is Retry for every name with failures; it returns how many
// certificates were rescheduled.
func (m *Manager) RetryAll(ctx context.Context) (int, error) {
	n := 0
	for _, name := range m.managedNames() {
		for _, f := range m.familiesFor(name) {
			_, ok, err := m.ledger.get(ctx, name, f.keyType)
			if err != nil {
				return n, err
			}
			if !ok {
				continue
			}
			if err := m.ledger.retryNow(ctx, name, f.keyType); err != nil {
				return n, err
			}
			n++
		}
	}
	for _, g := range m.sanGroupList() {
		for _, f := range g.v.families {
			if _, ok, _ := m.ledger.get(ctx, g.label(), f.keyType); ok {
				if err := m.ledger.retryNow(ctx, g.label(), f.keyType); err != nil {
					return n, err
				}
				n++
			}
		}
	}
	m.sched.kick()
	return n, nil
}

// storedLeaf reads a family's certificate for name from storage.
func (m *Manager) storedLeaf(ctx context.Context, f *family, name string) (*x509.Certificate, error) {
	var lastErr error = fs.ErrNotExist
	for _, iss := range f.cfg.Issuers {
		data, err := f.cfg.Storage.Load(ctx, certmagic.StorageKeys.SiteCert(iss.IssuerKey(), name))
		if err != nil {
			lastErr = err
			continue
		}
		block, _ := pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("stored certificate for %s is not PEM", name)
		}
		return x509.ParseCertificate(block.Bytes)
	}
	return nil, lastErr
}
