package proxy

// Pools that route around failure ([[pool]]), over the HTTP/1.1 fast path
// and HTTP/2 (net/http): each policy's distribution, passive and active
// health checks, failing open, retries when an upstream dies under load,
// timeouts, max_body_bytes, https upstreams with a private CA and mTLS,
// and the upstream metrics.

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/integration/testkit"
)

// namedUpstream answers with its name; /healthz answers health's status;
// /hold waits until release.
type namedUpstream struct {
	*httptest.Server
	name   string
	health atomic.Int32 // status of /healthz (200 unless set)
	hits   atomic.Int64 // requests other than health checks

	mu   sync.Mutex
	hold chan struct{}
}

func (u *namedUpstream) held() chan struct{} {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.hold
}

// release lets every held request go on.
func (u *namedUpstream) release() {
	u.mu.Lock()
	defer u.mu.Unlock()
	close(u.hold)
	u.hold = make(chan struct{})
}

func newNamedUpstream(t *testing.T, name string) *namedUpstream {
	t.Helper()
	u := &namedUpstream{name: name, hold: make(chan struct{})}
	u.health.Store(200)
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			w.WriteHeader(int(u.health.Load()))
			return
		}
		u.hits.Add(1)
		if r.URL.Path == "/hold" {
			<-u.held() // a slow request, in flight until released
		}
		io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Upstream", name)
		io.WriteString(w, name)
	}))
	t.Cleanup(func() {
		u.release()
		u.Close()
	})
	return u
}

func poolConfig(pool config.Pool, site config.Site) *config.Config {
	f := false
	site.Hosts = []string{"app.example.com"}
	site.Pool = pool.Name
	site.RedirectHTTPS = &f
	cfg := testConfig(site)
	cfg.Pools = []config.Pool{pool}
	return cfg
}

// withDefaults fills a test pool as config.Load would.
func withDefaults(p config.Pool) config.Pool {
	d := config.DefaultPool(p.Upstreams)
	d.Name = p.Name
	if p.Policy != "" {
		d.Policy = p.Policy
	}
	if p.HealthPath != "" {
		d.HealthPath, d.HealthInterval, d.HealthTimeout = p.HealthPath, p.HealthInterval, p.HealthTimeout
		d.UnhealthyAfter, d.HealthyAfter = p.UnhealthyAfter, p.HealthyAfter
	}
	if p.MaxFails != nil {
		d.MaxFails = p.MaxFails
	}
	if p.FailWindow != 0 {
		d.FailWindow = p.FailWindow
	}
	if p.ResponseHeaderTimeout != 0 {
		d.ResponseHeaderTimeout = p.ResponseHeaderTimeout
	}
	d.TLSCA, d.TLSServerName, d.TLSClientCert, d.TLSClientKey = p.TLSCA, p.TLSServerName, p.TLSClientCert, p.TLSClientKey
	return d
}

func urls(ups ...*namedUpstream) []string {
	var out []string
	for _, u := range ups {
		out = append(out, u.URL)
	}
	return out
}

// counts sends n GETs and counts which upstream answered each.
func counts(t *testing.T, c *http.Client, n int, hdr http.Header) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		resp, body := do(t, c, "GET", "https://app.example.com/x", nil, hdr)
		if resp.StatusCode != 200 {
			t.Fatalf("GET: %s %q", resp.Status, body)
		}
		got[body]++
	}
	return got
}

var twoPaths = []struct {
	name string
	h2   bool
}{{"fast", false}, {"h2", true}}

