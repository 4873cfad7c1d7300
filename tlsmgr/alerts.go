package tlsmgr

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/tlsmgr/notify"
)

// Let's Encrypt stopped sending expiry emails in 2025: Portico is the
// operator's safety net. Every failed attempt and every certificate close to
// expiry without a renewal goes to the log as an error and to each
// [[notify]] target, once per backoff step (failures) or once a day
// (expiry), for the whole fleet.

// expiryWarning is how close to expiry an unrenewed certificate is reported:
// a week, or a third of its lifetime for shorter certificates.
func expiryWarning(lifetime time.Duration) time.Duration {
	return min(7*24*time.Hour, lifetime/3)
}

// warnedKey records, per certificate, when the operator was last warned of
// its expiry, so a fleet warns once a day, not once per instance and pass.
func warnedKey(name, keyType string) string {
	return "portico/expiry_warned/" + keyType + "/" + certmagic.StorageKeys.Safe(name) + ".json"
}

type warnedRecord struct {
	Serial string    `json:"serial"`
	At     time.Time `json:"at"`
}

// checkExpiry warns about a cached certificate that is close to expiry.
func (m *Manager) checkExpiry(ctx context.Context, f *family, name string, c certmagic.Certificate, now time.Time) {
	leaf := c.Leaf
	left := leaf.NotAfter.Sub(now)
	if left > expiryWarning(leaf.NotAfter.Sub(leaf.NotBefore)) {
		return
	}
	serial := leaf.SerialNumber.Text(16)
	key := warnedKey(name, f.keyType)
	if data, err := m.storage.Load(ctx, key); err == nil {
		var w warnedRecord
		if json.Unmarshal(data, &w) == nil && w.Serial == serial && now.Sub(w.At) < 24*time.Hour {
			return
		}
	}
	if data, err := json.Marshal(warnedRecord{Serial: serial, At: now}); err == nil {
		if err := m.storage.Store(ctx, key, data); err != nil {
			m.logger.Warn("could not record expiry warning", zap.Error(err))
		}
	}
	e, _, _ := m.ledger.get(ctx, name, f.keyType)
	msg := fmt.Sprintf("certificate for %s (%s) expires in %s and has not been renewed", name, f.keyType, ShortDuration(left))
	if left <= 0 {
		msg = fmt.Sprintf("certificate for %s (%s) EXPIRED %s ago and has not been renewed", name, f.keyType, ShortDuration(-left))
	}
	if e.LastError != "" {
		msg += "; last error: " + e.LastError
	}
	m.logger.Error(msg, zap.String("name", name), zap.String("key_type", f.keyType),
		zap.Time("not_after", leaf.NotAfter), zap.Int("consecutive_failures", e.Failures))
	m.notify(notify.Event{Kind: notify.KindExpiryWarning, Name: name, KeyType: f.keyType, CA: e.CA,
		Error: e.LastError, Failures: e.Failures, NextRetry: e.NextAttempt, NotAfter: leaf.NotAfter, Message: msg})
}

// notify sends an event to the configured targets without blocking.
func (m *Manager) notify(e notify.Event) {
	m.notifyMu.RLock()
	d := m.notifier
	m.notifyMu.RUnlock()
	if d != nil {
		d.Send(e)
	}
}

// setNotifiers replaces the notification targets (at start and on reload).
func (m *Manager) setNotifiers(cfg *config.Config) {
	key := fmt.Sprintf("%v|%v", cfg.Notify, cfg.SMTP)
	m.notifyMu.Lock()
	if key == m.notifyKey && m.notifier != nil {
		m.notifyMu.Unlock()
		return
	}
	old := m.notifier
	m.notifier = notify.NewDispatcher(notify.FromConfig(cfg), m.logger.Named("notify"))
	m.notifyKey = key
	m.notifyMu.Unlock()
	if old != nil {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			old.Close(ctx)
		}()
	}
}

func (m *Manager) closeNotifiers(ctx context.Context) {
	m.notifyMu.Lock()
	d := m.notifier
	m.notifier = nil
	m.notifyMu.Unlock()
	if d != nil {
		d.Close(ctx)
	}
}

// ShortDuration writes d (negative counts as 0) in one unit, rounded down,
// the way an operator reads it: 45s, 9m, 3h (up to 47h), then days: 41d.
// Logs, notifications, `portico certs` and the status page all use it.
func ShortDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", max(d, 0)/time.Second)
	case d < time.Hour:
		return fmt.Sprintf("%dm", d/time.Minute)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", d/time.Hour)
	}
	return fmt.Sprintf("%dd", d/(24*time.Hour))
}
