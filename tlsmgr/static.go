package tlsmgr

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
)

// staticCert is a [[certificate]] the operator brings: served for the names
// it covers, which are then not ordered over ACME. Its files are re-read on
// reload and when they change on disk.
type staticCert struct {
	certFile, keyFile string
	stamp             string // size and mtime of both files when loaded
	hash              string // certmagic cache key
	names             []string
}

func fileStamp(paths ...string) string {
	var b strings.Builder
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			b.WriteString("missing;")
			continue
		}
		fmt.Fprintf(&b, "%d@%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String()
}

// applyStatic makes the cached operator certificates those of cfg, loading
// new or changed files and dropping the rest. It returns the names they
// cover. A file that cannot be loaded keeps its previous certificate in
// service and is reported: nothing is dropped that cannot be replaced.
func (m *Manager) applyStatic(ctx context.Context, certs []config.Certificate) map[string]bool {
	m.staticMu.Lock()
	defer m.staticMu.Unlock()
	next := map[string]*staticCert{}
	var drop []string
	for _, c := range certs {
		id := c.Cert + "\x00" + c.Key
		stamp := fileStamp(c.Cert, c.Key)
		if old := m.static[id]; old != nil && old.stamp == stamp {
			next[id] = old
			continue
		}
		sc, err := m.loadStatic(ctx, c.Cert, c.Key, stamp)
		if err != nil {
			m.logger.Error("cannot load [[certificate]]; keeping what was served before",
				zap.String("cert", c.Cert), zap.String("key", c.Key), zap.Error(err))
			if old := m.static[id]; old != nil {
				next[id] = old
			}
			continue
		}
		if old := m.static[id]; old != nil && old.hash != sc.hash {
			drop = append(drop, old.hash)
		}
		next[id] = sc
		m.logger.Info("serving operator certificate", zap.String("cert", c.Cert), zap.Strings("names", sc.names),
			zap.Time("not_after", m.staticLeafNotAfter(sc)))
	}
	for id, old := range m.static {
		if _, keep := next[id]; !keep {
			drop = append(drop, old.hash)
		}
	}
	if len(drop) > 0 {
		m.cache.Remove(drop)
	}
	m.static = next
	covered := map[string]bool{}
	var names []string
	for _, sc := range next {
		for _, n := range sc.names {
			covered[n] = true
			names = append(names, n)
		}
	}
	for n := range m.staticNames {
		if !covered[n] {
			names = append(names, n) // refresh drops it from the index
		}
	}
	m.staticNames = covered
	m.refresh(names...)
	return covered
}

func (m *Manager) loadStatic(ctx context.Context, certFile, keyFile, stamp string) (*staticCert, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	names := append([]string(nil), pair.Leaf.DNSNames...)
	for _, ip := range pair.Leaf.IPAddresses {
		names = append(names, ip.String())
	}
	for i, n := range names {
		names[i] = strings.ToLower(n)
	}
	hash, err := m.defaultFamilies()[0].cfg.CacheUnmanagedTLSCertificate(ctx, pair, []string{"portico-static"})
	if err != nil {
		return nil, err
	}
	return &staticCert{certFile: certFile, keyFile: keyFile, stamp: stamp, hash: hash, names: names}, nil
}

func (m *Manager) staticLeafNotAfter(sc *staticCert) time.Time {
	for _, c := range m.cache.AllMatchingCertificates(sc.names[0]) {
		if c.Hash() == sc.hash && c.Leaf != nil {
			return c.Leaf.NotAfter
		}
	}
	return time.Time{}
}

// reloadChangedStatic re-reads operator certificates whose files changed
// (called on every scheduler pass).
func (m *Manager) reloadChangedStatic(ctx context.Context) {
	m.staticMu.Lock()
	var certs []config.Certificate
	changed := false
	for _, sc := range m.static {
		certs = append(certs, config.Certificate{Cert: sc.certFile, Key: sc.keyFile})
		if fileStamp(sc.certFile, sc.keyFile) != sc.stamp {
			changed = true
		}
	}
	m.staticMu.Unlock()
	if changed {
		m.applyStatic(ctx, certs)
	}
}

// coveredBy reports whether covered (names of operator certificates)
// includes host, exactly or by a wildcard.
func coveredBy(covered map[string]bool, host string) bool {
	if covered[host] {
		return true
	}
	w, ok := config.WildcardFor(host)
	return ok && covered[w]
}