// TestPoolPolicies: how each policy spreads requests.
func TestPoolPolicies(t *testing.T) {
	a, b, c := newNamedUpstream(t, "a"), newNamedUpstream(t, "b"), newNamedUpstream(t, "c")
	for _, p := range twoPaths {
		t.Run(p.name, func(t *testing.T) {
			start := func(policy string) *http.Client {
				cfg := poolConfig(withDefaults(config.Pool{Name: "app", Upstreams: urls(a, b, c), Policy: policy}), config.Site{})
				cfg.Listen.TrustedProxies = []string{"127.0.0.1/32"}
				return startServer(t, cfg).client(t, p.h2)
			}
			if got := counts(t, start("round_robin"), 30, nil); got["a"] != 10 || got["b"] != 10 || got["c"] != 10 {
				t.Errorf("round_robin: %v, want 10 each", got)
			}
			if got := counts(t, start("first"), 10, nil); got["a"] != 10 {
				t.Errorf("first: %v, want all on a", got)
			}
			ipc := start("ip_hash")
			for _, client := range []string{"203.0.113.1", "203.0.113.2", "198.51.100.7"} {
				if got := counts(t, ipc, 6, http.Header{"X-Forwarded-For": {client}}); len(got) != 1 {
					t.Errorf("ip_hash: client %s went to %v, want one upstream", client, got)
				}
			}
			seen := map[string]bool{}
			for i := range 40 {
				got := counts(t, ipc, 1, http.Header{"X-Forwarded-For": {fmt.Sprintf("203.0.113.%d", i+10)}})
				for k := range got {
					seen[k] = true
				}
			}
			if len(seen) < 2 {
				t.Errorf("ip_hash: 40 clients all went to %v", seen)
			}
			if got := counts(t, start("random_two"), 60, nil); len(got) != 3 {
				t.Errorf("random_two: %v, want all three used", got)
			}
			// least_conn: a held request on one upstream sends the rest elsewhere
			lc := start("least_conn")
			ups := []*namedUpstream{a, b, c}
			before := make([]int64, 3)
			for i, u := range ups {
				before[i] = u.hits.Load()
			}
			held := make(chan *http.Response, 1)
			go func() {
				resp, err := lc.Get("https://app.example.com/hold")
				if err == nil {
					held <- resp
				}
			}()
			holder := ""
			eventually(t, "the held request reached an upstream", func() bool {
				for i, u := range ups {
					if u.hits.Load() > before[i] {
						holder = u.name
					}
				}
				return holder != ""
			})
			if got := counts(t, lc, 20, nil); got[holder] != 0 || len(got) != 2 {
				t.Errorf("least_conn: %v while %s holds a request", got, holder)
			}
			for _, u := range ups {
				u.release()
			}
			resp := recv(t, held, "the held answer")
			resp.Body.Close()
		})
	}
}

// TestPoolActiveHealth: /healthz turning 503 takes an upstream out within
// unhealthy_after checks, and 200 brings it back after healthy_after; when
// every upstream is out, requests still go (fail open).
func TestPoolActiveHealth(t *testing.T) {
	a, b := newNamedUpstream(t, "a"), newNamedUpstream(t, "b")
	pc := withDefaults(config.Pool{Name: "app", Upstreams: urls(a, b), HealthPath: "/healthz",
		HealthInterval: config.Duration(20 * time.Millisecond), HealthTimeout: config.Duration(20 * time.Millisecond),
		UnhealthyAfter: 2, HealthyAfter: 2})
	ts, logs := startLogged(t, poolConfig(pc, config.Site{}))
	for _, p := range twoPaths {
		c := ts.client(t, p.h2)
		b.health.Store(503)
		eventually(t, "b out after failing checks", func() bool { return counts(t, c, 4, nil)["b"] == 0 })
		if st := ts.srv.PoolStatus(); len(st) != 1 || st[0].Upstreams[1].State != "out: health checks" || st[0].Upstreams[0].State != "up" {
			t.Errorf("PoolStatus while b fails its checks: %+v", st)
		}
		if n := logs.FilterMessage("upstream failed its health checks; taken out").Len(); n == 0 {
			t.Error("no log line says b was taken out")
		}
		b.health.Store(200)
		eventually(t, "b back after passing checks", func() bool { return counts(t, c, 4, nil)["b"] > 0 })
		// every upstream out: requests still go to them
		a.health.Store(500)
		b.health.Store(500)
		eventually(t, "both out", func() bool {
			return logs.FilterMessage("upstream failed its health checks; taken out").Len() >= 3
		})
		if got := counts(t, c, 4, nil); got["a"]+got["b"] != 4 {
			t.Errorf("%s: with every upstream out: %v", p.name, got)
		}
		if logs.FilterMessage("every upstream of the pool is down; sending requests to them anyway").Len() == 0 {
			t.Errorf("%s: failing open is not logged", p.name)
		}
		a.health.Store(200)
		b.health.Store(200)
		eventually(t, "both back", func() bool { got := counts(t, c, 6, nil); return got["a"] > 0 && got["b"] > 0 })
	}
}

