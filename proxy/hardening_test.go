package proxy

// Slow and hostile clients against a started Server, over raw connections:
// slowloris, oversized headers, requests with ambiguous framing, spoofed
// X-Forwarded-* headers, connection floods, and an upstream that resets
// connections in the middle of a response.

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/portico-proxy/portico/config"
)

// received is one request a countingUpstream received.
type received struct {
	Method, URI, Host string
	Header            http.Header
}

// countingUpstream is a real upstream that records every request it
// receives and answers 200 "upstream ok".
type countingUpstream struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []received
}

func newCountingUpstream(t *testing.T) *countingUpstream {
	t.Helper()
	u := &countingUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, received{r.Method, r.RequestURI, r.Host, r.Header.Clone()})
		u.mu.Unlock()
		io.WriteString(w, "upstream ok")
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *countingUpstream) received() []received {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]received(nil), u.reqs...)
}

// hardenedConfig proxies app.example.com to up over HTTP and HTTPS (no
// redirect), with a 2 s header timeout and 8 KiB of headers at most.
func hardenedConfig(up string) *config.Config {
	f := false
	site := proxySite([]string{"app.example.com"}, up)
	site.RedirectHTTPS = &f
	cfg := testConfig(site)
	cfg.Listen.HeaderTimeout = config.Duration(2 * time.Second)
	cfg.Listen.MaxHeaderBytes = 8 << 10
	return cfg
}

// startLogged is startServer with a logger that the test can read.
func startLogged(t *testing.T, cfg *config.Config) (*testServer, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	return startWith(t, cfg, nil, zap.New(core)), logs
}

// dialRaw opens a client connection to the plain listener, or a TLS one
// (HTTP/1.1 by ALPN) to the HTTPS listener.
func (ts *testServer) dialRaw(t *testing.T, useTLS bool) net.Conn {
	t.Helper()
	d := &net.Dialer{Timeout: waitTimeout}
	if !useTLS {
		c, err := d.Dial("tcp", ts.httpAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	c, err := tls.DialWithDialer(d, "tcp", ts.https, &tls.Config{
		ServerName: "app.example.com",
		RootCAs:    ts.certs.Pool,
		NextProtos: []string{"http/1.1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var transports = []struct {
	name string
	tls  bool
}{{"http", false}, {"https", true}}

// awaitClose reads from c until the server closes it, then sends the time.
func awaitClose(c net.Conn) <-chan time.Time {
	closed := make(chan time.Time, 1)
	go func() {
		buf := make([]byte, 1024)
		for {
			if _, err := c.Read(buf); err != nil {
				closed <- time.Now()
				return
			}
		}
	}()
	return closed
}

// sendSlowly writes msg one byte a second until the connection is closed
// (closed fires), and returns when it was, and how many bytes were sent.
func sendSlowly(t *testing.T, c net.Conn, msg string, closed <-chan time.Time) (time.Time, int) {
	t.Helper()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	give := time.NewTimer(waitTimeout)
	defer give.Stop()
	sent := 0
	for {
		if sent < len(msg) {
			c.Write([]byte{msg[sent]}) // an error shows as the close
			sent++
		}
		select {
		case at := <-closed:
			return at, sent
		case <-give.C:
			t.Fatalf("the server kept a connection sending one byte a second open for %v (%d bytes sent)", waitTimeout, sent)
		case <-tick.C:
		}
	}
}

func TestSlowlorisClosedWithinHeaderTimeout(t *testing.T) {
	up := newCountingUpstream(t)
	cfg := hardenedConfig(up.URL)
	ts := startServer(t, cfg)
	timeout := cfg.Listen.HeaderTimeout.Std()
	const bound = 5 * time.Second // the 2 s header timeout plus a margin
	req := "GET /slow HTTP/1.1\r\nHost: app.example.com\r\nX-Slow: " + strings.Repeat("z", 40) + "\r\n\r\n"
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			c := ts.dialRaw(t, tr.tls) // on :443 the handshake is done
			start := time.Now()
			at, sent := sendSlowly(t, c, req, awaitClose(c))
			if d := at.Sub(start); d > bound || d < timeout/2 {
				t.Errorf("connection closed after %v (%d bytes sent), want about the %v header timeout", d.Round(time.Millisecond), sent, timeout)
			}
		})
	}
	t.Run("tls-handshake", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", ts.https, waitTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		// the start of a ClientHello record that never completes
		at, sent := sendSlowly(t, c, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"+strings.Repeat("\x00", 32), awaitClose(c))
		if d := at.Sub(start); d > bound || d < timeout/2 {
			t.Errorf("handshake closed after %v (%d bytes sent), want about the %v header timeout", d.Round(time.Millisecond), sent, timeout)
		}
	})
	if got := up.received(); len(got) != 0 {
		t.Errorf("the upstream received %d requests from slow clients: %+v", len(got), got)
	}
}

// roundTrip writes raw to c and reads one response: its status code, or 0
// and the error if the server closed the connection without one.
func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader, raw string) (int, string, error) {
	t.Helper()
	c.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := io.WriteString(c, raw); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

func TestOversizedHeaders(t *testing.T) {
	up := newCountingUpstream(t)
	cfg := hardenedConfig(up.URL) // max_header_bytes = 8 KiB
	ts := startServer(t, cfg)
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			before := len(up.received())
			// under the limit: proxied (the limit is the configured one)
			c := ts.dialRaw(t, tr.tls)
			status, _, err := roundTrip(t, c, bufio.NewReader(c), "GET /fits HTTP/1.1\r\nHost: app.example.com\r\nX-Big: "+strings.Repeat("a", 6000)+"\r\n\r\n")
			if err != nil || status != http.StatusOK {
				t.Fatalf("6000 bytes of headers: %d %v, want 200", status, err)
			}
			// over it (and over net/http's 4 KiB of slack): 431, not proxied
			c = ts.dialRaw(t, tr.tls)
			status, _, err = roundTrip(t, c, bufio.NewReader(c), "GET /big HTTP/1.1\r\nHost: app.example.com\r\nX-Big: "+strings.Repeat("a", 20000)+"\r\n\r\n")
			if err != nil || status != http.StatusRequestHeaderFieldsTooLarge {
				t.Fatalf("20000 bytes of headers: %d %v, want 431", status, err)
			}
			if got := up.received()[before:]; len(got) != 1 || got[0].URI != "/fits" {
				t.Errorf("the upstream received %+v, want only /fits", got)
			}
		})
	}
}

