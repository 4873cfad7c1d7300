package integration

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/portico-proxy/portico/integration/acmetest"
)

// keyTypes are the two clients every shared-certificate test checks: one
// that gets the ECDSA certificate, one that gets the RSA one.
var keyTypes = []struct {
	tweak func(*tls.Config)
	alg   x509.PublicKeyAlgorithm
}{{tls13, x509.ECDSA}, {rsaOnly, x509.RSA}}

// waitShared waits until every host is served, for both key types, a
// certificate carrying all the hosts and accepted by accept (nil: any),
// and returns the leaves served for hosts[0], ECDSA first.
func waitShared(t *testing.T, e *env, ip string, hosts []string, within time.Duration, accept func(*x509.Certificate) bool) []*x509.Certificate {
	t.Helper()
	var leaves []*x509.Certificate
	for i, h := range hosts {
		for _, kt := range keyTypes {
			var leaf *x509.Certificate
			waitFor(t, within, fmt.Sprintf("%s served a shared %v certificate", h, kt.alg), func() bool {
				st, err := tryHandshake(e.httpsAddr(ip), h, e.pebble.IssuerRoots(), kt.tweak)
				if err != nil {
					return false
				}
				leaf = st.PeerCertificates[0]
				names := slices.Sorted(slices.Values(leaf.DNSNames))
				return slices.Equal(names, slices.Sorted(slices.Values(hosts))) && leaf.PublicKeyAlgorithm == kt.alg &&
					(accept == nil || accept(leaf))
			})
			if i == 0 {
				leaves = append(leaves, leaf)
			}
		}
	}
	return leaves
}

// TestSharedCertificateOrderedOnApply: with a check interval far longer than
// the test, a shared certificate is ordered at start and at a reload that
// adds one, as per-host certificates are, not at the first periodic pass.
func TestSharedCertificateOrderedOnApply(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	first := []string{"a.apply.test", "b.apply.test", "c.apply.test"}
	second := []string{"d.apply.test", "e.apply.test"}
	for _, h := range append(slices.Clone(first), second...) {
		e.dns.SetA(h, "127.0.0.1")
	}
	dir := t.TempDir()
	base := checkInterval(e.acmeConfig("127.0.0.1", dir+"/data", `"http-01"`), "1h")
	cfg := base + site(first, "certificate = \"shared\"\nrespond = \"1\"")
	p := startPortico(t, dir, cfg, e.httpsAddr("127.0.0.1"))
	// Pebble issues in a second or two; a minute allows for -race on a
	// busy machine and is still far below the hour of the periodic pass
	waitShared(t, e, "127.0.0.1", first, 60*time.Second, nil)

	p.writeConfig(cfg + site(second, "certificate = \"shared\"\nrespond = \"2\""))
	p.signal(sigHUP)
	p.waitLog("config reloaded", 10*time.Second)
	waitShared(t, e, "127.0.0.1", second, 60*time.Second, nil)
}