// resetter accepts connections and resets them at once: an upstream that
// is there but broken.
func resetter(t *testing.T) (url string, accepted *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = &atomic.Int64{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return "http://" + ln.Addr().String(), accepted
}

// TestPoolPassiveAndRetries: a broken upstream costs no failed idempotent
// request (another upstream answers), and after max_fails attempts within
// fail_window it gets no more for fail_window.
func TestPoolPassiveAndRetries(t *testing.T) {
	for _, p := range twoPaths {
		t.Run(p.name, func(t *testing.T) {
			good := newNamedUpstream(t, "good")
			bad, accepted := resetter(t)
			three := 3
			pc := withDefaults(config.Pool{Name: "app", Upstreams: []string{bad, good.URL}, MaxFails: &three, FailWindow: config.Duration(time.Minute)})
			c := startServer(t, poolConfig(pc, config.Site{})).client(t, p.h2)
			if got := counts(t, c, 20, nil); got["good"] != 20 {
				t.Errorf("20 GETs: %v, want every one answered by good", got)
			}
			if n := accepted.Load(); n != 3 {
				t.Errorf("the broken upstream got %d attempts, want max_fails = 3 and then none", n)
			}
			// a POST is not retried after it reached the broken upstream
			// (it may have been acted on) — but none reaches it any more
			resp, _ := do(t, c, "POST", "https://app.example.com/x", strings.NewReader("data"), nil)
			if resp.StatusCode != 200 {
				t.Errorf("POST while the broken upstream is out: %s", resp.Status)
			}
		})
	}
}

// upstreamProcessEnv makes this test binary serve as an upstream process
// (TestUpstreamProcess) on the address it names.
const upstreamProcessEnv = "PORTICO_TEST_UPSTREAM_PROCESS"

// TestUpstreamProcess is not a test: run with upstreamProcessEnv set (by
// startUpstreamProcess), it is an upstream in a process of its own, which
// a test can SIGKILL.
func TestUpstreamProcess(t *testing.T) {
	addr := os.Getenv(upstreamProcessEnv)
	if addr == "" {
		return // an ordinary run: nothing to serve
	}
	name := addr[strings.LastIndexByte(addr, ':')+1:]
	http.ListenAndServe(addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, name)
	}))
}

// startUpstreamProcess starts this test binary as an upstream on a free
// port and waits until it answers.
func startUpstreamProcess(t *testing.T) (url string, proc *os.Process) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestUpstreamProcess$")
	cmd.Env = append(os.Environ(), upstreamProcessEnv+"="+addr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	eventually(t, "the upstream process answers", func() bool {
		resp, err := http.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	return "http://" + addr, cmd.Process
}

// TestPoolUpstreamDiesUnderLoad: one of three upstream processes is
// SIGKILLed while clients send GETs: no GET fails.
func TestPoolUpstreamDiesUnderLoad(t *testing.T) {
	for _, p := range twoPaths {
		t.Run(p.name, func(t *testing.T) {
			var ups []string
			var procs []*os.Process
			for range 3 {
				u, proc := startUpstreamProcess(t)
				ups, procs = append(ups, u), append(procs, proc)
			}
			pc := withDefaults(config.Pool{Name: "app", Upstreams: ups})
			ts := startServer(t, poolConfig(pc, config.Site{}))
			var failed, total atomic.Int64
			var mu sync.Mutex
			seen := map[string]int{}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					cl := ts.client(t, p.h2)
					for {
						select {
						case <-stop:
							return
						default:
						}
						resp, err := cl.Get("https://app.example.com/x")
						total.Add(1)
						if err != nil {
							failed.Add(1)
							continue
						}
						body, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						if resp.StatusCode != 200 {
							failed.Add(1)
						}
						mu.Lock()
						seen[string(body)]++
						mu.Unlock()
					}
				}()
			}
			eventually(t, "load on every upstream", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(seen) == 3
			})
			if err := procs[1].Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			n := total.Load()
			eventually(t, "300 more requests after the SIGKILL", func() bool { return total.Load() > n+300 })
			close(stop)
			wg.Wait()
			if f := failed.Load(); f != 0 {
				t.Errorf("%d of %d GETs failed when one upstream process of three was killed", f, total.Load())
			}
		})
	}
}

