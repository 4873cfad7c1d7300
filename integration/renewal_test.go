package integration

import (
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/portico-proxy/portico/integration/acmetest"
	"github.com/portico-proxy/portico/integration/testkit"
)

// TestShortCertificatesRenewed: Pebble issues 60-second certificates; the
// served certificate is replaced before it expires, without a restart, for
// both key types.
func TestShortCertificatesRenewed(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{CertValidity: 60 * time.Second})
	e.dns.SetA("short.test", "127.0.0.1")
	dir := t.TempDir()
	p := startPortico(t, dir, e.acmeConfig("127.0.0.1", dir+"/data", `"http-01"`)+site([]string{"short.test"}, `respond = "s"`), e.httpsAddr("127.0.0.1"))
	for _, tc := range []struct {
		tweak func(*tls.Config)
		alg   x509.PublicKeyAlgorithm
	}{{tls13, x509.ECDSA}, {rsaOnly, x509.RSA}} {
		tweak := tc.tweak
		var first tls.ConnectionState
		// a TLS 1.3 client takes the RSA certificate until the ECDSA one
		// is there: wait for the key type under test
		testkit.Eventually(t, 60*time.Second, "a first certificate", func() bool {
			var err error
			first, err = tryHandshake(e.httpsAddr("127.0.0.1"), "short.test", e.pebble.IssuerRoots(), tweak)
			return err == nil && first.PeerCertificates[0].PublicKeyAlgorithm == tc.alg
		})
		old := first.PeerCertificates[0]
		if life := old.NotAfter.Sub(old.NotBefore); life > 61*time.Second {
			t.Fatalf("certificate lives %v; the test needs 60 s certificates", life)
		}
		var next tls.ConnectionState
		testkit.Eventually(t, 90*time.Second, "a replacement certificate", func() bool {
			var err error
			next, err = tryHandshake(e.httpsAddr("127.0.0.1"), "short.test", e.pebble.IssuerRoots(), tweak)
			return err == nil && next.PeerCertificates[0].SerialNumber.Cmp(old.SerialNumber) != 0 &&
				next.PeerCertificates[0].PublicKeyAlgorithm == tc.alg
		})
		replaced := time.Now()
		if !replaced.Before(old.NotAfter) {
			t.Errorf("%v certificate replaced at %v, after it expired at %v", old.PublicKeyAlgorithm, replaced, old.NotAfter)
		}
		if next.PeerCertificates[0].PublicKeyAlgorithm != old.PublicKeyAlgorithm {
			t.Errorf("replacement has key type %v, want %v", next.PeerCertificates[0].PublicKeyAlgorithm, old.PublicKeyAlgorithm)
		}
	}
	if !strings.Contains(p.log.String(), `"renewal":true`) {
		t.Error("no renewal in the log")
	}
}
