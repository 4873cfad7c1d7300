package tlsmgr

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
)

// certFactory signs leaves quickly for tests and benchmarks: one CA, one key
// per algorithm reused by every leaf.
type certFactory struct {
	ca     *x509.Certificate
	caKey  crypto.Signer
	ecKey  *ecdsa.PrivateKey
	rsaKey *rsa.PrivateKey
	serial int64
}

func newCertFactory(t testing.TB) *certFactory {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	return &certFactory{ca: ca, caKey: caKey, ecKey: ecKey, rsaKey: rsaKey, serial: 1}
}

func (f *certFactory) leaf(t testing.TB, ecdsaKey bool, names ...string) tls.Certificate {
	f.serial++
	var pub any = f.rsaKey.Public()
	var priv crypto.PrivateKey = f.rsaKey
	if ecdsaKey {
		pub, priv = f.ecKey.Public(), f.ecKey
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(f.serial), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.ca, pub, f.caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}
}

// testManager is a Manager on file storage in a temp dir with the default
// key types, for in-memory tests of the handshake path.
func testManager(t testing.TB) *Manager {
	cfg, err := config.Parse("test.toml", []byte(fmt.Sprintf(`
[acme]
ca = "local"
[storage]
path = %q
[[site]]
hosts = ["site.example.net"]
respond = "ok"
`, t.TempDir())))
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	return m
}

// cacheBoth caches an RSA and an ECDSA certificate for each of n names.
func cacheBoth(t testing.TB, m *Manager, n int) []string {
	f := newCertFactory(t)
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("host%d.example.net", i)
		for _, fam := range m.families {
			if _, err := fam.cfg.CacheUnmanagedTLSCertificate(context.Background(), f.leaf(t, fam.ecdsa, names[i]), nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	m.refresh(names...)
	return names
}

// Hellos as real clients send them: a modern one, and an old TLS 1.2 client
// that offers only ECDHE-RSA suites.
// helloConn stands in for the connection certmagic logs the address of.
type helloConn struct{ net.Conn }

func (helloConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 50000} }
func (helloConn) LocalAddr() net.Addr  { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 443} }

func modernHello(name string) *tls.ClientHelloInfo {
	return &tls.ClientHelloInfo{
		Conn:              helloConn{},
		ServerName:        name,
		SupportedVersions: []uint16{tls.VersionTLS13, tls.VersionTLS12},
		CipherSuites:      []uint16{tls.TLS_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256},
		SupportedCurves:   []tls.CurveID{tls.X25519, tls.CurveP256},
		SupportedPoints:   []uint8{0},
		SignatureSchemes:  []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256, tls.PSSWithSHA256, tls.PKCS1WithSHA256},
	}
}

func rsaOnlyHello(name string) *tls.ClientHelloInfo {
	return &tls.ClientHelloInfo{
		Conn:              helloConn{},
		ServerName:        name,
		SupportedVersions: []uint16{tls.VersionTLS12},
		CipherSuites:      []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256},
		SupportedCurves:   []tls.CurveID{tls.X25519, tls.CurveP256},
		SupportedPoints:   []uint8{0},
		SignatureSchemes:  []tls.SignatureScheme{tls.PSSWithSHA256, tls.PKCS1WithSHA256},
	}
}

