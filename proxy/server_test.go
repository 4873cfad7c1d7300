package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/integration/testkit"
)

// waitTimeout bounds every wait in these tests; nothing should come near it.
const waitTimeout = 10 * time.Second

// certs is the proxy tests' certificate: self-signed for every name they
// use (the real manager needs a CA). A test serves it with Source and
// trusts it with Pool.
func certs(t testing.TB) *testkit.Cert {
	t.Helper()
	return testkit.SelfSigned(t, "example.com", "*.example.com", "example.net", "*.example.net", "*.example.org",
		"localhost", "127.0.0.1", "::1")
}

// testServer is a started proxy.Server on 127.0.0.1 ports.
type testServer struct {
	srv             *Server
	httpAddr, https string
	certs           *testkit.Cert
}

func testConfig(sites ...config.Site) *config.Config {
	return &config.Config{
		Listen: config.Listen{HTTP: "127.0.0.1:0", HTTPS: "127.0.0.1:0"},
		Sites:  sites,
	}
}

func proxySite(hosts []string, upstreams ...string) config.Site {
	return config.Site{Hosts: hosts, Upstreams: upstreams}
}

func startServer(t testing.TB, cfg *config.Config) *testServer {
	t.Helper()
	return startWith(t, cfg, nil, zap.NewNop())
}

// startWith starts a proxy for cfg with a logger and the certificates of
// src (nil: a fresh test certificate, which ts.certs holds), and shuts it
// down when the test ends.
func startWith(t testing.TB, cfg *config.Config, src Certificates, logger *zap.Logger) *testServer {
	t.Helper()
	c := certs(t)
	if src == nil {
		src = c.Source()
	}
	srv, err := New(cfg, src, logger)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		srv.Shutdown(ctx)
	})
	h, s := srv.Addrs()
	if s == "" {
		t.Fatalf("Addrs() = %q, %q after Start", h, s)
	}
	return &testServer{srv: srv, httpAddr: h, https: s, certs: c}
}

// slowUpstream answers "slow done" once released: each request signals
// started, then waits for a value on release (or releaseAll, which the
// test's end calls).
type slowUpstream struct {
	*httptest.Server
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

func newSlowUpstream(t *testing.T) *slowUpstream {
	t.Helper()
	s := &slowUpstream{started: make(chan struct{}, 1), release: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.started <- struct{}{}
		select {
		case <-s.release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "slow done")
	}))
	t.Cleanup(s.Close)
	t.Cleanup(s.releaseAll)
	return s
}

// releaseAll lets every waiting and later request finish.
func (s *slowUpstream) releaseAll() { s.once.Do(func() { close(s.release) }) }

// getResult is what getAsync got.
type getResult struct {
	status int
	body   string
	err    error
}

// getAsync sends a GET in the background; its result comes on the channel.
func getAsync(c *http.Client, url string) <-chan getResult {
	done := make(chan getResult, 1)
	go func() {
		resp, err := c.Get(url)
		if err != nil {
			done <- getResult{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		done <- getResult{resp.StatusCode, string(b), err}
	}()
	return done
}

func (ts *testServer) httpsPort() string {
	_, p, _ := net.SplitHostPort(ts.https)
	return p
}

// client is a real net/http client that sends https://host/ to the proxy's
// TLS listener and http://host/ to its plain one, verifying the test
// certificate, and does not follow redirects.
func (ts *testServer) client(t *testing.T, h2 bool) *http.Client {
	t.Helper()
	d := &net.Dialer{Timeout: waitTimeout}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, _ := net.SplitHostPort(addr)
			switch port {
			case "443":
				return d.DialContext(ctx, network, ts.https)
			case "80":
				return d.DialContext(ctx, network, ts.httpAddr)
			}
			return nil, fmt.Errorf("test client: unexpected address %s", addr)
		},
		TLSClientConfig:   &tls.Config{RootCAs: ts.certs.Pool},
		ForceAttemptHTTP2: h2,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport:     tr,
		Timeout:       waitTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// seen is what an echo upstream reports about the request it received.
type seen struct {
	Upstream  string
	Method    string
	Host      string
	URI       string
	XFF       []string
	XFProto   []string
	XFHost    []string
	Forwarded []string
	Body      string
}

// echoUpstream is a real upstream that answers with what it saw, in JSON.
func echoUpstream(t *testing.T, name string) *httptest.Server {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Upstream", name)
		json.NewEncoder(w).Encode(seen{
			Upstream:  name,
			Method:    r.Method,
			Host:      r.Host,
			URI:       r.RequestURI,
			XFF:       r.Header.Values("X-Forwarded-For"),
			XFProto:   r.Header.Values("X-Forwarded-Proto"),
			XFHost:    r.Header.Values("X-Forwarded-Host"),
			Forwarded: r.Header.Values("Forwarded"),
			Body:      string(body),
		})
	}))
	t.Cleanup(up.Close)
	return up
}

