package integration

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/portico-proxy/portico/integration/acmetest"
	"github.com/portico-proxy/portico/integration/testkit"
)

// TestSessionResumptionAcrossInstances: two instances sharing storage share
// session ticket keys, so a client that got a ticket from one resumes on the
// other (as behind a load balancer).
func TestSessionResumptionAcrossInstances(t *testing.T) {
	httpPort, httpsPort := acmetest.FreePort(t), acmetest.FreePort(t)
	storage := t.TempDir() + "/data"
	cfg := func(ip string) string {
		return fmt.Sprintf(`
[acme]
ca = "local"
[listen]
http = "%s:%d"
https = "%s:%d"
[storage]
path = %q
[renewal]
check_interval = "1s"
`, ip, httpPort, ip, httpsPort, storage) + site([]string{"resume.test"}, `respond = "r"`)
	}
	a := startPortico(t, t.TempDir(), cfg("127.0.0.2"), fmt.Sprintf("127.0.0.2:%d", httpsPort))
	a.waitLog("certificate ready", 30*time.Second)
	startPortico(t, t.TempDir(), cfg("127.0.0.3"), fmt.Sprintf("127.0.0.3:%d", httpsPort))
	rootPEM, err := os.ReadFile(storage + "/localca/root.crt")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	cache := tls.NewLRUClientSessionCache(8)
	get := func(ip string) tls.ConnectionState {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "resume.test", ClientSessionCache: cache}}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		resp, err := c.Get(fmt.Sprintf("https://%s:%d/", ip, httpsPort))
		if err != nil {
			t.Fatalf("GET via %s: %v", ip, err)
		}
		io.Copy(io.Discard, resp.Body) // the TLS 1.3 ticket arrives after the handshake
		resp.Body.Close()
		return *resp.TLS
	}
	testkit.Eventually(t, 30*time.Second, "both instances serving", func() bool {
		_, e1 := tryHandshake(fmt.Sprintf("127.0.0.2:%d", httpsPort), "resume.test", roots, nil)
		_, e2 := tryHandshake(fmt.Sprintf("127.0.0.3:%d", httpsPort), "resume.test", roots, nil)
		return e1 == nil && e2 == nil
	})
	testkit.Eventually(t, 30*time.Second, "a session from instance A resumed on instance B", func() bool {
		if st := get("127.0.0.2"); st.DidResume {
			return false // want a fresh ticket from A
		}
		return get("127.0.0.3").DidResume
	})
}
