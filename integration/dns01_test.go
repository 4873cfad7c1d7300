package integration

import (
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/portico-proxy/portico/integration/acmetest"
	"github.com/portico-proxy/portico/integration/dnstest"
	"github.com/portico-proxy/portico/integration/testkit"
)

// TestDNS01WildcardWithKnot: end to end with a real authoritative DNS server
// (knot, started on a loopback port with TSIG) updated through RFC 2136 and
// Pebble resolving through it: a wildcard and an apex certificate are issued
// and served (the wildcard for any matching name, an exact name winning over
// it), no _acme-challenge TXT record is left in the zone, and the TSIG secret
// appears neither in the log nor in `portico validate`.
func TestDNS01WildcardWithKnot(t *testing.T) {
	k := dnstest.StartKnot(t, "zone.test", map[string]string{
		"@": "127.0.0.1", "*": "127.0.0.1", "exact": "127.0.0.1",
	})
	httpPort, httpsPort := acmetest.FreePort(t), acmetest.FreePort(t)
	pebble := acmetest.StartPebble(t, acmetest.PebbleOptions{ResolverAddr: k.Addr(), HTTPPort: httpPort, TLSPort: httpsPort})
	t.Setenv("PORTICO_TEST_TSIG", k.Key())
	dir := t.TempDir()
	cfg := fmt.Sprintf(`
[acme]
email = "ops@example.net"
agree_tos = true
ca = %q
ca_roots = [%q]
challenges = ["dns-01"]

[acme.dns]
provider = "rfc2136"
server = %q
key_name = %q
key_alg = %q
key = "{env.PORTICO_TEST_TSIG}"
resolvers = [%q]
propagation_timeout = "30s"

[listen]
http = "127.0.0.1:%d"
https = "127.0.0.1:%d"

[storage]
path = %q

[renewal]
check_interval = "1s"

[[site]]
hosts = ["*.zone.test", "zone.test"]
respond = "wild"

[[site]]
hosts = ["exact.zone.test"]
challenges = ["http-01"]
respond = "exact"
`, pebble.DirectoryURL(), pebble.RootsFile(), k.Addr(), k.KeyName(), k.KeyAlg(), k.Addr(), httpPort, httpsPort, dir+"/data")
	addr := fmt.Sprintf("127.0.0.1:%d", httpsPort)
	// `portico validate` shows no secret
	os.WriteFile(dir+"/validate.toml", []byte(cfg), 0o600)
	out, err := exec.Command(porticoBin, "validate", "-config", dir+"/validate.toml").CombinedOutput()
	if err != nil {
		t.Fatalf("validate: %v\n%s", err, out)
	}
	if strings.Contains(string(out), k.Key()) {
		t.Fatal("portico validate printed the TSIG secret")
	}

	p := startPortico(t, dir, cfg, addr)
	for _, name := range []string{"zone.test", "anything.zone.test", "other.zone.test", "exact.zone.test"} {
		for _, tweak := range []func(*tls.Config){tls13, rsaOnly} {
			testkit.Eventually(t, 90*time.Second, name+" served", func() bool {
				_, err := tryHandshake(addr, name, pebble.IssuerRoots(), tweak)
				return err == nil
			})
		}
	}
	leaf := handshake(t, addr, "anything.zone.test", pebble.IssuerRoots(), tls13).PeerCertificates[0]
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "*.zone.test" {
		t.Errorf("anything.zone.test served %v, want the wildcard", leaf.DNSNames)
	}
	// until its own certificate arrives the wildcard covers it; then the
	// exact certificate wins
	testkit.Eventually(t, 60*time.Second, "exact.zone.test served its own certificate", func() bool {
		st, err := tryHandshake(addr, "exact.zone.test", pebble.IssuerRoots(), tls13)
		return err == nil && st.PeerCertificates[0].DNSNames[0] == "exact.zone.test"
	})
	testkit.Eventually(t, 30*time.Second, "both key types of the wildcard and apex", func() bool {
		for _, n := range []string{"*.zone.test", "zone.test"} {
			if rsa, ec := countByKey(pebble.IssuedFor(n)); rsa < 1 || ec < 1 {
				return false
			}
		}
		return true
	})
	if txt := k.TXT("_acme-challenge.zone.test"); len(txt) != 0 {
		t.Errorf("TXT records left in the zone: %v", txt)
	}
	if strings.Contains(p.log.String(), k.Key()) {
		t.Error("the TSIG secret appears in the log")
	}
}