// closedURL is an http URL on a loopback port nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	// A socket bound to the port but not listening: a dial to it is
	// refused, and nothing else can take the port while the test runs. (A
	// port closed after listening was free for any other test process to
	// take: once, another package's :80 listener answered the "dead"
	// upstream with a 308.)
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

func do(t *testing.T, c *http.Client, method, url string, body io.Reader, hdr http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp, string(b)
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	return do(t, c, http.MethodGet, url, nil, nil)
}

func getSeen(t *testing.T, c *http.Client, url string, hdr http.Header) seen {
	t.Helper()
	resp, body := do(t, c, http.MethodGet, url, nil, hdr)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, body)
	}
	var s seen
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("GET %s: not an upstream answer: %v: %q", url, err, body)
	}
	return s
}

// eventually polls cond until it holds or waitTimeout passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.Eventually(t, waitTimeout, what, cond)
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTimeout):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func TestProxyRoutesByHost(t *testing.T) {
	a, b, w := echoUpstream(t, "a"), echoUpstream(t, "b"), echoUpstream(t, "wild")
	ts := startServer(t, testConfig(
		proxySite([]string{"app.example.com"}, a.URL),
		proxySite([]string{"api.example.com", "api2.example.com"}, b.URL),
		proxySite([]string{"*.example.net"}, w.URL),
	))
	c := ts.client(t, false)
	for host, want := range map[string]string{
		"app.example.com":  "a",
		"APP.example.com":  "a",
		"api.example.com":  "b",
		"api2.example.com": "b",
		"x.example.net":    "wild",
		"y.example.net":    "wild",
	} {
		s := getSeen(t, c, "https://"+host+"/p?q=1", nil)
		if s.Upstream != want {
			t.Errorf("https://%s/ reached upstream %q, want %q", host, s.Upstream, want)
		}
		if s.URI != "/p?q=1" {
			t.Errorf("https://%s/p?q=1 reached the upstream as %q", host, s.URI)
		}
	}
}

func TestProxyForwardedHeadersAndHost(t *testing.T) {
	up := echoUpstream(t, "a")
	f := false
	site := proxySite([]string{"app.example.com"}, up.URL)
	site.RedirectHTTPS = &f
	ts := startServer(t, testConfig(site))
	c := ts.client(t, false)
	spoofed := http.Header{
		"X-Forwarded-For":   {"203.0.113.7, 198.51.100.1"},
		"X-Forwarded-Host":  {"evil.example.org"},
		"X-Forwarded-Proto": {"https"},
		"Forwarded":         {"for=203.0.113.7;proto=https"},
	}
	for _, tc := range []struct{ scheme, proto string }{{"https", "https"}, {"http", "http"}} {
		t.Run(tc.scheme, func(t *testing.T) {
			for _, hdr := range []http.Header{nil, spoofed} {
				s := getSeen(t, c, tc.scheme+"://app.example.com/x", hdr)
				if s.Host != "app.example.com" {
					t.Errorf("upstream saw Host %q, want app.example.com (preserved)", s.Host)
				}
				if len(s.XFF) != 1 || s.XFF[0] != "127.0.0.1" {
					t.Errorf("client sent X-Forwarded-For %q; upstream saw %q, want exactly [127.0.0.1]", hdr.Values("X-Forwarded-For"), s.XFF)
				}
				if len(s.XFProto) != 1 || s.XFProto[0] != tc.proto {
					t.Errorf("upstream saw X-Forwarded-Proto %q, want [%s]", s.XFProto, tc.proto)
				}
				if len(s.XFHost) != 1 || s.XFHost[0] != "app.example.com" {
					t.Errorf("upstream saw X-Forwarded-Host %q, want [app.example.com]", s.XFHost)
				}
				if len(s.Forwarded) != 0 {
					t.Errorf("client's Forwarded header reached the upstream: %q", s.Forwarded)
				}
			}
		})
	}
}

