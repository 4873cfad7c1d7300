package tlsmgr

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// errNotYet fails a handshake for a configured name that has no certificate
// yet. Such a name is ordered by the scheduler (at Apply, then on the
// failure ledger's schedule), never by the handshake and never through the
// on-demand ask endpoint: the config already says the name is wanted, and a
// handshake that waited for the CA would hold the client for as long as the
// order takes.
var errNotYet = errors.New("no certificate yet for this configured name: it is ordered in the background (see `portico certs`)")

// notYetLogEvery bounds the "no certificate yet" log lines to one per name
// per interval: a client retrying in a loop must not flood the log.
const notYetLogEvery = 10 * time.Second

// notYetLog remembers when each name was last reported. It holds configured
// names only, so its size is bounded by the config.
type notYetLog struct {
	mu   sync.Mutex
	last map[string]time.Time
}

// due reports whether name may be logged at now, and if so records it.
func (l *notYetLog) due(name string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = map[string]time.Time{}
	}
	if t, ok := l.last[name]; ok && now.Sub(t) < notYetLogEvery {
		return false
	}
	l.last[name] = now
	return true
}

// configuredAs returns the certificate a configured name belongs to, as the
// ledger and `portico certs` call it: the name itself, a configured wildcard,
// a shared certificate's label, or the name for an operator certificate.
// Names obtained on demand and names not served are not configured.
func (m *Manager) configuredAs(name string) (string, bool) {
	m.mu.RLock()
	_, exact := m.names[name]
	m.mu.RUnlock()
	if exact {
		return name, true
	}
	if g := m.sanGroupFor(name); g != nil {
		return g.label(), true
	}
	if dot := strings.IndexByte(name, '.'); dot > 0 {
		w := "*" + name[dot:]
		m.mu.RLock()
		_, wild := m.names[w]
		m.mu.RUnlock()
		if wild {
			return w, true
		}
		if g := m.sanGroupFor(w); g != nil {
			return g.label(), true
		}
	}
	if m.staticCovers(name) {
		return name, true
	}
	return "", false
}

// refuseNotYet is the handshake's answer for a configured name without a
// certificate the client can use: errNotYet at once, and a log line that
// names the certificate and whether its order is in flight.
func (m *Manager) refuseNotYet(name, certificate string) error {
	if m.notYet.due(name, time.Now()) {
		m.logger.Warn("no certificate yet for a configured name; handshakes for it fail until its order completes",
			zap.String("name", name), zap.String("certificate", certificate), zap.Bool("ordering", m.sched.ordering(m.unitOf(certificate))))
	}
	return fmt.Errorf("%s: %w", name, errNotYet)
}

// unitOf is the scheduler's name for a certificate: "san:<id>" for a shared
// one, the name otherwise.
func (m *Manager) unitOf(certificate string) string {
	if g := m.sanGroupFor(certificate); g != nil {
		return "san:" + g.id
	}
	return certificate
}