// TestAmbiguousRequestsRefused sends requests a proxy must not pass on
// (request smuggling, malformed hosts and request lines), each followed on
// the same connection by a request the upstream would answer: the first is
// refused (an error status, or the connection closed) and the connection
// ends, so the upstream sees neither.
func TestAmbiguousRequestsRefused(t *testing.T) {
	const follow = "GET /after HTTP/1.1\r\nHost: app.example.com\r\n\r\n"
	const smuggled = "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app.example.com\r\n\r\n"
	tests := []struct {
		name    string
		raw     string
		status  int  // the answer
		portico bool // refused by Portico (net/http accepts it)
	}{
		{"content-length and chunked",
			"POST /cl-te HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggled, 400, true},
		{"chunked and content-length, other case and order",
			"POST /te-cl HTTP/1.1\r\nHost: app.example.com\r\ntransfer-encoding: CHUNKED\r\ncontent-length: 50\r\n\r\n" + smuggled, 400, true},
		{"chunked folded onto a continuation line, with content-length",
			"POST /fold HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 4\r\nTransfer-Encoding:\r\n chunked\r\n\r\n" + smuggled, 400, true},
		{"content-length and chunked on OPTIONS *",
			"OPTIONS * HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggled, 400, true},
		{"transfer-encoding in HTTP/1.0",
			"POST /old HTTP/1.0\r\nHost: app.example.com\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400, true},
		{"two different content-lengths",
			"POST /cl-cl HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\nhello", 400, false},
		{"content-length with a sign", "POST /sign HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: +5\r\n\r\nhello", 400, false},
		{"space before the colon",
			"POST /space HTTP/1.1\r\nHost: app.example.com\r\nContent-Length : 5\r\n\r\nhello", 400, false},
		{"transfer-encoding gzip, chunked",
			"POST /gzip HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + smuggled, 501, false},
		{"transfer-encoding chunked, identity",
			"POST /identity HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked, identity\r\n\r\n" + smuggled, 501, false},
		{"two transfer-encoding lines",
			"POST /te-te HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggled, 501, false},
		{"host with a space", "GET /h HTTP/1.1\r\nHost: app.example.com evil.example.org\r\n\r\n", 400, false},
		{"host with a control character", "GET /h HTTP/1.1\r\nHost: app.example.com\x01\r\n\r\n", 400, false},
		{"two host headers", "GET /h HTTP/1.1\r\nHost: app.example.com\r\nHost: evil.example.org\r\n\r\n", 400, false},
		{"no host in HTTP/1.1", "GET /h HTTP/1.1\r\nX-A: b\r\n\r\n", 400, false},
		{"request line garbage", "GARBAGE\r\n\r\n", 400, false},
		{"request line with an extra field", "GET /x HTTP/1.1 extra\r\nHost: app.example.com\r\n\r\n", 400, false},
		{"control character in the target", "GET /x\x00y HTTP/1.1\r\nHost: app.example.com\r\n\r\n", 400, false},
		{"HTTP/2.0 request line", "GET /x HTTP/2.0\r\nHost: app.example.com\r\n\r\n", 505, false},
	}
	up := newCountingUpstream(t)
	ts, logs := startLogged(t, hardenedConfig(up.URL))
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					c := ts.dialRaw(t, tr.tls)
					br := bufio.NewReader(c)
					status, body, err := roundTrip(t, c, br, tt.raw+follow)
					if err != nil {
						t.Fatalf("no answer: %v", err)
					}
					if status != tt.status {
						t.Errorf("answered %d %q, want %d", status, body, tt.status)
					}
					if byPortico := strings.Contains(body, "ambiguous message framing"); byPortico != tt.portico {
						t.Errorf("answer %q: refused by Portico = %v, want %v", body, byPortico, tt.portico)
					}
					// the connection ends: the pipelined request is not served
					if status, _, err := roundTrip(t, c, br, ""); err == nil {
						t.Errorf("the connection went on after the refusal: next answer %d", status)
					}
				})
			}
		})
	}
	if got := up.received(); len(got) != 0 {
		t.Fatalf("the upstream received %d requests: %+v", len(got), got)
	}
	if n := logs.FilterMessage("refused a request with ambiguous framing").Len(); n != 2*5 {
		t.Errorf("%d refusals logged, want 10", n)
	}
	// and the listeners still serve ordinary requests, OPTIONS * as
	// net/http answers it, on a connection that goes on
	for _, tr := range transports {
		c := ts.dialRaw(t, tr.tls)
		br := bufio.NewReader(c)
		if status, body, err := roundTrip(t, c, br, "OPTIONS * HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 2\r\n\r\nhi"); err != nil || status != 200 || body != "" {
			t.Errorf("%s: OPTIONS *: %d %q %v", tr.name, status, body, err)
		}
		if status, body, err := roundTrip(t, c, br, follow); err != nil || status != 200 || body != "upstream ok" {
			t.Errorf("%s: an ordinary request after the refusals: %d %q %v", tr.name, status, body, err)
		}
	}
	if got := up.received(); len(got) != 2 || got[0].URI != "/after" || got[1].URI != "/after" {
		t.Errorf("the upstream received %+v, want the two ordinary requests", got)
	}
}