func TestProxyRoundRobin(t *testing.T) {
	a, b := echoUpstream(t, "a"), echoUpstream(t, "b")
	ts := startServer(t, testConfig(proxySite([]string{"app.example.com"}, a.URL, b.URL)))
	c := ts.client(t, false)
	counts := map[string]int{}
	prev := ""
	for i := 0; i < 10; i++ {
		s := getSeen(t, c, "https://app.example.com/", nil)
		if s.Upstream == prev {
			t.Errorf("request %d went to %q again; want alternation", i, s.Upstream)
		}
		prev = s.Upstream
		counts[s.Upstream]++
	}
	if counts["a"] != 5 || counts["b"] != 5 {
		t.Errorf("10 requests split %v, want 5 and 5", counts)
	}
}

func TestProxyOneUpstreamDown(t *testing.T) {
	live := echoUpstream(t, "live")
	ts := startServer(t, testConfig(proxySite([]string{"app.example.com"}, closedURL(t), live.URL, closedURL(t))))
	c := ts.client(t, false)
	// Six requests start at each position of the pool twice, so each dead
	// upstream is tried first at least once.
	for i := 0; i < 6; i++ {
		if s := getSeen(t, c, "https://app.example.com/", nil); s.Upstream != "live" {
			t.Fatalf("request %d reached %q", i, s.Upstream)
		}
		// A request body survives a failed dial and reaches the live upstream whole.
		payload := fmt.Sprintf("payload-%d-%s", i, strings.Repeat("x", 1000))
		resp, body := do(t, c, http.MethodPost, "https://app.example.com/post", strings.NewReader(payload), nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %d: %s: %s", i, resp.Status, body)
		}
		var s seen
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatal(err)
		}
		if s.Method != http.MethodPost || s.Body != payload {
			t.Fatalf("POST %d: upstream saw %s with a %d-byte body, want POST with %d bytes", i, s.Method, len(s.Body), len(payload))
		}
	}
}

func TestProxyAllUpstreamsDown(t *testing.T) {
	down1, down2 := closedURL(t), closedURL(t)
	ts := startServer(t, testConfig(proxySite([]string{"app.example.com"}, down1, down2)))
	c := ts.client(t, false)
	resp, body := get(t, c, "https://app.example.com/")
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %s, want 502", resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want text/plain", ct)
	}
	if len(body) == 0 || len(body) > 120 || strings.Count(body, "\n") > 1 {
		t.Errorf("body %q: want one short line", body)
	}
	for _, u := range []string{down1, down2} {
		if strings.Contains(body, strings.TrimPrefix(u, "http://")) {
			t.Errorf("502 body %q names the internal upstream %s", body, u)
		}
	}
}

func TestProxyUnknownHost(t *testing.T) {
	up := echoUpstream(t, "a")
	ts := startServer(t, testConfig(proxySite([]string{"app.example.com"}, up.URL)))
	c := ts.client(t, false)
	for _, u := range []string{"https://unknown.example.org/", "http://unknown.example.org/", "https://example.com/", "https://other.example.com/"} {
		resp, body := get(t, c, u)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %s, want 404", u, resp.Status)
		}
		if strings.Contains(body, "{") {
			t.Errorf("GET %s reached an upstream: %q", u, body)
		}
	}
}

func TestHTTPRedirectsToHTTPS(t *testing.T) {
	up := echoUpstream(t, "a")
	ts := startServer(t, testConfig(proxySite([]string{"app.example.com", "*.example.net"}, up.URL)))
	c := ts.client(t, false)
	for _, tc := range []struct{ url, want string }{
		{"http://app.example.com/", "https://app.example.com:" + ts.httpsPort() + "/"},
		{"http://app.example.com/a/b?x=1&y=%2F", "https://app.example.com:" + ts.httpsPort() + "/a/b?x=1&y=%2F"},
		{"http://app.example.com/sp%20ace/?q", "https://app.example.com:" + ts.httpsPort() + "/sp%20ace/?q"},
		{"http://w.example.net/p?q=1", "https://w.example.net:" + ts.httpsPort() + "/p?q=1"},
	} {
		resp, _ := get(t, c, tc.url)
		if resp.StatusCode != http.StatusPermanentRedirect {
			t.Errorf("GET %s: %s, want 308", tc.url, resp.Status)
			continue
		}
		if loc := resp.Header.Get("Location"); loc != tc.want {
			t.Errorf("GET %s: Location %q, want %q", tc.url, loc, tc.want)
		}
		if h := resp.Header.Get("Strict-Transport-Security"); h != "" {
			t.Errorf("GET %s: plain-HTTP redirect carries HSTS %q", tc.url, h)
		}
	}
}

