package tlsmgr

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/portico-proxy/portico/config"
)

// certIndex is the handshake's fast path: for each name, the certificate of
// each key family, read without allocating and without touching storage.
// certmagic's cache remains the source of truth (it loads, renews, staples);
// the index mirrors it for the names Portico serves and is refreshed whenever
// Portico or certmagic changes a certificate, and on every scheduler pass, so
// a refreshed OCSP staple is served at most one check interval late. A miss
// falls back to certmagic's own lookup.
//
// The index is sharded so that refreshing a name (during a fleet's mass
// issuance, say) never copies or blocks the whole table.
type certIndex struct {
	seed   maphash.Seed
	shards [64]indexShard
}

type indexShard struct {
	mu    sync.RWMutex
	exact map[string]*certPair
}

// certPair is a name's certificates, one per key family; either may be nil.
type certPair struct {
	ecdsa, rsa *tls.Certificate
	ecdsaLeaf  *x509.Certificate
	rsaLeaf    *x509.Certificate
	// the ECDSA certificate's curve and signature scheme
	ecdsaCurve  tls.CurveID
	ecdsaScheme tls.SignatureScheme
}

func newCertIndex() *certIndex {
	ix := &certIndex{seed: maphash.MakeSeed()}
	for i := range ix.shards {
		ix.shards[i].exact = map[string]*certPair{}
	}
	return ix
}

func (ix *certIndex) shard(name string) *indexShard {
	return &ix.shards[maphash.String(ix.seed, name)%uint64(len(ix.shards))]
}

// get returns the pair for a lower-case name, exact or by wildcard.
func (ix *certIndex) get(name string) *certPair {
	if name == "" || name[0] == '.' {
		return nil // wildcard keys start with a dot; no real name does
	}
	if p := ix.lookup(name); p != nil {
		return p
	}
	// "*.example.net" is stored under ".example.net", which is a substring
	// of the name: no allocation to build the wildcard key
	if suffix, ok := config.WildcardSuffix(name); ok {
		return ix.lookup(suffix)
	}
	return nil
}

func (ix *certIndex) lookup(key string) *certPair {
	s := ix.shard(key)
	s.mu.RLock()
	p := s.exact[key]
	s.mu.RUnlock()
	return p
}

func indexKey(name string) string {
	if rest, ok := strings.CutPrefix(name, "*"); ok {
		return rest // the wildcard's suffix, as config.WildcardSuffix gives it
	}
	return name
}

// set replaces the pair of a name (nil removes it).
func (ix *certIndex) set(name string, p *certPair) {
	key := indexKey(name)
	s := ix.shard(key)
	s.mu.Lock()
	if p == nil {
		delete(s.exact, key)
	} else {
		s.exact[key] = p
	}
	s.mu.Unlock()
}

// pairFromCache builds a name's pair from certmagic's cache: per family, the
// certificate that covers the name exactly and lasts longest.
func pairFromCache(cache *certmagic.Cache, name string) *certPair {
	var p certPair
	for _, c := range cache.AllMatchingCertificates(name) {
		if c.Leaf == nil || !containsFold(c.Names, name) {
			continue
		}
		tc := c.Certificate
		if c.Leaf.PublicKeyAlgorithm == x509.ECDSA {
			curve, scheme, ok := ecdsaParams(c.Leaf)
			if ok && (p.ecdsaLeaf == nil || c.Leaf.NotAfter.After(p.ecdsaLeaf.NotAfter)) {
				p.ecdsa, p.ecdsaLeaf, p.ecdsaCurve, p.ecdsaScheme = &tc, c.Leaf, curve, scheme
			}
		} else if p.rsaLeaf == nil || c.Leaf.NotAfter.After(p.rsaLeaf.NotAfter) {
			p.rsa, p.rsaLeaf = &tc, c.Leaf
		}
	}
	if p.ecdsa == nil && p.rsa == nil {
		return nil
	}
	return &p
}

func containsFold(names []string, name string) bool {
	for _, n := range names {
		if strings.EqualFold(n, name) {
			return true
		}
	}
	return false
}

// choose picks from a pair for a hello: ECDSA when the client supports it,
// else RSA. ok is false when neither clearly fits (or both expired), and the
// caller asks certmagic, whose selection uses crypto/tls's own complete check.
//
// crypto/tls's ClientHelloInfo.SupportsCertificate allocates on every call;
// this check reads only the hello's lists, and answers "yes" only where the
// standard library would too under Portico's TLS settings (TLS 1.2 with
// ECDHE AEAD suites, or TLS 1.3).
func (p *certPair) choose(hello *tls.ClientHelloInfo, now time.Time) (*tls.Certificate, bool) {
	if p.ecdsa != nil && now.Before(p.ecdsaLeaf.NotAfter) && p.ecdsaOK(hello) {
		return p.ecdsa, true
	}
	if p.rsa != nil && now.Before(p.rsaLeaf.NotAfter) && rsaOK(hello) {
		return p.rsa, true
	}
	return nil, false
}

var (
	ecdsaSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}
	rsaSuites   = []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256}
	ecdheCurves = []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384}
	rsaSchemes  = []tls.SignatureScheme{tls.PSSWithSHA256, tls.PSSWithSHA384, tls.PSSWithSHA512}
)

func (p *certPair) ecdsaOK(hello *tls.ClientHelloInfo) bool {
	if !slices.Contains(hello.SignatureSchemes, p.ecdsaScheme) {
		return false
	}
	if slices.Contains(hello.SupportedVersions, tls.VersionTLS13) {
		return true
	}
	return containsAny(hello.CipherSuites, ecdsaSuites) &&
		slices.Contains(hello.SupportedCurves, p.ecdsaCurve) &&
		containsAny(hello.SupportedCurves, ecdheCurves)
}

func rsaOK(hello *tls.ClientHelloInfo) bool {
	if slices.Contains(hello.SupportedVersions, tls.VersionTLS13) {
		return containsAny(hello.SignatureSchemes, rsaSchemes)
	}
	return containsAny(hello.CipherSuites, rsaSuites) && containsAny(hello.SupportedCurves, ecdheCurves) &&
		(len(hello.SignatureSchemes) == 0 || containsAny(hello.SignatureSchemes, rsaSchemes) ||
			slices.Contains(hello.SignatureSchemes, tls.PKCS1WithSHA256))
}

func containsAny[T comparable](have, want []T) bool {
	for _, w := range want {
		if slices.Contains(have, w) {
			return true
		}
	}
	return false
}

// ecdsaParams returns the curve and signature scheme of an ECDSA leaf.
func ecdsaParams(leaf *x509.Certificate) (tls.CurveID, tls.SignatureScheme, bool) {
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return 0, 0, false
	}
	switch pub.Curve {
	case elliptic.P256():
		return tls.CurveP256, tls.ECDSAWithP256AndSHA256, true
	case elliptic.P384():
		return tls.CurveP384, tls.ECDSAWithP384AndSHA384, true
	}
	return 0, 0, false
}
