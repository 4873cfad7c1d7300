package integration

import (
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portico-proxy/portico/integration/acmetest"
	"github.com/portico-proxy/portico/integration/testkit"
)

// TestReloadAppliesACMEOrRefuses: a SIGHUP that adds rsa2048 to [acme]
// key_types gets RSA-only clients a certificate without a restart; one
// that changes the CA sends the next order to the new CA; a
// reload whose site's DNS provider cannot be set up (Route 53 with an AWS
// profile the environment names but no file holds: `validate` cannot see
// that) answers 400 naming the site, and the running config stays: no name
// of the refused config is managed.
func TestReloadAppliesACMEOrRefuses(t *testing.T) {
	// the environment Portico inherits: good enough for every config
	// until a site uses Route 53
	t.Setenv("AWS_PROFILE", "portico-no-such-profile")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_REGION", "us-east-1")
	e := newEnv(t, acmetest.PebbleOptions{})
	e.dns.SetA("k.test", "127.0.0.1")
	adminAddr := fmt.Sprintf("127.0.0.1:%d", acmetest.FreePort(t))
	dir := t.TempDir()
	acme := func(keyTypes string) string {
		return strings.Replace(strings.Replace(e.acmeConfig("127.0.0.1", dir+"/data", `"http-01"`),
			"[listen]", "key_types = ["+keyTypes+"]\n\n[listen]", 1),
			"[storage]", fmt.Sprintf("admin = %q\n\n[storage]", adminAddr), 1)
	}
	sites := site([]string{"k.test"}, `respond = "k"`)
	p := startPortico(t, dir, acme(`"p256"`)+sites, e.httpsAddr("127.0.0.1"))
	addr := e.httpsAddr("127.0.0.1")
	testkit.Eventually(t, 60*time.Second, "the ECDSA certificate", func() bool {
		_, err := tryHandshake(addr, "k.test", e.pebble.IssuerRoots(), tls13)
		return err == nil
	})
	if _, err := tryHandshake(addr, "k.test", e.pebble.IssuerRoots(), rsaOnly); err == nil {
		t.Fatal(`an RSA-only client got a certificate with key_types = ["p256"]`)
	}

	p.writeConfig(acme(`"p256", "rsa2048"`) + sites)
	p.signal(syscall.SIGHUP)
	p.waitLog("config reloaded", 10*time.Second)
	testkit.Eventually(t, 60*time.Second, "an RSA certificate after rsa2048 was added by SIGHUP", func() bool {
		st, err := tryHandshake(addr, "k.test", e.pebble.IssuerRoots(), rsaOnly)
		return err == nil && st.PeerCertificates[0].PublicKeyAlgorithm == x509.RSA
	})

	// a new CA (Pebble behind a proxy, which counts the calls): the next
	// order goes to it
	mitm := startCAInTheMiddle(t, e.pebble)
	viaMITM := strings.Replace(strings.Replace(acme(`"p256", "rsa2048"`), fmt.Sprintf("ca = %q", e.pebble.DirectoryURL()),
		fmt.Sprintf("ca = %q", mitm.srv.URL+"/dir"), 1),
		fmt.Sprintf("ca_roots = [%q]", e.pebble.RootsFile()), fmt.Sprintf("ca_roots = [%q]", mitm.rootsFile(t)), 1)
	e.dns.SetA("two.test", "127.0.0.1")
	sites += site([]string{"two.test"}, `respond = "2"`)
	p.writeConfig(viaMITM + sites)
	p.signal(syscall.SIGHUP)
	testkit.Eventually(t, 60*time.Second, "two.test served after a reload that changed the CA", func() bool {
		_, err := tryHandshake(addr, "two.test", e.pebble.IssuerRoots(), tls13)
		return err == nil
	})
	if mitm.calls.Load() == 0 {
		t.Error("the order after the reload did not go to the new CA")
	}

	p.writeConfig(viaMITM + sites + site([]string{"other.test"}, `respond = "o"`) +
		site([]string{"*.r53.test"}, "respond = \"r\"\nchallenges = [\"dns-01\"]\n[site.dns]\nprovider = \"route53\""))
	resp, err := http.Post("http://"+adminAddr+"/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "*.r53.test") || !strings.Contains(string(body), "portico-no-such-profile") {
		t.Errorf("POST /reload of a config whose Route 53 site cannot be set up: %s %s, want 400 naming the site and the cause", resp.Status, body)
	}
	var rows []certRow
	adminGet(t, "http://"+adminAddr, "/certificates", &rows)
	for _, r := range rows {
		if r.Name != "k.test" && r.Name != "two.test" {
			t.Errorf("GET /certificates after a refused reload lists %s", r.Name)
		}
	}
}