// TestHTTPRedirectPort443 checks the redirect target when HTTPS is on the
// default port (which a test cannot bind): no port, and IPv6 literals keep
// their brackets. The server is built but not started, so it has no port.
func TestHTTPRedirectPort443(t *testing.T) {
	srv, err := New(testConfig(config.Site{Hosts: []string{"app.example.com", "::1"}, Respond: "ok"}), certs(t).Source(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ url, host, want string }{
		{"http://app.example.com/a?b=c", "app.example.com", "https://app.example.com/a?b=c"},
		{"http://app.example.com:80/a", "app.example.com:80", "https://app.example.com/a"},
		{"http://[::1]/a?b", "[::1]", "https://[::1]/a?b"},
		{"http://[::1]:80/a", "[::1]:80", "https://[::1]/a"},
	} {
		req := httptest.NewRequest(http.MethodGet, tc.url, nil)
		req.Host = tc.host
		rec := httptest.NewRecorder()
		srv.serveHTTP(rec, req)
		if rec.Code != http.StatusPermanentRedirect || rec.Header().Get("Location") != tc.want {
			t.Errorf("GET %s (Host %s): %d %q, want 308 %q", tc.url, tc.host, rec.Code, rec.Header().Get("Location"), tc.want)
		}
	}
}

func TestHTTPPlainProxyWhenRedirectOff(t *testing.T) {
	up := echoUpstream(t, "a")
	f := false
	site := proxySite([]string{"app.example.com"}, up.URL)
	site.RedirectHTTPS = &f
	site.HSTSMaxAge = config.Duration(1440 * time.Hour)
	ts := startServer(t, testConfig(site))
	c := ts.client(t, false)
	resp, body := get(t, c, "http://app.example.com/plain?x=1")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET http: %s: %s", resp.Status, body)
	}
	var s seen
	if err := json.Unmarshal([]byte(body), &s); err != nil || s.Upstream != "a" || s.URI != "/plain?x=1" {
		t.Fatalf("GET http: upstream answer %q (%v)", body, err)
	}
	if h := resp.Header.Values("Strict-Transport-Security"); len(h) != 0 {
		t.Errorf("plain HTTP response carries HSTS %q", h)
	}
}

func TestRespondText(t *testing.T) {
	f := false
	ts := startServer(t, testConfig(
		config.Site{Hosts: []string{"app.example.com"}, Respond: "hello from portico\n"},
		config.Site{Hosts: []string{"plain.example.com"}, Respond: "plain hello", RedirectHTTPS: &f},
	))
	c := ts.client(t, false)
	for _, tc := range []struct{ url, want string }{
		{"https://app.example.com/any/path?x", "hello from portico\n"},
		{"https://plain.example.com/", "plain hello"},
		{"http://plain.example.com/", "plain hello"},
	} {
		resp, body := get(t, c, tc.url)
		if resp.StatusCode != http.StatusOK || body != tc.want {
			t.Errorf("GET %s: %s %q, want 200 %q", tc.url, resp.Status, body, tc.want)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
			t.Errorf("GET %s: Content-Type %q", tc.url, ct)
		}
	}
	if resp, _ := get(t, c, "http://app.example.com/"); resp.StatusCode != http.StatusPermanentRedirect {
		t.Errorf("respond site on plain HTTP: %s, want the default 308", resp.Status)
	}
}

