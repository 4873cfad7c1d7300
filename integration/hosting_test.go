package integration

import (
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portico-proxy/portico/integration/acmetest"
	"github.com/portico-proxy/portico/integration/testkit"
)

// TestSharedCertificate: a site with certificate = "shared" gets one
// certificate per key type carrying all its names: one issuance at Pebble,
// served for each name.
func TestSharedCertificate(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	hosts := []string{"a.shared.test", "b.shared.test", "c.shared.test"}
	for _, h := range hosts {
		e.dns.SetA(h, "127.0.0.1")
	}
	dir := t.TempDir()
	cfg := e.acmeConfig("127.0.0.1", dir+"/data", `"http-01"`) + site(hosts, "certificate = \"shared\"\nrespond = \"s\"")
	startPortico(t, dir, cfg, e.httpsAddr("127.0.0.1"))
	waitShared(t, e, "127.0.0.1", hosts, 60*time.Second, nil)
	issued := e.pebble.Issued()
	if len(issued) != 2 {
		t.Fatalf("Pebble issued %d certificates, want 2 (one per key type)", len(issued))
	}
	for _, ic := range issued {
		names := slices.Clone(ic.DNSNames)
		slices.Sort(names)
		if !slices.Equal(names, hosts) {
			t.Errorf("issued for %v, want all of %v", names, hosts)
		}
	}
	for _, o := range e.pebble.Orders() {
		if len(o.Identifiers) != 3 {
			t.Errorf("an order for %v: every order should carry all three names", o.Identifiers)
		}
	}
}

// TestDefaultSNI: a TLS client without SNI gets the default_sni
// certificate; without default_sni, a handshake error.
func TestDefaultSNI(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	e.dns.SetA("default.test", "127.0.0.1")
	e.dns.SetA("other.test", "127.0.0.1")
	dir := t.TempDir()
	base := e.acmeConfig("127.0.0.1", dir+"/data", `"http-01"`)
	sites := site([]string{"other.test"}, `respond = "o"`) + site([]string{"default.test"}, `respond = "d"`)
	p := startPortico(t, dir, base+sites, e.httpsAddr("127.0.0.1"))
	waitHTTPS(t, client(e.httpsAddr("127.0.0.1"), e.pebble.IssuerRoots(), nil), "https://default.test/", 60*time.Second)
	noSNI := func(tc *tls.Config) { tc.ServerName = ""; tc.InsecureSkipVerify = true }
	if _, err := tryHandshake(e.httpsAddr("127.0.0.1"), "", nil, noSNI); err == nil {
		t.Fatal("a client without SNI got a certificate without default_sni")
	}
	p.writeConfig(strings.Replace(base, "[storage]", "default_sni = \"default.test\"\n\n[storage]", 1) + sites)
	p.signal(sigHUP)
	p.waitLog("config reloaded", 10*time.Second)
	st, err := tryHandshake(e.httpsAddr("127.0.0.1"), "", nil, noSNI)
	if err != nil {
		t.Fatalf("no-SNI client with default_sni: %v", err)
	}
	if got := st.PeerCertificates[0].DNSNames; len(got) != 1 || got[0] != "default.test" {
		t.Fatalf("no-SNI client got %v, want default.test", got)
	}
}

// TestCAFallback: with a first CA that is down, the certificate comes from
// the second (a second Pebble), and each CA has its own account.
func TestCAFallback(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	second := acmetest.StartPebble(t, acmetest.PebbleOptions{DNS: e.dns, HTTPPort: e.httpPort, TLSPort: e.httpsPort})
	e.dns.SetA("fallback.test", "127.0.0.1")
	e.pebble.Stop() // the first CA is down
	dir := t.TempDir()
	cfg := strings.Replace(e.acmeConfig("127.0.0.1", dir+"/data", `"http-01"`), "[listen]",
		fmt.Sprintf("fallback_ca = [%q]\n\n[listen]", second.DirectoryURL()), 1)
	cfg = strings.Replace(cfg, fmt.Sprintf("ca_roots = [%q]", e.pebble.RootsFile()), fmt.Sprintf("ca_roots = [%q, %q]", e.pebble.RootsFile(), second.RootsFile()), 1)
	startPortico(t, dir, cfg+site([]string{"fallback.test"}, `respond = "f"`), e.httpsAddr("127.0.0.1"))
	for _, tweak := range []func(*tls.Config){tls13, rsaOnly} {
		testkit.Eventually(t, 90*time.Second, "a certificate from the second CA", func() bool {
			_, err := tryHandshake(e.httpsAddr("127.0.0.1"), "fallback.test", second.IssuerRoots(), tweak)
			return err == nil
		})
	}
	testkit.Eventually(t, 60*time.Second, "both key types from the second CA", func() bool {
		rsa, ec := countByKey(second.IssuedFor("fallback.test"))
		return rsa > 0 && ec > 0
	})
	if rsa, ec := countByKey(second.IssuedFor("fallback.test")); rsa != 1 || ec != 1 {
		t.Errorf("second CA issued %d RSA, %d ECDSA", rsa, ec)
	}
	if n := len(e.pebble.Issued()); n != 0 {
		t.Errorf("the stopped CA issued %d", n)
	}
}

// TestCentralValidation: Pebble validates through a frontend that
// redirects /.well-known/acme-challenge/ to a separate validation instance
// sharing the frontend's storage.
func TestCentralValidation(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	e.dns.SetA("front.test", "127.0.0.2")      // the frontend: Pebble's VA asks it
	e.dns.SetA("validation.test", "127.0.0.3") // the validation server
	storage := t.TempDir() + "/shared-data"
	vdir := t.TempDir()
	vcfg := strings.Replace(e.acmeConfig("127.0.0.3", storage, `"http-01"`), "[listen]", "validation_server = true\n\n[listen]", 1)
	startPortico(t, vdir, vcfg, e.httpsAddr("127.0.0.3"))
	fdir := t.TempDir()
	fcfg := strings.Replace(e.acmeConfig("127.0.0.2", storage, `"http-01"`), "[listen]",
		fmt.Sprintf("validation_redirect = \"http://validation.test:%d\"\n\n[listen]", e.httpPort), 1) +
		site([]string{"front.test"}, `respond = "front"`)
	front := startPortico(t, fdir, fcfg, e.httpsAddr("127.0.0.2"))
	for _, tweak := range []func(*tls.Config){tls13, rsaOnly} {
		testkit.Eventually(t, 60*time.Second, "front.test certified through the validation server", func() bool {
			_, err := tryHandshake(e.httpsAddr("127.0.0.2"), "front.test", e.pebble.IssuerRoots(), tweak)
			return err == nil
		})
	}
	if !strings.Contains(front.log.String(), "certificate ready") {
		t.Error("frontend did not obtain the certificate")
	}
}
