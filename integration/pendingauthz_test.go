package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/portico-proxy/portico/integration/acmetest"
	"github.com/portico-proxy/portico/integration/testkit"
)

// TestPendingChallengeError: against a CA that leaves a failed challenge
// pending with its error (as smallstep step-ca does; here Pebble behind a
// proxy that rewrites "invalid" to "pending"), Portico stops polling soon
// after the CA reports the error, records the CA's words in the ledger
// (GET /certificates, which `portico certs` shows) and gives a hint, for
// both key types of the name, in seconds rather than after 5 minutes.
func TestPendingChallengeError(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	e.dns.SetA("unreachable.test", "127.0.0.9") // nothing listens there
	mitm := startCAInTheMiddle(t, e.pebble)
	mitm.pendingFailures.Store(true)
	adminAddr := fmt.Sprintf("127.0.0.1:%d", acmetest.FreePort(t))
	dir := t.TempDir()
	cfg := strings.Replace(e.acmeConfig("127.0.0.1", dir+"/data", `"http-01"`), fmt.Sprintf("ca = %q", e.pebble.DirectoryURL()),
		fmt.Sprintf("ca = %q", mitm.srv.URL+"/dir"), 1)
	cfg = strings.Replace(cfg, fmt.Sprintf("ca_roots = [%q]", e.pebble.RootsFile()), fmt.Sprintf("ca_roots = [%q]", mitm.rootsFile(t)), 1)
	cfg = strings.Replace(cfg, "[storage]", fmt.Sprintf("admin = %q\n\n[storage]", adminAddr), 1)
	p := startPortico(t, dir, cfg+site([]string{"unreachable.test"}, `respond = "u"`), e.httpsAddr("127.0.0.1"))

	var rows []certRow
	testkit.Eventually(t, 60*time.Second, "a failure with the CA's words for both key types", func() bool {
		adminGet(t, "http://"+adminAddr, "/certificates", &rows)
		failed := 0
		for _, r := range rows {
			if r.Failures > 0 && strings.Contains(r.LastError, "urn:ietf:params:acme:error:connection") {
				failed++
			}
		}
		return failed == 2
	})
	for _, r := range rows {
		if strings.Contains(r.LastError, "took too long") {
			t.Errorf("%s: the ledger says %q, not the CA's error", r.KeyType, r.LastError)
		}
	}
	t.Logf("ledger: %+v; authorization requests: %d", rows, mitm.authzPolls.Load())
	if n := mitm.authzPolls.Load(); n > 40 {
		t.Errorf("%d authorization requests for two orders: the polling did not stop at the CA's error", n)
	}
	for _, line := range strings.Split(p.log.String(), "\n") {
		if strings.Contains(line, `"certificate attempt failed"`) && !strings.Contains(line, `"what_to_check":"the CA could not connect to unreachable.test`) &&
			!strings.Contains(line, `"what_to_check":"the CA reached the address DNS gives for unreachable.test`) {
			t.Errorf("failure log line without a hint about the site's reachability: %s", line)
		}
	}
}
