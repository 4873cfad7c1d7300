package integration

import (
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/portico-proxy/portico/integration/acmetest"
	"github.com/portico-proxy/portico/integration/testkit"
)

// TestSIGKILLDuringWrites: Portico is killed with SIGKILL at random moments
// while it writes certificates (30 names, both key types, local CA), five
// times; each restart serves every name. A torn certificate/key pair would
// leave a name unservable forever (the CA is never asked again for a name
// whose files exist), so serving all of them proves there is none.
func TestSIGKILLDuringWrites(t *testing.T) {
	httpPort, httpsPort := acmetest.FreePort(t), acmetest.FreePort(t)
	dir := t.TempDir()
	var hosts []string
	for i := 0; i < 30; i++ {
		hosts = append(hosts, fmt.Sprintf("k%02d.kill.test", i))
	}
	cfg := fmt.Sprintf(`
[acme]
ca = "local"
[listen]
http = "127.0.0.1:%d"
https = "127.0.0.1:%d"
[storage]
path = %q
[renewal]
check_interval = "1s"
backoff = ["1s"]
`, httpPort, httpsPort, dir+"/data") + site(hosts, `respond = "k"`)
	addr := fmt.Sprintf("127.0.0.1:%d", httpsPort)
	p := startPortico(t, dir, cfg, addr)
	kills := 0
	for round := 0; round < 5; round++ {
		// let it write for a random while, then kill it mid-flight
		n := strings.Count(p.log.String(), "certificate ready")
		testkit.Eventually(t, 30*time.Second, "some certificates being written", func() bool {
			return strings.Count(p.log.String(), "certificate ready") > n
		})
		time.Sleep(time.Duration(rand.IntN(150)) * time.Millisecond) // the random kill moment is the point of the test
		p.cmd.Process.Kill()
		<-p.done
		kills++
		p.start()
	}
	for _, h := range hosts {
		for _, tweak := range []func(*tls.Config){tls13, rsaOnly} {
			testkit.Eventually(t, 120*time.Second, h+" served after the kills", func() bool {
				_, err := tryHandshake(addr, h, nil, func(tc *tls.Config) { tweak(tc); tc.InsecureSkipVerify = true })
				return err == nil
			})
		}
	}
	t.Logf("%d SIGKILLs during certificate writes; every name served afterwards", kills)
}