func TestHSTS(t *testing.T) {
	up := echoUpstream(t, "a")
	f := false
	withHSTS := proxySite([]string{"app.example.com"}, up.URL)
	withHSTS.HSTSMaxAge = config.Duration(1440 * time.Hour)
	withHSTS.RedirectHTTPS = &f
	respondHSTS := config.Site{Hosts: []string{"text.example.com"}, Respond: "hi", HSTSMaxAge: config.Duration(1440 * time.Hour)}
	downHSTS := proxySite([]string{"down.example.com"}, closedURL(t))
	downHSTS.HSTSMaxAge = config.Duration(1440 * time.Hour)
	without := proxySite([]string{"nohsts.example.com"}, up.URL)
	ts := startServer(t, testConfig(withHSTS, respondHSTS, downHSTS, without))
	c := ts.client(t, false)
	for _, tc := range []struct {
		url  string
		want []string
	}{
		{"https://app.example.com/", []string{"max-age=5184000"}},
		{"https://text.example.com/", []string{"max-age=5184000"}},
		{"https://down.example.com/", []string{"max-age=5184000"}}, // on the 502 too
		{"http://app.example.com/", nil},
		{"https://nohsts.example.com/", nil},
		{"https://unknown.example.org/", nil},
	} {
		resp, _ := get(t, c, tc.url)
		if got := resp.Header.Values("Strict-Transport-Security"); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("GET %s (%s): Strict-Transport-Security %q, want %q", tc.url, resp.Status, got, tc.want)
		}
	}
}

// wsUpstream answers a WebSocket upgrade with 101 (hijacking the connection,
// standard library only), then echoes every line back.
func wsUpstream(t *testing.T) *httptest.Server {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || !strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade") {
			http.Error(w, "not an upgrade", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Seen-Host: %s\r\nX-Seen-Proto: %s\r\nX-Seen-Key: %s\r\n\r\n",
			r.Host, r.Header.Get("X-Forwarded-Proto"), r.Header.Get("Sec-WebSocket-Key"))
		if brw.Flush() != nil {
			return
		}
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			brw.WriteString("echo: " + line)
			if brw.Flush() != nil {
				return
			}
		}
	}))
	t.Cleanup(up.Close)
	return up
}

func TestWebSocketUpgrade(t *testing.T) {
	up := wsUpstream(t)
	ts := startServer(t, testConfig(proxySite([]string{"app.example.com"}, up.URL)))
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: waitTimeout}, "tcp", ts.https, &tls.Config{
		ServerName: "app.example.com",
		RootCAs:    ts.certs.Pool,
		NextProtos: []string{"http/1.1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(waitTimeout))
	const key = "dGhlIHNhbXBsZSBub25jZQ=="
	req, _ := http.NewRequest(http.MethodGet, "https://app.example.com/ws", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Key", key)
	req.Header.Set("Sec-WebSocket-Version", "13")
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("upgrade: %s: %s", resp.Status, b)
	}
	if got := resp.Header.Get("Upgrade"); !strings.EqualFold(got, "websocket") {
		t.Errorf("101 Upgrade header %q", got)
	}
	if h, p, k := resp.Header.Get("X-Seen-Host"), resp.Header.Get("X-Seen-Proto"), resp.Header.Get("X-Seen-Key"); h != "app.example.com" || p != "https" || k != key {
		t.Errorf("upstream saw Host %q, X-Forwarded-Proto %q, Sec-WebSocket-Key %q", h, p, k)
	}
	for i := 0; i < 3; i++ {
		msg := fmt.Sprintf("message %d\n", i)
		if _, err := io.WriteString(conn, msg); err != nil {
			t.Fatal(err)
		}
		got, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("read echo %d: %v", i, err)
		}
		if got != "echo: "+msg {
			t.Fatalf("echo %d = %q", i, got)
		}
	}
}

func TestServerSentEventsStreamUnbuffered(t *testing.T) {
	release := make(chan struct{})
	finished := make(chan struct{}, 1) // buffered: the handler must not wait for the test to return
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { finished <- struct{}{} }()
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		io.WriteString(w, "event: tick\ndata: first\n\n")
		http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "data: second\n\n")
	}))
	t.Cleanup(up.Close)
	ts := startServer(t, testConfig(proxySite([]string{"app.example.com"}, up.URL)))
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "http1", true: "h2"}[h2], func(t *testing.T) {
			c := ts.client(t, h2)
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://app.example.com/events", nil)
			req.Header.Set("Accept", "text/event-stream")
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK || (resp.ProtoMajor == 2) != h2 {
				t.Fatalf("%s over %s", resp.Status, resp.Proto)
			}
			br := bufio.NewReader(resp.Body)
			var lines []string
			for len(lines) < 3 {
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatalf("first event not received while the upstream is still open: %v (got %q)", err, lines)
				}
				lines = append(lines, line)
			}
			if strings.Join(lines, "") != "event: tick\ndata: first\n\n" {
				t.Fatalf("first event = %q", lines)
			}
			select {
			case <-finished:
				t.Fatal("upstream finished before the first event was read")
			default:
			}
			release <- struct{}{}
			rest, err := io.ReadAll(br)
			if err != nil || string(rest) != "data: second\n\n" {
				t.Fatalf("rest of stream %q, %v", rest, err)
			}
			recv(t, finished, "the upstream handler to return")
		})
	}
}

