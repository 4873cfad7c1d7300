package integration

import (
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/portico-proxy/portico/integration/acmetest"
	"github.com/portico-proxy/portico/integration/testkit"
	"github.com/portico-proxy/portico/tlsmgr/storage/redis/redisserver"
)

// haConfig is the [acme]/[listen]/[storage] part of a config for a fleet
// instance on ip, with the [storage] lines that say which Redis (a
// redis_url, or Sentinel's or a Cluster's keys).
func (e *env) haConfig(ip, storage string) string {
	return fmt.Sprintf(`
[acme]
email = "ops@example.net"
agree_tos = true
ca = %q
ca_roots = [%q]
challenges = ["http-01"]

[listen]
http = "%s:%d"
https = "%s:%d"

[storage]
backend = "redis"
prefix = "fleet"
%s

[renewal]
check_interval = "1s"
`, e.pebble.DirectoryURL(), e.pebble.RootsFile(), ip, e.httpPort, ip, e.httpsPort, storage)
}

func tomlList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// haHosts registers n hostnames resolving to ip and returns them with
// their sites.
func haHosts(e *env, prefix string, n int, ip string) (hosts []string, sites string) {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		h := fmt.Sprintf("%s%02d.fleet.test", prefix, i)
		hosts = append(hosts, h)
		e.dns.SetA(h, ip)
		b.WriteString(site([]string{h}, fmt.Sprintf("respond = %q", h)))
	}
	return hosts, b.String()
}

// waitServesAll waits until p serves every host with both key types.
func waitServesAll(t *testing.T, e *env, p *portico, hosts []string, within time.Duration) {
	t.Helper()
	for _, h := range hosts {
		for _, tweak := range []func(*tls.Config){tls13, rsaOnly} {
			testkit.Eventually(t, within, h+" served by "+p.httpsAddr, func() bool {
				_, err := tryHandshake(p.httpsAddr, h, e.pebble.IssuerRoots(), tweak)
				return err == nil
			})
		}
	}
}

// TestFleetSentinelFailover: three instances share a Sentinel-managed Redis
// (a master, two replicas, three sentinels) and order 10 names. The master
// is SIGKILLed while the certificates are being issued. Afterwards every
// instance serves every name, a fourth instance started after the
// failover serves them all without ordering anything, and duplicate
// orders stay under 10%.
func TestFleetSentinelFailover(t *testing.T) {
	g := redisserver.StartSentinel(t, 2, 3)
	e := newEnv(t, acmetest.PebbleOptions{})
	hosts, sites := haHosts(e, "s", 10, "127.0.0.2")
	storage := fmt.Sprintf("redis_sentinels = %s\nredis_master = %q\n", tomlList(g.SentinelAddrs()), redisserver.MasterName)
	var fleet []*portico
	for i := 2; i <= 4; i++ {
		ip := fmt.Sprintf("127.0.0.%d", i)
		fleet = append(fleet, launchPortico(t, t.TempDir(), e.haConfig(ip, storage)+sites, e.httpsAddr(ip)))
	}
	for _, p := range fleet {
		p.waitListening()
	}
	const want = 20 // 10 names, two key types
	// one name every instance serves already, to check serving while
	// there is no master
	var first string
	testkit.Eventually(t, 120*time.Second, "a name served by the whole fleet", func() bool {
		for _, h := range hosts {
			if servedByAll(e, fleet, h) {
				first = h
				return true
			}
		}
		return false
	})
	before := len(e.pebble.Issued())
	old := g.Master.Addr
	g.Master.Stop() // SIGKILL
	t.Logf("master %s killed after %d of %d certificates", old, before, want)
	if before >= want {
		t.Errorf("all %d certificates were issued before the master died; the test wants it to die mid-issuance", before)
	}
	if !servedByAll(e, fleet, first) {
		t.Errorf("%s not served by every instance right after the master died", first)
	}
	testkit.Eventually(t, 60*time.Second, "a replica promoted", func() bool {
		addr, err := g.CurrentMaster(t.Context())
		return err == nil && addr != old
	})

	for _, p := range fleet {
		waitServesAll(t, e, p, hosts, 180*time.Second)
	}
	testkit.Eventually(t, 60*time.Second, "both key types of every name", func() bool {
		for _, h := range hosts {
			if rsa, ec := countByKey(e.pebble.IssuedFor(h)); rsa == 0 || ec == 0 {
				return false
			}
		}
		return true
	})
	issued := len(e.pebble.Issued())

	late := startPortico(t, t.TempDir(), e.haConfig("127.0.0.5", storage)+sites, e.httpsAddr("127.0.0.5"))
	waitServesAll(t, e, late, hosts, 60*time.Second)
	if n := len(e.pebble.Issued()); n != issued {
		t.Errorf("the instance started after the failover ordered %d certificates; want it to load them all from storage", n-issued)
	}

	dups := issued - want
	t.Logf("certificates issued: %d for %d (name, key type) pairs: %d duplicates (%.0f%%); orders created: %d",
		issued, want, dups, 100*float64(dups)/want, len(e.pebble.Orders()))
	if dups*10 >= want {
		t.Errorf("%d duplicate certificates of %d; want under 10%%", dups, want)
	}
}

// servedByAll reports whether every instance completes a new handshake for
// host.
func servedByAll(e *env, fleet []*portico, host string) bool {
	for _, p := range fleet {
		if _, err := tryHandshake(p.httpsAddr, host, e.pebble.IssuerRoots(), tls13); err != nil {
			return false
		}
	}
	return true
}

// TestFleetCluster: two instances share a 3-master Redis Cluster, where
// each certificate's keys and lock live in one slot and the fleet's keys
// spread over all three masters. Each name is ordered exactly once per key
// type, and both instances serve every name.
func TestFleetCluster(t *testing.T) {
	c := redisserver.StartCluster(t, 3)
	e := newEnv(t, acmetest.PebbleOptions{})
	hosts, sites := haHosts(e, "c", 6, "127.0.0.2")
	storage := fmt.Sprintf("redis_cluster = %s\n", tomlList(c.Addrs()))
	var fleet []*portico
	for i := 2; i <= 3; i++ {
		ip := fmt.Sprintf("127.0.0.%d", i)
		fleet = append(fleet, launchPortico(t, t.TempDir(), e.haConfig(ip, storage)+sites, e.httpsAddr(ip)))
	}
	for _, p := range fleet {
		p.waitListening()
	}
	for _, p := range fleet {
		waitServesAll(t, e, p, hosts, 180*time.Second)
	}
	testkit.Eventually(t, 60*time.Second, "both key types of every name", func() bool {
		for _, h := range hosts {
			if rsa, ec := countByKey(e.pebble.IssuedFor(h)); rsa == 0 || ec == 0 {
				return false
			}
		}
		return true
	})
	for _, h := range hosts {
		if rsa, ec := countByKey(e.pebble.IssuedFor(h)); rsa != 1 || ec != 1 {
			t.Errorf("%s: issued %d RSA and %d ECDSA certificates, want exactly 1 and 1", h, rsa, ec)
		}
	}
}
