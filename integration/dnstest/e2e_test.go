package dnstest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"slices"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/libdns/rfc2136"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/portico-proxy/portico/integration/acmetest"
	"github.com/portico-proxy/portico/tlsmgr/dnsprovider"
)

// TestDNS01WildcardWithKnotAndPebble is the end-to-end proof of concept of
// dns-01 with certmagic alone (no Portico): Pebble validates through knotd,
// certmagic publishes the challenge records in knotd with RFC 2136 updates
// and checks their propagation by querying knotd.
//
// It obtains (1) one certificate for *.example.test and example.test in a
// single order, whose two authorizations need two TXT values at the same
// name at once, through ACMEIssuer.Issue, and (2) the same names managed one
// certificate per name, as certmagic's ManageSync does (one order each).
// Both leave no _acme-challenge record behind.
func TestDNS01WildcardWithKnotAndPebble(t *testing.T) {
	const (
		zone     = "example.test"
		wildcard = "*.example.test"
		chalName = "_acme-challenge.example.test"
	)
	k := StartKnot(t, zone, map[string]string{zone: "127.0.0.1", "*": "127.0.0.1"})
	pebble := acmetest.StartPebble(t, acmetest.PebbleOptions{ResolverAddr: k.Addr()})

	logger := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	var cfg *certmagic.Config
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return cfg, nil },
		Logger:           logger,
	})
	t.Cleanup(cache.Stop)
	cfg = certmagic.New(cache, certmagic.Config{
		Storage: &certmagic.FileStorage{Path: t.TempDir()},
		Logger:  logger,
		OCSP:    certmagic.OCSPConfig{DisableStapling: true},
	})

	// Portico's [acme.dns] for this server, through Portico's adapter: an
	// rfc2136 libdns provider.
	dnsConf := k.DNSConfig()
	if problems := dnsprovider.Check(&dnsConf); len(problems) > 0 {
		t.Fatalf("Check(%+v) = %q", dnsConf, problems)
	}
	provider, err := dnsprovider.New(&dnsConf, dnsprovider.Options{})
	if err != nil {
		t.Fatalf("dnsprovider.New: %v", err)
	}
	if _, ok := provider.(*rfc2136.Provider); !ok {
		t.Fatalf("dnsprovider.New returned %T, want *rfc2136.Provider", provider)
	}

	// These are the settings certmagic needs for dns-01 against an
	// authoritative server it can query directly.
	solver := &certmagic.DNS01Solver{DNSManager: certmagic.DNSManager{
		DNSProvider: provider,
		// Where the zone is found (SOA queries, walking up from
		// _acme-challenge.<name>) and where propagation is checked.
		// With Resolvers set, certmagic checks only these servers
		// instead of looking up and querying the zone's NS records.
		Resolvers: []string{k.Addr()},
		// knotd applies an update before answering it: no delay needed.
		// certmagic polls every 2 s (fixed) until the record shows.
		PropagationDelay:   0,
		PropagationTimeout: 30 * time.Second,
		Logger:             logger,
	}}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pebble.RootsPEM())
	issuer := certmagic.NewACMEIssuer(cfg, certmagic.ACMEIssuer{
		CA:           pebble.DirectoryURL(),
		TestCA:       pebble.DirectoryURL(),
		Email:        "ops@example.test",
		Agreed:       true,
		TrustedRoots: roots,
		DNS01Solver:  solver, // with it, certmagic uses dns-01 only
		Logger:       logger,
	})
	cfg.Issuers = []certmagic.Issuer{issuer}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// (1) One order, both names.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr := makeCSR(t, key, wildcard, zone)
	start := time.Now()
	// What certmagic does before Issue (sets up the account's email).
	if err := issuer.PreCheck(ctx, csr.DNSNames, false); err != nil {
		t.Fatalf("PreCheck: %v", err)
	}
	issued, err := issuer.Issue(ctx, csr)
	if err != nil {
		t.Fatalf("Issue(%s, %s): %v", wildcard, zone, err)
	}
	t.Logf("one order for %s + %s: issued in %v", wildcard, zone, time.Since(start).Round(time.Millisecond))
	leaf := verifyChain(t, issued.Certificate, pebble.IssuerRoots(), "www.example.test", zone)
	if want := []string{wildcard, zone}; !sameNames(leaf.DNSNames, want) {
		t.Errorf("certificate names = %v, want %v", leaf.DNSNames, want)
	}
	if got := k.TXT(chalName); len(got) != 0 {
		t.Errorf("TXT %s after issuance = %v, want none (challenge records cleaned up)", chalName, got)
	}

	// (2) One certificate per name, as certmagic manages names.
	start = time.Now()
	if err := cfg.ManageSync(ctx, []string{zone, wildcard}); err != nil {
		t.Fatalf("ManageSync: %v", err)
	}
	t.Logf("ManageSync(%s, %s): two orders in %v", zone, wildcard, time.Since(start).Round(time.Millisecond))
	for _, sni := range []string{zone, "app.example.test"} {
		c, err := cfg.GetCertificate(&tls.ClientHelloInfo{ServerName: sni})
		if err != nil {
			t.Fatalf("GetCertificate(%s): %v", sni, err)
		}
		if err := c.Leaf.VerifyHostname(sni); err != nil {
			t.Errorf("certificate served for %s: %v", sni, err)
		}
	}
	if got := k.TXT(chalName); len(got) != 0 {
		t.Errorf("TXT %s after ManageSync = %v, want none", chalName, got)
	}
	if n := len(pebble.IssuedFor(zone)); n != 2 {
		t.Errorf("Pebble issued %d certificates for %s, want 2", n, zone)
	}
	if n := len(pebble.IssuedFor(wildcard)); n != 2 {
		t.Errorf("Pebble issued %d certificates for %s, want 2", n, wildcard)
	}
}

func makeCSR(t *testing.T, key crypto.Signer, names ...string) *x509.CertificateRequest {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{},
		DNSNames: names,
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// verifyChain parses a PEM chain and verifies its leaf for every host.
func verifyChain(t *testing.T, chainPEM []byte, roots *x509.CertPool, hosts ...string) *x509.Certificate {
	t.Helper()
	var certs []*x509.Certificate
	for rest := chainPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		t.Fatal("no certificate in the issued chain")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	for _, h := range hosts {
		if _, err := certs[0].Verify(x509.VerifyOptions{DNSName: h, Roots: roots, Intermediates: inter}); err != nil {
			t.Errorf("issued certificate for %s: %v", h, err)
		}
	}
	return certs[0]
}

func sameNames(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