func TestHTTP2Negotiated(t *testing.T) {
	up := echoUpstream(t, "a")
	ts := startServer(t, testConfig(proxySite([]string{"app.example.com"}, up.URL)))
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: waitTimeout}, "tcp", ts.https, &tls.Config{
		ServerName: "app.example.com",
		RootCAs:    ts.certs.Pool,
		NextProtos: []string{"h2", "http/1.1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Errorf("ALPN negotiated %q, want h2", p)
	}
	conn.Close()

	c := ts.client(t, true)
	resp, body := get(t, c, "https://app.example.com/h2?x=1")
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s over %s", resp.Status, resp.Proto)
	}
	var s seen
	if err := json.Unmarshal([]byte(body), &s); err != nil || s.Host != "app.example.com" || s.URI != "/h2?x=1" || fmt.Sprint(s.XFProto) != "[https]" {
		t.Fatalf("upstream saw %+v (%v)", s, err)
	}
}

func TestTLSPolicy(t *testing.T) {
	ts := startServer(t, testConfig(config.Site{Hosts: []string{"app.example.com"}, Respond: "ok"}))
	handshake := func(cfg *tls.Config) (tls.ConnectionState, error) {
		cfg.ServerName = "app.example.com"
		cfg.RootCAs = ts.certs.Pool
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: waitTimeout}, "tcp", ts.https, cfg)
		if err != nil {
			return tls.ConnectionState{}, err
		}
		defer conn.Close()
		return conn.ConnectionState(), nil
	}
	t.Run("accepted", func(t *testing.T) {
		for _, cfg := range []*tls.Config{
			{MinVersion: tls.VersionTLS13},
			{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}},
			{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}},
		} {
			want := cfg.CipherSuites
			st, err := handshake(cfg)
			if err != nil {
				t.Errorf("handshake (max %x, suites %x): %v", cfg.MaxVersion, want, err)
				continue
			}
			if len(want) == 1 && st.CipherSuite != want[0] {
				t.Errorf("suite %s, want %s", tls.CipherSuiteName(st.CipherSuite), tls.CipherSuiteName(want[0]))
			}
		}
	})
	t.Run("refused", func(t *testing.T) {
		for name, cfg := range map[string]*tls.Config{
			"TLS 1.1": {MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11},
			"TLS 1.0": {MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10},
			"TLS 1.2 CBC": {MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{
				tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
				tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
				tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
			}},
		} {
			if st, err := handshake(cfg); err == nil {
				t.Errorf("%s: handshake succeeded (version %x, suite %s), want refused", name, st.Version, tls.CipherSuiteName(st.CipherSuite))
			} else {
				t.Logf("%s refused: %v", name, err)
			}
		}
	})
}

func TestSwap(t *testing.T) {
	a, b := echoUpstream(t, "a"), echoUpstream(t, "b")
	slow := newSlowUpstream(t)
	started := slow.started

	ts := startServer(t, testConfig(
		proxySite([]string{"app.example.com"}, a.URL),
		proxySite([]string{"slow.example.com"}, slow.URL),
	))
	c := ts.client(t, false)
	if resp, _ := get(t, c, "https://new.example.com/"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("new host before Swap: %s, want 404", resp.Status)
	}

	done := getAsync(c, "https://slow.example.com/")
	recv(t, started, "the slow request to reach its upstream")

	// The new table drops slow.example.com, re-points app.example.com and
	// adds new.example.com, while the slow request is in flight.
	if err := ts.srv.Swap(testConfig(
		proxySite([]string{"app.example.com"}, b.URL),
		proxySite([]string{"new.example.com"}, b.URL),
	)); err != nil {
		t.Fatalf("Swap: %v", err)
	}
	if s := getSeen(t, c, "https://new.example.com/", nil); s.Upstream != "b" {
		t.Errorf("new host after Swap reached %q", s.Upstream)
	}
	if s := getSeen(t, c, "https://app.example.com/", nil); s.Upstream != "b" {
		t.Errorf("re-pointed host after Swap reached %q", s.Upstream)
	}
	if resp, _ := get(t, c, "https://slow.example.com/"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("removed host after Swap: %s, want 404", resp.Status)
	}
	select {
	case r := <-done:
		t.Fatalf("slow request finished before its upstream answered: %+v", r)
	default:
	}
	slow.releaseAll()
	r := recv(t, done, "the in-flight request to finish")
	if r.err != nil || r.status != http.StatusOK || r.body != "slow done" {
		t.Fatalf("in-flight request across Swap: %d %q %v, want 200 \"slow done\"", r.status, r.body, r.err)
	}
}