func TestPlainHTTPToHTTPSPort(t *testing.T) {
	ts := startServer(t, testConfig(config.Site{Hosts: []string{"app.example.com"}, Respond: "ok"}))
	c, err := net.DialTimeout("tcp", ts.https, waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	status, _, err := roundTrip(t, c, bufio.NewReader(c), "GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
	if err != nil || status != http.StatusBadRequest {
		t.Errorf("plain HTTP to the HTTPS port: %d %v, want 400", status, err)
	}
}

func TestHopByHopHeadersStripped(t *testing.T) {
	up := newCountingUpstream(t)
	ts := startServer(t, hardenedConfig(up.URL))
	hop := []string{"Connection", "X-Foo", "Keep-Alive", "Te", "Upgrade", "Proxy-Authorization", "Proxy-Connection"}
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			c := ts.dialRaw(t, tr.tls)
			status, _, err := roundTrip(t, c, bufio.NewReader(c), "GET /hop HTTP/1.1\r\nHost: app.example.com\r\n"+
				"Connection: close, X-Foo\r\nX-Foo: named by Connection\r\nKeep-Alive: timeout=5\r\nTE: gzip\r\n"+
				"Upgrade: websocket\r\nProxy-Authorization: Basic c2VjcmV0OnNlY3JldA==\r\nProxy-Connection: keep-alive\r\n"+
				"X-Kept: end-to-end\r\n\r\n")
			if err != nil || status != http.StatusOK {
				t.Fatalf("%d %v", status, err)
			}
			got := up.received()
			h := got[len(got)-1].Header
			for _, name := range hop {
				if v, ok := h[name]; ok {
					t.Errorf("hop-by-hop header %s reached the upstream: %q", name, v)
				}
			}
			if h.Get("X-Kept") != "end-to-end" {
				t.Errorf("end-to-end header X-Kept lost: %v", h)
			}
		})
	}
}

