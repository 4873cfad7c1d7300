package integration

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portico-proxy/portico/integration/acmetest"
	"github.com/portico-proxy/portico/integration/testkit"
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
			testkit.Eventually(t, within, fmt.Sprintf("%s served a shared %v certificate", h, kt.alg), func() bool {
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

// TestConfiguredNamesNeverAsk: with [on_demand] set, a handshake for a
// configured name (in a shared certificate or a per-host one) whose
// certificate is still being ordered never reaches the ask endpoint; it
// fails at once, and the log says why.
func TestConfiguredNamesNeverAsk(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	shared := []string{"a.conf.test", "b.conf.test"}
	for _, h := range append(slices.Clone(shared), "solo.conf.test") {
		e.dns.SetA(h, "127.0.0.1")
	}
	var mu sync.Mutex
	asked := map[string]int{}
	ask := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		asked[r.URL.Query().Get("domain")]++ // and allowed: the test is that no one asks
	}))
	t.Cleanup(ask.Close)
	mitm := startCAInTheMiddle(t, e.pebble)
	mitm.mode.Store("hang-posts") // every order stays in flight
	dir := t.TempDir()
	cfg := mitm.viaMiddle(t, e, e.acmeConfig("127.0.0.1", dir+"/data", `"http-01"`)) +
		fmt.Sprintf("\n[on_demand]\nask = %q\nupstreams = [%q]\nmax_per_minute = 10\n", ask.URL, startEcho(t, "od").URL) +
		site(shared, "certificate = \"shared\"\nrespond = \"s\"") + site([]string{"solo.conf.test"}, `respond = "p"`)
	p := startPortico(t, dir, cfg, e.httpsAddr("127.0.0.1"))
	testkit.Eventually(t, 30*time.Second, "orders in flight at the CA", func() bool { return mitm.posts.Load() > 0 })

	refusedFast := func(h string) {
		for _, kt := range keyTypes {
			start := time.Now()
			if _, err := tryHandshake(e.httpsAddr("127.0.0.1"), h, e.pebble.IssuerRoots(), kt.tweak); err == nil {
				t.Fatalf("%s: a certificate while every order hangs", h)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("%s: the refusal took %v", h, d)
			}
		}
	}
	for _, h := range append(slices.Clone(shared), "solo.conf.test") {
		refusedFast(h)
	}
	// the log says why, and that the order is in flight (a line per name
	// at most every 10 s: handshakes go on until one says so)
	for _, h := range []struct{ name, certificate string }{{"b.conf.test", "a.conf.test (+1 SAN)"}, {"solo.conf.test", "solo.conf.test"}} {
		want := fmt.Sprintf(`"name":%q,"certificate":%q,"ordering":true`, h.name, h.certificate)
		testkit.Eventually(t, 30*time.Second, "log line "+want, func() bool {
			refusedFast(h.name)
			return strings.Contains(p.log.String(), "no certificate yet for a configured name") && strings.Contains(p.log.String(), want)
		})
	}
	mu.Lock()
	if len(asked) > 0 {
		t.Errorf("the ask endpoint was consulted for configured names: %v", asked)
	}
	mu.Unlock()
	if strings.Contains(p.log.String(), "ask endpoint") {
		t.Error("the log mentions the ask endpoint for a configured name")
	}
}

// TestSharedCertificateARI: a shared certificate is renewed when the CA's
// renewal information (ARI) asks for it, long before a third of its
// lifetime is left, for both key types.
func TestSharedCertificateARI(t *testing.T) {
	// a short Retry-After, so Portico reads ARI again within the test
	e := newEnv(t, acmetest.PebbleOptions{ARIRetryAfter: 2 * time.Second})
	hosts := []string{"a.ari.test", "b.ari.test"}
	for _, h := range hosts {
		e.dns.SetA(h, "127.0.0.1")
	}
	dir := t.TempDir()
	cfg := e.acmeConfig("127.0.0.1", dir+"/data", `"http-01"`) + site(hosts, "certificate = \"shared\"\nrespond = \"s\"")
	p := startPortico(t, dir, cfg, e.httpsAddr("127.0.0.1"))
	old := waitShared(t, e, "127.0.0.1", hosts, 60*time.Second, nil)
	now := time.Now()
	for _, leaf := range old {
		if leaf.NotAfter.Sub(now) < 60*24*time.Hour {
			t.Fatalf("certificate expires %v; the test needs one far from its backstop renewal", leaf.NotAfter)
		}
		// the CA asks for renewal now: a window that has passed
		if err := e.pebble.SetRenewalWindow(leaf, now.Add(-2*time.Hour), now.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	renewed := waitShared(t, e, "127.0.0.1", hosts, 90*time.Second, func(leaf *x509.Certificate) bool {
		for _, o := range old {
			if o.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
				return false
			}
		}
		return true
	})
	for i := range renewed {
		if renewed[i].PublicKeyAlgorithm != old[i].PublicKeyAlgorithm {
			t.Errorf("renewal changed the key type: %v, was %v", renewed[i].PublicKeyAlgorithm, old[i].PublicKeyAlgorithm)
		}
	}
	if n := len(e.pebble.Issued()); n != 4 {
		t.Errorf("Pebble issued %d certificates, want 4 (two key types, renewed once)", n)
	}
	for _, want := range []string{`"renewal":true`, "renewal information (ARI) for shared certificate"} {
		if !strings.Contains(p.log.String(), want) {
			t.Errorf("log has no %s", want)
		}
	}
}