func TestSwapRejectsBadConfigAndKeepsOldTable(t *testing.T) {
	a := echoUpstream(t, "a")
	ts := startServer(t, testConfig(proxySite([]string{"app.example.com"}, a.URL)))
	if err := ts.srv.Swap(testConfig(proxySite([]string{"app.example.com"}, "http://bad host:1"))); err == nil {
		t.Fatal("Swap accepted an unparsable upstream")
	}
	if s := getSeen(t, ts.client(t, false), "https://app.example.com/", nil); s.Upstream != "a" {
		t.Errorf("after a failed Swap the host reached %q", s.Upstream)
	}
}

func refused(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return true
	}
	conn.Close()
	return false
}

func TestShutdownDrains(t *testing.T) {
	slow := newSlowUpstream(t)
	started, release := slow.started, slow.release

	f := false
	site := proxySite([]string{"slow.example.com"}, slow.URL)
	site.RedirectHTTPS = &f
	ts := startServer(t, testConfig(site))
	for _, scheme := range []string{"https", "http"} {
		t.Run(scheme, func(t *testing.T) {
			// Each subtest needs its own server: the first shuts its down.
			if scheme == "http" {
				ts = startServer(t, testConfig(site))
			}
			c := ts.client(t, false)
			done := getAsync(c, scheme+"://slow.example.com/")
			recv(t, started, "the slow request to reach its upstream")

			shut := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
				defer cancel()
				shut <- ts.srv.Shutdown(ctx)
			}()
			// Both listeners stop accepting while the request drains.
			eventually(t, "both listeners refuse new connections", func() bool {
				return refused(ts.https) && refused(ts.httpAddr)
			})
			select {
			case err := <-shut:
				t.Fatalf("Shutdown returned (%v) before the in-flight request finished", err)
			case r := <-done:
				t.Fatalf("in-flight request ended early: %+v", r)
			default:
			}
			release <- struct{}{}
			r := recv(t, done, "the in-flight request to finish")
			if r.err != nil || r.status != http.StatusOK || r.body != "slow done" {
				t.Fatalf("in-flight request during Shutdown: %d %q %v, want 200 \"slow done\"", r.status, r.body, r.err)
			}
			if err := recv(t, shut, "Shutdown to return"); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			for _, addr := range []string{ts.https, ts.httpAddr} {
				if !refused(addr) {
					t.Errorf("%s accepts connections after Shutdown", addr)
				}
			}
			if _, err := c.Get(scheme + "://slow.example.com/"); err == nil {
				t.Errorf("a request after Shutdown succeeded")
			}
		})
	}
}

func TestStartFailsWholeWhenAPortIsTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freeAddr := free.Addr().String()
	free.Close()

	cfg := testConfig(config.Site{Hosts: []string{"app.example.com"}, Respond: "ok"})
	cfg.Listen = config.Listen{HTTPS: freeAddr, HTTP: taken.Addr().String()}
	srv, err := New(cfg, certs(t).Source(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Start()
	if err == nil {
		srv.Shutdown(context.Background())
		t.Fatal("Start succeeded with the HTTP port taken")
	}
	if !strings.Contains(err.Error(), taken.Addr().String()) {
		t.Errorf("error %q does not name the address", err)
	}
	if h, s := srv.Addrs(); h != "" || s != "" {
		t.Errorf("Addrs() = %q, %q after a failed Start, want none", h, s)
	}
	// The HTTPS port was released, not left serving.
	ln, err := net.Listen("tcp", freeAddr)
	if err != nil {
		t.Fatalf("HTTPS port still held after a failed Start: %v", err)
	}
	ln.Close()
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown after a failed Start: %v", err)
	}
}