func TestForwardedHeadersTrustedProxies(t *testing.T) {
	up := newCountingUpstream(t)
	cfg := hardenedConfig(up.URL)
	cfg.Listen.TrustedProxies = []string{"10.0.0.0/8", "192.168.1.5"} // not the test client
	ts, logs := startLogged(t, cfg)
	spoof := "X-Forwarded-For: 203.0.113.7, 198.51.100.1\r\nX-Forwarded-For: 198.51.100.2\r\n" +
		"X-Forwarded-Proto: https\r\nX-Forwarded-Host: public.example.org\r\nForwarded: for=203.0.113.7;proto=https\r\n"
	send := func(t *testing.T, useTLS bool, extra string) http.Header {
		t.Helper()
		c := ts.dialRaw(t, useTLS)
		status, _, err := roundTrip(t, c, bufio.NewReader(c), "GET /xf HTTP/1.1\r\nHost: app.example.com\r\n"+extra+"\r\n")
		if err != nil || status != http.StatusOK {
			t.Fatalf("%d %v", status, err)
		}
		got := up.received()
		return got[len(got)-1].Header
	}
	check := func(t *testing.T, h http.Header, name string, want ...string) {
		t.Helper()
		if got := h.Values(name); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("upstream saw %s %q, want %q", name, got, want)
		}
	}
	for _, tr := range transports {
		t.Run("untrusted/"+tr.name, func(t *testing.T) {
			h := send(t, tr.tls, spoof)
			check(t, h, "X-Forwarded-For", "127.0.0.1")
			check(t, h, "X-Forwarded-Proto", tr.name)
			check(t, h, "X-Forwarded-Host", "app.example.com")
			check(t, h, "Forwarded")
		})
	}
	// trusted_proxies takes effect on reload
	cfg2 := hardenedConfig(up.URL)
	cfg2.Listen.TrustedProxies = []string{"127.0.0.1"}
	if err := ts.srv.Swap(cfg2); err != nil {
		t.Fatal(err)
	}
	if n := logs.FilterMessageSnippet("take effect at the next restart").Len(); n != 0 {
		t.Errorf("changing trusted_proxies logged %d restart warnings", n)
	}
	for _, tr := range transports {
		t.Run("trusted/"+tr.name, func(t *testing.T) {
			h := send(t, tr.tls, spoof)
			check(t, h, "X-Forwarded-For", "203.0.113.7, 198.51.100.1, 198.51.100.2, 127.0.0.1")
			check(t, h, "X-Forwarded-Proto", "https")
			check(t, h, "X-Forwarded-Host", "public.example.org")
			check(t, h, "Forwarded")
			// a trusted peer that sends none gets them set
			h = send(t, tr.tls, "")
			check(t, h, "X-Forwarded-For", "127.0.0.1")
			check(t, h, "X-Forwarded-Proto", tr.name)
			check(t, h, "X-Forwarded-Host", "app.example.com")
		})
	}
	t.Run("trusted/h2", func(t *testing.T) {
		hdr := http.Header{"X-Forwarded-For": {"203.0.113.7"}, "X-Forwarded-Proto": {"http"}}
		resp, body := do(t, ts.client(t, true), http.MethodGet, "https://app.example.com/xf", nil, hdr)
		if resp.ProtoMajor != 2 || body != "upstream ok" {
			t.Fatalf("%s %q", resp.Proto, body)
		}
		got := up.received()
		h := got[len(got)-1].Header
		check(t, h, "X-Forwarded-For", "203.0.113.7, 127.0.0.1")
		check(t, h, "X-Forwarded-Proto", "http")
	})
}

