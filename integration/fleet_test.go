package integration

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/portico-proxy/portico/integration/acmetest"
	"github.com/portico-proxy/portico/integration/testkit"
	"github.com/portico-proxy/portico/tlsmgr/storage/redis/redisserver"
)

// redisConfig is the [acme]/[listen]/[storage] part of a config for a fleet
// instance on ip sharing one Redis.
func (e *env) redisConfig(ip, redisURL string) string {
	return e.haConfig(ip, fmt.Sprintf("redis_url = %q", redisURL))
}

// TestFleetIssuesOnce: five Portico processes sharing one Redis, started at
// the same moment, with 20 hostnames that all resolve to the first instance
// only. Every instance serves every hostname, and Pebble issues each
// certificate (per name and key type) exactly once.
func TestFleetIssuesOnce(t *testing.T) {
	rs := redisserver.Start(t)
	e := newEnv(t, acmetest.PebbleOptions{})
	var hosts []string
	for i := 1; i <= 20; i++ {
		h := fmt.Sprintf("h%02d.fleet.test", i)
		hosts = append(hosts, h)
		e.dns.SetA(h, "127.0.0.2")
	}
	var sites strings.Builder
	for _, h := range hosts {
		sites.WriteString(site([]string{h}, fmt.Sprintf("respond = %q", h)))
	}
	var fleet []*portico
	for i := 2; i <= 6; i++ {
		ip := fmt.Sprintf("127.0.0.%d", i)
		fleet = append(fleet, launchPortico(t, t.TempDir(), e.redisConfig(ip, rs.URL())+sites.String(), e.httpsAddr(ip)))
	}
	for _, p := range fleet {
		p.waitListening()
	}
	for _, p := range fleet {
		for _, h := range hosts {
			for _, tweak := range []func(*tls.Config){tls13, rsaOnly} {
				testkit.Eventually(t, 180*time.Second, h+" served by "+p.httpsAddr, func() bool {
					_, err := tryHandshake(p.httpsAddr, h, e.pebble.IssuerRoots(), tweak)
					return err == nil
				})
			}
		}
	}
	// a TLS 1.3 client also accepts the RSA certificate: wait for both
	// key types of every name before counting
	testkit.Eventually(t, 120*time.Second, "both key types of every name", func() bool {
		for _, h := range hosts {
			if rsa, ec := countByKey(e.pebble.IssuedFor(h)); rsa == 0 || ec == 0 {
				return false
			}
		}
		return true
	})
	for _, h := range hosts {
		if rsa, ec := countByKey(e.pebble.IssuedFor(h)); rsa != 1 || ec != 1 {
			t.Errorf("%s: Pebble issued %d RSA and %d ECDSA certificates, want exactly 1 and 1", h, rsa, ec)
		}
	}
	if n := len(e.pebble.Issued()); n != 40 {
		t.Errorf("Pebble issued %d certificates in all, want 40", n)
	}
}