// TestPoolTimeoutsAndBodyLimit: response_header_timeout answers 502;
// max_body_bytes answers 413, by length and by a chunked body.
func TestPoolTimeoutsAndBodyLimit(t *testing.T) {
	slow := newNamedUpstream(t, "slow")
	pc := withDefaults(config.Pool{Name: "app", Upstreams: urls(slow), ResponseHeaderTimeout: config.Duration(100 * time.Millisecond)})
	ts := startServer(t, poolConfig(pc, config.Site{MaxBodyBytes: 1000}))
	for _, p := range twoPaths {
		c := ts.client(t, p.h2)
		resp, body := get(t, c, "https://app.example.com/hold")
		if resp.StatusCode != 502 {
			t.Errorf("%s: an upstream that does not answer: %s %q", p.name, resp.Status, body)
		}
		resp, _ = do(t, c, "POST", "https://app.example.com/x", strings.NewReader(strings.Repeat("x", 1001)), nil)
		if resp.StatusCode != 413 {
			t.Errorf("%s: 1001 bytes over a 1000-byte limit: %s", p.name, resp.Status)
		}
		resp, _ = do(t, c, "POST", "https://app.example.com/x", io.MultiReader(strings.NewReader(strings.Repeat("x", 2000))), nil)
		if resp.StatusCode != 413 {
			t.Errorf("%s: a 2000-byte body of unknown length: %s", p.name, resp.Status)
		}
		resp, _ = do(t, c, "POST", "https://app.example.com/x", strings.NewReader(strings.Repeat("x", 1000)), nil)
		if resp.StatusCode != 200 {
			t.Errorf("%s: 1000 bytes: %s", p.name, resp.Status)
		}
	}
}

// TestPoolHeaderTimeoutReused: response_header_timeout on pooled
// connections, whose read deadline is armed lazily (h1.Conn.arm): a
// deadline left armed by the last answer and expired while the connection
// idled neither costs the connection nor fails the next request; an
// answer within the timeout is not cut short by a deadline armed a little
// early; one that does not come is cut at the timeout, not before.
func TestPoolHeaderTimeoutReused(t *testing.T) {
	const timeout = 400 * time.Millisecond
	var dials atomic.Int32
	hold := make(chan struct{})
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			time.Sleep(timeout / 3) // the upstream's own pace, well within the timeout
		case "/hold":
			<-hold
		}
		io.WriteString(w, "ok")
	}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			dials.Add(1)
		}
	}
	up.Start()
	t.Cleanup(func() { close(hold); up.Close() })
	pc := withDefaults(config.Pool{Name: "app", Upstreams: []string{up.URL}, ResponseHeaderTimeout: config.Duration(timeout)})
	ts := startServer(t, poolConfig(pc, config.Site{}))
	for _, p := range twoPaths {
		t.Run(p.name, func(t *testing.T) {
			c := ts.client(t, p.h2)
			for i := 0; i < 50; i++ {
				if resp, body := get(t, c, "https://app.example.com/"); resp.StatusCode != 200 {
					t.Fatalf("GET %d: %s %q", i, resp.Status, body)
				}
			}
			if resp, body := get(t, c, "https://app.example.com/slow"); resp.StatusCode != 200 {
				t.Errorf("an answer after a third of the timeout: %s %q", resp.Status, body)
			}
			before := dials.Load()
			// what is under test is time passing: the deadline armed for
			// the last answer expires while its connection idles
			time.Sleep(timeout + timeout/4)
			if resp, body := get(t, c, "https://app.example.com/"); resp.StatusCode != 200 {
				t.Errorf("after the idle connection's deadline expired: %s %q", resp.Status, body)
			}
			if n := dials.Load() - before; n != 0 {
				t.Errorf("the idle connection whose deadline expired was not reused: %d new upstream connections", n)
			}
			// half a timeout after the last answer, whose deadline is
			// still armed: the next one must be armed anew, not kept
			time.Sleep(timeout / 2)
			start := time.Now()
			resp, _ := get(t, c, "https://app.example.com/hold")
			took := time.Since(start)
			if resp.StatusCode != 502 {
				t.Errorf("an upstream that does not answer: %s", resp.Status)
			}
			if took < timeout-timeout/16 {
				t.Errorf("cut after %v, before the %v timeout (less the sixteenth arm allows)", took, timeout)
			}
		})
	}
}

