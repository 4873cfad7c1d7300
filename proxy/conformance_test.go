package proxy

import (
	"crypto/tls"
	"encoding/xml"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// h2spec is the HTTP/2 conformance suite (github.com/summerwind/h2spec),
// fetched and run by go run at a pinned version, as the Makefile does for
// staticcheck.
const h2spec = "github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible"

// TestHTTP2Conformance runs h2spec against the proxy's TLS listener and
// against a bare net/http TLS server with the same certificate: the proxy
// fails no case that net/http passes. Portico's HTTP/2 is net/http's, with
// its own checks in front (refuseMalformed, the 421 authority check) and
// the upstream transport behind; this keeps those from breaking what
// net/http gets right. (net/http itself fails four cases of h2spec 2.2.1,
// about frames it tolerates, which the proxy inherits.)
func TestHTTP2Conformance(t *testing.T) {
	answer := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})
	up := httptest.NewServer(answer)
	t.Cleanup(up.Close)
	ts := startServer(t, testConfig(proxySite([]string{"localhost"}, up.URL)))

	bare := httptest.NewUnstartedServer(answer)
	bare.EnableHTTP2 = true
	bare.TLS = &tls.Config{Certificates: []tls.Certificate{ts.certs.TLS}}
	bare.Config.ErrorLog = log.New(io.Discard, "", 0) // h2spec's bad frames, logged by net/http
	bare.StartTLS()
	t.Cleanup(bare.Close)
	_, barePort, _ := net.SplitHostPort(bare.Listener.Addr().String())

	// a case failed by the proxy alone counts if it fails again in a
	// second round: a few of h2spec's cases depend on timing (net/http
	// itself fails "multiple values of SETTINGS_INITIAL_WINDOW_SIZE" in
	// some runs and not in others)
	var onlyProxy map[string]bool
	for round := 0; round < 2 && (round == 0 || len(onlyProxy) > 0); round++ {
		proxied, proxiedFailed := runH2spec(t, ts.httpsPort())
		plain, plainFailed := runH2spec(t, barePort)
		if proxied < 100 || proxied != plain {
			t.Fatalf("h2spec ran %d cases against the proxy and %d against net/http: want the same 100 or more", proxied, plain)
		}
		again := map[string]bool{}
		for name := range proxiedFailed {
			if !plainFailed[name] && (round == 0 || onlyProxy[name]) {
				again[name] = true
			}
		}
		onlyProxy = again
		t.Logf("h2spec round %d: %d cases; the proxy fails %d, net/http %d", round+1, proxied, len(proxiedFailed), len(plainFailed))
	}
	for name := range onlyProxy {
		t.Errorf("the proxy fails a case net/http passes, twice: %s", name)
	}
}

// runH2spec runs h2spec against localhost:port over TLS and returns how
// many cases it ran and the names of those that failed.
func runH2spec(t *testing.T, port string) (cases int, failed map[string]bool) {
	t.Helper()
	report := filepath.Join(t.TempDir(), "h2spec.xml")
	cmd := exec.Command("go", "run", h2spec, "-h", "localhost", "-p", port, "-t", "-k", "-o", "3", "-j", report)
	out, err := cmd.CombinedOutput()
	// h2spec exits non-zero when a case fails: the report says which
	raw, rerr := os.ReadFile(report)
	if rerr != nil {
		t.Fatalf("h2spec wrote no report (%v): %v\n%s", rerr, err, out)
	}
	var suites struct {
		Suites []struct {
			Cases []struct {
				Package string    `xml:"package,attr"`   // its section: "http2/6.5.3"
				Class   string    `xml:"classname,attr"` // what it sends
				Name    string    `xml:"name,attr"`
				Failure *struct{} `xml:"failure"`
				Error   *struct{} `xml:"error"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(raw, &suites); err != nil {
		t.Fatalf("h2spec's report: %v", err)
	}
	failed = map[string]bool{}
	for _, s := range suites.Suites {
		for _, c := range s.Cases {
			cases++
			if c.Failure != nil || c.Error != nil {
				failed[c.Package+" "+c.Class+c.Name] = true
			}
		}
	}
	return cases, failed
}