// TestRedisOutage: Redis stops while an instance runs. Requests keep
// succeeding from the cached certificates; a certificate requested during
// the outage (a reload adds a site) is issued after Redis comes back.
func TestRedisOutage(t *testing.T) {
	rs := redisserver.StartPersistent(t)
	e := newEnv(t, acmetest.PebbleOptions{})
	e.dns.SetA("steady.test", "127.0.0.1")
	e.dns.SetA("late.test", "127.0.0.1")
	up := startEcho(t, "up")
	base := e.redisConfig("127.0.0.1", rs.URL())
	cfg := base + site([]string{"steady.test"}, fmt.Sprintf("upstreams = [%q]", up.URL))
	p := startPortico(t, t.TempDir(), cfg, e.httpsAddr("127.0.0.1"))
	c := client(e.httpsAddr("127.0.0.1"), e.pebble.IssuerRoots(), nil)
	waitHTTPS(t, c, "https://steady.test/", 60*time.Second)
	testkit.Eventually(t, 30*time.Second, "both certificates for steady.test", func() bool {
		rsa, ec := countByKey(e.pebble.IssuedFor("steady.test"))
		return rsa > 0 && ec > 0
	})

	rs.Stop()
	// new connections (full handshakes) and reused ones keep working
	fresh := client(e.httpsAddr("127.0.0.1"), e.pebble.IssuerRoots(), nil)
	fresh.Transport.(*http.Transport).DisableKeepAlives = true
	var ok atomic.Int64
	for i := 0; i < 20; i++ {
		for _, cl := range []*http.Client{c, fresh} {
			if _, resp := getEcho(t, cl, "https://steady.test/"); resp.StatusCode != 200 {
				t.Fatalf("request during the outage: %s", resp.Status)
			}
			ok.Add(1)
		}
	}
	p.writeConfig(cfg + site([]string{"late.test"}, fmt.Sprintf("upstreams = [%q]", up.URL)))
	p.signal(syscall.SIGHUP)
	p.waitLog("config reloaded", 10*time.Second)
	p.waitLog("certificate attempt failed", 20*time.Second) // the order waits for storage
	if _, err := tryHandshake(e.httpsAddr("127.0.0.1"), "late.test", e.pebble.IssuerRoots(), nil); err == nil {
		t.Fatal("late.test was served during the outage; expected it to wait for storage")
	}

	rs.Restart()
	// the ledger could not be written during the outage, so nothing holds
	// the order back: it resumes at the next pass
	testkit.Eventually(t, 120*time.Second, "late.test issued after the outage", func() bool {
		_, err := tryHandshake(e.httpsAddr("127.0.0.1"), "late.test", e.pebble.IssuerRoots(), nil)
		return err == nil
	})
	if _, resp := getEcho(t, c, "https://steady.test/"); resp.StatusCode != 200 {
		t.Errorf("steady.test after the outage: %s", resp.Status)
	}
	if rsa, ec := countByKey(e.pebble.IssuedFor("steady.test")); rsa != 1 || ec != 1 {
		t.Errorf("steady.test was issued %d RSA and %d ECDSA certificates; the outage must not cause re-issuance", rsa, ec)
	}
	t.Logf("%d requests succeeded during the Redis outage", ok.Load())
	// the outage is logged once, and its end once, however many operations failed
	if down, back := strings.Count(p.log.String(), "storage unreachable"), strings.Count(p.log.String(), "storage reachable again"); down != 1 || back != 1 {
		t.Errorf("the outage was logged %d times and its end %d times; want once each", down, back)
	}
}

// TestRedisDownAtStart: an instance started while Redis is down starts,
// says so clearly, serves nothing it cannot load, and serves the stored
// certificates once Redis answers, without ordering them again.
func TestRedisDownAtStart(t *testing.T) {
	rs := redisserver.StartPersistent(t)
	e := newEnv(t, acmetest.PebbleOptions{})
	e.dns.SetA("stored.test", "127.0.0.1")
	cfg := e.redisConfig("127.0.0.1", rs.URL()) + site([]string{"stored.test"}, `respond = "ok"`)
	first := startPortico(t, t.TempDir(), cfg, e.httpsAddr("127.0.0.1"))
	testkit.Eventually(t, 60*time.Second, "both certificates for stored.test", func() bool {
		rsa, ec := countByKey(e.pebble.IssuedFor("stored.test"))
		return rsa > 0 && ec > 0
	})
	// stopping right after the CA signed: the orders in flight still
	// reach storage before the process exits
	first.stop()

	rs.Stop()
	p := startPortico(t, t.TempDir(), cfg, e.httpsAddr("127.0.0.1"))
	p.waitLog("storage unreachable", 10*time.Second)
	if _, err := tryHandshake(e.httpsAddr("127.0.0.1"), "stored.test", e.pebble.IssuerRoots(), nil); err == nil {
		t.Fatal("served a certificate it could not have loaded")
	}
	rs.Restart()
	for _, tweak := range []func(*tls.Config){tls13, rsaOnly} {
		testkit.Eventually(t, 60*time.Second, "stored certificates served once Redis is back", func() bool {
			_, err := tryHandshake(e.httpsAddr("127.0.0.1"), "stored.test", e.pebble.IssuerRoots(), tweak)
			return err == nil
		})
	}
	if rsa, ec := countByKey(e.pebble.IssuedFor("stored.test")); rsa != 1 || ec != 1 {
		t.Errorf("stored.test issued %d RSA, %d ECDSA: the stored ones should have been loaded", rsa, ec)
	}
}