func TestTrustedProxiesMatching(t *testing.T) {
	tp, err := parseTrustedProxies([]string{"10.0.0.0/8", "192.168.1.5", "2001:db8::/32"})
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]bool{
		"10.1.2.3:5555":          true,
		"[::ffff:10.1.2.3]:5555": true,
		"192.168.1.5:80":         true,
		"192.168.1.6:80":         false,
		"[2001:db8::1]:443":      true,
		"[2001:db9::1]:443":      false,
		"127.0.0.1:1":            false,
		"not an address":         false,
	} {
		if got := tp.trusts(addr); got != want {
			t.Errorf("trusts(%q) = %v, want %v", addr, got, want)
		}
	}
	if _, err := parseTrustedProxies([]string{"10.0.0.0/33"}); err == nil {
		t.Error("parseTrustedProxies accepted 10.0.0.0/33")
	}
}

// served starts a request on c in the background and reports its status
// (or -1 on an error) when the server answers.
func served(c net.Conn) <-chan int {
	done := make(chan int, 1)
	go func() {
		c.SetDeadline(time.Now().Add(2 * waitTimeout))
		if _, err := io.WriteString(c, "GET /held HTTP/1.1\r\nHost: app.example.com\r\n\r\n"); err != nil {
			done <- -1
			return
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			done <- -1
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	return done
}

// notWithin fails the test if ch delivers within d.
func notWithin[T any](t *testing.T, ch <-chan T, d time.Duration, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("%s: got %v, want nothing yet", what, v)
	case <-time.After(d):
	}
}

func TestMaxConnectionsPerListener(t *testing.T) {
	up := newCountingUpstream(t)
	cfg := hardenedConfig(up.URL)
	cfg.Listen.MaxConnections = 2
	ts := startServer(t, cfg)
	const quiet = time.Second // how long a held-off client is watched

	// two kept-alive connections on :80 take its two places
	var plain []net.Conn
	for i := 0; i < 2; i++ {
		c := ts.dialRaw(t, false)
		if status := recv(t, served(c), "a request on a free place"); status != 200 {
			t.Fatalf("connection %d: %d", i+1, status)
		}
		plain = append(plain, c)
	}
	third := ts.dialRaw(t, false) // the kernel accepts it; Portico does not
	thirdDone := served(third)
	notWithin(t, thirdDone, quiet, "a third connection on :80 while two are open")

	// :443 has its own two places
	tlsConns := make([]net.Conn, 2)
	for i := range tlsConns {
		tlsConns[i] = ts.dialRaw(t, true)
		if status := recv(t, served(tlsConns[i]), "a request on :443"); status != 200 {
			t.Fatalf(":443 connection %d: %d", i+1, status)
		}
	}

	plain[0].Close() // frees a place: the third is served
	if status := recv(t, thirdDone, "the third connection once another closed"); status != 200 {
		t.Fatalf("third connection: %d", status)
	}

	// a third TLS client cannot even complete its handshake
	raw, err := net.DialTimeout("tcp", ts.https, waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	handshake := make(chan error, 1)
	tc := tls.Client(raw, &tls.Config{ServerName: "app.example.com", RootCAs: ts.certs.Pool, NextProtos: []string{"http/1.1"}})
	go func() {
		raw.SetDeadline(time.Now().Add(2 * waitTimeout))
		handshake <- tc.Handshake()
	}()
	notWithin(t, handshake, quiet, "a third TLS handshake while two connections are open")
	tlsConns[1].Close()
	if err := recv(t, handshake, "the third TLS handshake once another closed"); err != nil {
		t.Fatalf("third TLS handshake: %v", err)
	}
	if status := recv(t, served(tc), "a request on the third TLS connection"); status != 200 {
		t.Fatalf("third TLS connection: %d", status)
	}
}

func TestIdleConnectionClosed(t *testing.T) {
	up := newCountingUpstream(t)
	cfg := hardenedConfig(up.URL)
	cfg.Listen.IdleTimeout = config.Duration(time.Second)
	ts := startServer(t, cfg)
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			c := ts.dialRaw(t, tr.tls)
			if status := recv(t, served(c), "a request"); status != 200 {
				t.Fatalf("%d", status)
			}
			start := time.Now()
			c.SetDeadline(time.Time{})
			at := recv(t, awaitClose(c), "the idle connection to be closed")
			if d := at.Sub(start); d > 4*time.Second {
				t.Errorf("idle connection closed after %v, want about the 1 s idle timeout", d.Round(time.Millisecond))
			}
		})
	}
}