func TestSelectionPicksByClient(t *testing.T) {
	m := testManager(t)
	names := cacheBoth(t, m, 3)
	for _, n := range names {
		c, err := m.GetCertificate(modernHello(n))
		if err != nil || c.Leaf.PublicKeyAlgorithm != x509.ECDSA || c.Leaf.DNSNames[0] != n {
			t.Fatalf("modern client for %s: %v %v", n, err, c)
		}
		c, err = m.GetCertificate(rsaOnlyHello(n))
		if err != nil || c.Leaf.PublicKeyAlgorithm != x509.RSA || c.Leaf.DNSNames[0] != n {
			t.Fatalf("RSA-only client for %s: %v", n, err)
		}
	}
	// the fallback path (certmagic's own cache lookup) chooses the same way
	fresh := testManager(t)
	cacheBoth(t, fresh, 1)
	fresh.index = newCertIndex()
	fresh.mu.Lock()
	fresh.names["host0.example.net"] = struct{}{} // a managed name the index has not mirrored yet
	fresh.mu.Unlock()
	if c, err := fresh.GetCertificate(rsaOnlyHello("host0.example.net")); err != nil || c.Leaf.PublicKeyAlgorithm != x509.RSA {
		t.Fatalf("fallback for an RSA-only client: %v", err)
	}
	if c, err := fresh.GetCertificate(modernHello("host0.example.net")); err != nil || c.Leaf.PublicKeyAlgorithm != x509.ECDSA {
		t.Fatalf("fallback for a modern client: %v", err)
	}
	// no certificate for the name: a handshake error, not another site's certificate
	if c, err := m.GetCertificate(modernHello("other.example.org")); err == nil {
		t.Fatalf("served %v for an unknown name", c.Leaf.DNSNames)
	}
}

func TestCoversName(t *testing.T) {
	for _, tc := range []struct {
		names []string
		name  string
		want  bool
	}{
		{[]string{"a.example.net"}, "a.example.net", true},
		{[]string{"a.example.net"}, "A.Example.NET", true},
		{[]string{"*.example.net"}, "b.example.net", true},
		{[]string{"*.example.net"}, "example.net", false},
		{[]string{"*.example.net"}, "c.b.example.net", false},
		{[]string{"a.example.net"}, "", false},
	} {
		if got := coversName(tc.names, tc.name); got != tc.want {
			t.Errorf("coversName(%v, %q) = %v", tc.names, tc.name, got)
		}
	}
}

