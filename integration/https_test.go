package integration

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/portico-proxy/portico/integration/acmetest"
	"github.com/portico-proxy/portico/integration/testkit"
)

// TestHTTPSWithACME: two sites get certificates from Pebble (over http-01 in
// one Portico, tls-alpn-01 in another), requests reach the right upstream with
// the forwarding headers, :80 redirects with 308, HSTS is sent when set.
func TestHTTPSWithACME(t *testing.T) {
	for _, challenge := range []string{"http-01", "tls-alpn-01"} {
		t.Run(challenge, func(t *testing.T) {
			e := newEnv(t, acmetest.PebbleOptions{})
			e.dns.SetA("app.test", "127.0.0.1")
			e.dns.SetA("api.test", "127.0.0.1")
			up1, up2 := startEcho(t, "app"), startEcho(t, "api")
			dir := t.TempDir()
			cfg := e.acmeConfig("127.0.0.1", dir+"/data", fmt.Sprintf("%q", challenge)) +
				site([]string{"app.test"}, fmt.Sprintf("upstreams = [%q]\nhsts_max_age = \"1440h\"", up1.URL)) +
				site([]string{"api.test"}, fmt.Sprintf("upstreams = [%q]", up2.URL))
			startPortico(t, dir, cfg, e.httpsAddr("127.0.0.1"))
			c := client(e.httpsAddr("127.0.0.1"), e.pebble.IssuerRoots(), nil)

			waitHTTPS(t, c, "https://app.test/", 60*time.Second)
			waitHTTPS(t, c, "https://api.test/", 60*time.Second)

			got, resp := getEcho(t, c, "https://app.test/some/path?q=1")
			if got.Upstream != "app" || got.Path != "/some/path?q=1" || got.Host != "app.test" {
				t.Errorf("app.test reached %+v", got)
			}
			if xff := got.Header.Get("X-Forwarded-For"); xff != "127.0.0.1" {
				t.Errorf("X-Forwarded-For = %q", xff)
			}
			if p := got.Header.Get("X-Forwarded-Proto"); p != "https" {
				t.Errorf("X-Forwarded-Proto = %q", p)
			}
			if h := got.Header.Get("X-Forwarded-Host"); h != "app.test" {
				t.Errorf("X-Forwarded-Host = %q", h)
			}
			if hsts := resp.Header.Get("Strict-Transport-Security"); hsts != "max-age=5184000" {
				t.Errorf("HSTS = %q, want max-age=5184000", hsts)
			}
			got, resp = getEcho(t, c, "https://api.test/")
			if got.Upstream != "api" {
				t.Errorf("api.test reached %q", got.Upstream)
			}
			if hsts := resp.Header.Get("Strict-Transport-Security"); hsts != "" {
				t.Errorf("api.test sent HSTS %q without hsts_max_age", hsts)
			}

			// :80 redirects, path and query kept
			plain := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			req, _ := http.NewRequest("GET", "http://"+e.httpAddr("127.0.0.1")+"/a/b?c=d", nil)
			req.Host = "app.test"
			r, err := plain.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			r.Body.Close()
			want := fmt.Sprintf("https://app.test:%d/a/b?c=d", e.httpsPort)
			if r.StatusCode != http.StatusPermanentRedirect || r.Header.Get("Location") != want {
				t.Errorf(":80 answered %d Location %q, want 308 %q", r.StatusCode, r.Header.Get("Location"), want)
			}
			req.Host = "unknown.test"
			if r, err = plain.Do(req); err != nil || r.StatusCode != 404 {
				t.Errorf("unknown host on :80: %v %v", r.StatusCode, err)
			}

			// both key types were issued, each once, by Pebble
			for _, name := range []string{"app.test", "api.test"} {
				testkit.Eventually(t, 30*time.Second, "both key types for "+name, func() bool {
					rsa, ec := countByKey(e.pebble.IssuedFor(name))
					return rsa > 0 && ec > 0
				})
				if rsa, ec := countByKey(e.pebble.IssuedFor(name)); rsa != 1 || ec != 1 {
					t.Errorf("%s: Pebble issued %d RSA and %d ECDSA certificates, want 1 and 1", name, rsa, ec)
				}
			}
		})
	}
}

