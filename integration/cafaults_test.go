package integration

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/portico-proxy/portico/integration/acmetest"
	"github.com/portico-proxy/portico/integration/testkit"
)

// caInTheMiddle sits between Portico and Pebble and can fail, delay or hang
// ACME calls. It rewrites Pebble's absolute URLs so every call goes through it.
type caInTheMiddle struct {
	mode  atomic.Value // "pass", "fail", "delay", "hang", "hang-posts"
	calls atomic.Int64
	posts atomic.Int64 // ACME's state-changing requests: accounts, orders
	srv   *httptest.Server
	// pendingFailures makes it answer like smallstep step-ca: a failed
	// validation leaves the challenge and authorization "pending", with
	// the error kept on the challenge
	pendingFailures atomic.Bool
	authzPolls      atomic.Int64  // requests for authorizations
	done            chan struct{} // closed at cleanup: hung calls end, so Close does not wait on them
}

func startCAInTheMiddle(t *testing.T, pebble *acmetest.Pebble) *caInTheMiddle {
	m := &caInTheMiddle{done: make(chan struct{})}
	m.mode.Store("pass")
	target, _ := url.Parse(pebble.DirectoryURL())
	target.Path = ""
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = pebble.HTTPClient().Transport
	m.srv = httptest.NewTLSServer(nil)
	rp.ModifyResponse = func(resp *http.Response) error {
		from, to := target.Host, strings.TrimPrefix(m.srv.URL, "https://")
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		resp.Body.Close()
		body = bytes.ReplaceAll(body, []byte(from), []byte(to))
		if m.pendingFailures.Load() {
			body = failedToPending(body)
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
		for _, h := range []string{"Location", "Link"} {
			for i, v := range resp.Header.Values(h) {
				resp.Header[h][i] = strings.ReplaceAll(v, from, to)
			}
		}
		return nil
	}
	m.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.calls.Add(1)
		if strings.HasPrefix(r.URL.Path, "/authZ/") {
			m.authzPolls.Add(1)
		}
		if r.Method == http.MethodPost {
			m.posts.Add(1)
		}
		switch m.mode.Load() {
		case "fail":
			if r.Method == http.MethodPost {
				w.Header().Set("Content-Type", "application/problem+json")
				w.WriteHeader(http.StatusInternalServerError)
				io.WriteString(w, `{"type":"urn:ietf:params:acme:error:serverInternal","detail":"the CA is having a bad day","status":500}`)
				return
			}
		case "delay":
			select {
			case <-time.After(time.Second):
			case <-r.Context().Done():
				return
			}
		case "hang":
			m.hang(r)
			return
		case "hang-posts": // the directory answers; orders never finish
			if r.Method == http.MethodPost {
				m.hang(r)
				return
			}
		}
		rp.ServeHTTP(w, r)
	})
	t.Cleanup(func() { close(m.done); m.srv.Close() })
	return m
}

// failedToPending rewrites an invalid authorization or challenge to
// "pending", keeping the challenges' errors.
func failedToPending(body []byte) []byte {
	var obj map[string]any
	if json.Unmarshal(body, &obj) != nil || obj["status"] != "invalid" {
		return body
	}
	obj["status"] = "pending"
	if chals, ok := obj["challenges"].([]any); ok {
		for _, c := range chals {
			if c, ok := c.(map[string]any); ok && c["status"] == "invalid" {
				c["status"] = "pending"
			}
		}
	}
	out, err := json.Marshal(obj)
	if err != nil {
		return body
	}
	return out
}

// hang holds a call until its client gives up or the test ends.
func (m *caInTheMiddle) hang(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-m.done:
	}
}

func (m *caInTheMiddle) rootsFile(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "mitm-root.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m.srv.Certificate().Raw})
	if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// viaMiddle points a config made by e.acmeConfig at the middle instead of
// at e's Pebble.
func (m *caInTheMiddle) viaMiddle(t *testing.T, e *env, cfg string) string {
	cfg = strings.Replace(cfg, fmt.Sprintf("ca = %q", e.pebble.DirectoryURL()), fmt.Sprintf("ca = %q", m.srv.URL+"/dir"), 1)
	return strings.Replace(cfg, fmt.Sprintf("ca_roots = [%q]", e.pebble.RootsFile()), fmt.Sprintf("ca_roots = [%q]", m.rootsFile(t)), 1)
}

// TestCAFaults: a CA that returns errors gets each failure recorded and the
// site served once it recovers; a slow CA still issues; a CA that hangs does
// not stop Portico from serving what it has, reloading, or shutting down
// promptly.
func TestCAFaults(t *testing.T) {
	e := newEnv(t, acmetest.PebbleOptions{})
	for _, h := range []string{"a.faults.test", "b.faults.test"} {
		e.dns.SetA(h, "127.0.0.1")
	}
	mitm := startCAInTheMiddle(t, e.pebble)
	mitm.mode.Store("fail")
	dir := t.TempDir()
	base := mitm.viaMiddle(t, e, e.acmeConfig("127.0.0.1", dir+"/data", `"http-01"`))
	base += "backoff = [\"1s\"]\n"
	cfg := base + site([]string{"a.faults.test"}, `respond = "a"`)
	p := startPortico(t, dir, cfg, e.httpsAddr("127.0.0.1"))
	addr := e.httpsAddr("127.0.0.1")

	p.waitLog("the CA is having a bad day", 30*time.Second)
	if _, err := tryHandshake(addr, "a.faults.test", e.pebble.IssuerRoots(), nil); err == nil {
		t.Fatal("served a certificate while the CA fails every order")
	}
	mitm.mode.Store("delay") // recovers, slowly
	for _, tweak := range []func(*tls.Config){tls13, rsaOnly} {
		testkit.Eventually(t, 120*time.Second, "a.faults.test issued through a slow CA", func() bool {
			_, err := tryHandshake(addr, "a.faults.test", e.pebble.IssuerRoots(), tweak)
			return err == nil
		})
	}

	mitm.mode.Store("hang")
	calls := mitm.calls.Load() // before the reload: its order starts at once
	p.writeConfig(cfg + site([]string{"b.faults.test"}, `respond = "b"`))
	p.signal(syscall.SIGHUP)
	p.waitLog("config reloaded", 10*time.Second)
	testkit.Eventually(t, 20*time.Second, "an ACME call hanging", func() bool { return mitm.calls.Load() > calls })
	for i := 0; i < 5; i++ {
		if _, err := tryHandshake(addr, "a.faults.test", e.pebble.IssuerRoots(), nil); err != nil {
			t.Fatalf("a.faults.test not served while the CA hangs: %v", err)
		}
	}
	start := time.Now()
	p.stop()
	if d := time.Since(start); d > 25*time.Second {
		t.Errorf("shutdown with a hung CA call took %v", d)
	}
	if code := p.exitCode(); code != 0 {
		t.Errorf("exit code %d", code)
	}
}