// BenchmarkSelection measures the handshake's certificate choice with 10,000
// names cached in both key types.
func BenchmarkSelection(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		m := testManager(b)
		names := cacheBoth(b, m, n)
		for _, client := range []struct {
			name  string
			hello func(string) *tls.ClientHelloInfo
		}{{"ecdsa", modernHello}, {"rsa", rsaOnlyHello}} {
			b.Run(fmt.Sprintf("names=%d/%s", n, client.name), func(b *testing.B) {
				hellos := make([]*tls.ClientHelloInfo, 1024)
				for i := range hellos {
					hellos[i] = client.hello(names[(i*7919)%len(names)])
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := m.GetCertificate(hellos[i%len(hellos)]); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// TestFastCheckAgreesWithStdlib: whenever the index's allocation-free check
// accepts a certificate for a hello, crypto/tls's complete check does too.
func TestFastCheckAgreesWithStdlib(t *testing.T) {
	m := testManager(t)
	names := cacheBoth(t, m, 1)
	p := m.index.get(names[0])
	if p == nil || p.ecdsa == nil || p.rsa == nil {
		t.Fatal("index holds no pair")
	}
	tls12ECDSAOnly := rsaOnlyHello(names[0])
	tls12ECDSAOnly.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
	tls12ECDSAOnly.SignatureSchemes = []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256}
	tls13NoECDSA := modernHello(names[0])
	tls13NoECDSA.SignatureSchemes = []tls.SignatureScheme{tls.PSSWithSHA256}
	p384Only := rsaOnlyHello(names[0])
	p384Only.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}
	p384Only.SupportedCurves = []tls.CurveID{tls.CurveP384}
	p384Only.SignatureSchemes = []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256, tls.PKCS1WithSHA256}
	cbcOnly := rsaOnlyHello(names[0])
	cbcOnly.CipherSuites = []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA}
	for name, h := range map[string]*tls.ClientHelloInfo{
		"modern": modernHello(names[0]), "rsa-only": rsaOnlyHello(names[0]), "tls12-ecdsa-only": tls12ECDSAOnly,
		"tls13-no-ecdsa": tls13NoECDSA, "p384-only": p384Only, "cbc-only": cbcOnly,
	} {
		if p.ecdsaOK(h) {
			if err := h.SupportsCertificate(p.ecdsa); err != nil {
				t.Errorf("%s: fast check accepts ECDSA, crypto/tls does not: %v", name, err)
			}
		}
		if rsaOK(h) {
			if err := h.SupportsCertificate(p.rsa); err != nil {
				t.Errorf("%s: fast check accepts RSA, crypto/tls does not: %v", name, err)
			}
		}
	}
	if !p.ecdsaOK(modernHello(names[0])) || !rsaOK(rsaOnlyHello(names[0])) {
		t.Error("fast check refuses the common clients")
	}
}

// TestNoSNI: a client without SNI gets the default_sni certificate, or a
// handshake error when none is set, never another site's certificate.
func TestNoSNI(t *testing.T) {
	m := testManager(t)
	names := cacheBoth(t, m, 2)
	if c, err := m.GetCertificate(modernHello("")); err == nil {
		t.Fatalf("served %v without SNI and without default_sni", c.Leaf.DNSNames)
	}
	sni := names[1]
	m.defaultSNI.Store(&sni)
	c, err := m.GetCertificate(modernHello(""))
	if err != nil || c.Leaf.DNSNames[0] != names[1] {
		t.Fatalf("default_sni: %v", err)
	}
}

// TestIssuersAreOnlyTheConfiguredCAs: certmagic.New puts its default issuer
// (Let's Encrypt) in a new Config; Portico must replace it, never append.
func TestIssuersAreOnlyTheConfiguredCAs(t *testing.T) {
	cfg, err := config.Parse("test.toml", []byte(fmt.Sprintf(`
[acme]
email = "ops@example.net"
agree_tos = true
ca = "https://ca.example.test/dir"
fallback_ca = ["https://fallback.example.test/dir"]
[storage]
path = %q
[[site]]
hosts = ["site.example.net"]
respond = "ok"
`, t.TempDir())))
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	for _, f := range m.families {
		var cas []string
		for _, iss := range f.cfg.Issuers {
			acmeIss, ok := iss.(*certmagic.ACMEIssuer)
			if !ok {
				t.Fatalf("%s: unexpected issuer %T", f.keyType, iss)
			}
			cas = append(cas, acmeIss.CA)
		}
		if len(cas) != 2 || cas[0] != "https://ca.example.test/dir" || cas[1] != "https://fallback.example.test/dir" {
			t.Fatalf("%s issuers: %v", f.keyType, cas)
		}
	}
}

// TestSessionTicketsShared: two instances on one storage share ticket keys,
// so a session ticket sealed by one opens on the other.
func TestSessionTicketsShared(t *testing.T) {
	a := testManager(t)
	b := testManager(t)
	b.storage = a.storage
	ctx := context.Background()
	a.refreshTicketKeys(ctx)
	b.refreshTicketKeys(ctx)
	ka, _ := a.loadTicketKeys(ctx)
	if len(ka) != 1 {
		t.Fatalf("%d keys after the first rotation", len(ka))
	}
	if a.tickets.Load() == nil || b.tickets.Load() == nil {
		t.Fatal("no ticket keys")
	}
	kb, _ := b.loadTicketKeys(ctx)
	if kb[0].Key != ka[0].Key {
		t.Fatal("the two instances use different ticket keys")
	}
}

// BenchmarkUnknownName: a handshake for a name Portico does not serve is
// refused in constant time, whatever the number of cached certificates.
func BenchmarkUnknownName(b *testing.B) {
	m := testManager(b)
	cacheBoth(b, m, 10_000)
	hello := modernHello("random-name.example.org")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := m.GetCertificate(hello); err == nil {
			b.Fatal("served an unknown name")
		}
	}
}
