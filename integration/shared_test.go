package integration

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"
	"testing"
	"time"
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
