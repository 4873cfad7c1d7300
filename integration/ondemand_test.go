package integration

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portico-proxy/portico/integration/acmetest"
	"github.com/portico-proxy/portico/integration/testkit"
)

// TestOnDemandTLS: an allowed on-demand hostname gets a certificate at its
// first handshake and is proxied to the on-demand upstreams; a refused one
// gets none, fails quickly, and Pebble sees no order for it; when the ask
// endpoint stops allowing a name, it is dropped.
func TestOnDemandTLS(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	for _, h := range []string{"yes.od.test", "no.od.test"} {
		e.dns.SetA(h, "127.0.0.1")
	}
	var mu sync.Mutex
	allowed := map[string]bool{"yes.od.test": true}
	asked := map[string]int{}
	ask := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := r.URL.Query().Get("domain")
		mu.Lock()
		defer mu.Unlock()
		asked[d]++
		if !allowed[d] {
			http.Error(w, "no", http.StatusForbidden)
		}
	}))
	t.Cleanup(ask.Close)
	up := startEcho(t, "customer")
	dir := t.TempDir()
	cfg := e.acmeConfig("127.0.0.1", dir+"/data", `"http-01"`) +
		fmt.Sprintf("\n[on_demand]\nask = %q\nupstreams = [%q]\nmax_per_minute = 10\n", ask.URL+"/allowed", up.URL)
	p := startPortico(t, dir, cfg, e.httpsAddr("127.0.0.1"))
	addr := e.httpsAddr("127.0.0.1")

	start := time.Now()
	if _, err := tryHandshake(addr, "no.od.test", e.pebble.IssuerRoots(), nil); err == nil {
		t.Fatal("a refused hostname got a certificate")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("refusal took %v", d)
	}
	st, err := tryHandshake(addr, "yes.od.test", e.pebble.IssuerRoots(), tls13)
	if err != nil {
		t.Fatalf("first handshake of an allowed on-demand hostname: %v", err)
	}
	if st.PeerCertificates[0].DNSNames[0] != "yes.od.test" {
		t.Fatalf("served %v", st.PeerCertificates[0].DNSNames)
	}
	c := client(addr, e.pebble.IssuerRoots(), nil)
	if got, resp := getEcho(t, c, "https://yes.od.test/x"); resp.StatusCode != 200 || got.Upstream != "customer" {
		t.Fatalf("on-demand hostname not proxied to the on-demand upstreams: %v %+v", resp.Status, got)
	}
	// the other key type follows, managed like configured names
	testkit.Eventually(t, 60*time.Second, "both key types for yes.od.test", func() bool {
		rsa, ec := countByKey(e.pebble.IssuedFor("yes.od.test"))
		return rsa > 0 && ec > 0
	})
	if n := len(e.pebble.OrdersFor("no.od.test")); n != 0 {
		t.Errorf("Pebble saw %d orders for a refused hostname", n)
	}

	// the ask endpoint stops allowing it: dropped
	mu.Lock()
	allowed["yes.od.test"] = false
	mu.Unlock()
	p.waitLog("on-demand name dropped", 60*time.Second)
	if !strings.Contains(p.log.String(), `"name":"yes.od.test"`) {
		t.Error("drop not logged with the name")
	}
}