// resettingUpstream answers 200 with Content-Length: 1000, sends half the
// body and resets the connection (RST, SO_LINGER 0).
func resettingUpstream(t *testing.T) *httptest.Server {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n%s", strings.Repeat("h", 500))
		brw.Flush()
		if tcp, ok := conn.(*net.TCPConn); ok {
			tcp.SetLinger(0)
		}
		conn.Close()
	}))
	t.Cleanup(up.Close)
	return up
}

func TestUpstreamResetMidResponse(t *testing.T) {
	healthy := newCountingUpstream(t)
	reset := resettingUpstream(t)
	cfg := testConfig(
		proxySite([]string{"app.example.com"}, healthy.URL),
		proxySite([]string{"reset.example.com"}, reset.URL),
	)
	ts, logs := startLogged(t, cfg)
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "http1", true: "h2"}[h2], func(t *testing.T) {
			c := ts.client(t, h2)
			tr := c.Transport.(*http.Transport)
			// warm up, so that pooled connections are in the baseline
			if resp, body := do(t, c, http.MethodGet, "https://app.example.com/warm", nil, nil); resp.StatusCode != 200 || body != "upstream ok" {
				t.Fatalf("warm-up: %d %q", resp.StatusCode, body)
			}
			tr.CloseIdleConnections()
			baseline := runtime.NumGoroutine()
			logged := logs.FilterMessageSnippet("read error during body copy").Len()

			for i := 0; i < 10; i++ {
				resp, err := c.Get("https://reset.example.com/big")
				if err != nil {
					continue // an error is a fine answer
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil && len(body) == 1000 {
					t.Fatalf("request %d: a whole body from an upstream that reset the connection", i)
				}
				if err == nil {
					t.Errorf("request %d: %d bytes of a 1000-byte body without an error", i, len(body))
				}
			}
			if n := logs.FilterMessageSnippet("read error during body copy").Len() - logged; n == 0 {
				t.Error("the upstream's reset was not logged")
			}
			for _, e := range logs.FilterMessageSnippet("read error during body copy").All() {
				if e.Level != zapcore.WarnLevel {
					t.Errorf("logged at %v, want warn: %s", e.Level, e.Message)
				}
			}
			if resp, body := do(t, c, http.MethodGet, "https://app.example.com/after", nil, nil); resp.StatusCode != 200 || body != "upstream ok" {
				t.Fatalf("the healthy site after the resets: %d %q", resp.StatusCode, body)
			}
			tr.CloseIdleConnections()
			deadline := time.Now().Add(waitTimeout)
			poll := time.NewTicker(10 * time.Millisecond)
			defer poll.Stop()
			for n := runtime.NumGoroutine(); n > baseline+2; n = runtime.NumGoroutine() {
				if time.Now().After(deadline) {
					buf := make([]byte, 1<<20)
					t.Fatalf("%d goroutines, %d before the resets:\n%s", n, baseline, buf[:runtime.Stack(buf, true)])
				}
				<-poll.C
			}
		})
	}
}

func TestSwapWarnsAboutFixedListenSettings(t *testing.T) {
	up := newCountingUpstream(t)
	cfg := hardenedConfig(up.URL)
	ts, logs := startLogged(t, cfg)
	next := hardenedConfig(up.URL)
	next.Listen.HTTP, next.Listen.HTTPS = cfg.Listen.HTTP, cfg.Listen.HTTPS
	next.Listen.HeaderTimeout = config.Duration(time.Minute)
	next.Listen.MaxConnections = 7
	next.Listen.ProxyProtocol = []string{"10.0.0.0/8"}
	if err := ts.srv.Swap(next); err != nil {
		t.Fatal(err)
	}
	entries := logs.FilterMessageSnippet("[listen] settings changed").All()
	if len(entries) != 1 {
		t.Fatalf("%d warnings, want 1", len(entries))
	}
	if keys := fmt.Sprint(entries[0].ContextMap()["keys"]); keys != "[max_connections header_timeout proxy_protocol]" {
		t.Errorf("warning names %s", keys)
	}
	// the running limits stay: a header sent over 3 s is still cut at 2 s
	c := ts.dialRaw(t, false)
	start := time.Now()
	at, _ := sendSlowly(t, c, "GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n", awaitClose(c))
	if d := at.Sub(start); d > 5*time.Second {
		t.Errorf("after Swap the header timeout is %v, want the 2 s it started with", d)
	}
}
