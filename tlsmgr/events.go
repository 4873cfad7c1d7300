package tlsmgr

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/portico-proxy/portico/tlsmgr/notify"
)

// eventHandler steers certmagic through its events: the failure ledger may
// veto an attempt its schedule does not allow yet, and attempts certmagic
// starts on its own (maintenance renewals) are recorded in the same ledger
// as Portico's.
func (m *Manager) eventHandler(f *family) func(context.Context, string, map[string]any) error {
	return func(ctx context.Context, event string, data map[string]any) error {
		if !wantEvent(event) {
			return nil
		}
		if ctx == nil {
			ctx = context.Background()
		}
		name, _ := data["identifier"].(string)
		own := ctx.Value(ctxOwnAttempt) != nil
		keyType := f.keyType
		switch event {
		case "cert_obtaining":
			renewal, _ := data["renewal"].(bool)
			forced, _ := data["forced"].(bool)
			if !own && renewal && !forced {
				// Portico's scheduler renews (under the fleet's order
				// slots); certmagic's maintenance still refreshes ARI,
				// reloads certificates other instances renewed, and
				// replaces revoked ones (forced)
				return certmagic.ErrNoRetry{Err: errScheduled}
			}
			if ok, next := m.ledger.allowed(ctx, name, keyType); !ok {
				return certmagic.ErrNoRetry{Err: fmt.Errorf("%w (%s)", errVetoed, next.Format(time.RFC3339))}
			}
			if od := m.od.Load(); f.onDemand && !renewal && od != nil {
				if err := m.takeOnDemandOrder(ctx, od.perMinute); err != nil {
					m.logger.Warn("on-demand order refused", zap.String("name", name), zap.Error(err))
					return certmagic.ErrNoRetry{Err: err}
				}
			}
		case "cert_failed":
			if !own {
				renewal, _ := data["renewal"].(bool)
				m.countOrder(keyType, renewal, false)
				err, _ := data["error"].(error)
				if err == nil {
					err = errors.New("unknown error")
				}
				m.recordFailure(ctx, name, f, err)
			}
		case "cert_ocsp_revoked":
			subjects, _ := data["subjects"].([]string)
			m.logger.Error("certificate REVOKED according to its OCSP responder; replacing it",
				zap.Strings("names", subjects), zap.String("key_type", keyType),
				zap.Any("reason", data["reason"]), zap.Any("revoked_at", data["revoked_at"]))
			for _, n := range subjects {
				m.notify(notify.Event{Kind: notify.KindRevoked, Name: n, KeyType: keyType,
					Message: fmt.Sprintf("certificate for %s (%s) was REVOKED according to its OCSP responder; Portico is replacing it", n, keyType)})
			}
		case "cached_managed_cert":
			sans, _ := data["sans"].([]string)
			m.refresh(sans...)
		case "cert_obtained":
			m.refresh(name)
			if !own {
				renewal, _ := data["renewal"].(bool)
				m.countOrder(keyType, renewal, true)
			}
			if f.onDemand && !own {
				m.addOnDemandName(context.WithoutCancel(ctx), name)
			}
			if !own {
				if err := m.ledger.success(ctx, name, keyType); err != nil {
					m.logger.Warn("could not clear failure ledger", zap.String("name", name), zap.Error(err))
				}
			}
		}
		return nil
	}
}

// familyFor returns the family of key type kt that manages name.
func (m *Manager) familyFor(name, kt string) *family {
	for _, f := range m.familiesFor(name) {
		if f.keyType == kt {
			return f
		}
	}
	return nil
}

// recordFailure writes a failed attempt to the ledger and tells the
// operator, once per backoff step for the whole fleet.
func (m *Manager) recordFailure(ctx context.Context, name string, f *family, cause error) {
	ca := "local"
	var cas []string
	if len(f.issuers) > 0 {
		// every CA in the list was tried and failed
		cas = make([]string, len(f.issuers))
		for i, iss := range f.issuers {
			cas[i] = iss.CA
		}
		ca = strings.Join(cas, ", ")
	}
	ctx = context.WithoutCancel(ctx)
	e, err := m.ledger.failure(ctx, name, f.keyType, ca, cause)
	if err != nil {
		m.logger.Error("could not record failure in ledger", zap.String("name", name), zap.Error(err))
	}
	hint := explain(name, cas, cause)
	msg := fmt.Sprintf("certificate for %s (%s) could not be obtained; next attempt in %s", name, f.keyType, ShortDuration(time.Until(e.NextAttempt)))
	if hint != "" {
		msg += "; what to check: " + hint
	}
	m.logger.Error("certificate attempt failed",
		zap.String("name", name),
		zap.String("key_type", f.keyType),
		zap.String("ca", ca),
		zap.Int("consecutive_failures", e.Failures),
		zap.Time("next_attempt", e.NextAttempt),
		zap.String("summary", msg),
		zap.String("what_to_check", hint),
		zap.Error(cause))
	if first, err := m.ledger.markNotified(ctx, e); err == nil && !first {
		return // another instance already told the operator of this step
	}
	m.notify(notify.Event{Kind: notify.KindFailure, Name: name, KeyType: f.keyType, CA: ca, Error: cause.Error(),
		Failures: e.Failures, NextRetry: e.NextAttempt, Message: msg})
}

// wantEvent lists the certmagic events Portico acts on. certmagic asks
// before it builds an event's data, which it would otherwise do on every
// handshake.
func wantEvent(event string) bool {
	switch event {
	case "cert_obtaining", "cert_failed", "cert_ocsp_revoked", "cert_obtained", "cached_managed_cert":
		return true
	}
	return false
}
