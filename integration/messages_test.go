package integration

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/portico-proxy/portico/integration/acmetest"
	"github.com/portico-proxy/portico/integration/testkit"
)

// TestOperatorMessages: the common ACME failures, produced against Pebble,
// give a log line that says what to check: an unreachable http-01 (nothing
// listens), DNS pointing at the wrong server, and a name that does not
// resolve. (CAA and rate limits cannot be produced by Pebble; unit tests
// cover their wording.)
func TestOperatorMessages(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	e.dns.SetA("refused.test", "127.0.0.9") // nothing listens there
	e.dns.SetA("wrong.test", "127.0.0.5")   // another web server
	// nx.test has no record at all
	other, err := net.Listen("tcp", fmt.Sprintf("127.0.0.5:%d", e.httpPort))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler()}
	go srv.Serve(other)
	t.Cleanup(func() { srv.Close() })
	dir := t.TempDir()
	cfg := e.acmeConfig("127.0.0.1", dir+"/data", `"http-01"`) +
		site([]string{"refused.test"}, `respond = "r"`) + site([]string{"wrong.test"}, `respond = "w"`) + site([]string{"nx.test"}, `respond = "n"`)
	p := startPortico(t, dir, cfg, e.httpsAddr("127.0.0.1"))
	for name, want := range map[string]string{
		"refused.test": "nothing accepted the connection",
		"wrong.test":   "did not answer the challenge",
		"nx.test":      "does not resolve in public DNS",
	} {
		testkit.Eventually(t, 60*time.Second, "operator message for "+name, func() bool {
			for _, line := range strings.Split(p.log.String(), "\n") {
				if strings.Contains(line, `"certificate attempt failed"`) && strings.Contains(line, `"name":"`+name+`"`) &&
					strings.Contains(line, want) {
					return true
				}
			}
			return false
		})
	}
}