// TestPoolTLSUpstream: an https:// upstream with a private CA (tls_ca) and
// a client certificate (mTLS); the wrong CA is refused with a 502 and a log
// line that says why.
func TestPoolTLSUpstream(t *testing.T) {
	dir := t.TempDir()
	serverCert := testkit.SelfSigned(t, "app.internal")
	clientCert := testkit.SelfSigned(t, "portico-client")
	caFile, _ := serverCert.WritePEM(t, dir)
	clientDir := t.TempDir()
	clientFile, clientKey := clientCert.WritePEM(t, clientDir)
	var sawClient atomic.Bool
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) > 0 && r.TLS.PeerCertificates[0].Subject.CommonName == "portico-client" {
			sawClient.Store(true)
		}
		io.WriteString(w, "tls "+r.Proto)
	}))
	// testkit's certificates are for servers (ExtKeyUsage): the upstream
	// checks the client's by its bytes
	up.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert.TLS}, ClientAuth: tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || !bytes.Equal(raw[0], clientCert.Leaf.Raw) {
				return errors.New("not Portico's client certificate")
			}
			return nil
		}}
	up.EnableHTTP2 = true
	up.StartTLS()
	t.Cleanup(up.Close)

	pc := withDefaults(config.Pool{Name: "app", Upstreams: []string{up.URL}, TLSCA: caFile, TLSServerName: "app.internal",
		TLSClientCert: clientFile, TLSClientKey: clientKey})
	c := startServer(t, poolConfig(pc, config.Site{})).client(t, true)
	resp, body := get(t, c, "https://app.example.com/")
	if resp.StatusCode != 200 || body != "tls HTTP/2.0" || !sawClient.Load() {
		t.Errorf("https upstream with tls_ca and mTLS: %s %q (client certificate seen: %v)", resp.Status, body, sawClient.Load())
	}

	other := testkit.SelfSigned(t, "someone-else")
	wrongCA, _ := other.WritePEM(t, t.TempDir())
	pc.TLSCA = wrongCA
	ts, logs := startLogged(t, poolConfig(pc, config.Site{}))
	resp, _ = get(t, ts.client(t, true), "https://app.example.com/")
	if resp.StatusCode != 502 {
		t.Errorf("the wrong CA: %s, want 502", resp.Status)
	}
	found := false
	for _, e := range logs.FilterMessage(logUpstreamFailed).All() {
		found = found || strings.Contains(fmt.Sprint(e.ContextMap()["error"]), "certificate")
	}
	if !found {
		t.Errorf("no %q log line says the certificate was refused", logUpstreamFailed)
	}
}

// TestPoolMetrics: healthy, requests by class and in flight, per pool and
// upstream.
func TestPoolMetrics(t *testing.T) {
	a := newNamedUpstream(t, "a")
	pc := withDefaults(config.Pool{Name: "app", Upstreams: urls(a)})
	ts := startServer(t, poolConfig(pc, config.Site{}))
	reg := prometheus.NewRegistry()
	if err := ts.srv.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	c := ts.client(t, false)
	counts(t, c, 3, nil)
	label := "{pool=app,upstream=" + a.URL + "}"
	eventually(t, "the answers counted", func() bool {
		m := scrape(t, reg)
		return m["portico_upstream_requests_total{code_class=2xx,pool=app,upstream="+a.URL+"}"] == 3 &&
			m["portico_upstream_healthy"+label] == 1 && m["portico_upstream_in_flight"+label] == 0
	})
	go c.Get("https://app.example.com/hold")
	eventually(t, "one request in flight", func() bool { return scrape(t, reg)["portico_upstream_in_flight"+label] == 1 })
}