// TestReloadAndRestart: a reload that adds a site gets its certificate
// without a restart; a broken reload keeps serving; a restart with the CA
// stopped still serves the stored certificates.
func TestReloadAndRestart(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	for _, h := range []string{"one.test", "two.test"} {
		e.dns.SetA(h, "127.0.0.1")
	}
	up := startEcho(t, "up")
	dir := t.TempDir()
	base := e.acmeConfig("127.0.0.1", dir+"/data", `"http-01"`)
	cfg1 := base + site([]string{"one.test"}, fmt.Sprintf("upstreams = [%q]", up.URL))
	p := startPortico(t, dir, cfg1, e.httpsAddr("127.0.0.1"))
	c := client(e.httpsAddr("127.0.0.1"), e.pebble.IssuerRoots(), nil)
	waitHTTPS(t, c, "https://one.test/", 60*time.Second)

	// add a site: it gets a certificate without a restart
	cfg2 := cfg1 + site([]string{"two.test"}, fmt.Sprintf("upstreams = [%q]", up.URL))
	p.writeConfig(cfg2)
	p.signal(syscall.SIGHUP)
	waitHTTPS(t, c, "https://two.test/", 60*time.Second)

	// a broken config is refused and the running one stays
	p.writeConfig(cfg2 + "\n[[site]]\nhosts = [\"bad_host!\"]\n")
	p.signal(syscall.SIGHUP)
	p.waitLog("reload refused", 10*time.Second)
	if !strings.Contains(p.log.String(), "bad_host!") {
		t.Errorf("the refusal does not name the bad host")
	}
	for _, h := range []string{"one.test", "two.test"} {
		if _, resp := getEcho(t, c, "https://"+h+"/"); resp.StatusCode != 200 {
			t.Errorf("%s after a broken reload: %s", h, resp.Status)
		}
	}
	testkit.Eventually(t, 30*time.Second, "both key types for two.test", func() bool {
		rsa, ec := countByKey(e.pebble.IssuedFor("two.test"))
		return rsa > 0 && ec > 0
	})
	testkit.Eventually(t, 10*time.Second, "the ECDSA certificate served", func() bool {
		return peerCert(t, e.httpsAddr("127.0.0.1"), "two.test", e.pebble.IssuerRoots(), nil).PublicKeyAlgorithm == x509.ECDSA
	})
	before := peerCert(t, e.httpsAddr("127.0.0.1"), "two.test", e.pebble.IssuerRoots(), nil)

	// restart with the CA down: stored certificates are served
	p.writeConfig(cfg2)
	p.stop()
	if code := p.exitCode(); code != 0 {
		t.Errorf("SIGTERM exit code %d, want 0", code)
	}
	e.pebble.Stop()
	p.start()
	for _, h := range []string{"one.test", "two.test"} {
		waitHTTPS(t, c, "https://"+h+"/", 20*time.Second)
	}
	after := peerCert(t, e.httpsAddr("127.0.0.1"), "two.test", e.pebble.IssuerRoots(), nil)
	if before.SerialNumber.Cmp(after.SerialNumber) != 0 {
		t.Errorf("restart served a different certificate: %v then %v", before.SerialNumber, after.SerialNumber)
	}
}

// TestNoFailuresDuringReloads: a load of concurrent requests during 5
// reloads sees zero failures.
func TestNoFailuresDuringReloads(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	e.dns.SetA("busy.test", "127.0.0.1")
	up := startEcho(t, "up")
	dir := t.TempDir()
	cfg := e.acmeConfig("127.0.0.1", dir+"/data", `"http-01"`) + site([]string{"busy.test"}, fmt.Sprintf("upstreams = [%q]", up.URL))
	p := startPortico(t, dir, cfg, e.httpsAddr("127.0.0.1"))
	c := client(e.httpsAddr("127.0.0.1"), e.pebble.IssuerRoots(), nil)
	waitHTTPS(t, c, "https://busy.test/", 60*time.Second)

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// half the workers reuse connections, half open new ones
			wc := c
			if w%2 == 1 {
				wc = client(e.httpsAddr("127.0.0.1"), e.pebble.IssuerRoots(), func(tc *tls.Config) {})
				wc.Transport.(*http.Transport).DisableKeepAlives = true
			}
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := wc.Get("https://busy.test/")
				if err == nil && resp.StatusCode == 200 {
					resp.Body.Close()
					ok.Add(1)
					continue
				}
				failed.Add(1)
				if err == nil {
					resp.Body.Close()
					err = fmt.Errorf("status %s", resp.Status)
				}
				firstErr.CompareAndSwap(nil, err.Error())
			}
		}()
	}
	for i := 1; i <= 5; i++ {
		// each reload changes the config (a new respond-only site)
		p.writeConfig(cfg + site([]string{fmt.Sprintf("extra%d.test", i)}, `respond = "x"`))
		p.signal(syscall.SIGHUP)
		p.waitLog(fmt.Sprintf(`"sites":%d`, 2), 10*time.Second)
		n := ok.Load()
		testkit.Eventually(t, 10*time.Second, "requests after reload", func() bool { return ok.Load() > n+20 })
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed during reloads; first: %v", failed.Load(), ok.Load()+failed.Load(), firstErr.Load())
	}
	if strings.Count(p.log.String(), "config reloaded") != 5 {
		t.Errorf("want 5 reloads in the log")
	}
	t.Logf("%d requests, 0 failures, during 5 reloads", ok.Load())
}

// countByKey counts certificates Pebble issued by key algorithm.
func countByKey(issued []acmetest.IssuedCert) (rsa, ec int) {
	for _, ic := range issued {
		switch ic.KeyAlgorithm {
		case x509.RSA:
			rsa++
		case x509.ECDSA:
			ec++
		}
	}
	return rsa, ec
}
