package proxy

// HTTP/3 ([listen] http3): the QUIC listener serves the same certificates,
// routes, header rules, 421 check and access log as TCP; TCP answers
// announce it with Alt-Svc; a reload keeps open QUIC connections serving
// the new table; Shutdown drains them. Every client here is quic-go's
// HTTP/3 client over real UDP sockets.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/integration/testkit"
)

// h3Client is an HTTP/3 client that sends every request to the proxy's
// UDP port, whatever the URL's host, verifying certificates against
// roots; dials counts the QUIC connections it made.
func (ts *testServer) h3Client(t *testing.T, roots *x509.CertPool) (*http.Client, *atomic.Int32) {
	t.Helper()
	dials := new(atomic.Int32)
	tr := &http3.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		Dial: func(ctx context.Context, _ string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
			dials.Add(1)
			return quic.DialAddr(ctx, ts.https, tc, qc) // the UDP port is the TCP one
		},
	}
	t.Cleanup(func() { tr.Close() })
	return &http.Client{
		Transport:     tr,
		Timeout:       waitTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, dials
}

// startH3 starts a proxy for cfg with http3 on, serving the tests'
// certificate (ts.certs).
func startH3(t *testing.T, cfg *config.Config) *testServer {
	t.Helper()
	return startH3Logged(t, cfg, nil, zap.NewNop())
}

// startH3Logged is startH3 with the certificates of src (nil: the tests'
// certificate) and a logger.
func startH3Logged(t *testing.T, cfg *config.Config, src Certificates, logger *zap.Logger) *testServer {
	t.Helper()
	cfg.Listen.HTTP3 = true
	return startWith(t, cfg, src, logger)
}

// keyTypeCerts holds an RSA and an ECDSA certificate for the same names
// and picks one per ClientHello as tlsmgr does: ECDSA when the client
// supports it, RSA otherwise.
type keyTypeCerts struct {
	rsa, ecdsa tls.Certificate
	pool       *x509.CertPool
	// narrow, when set, stands for a client that offers fewer signature
	// schemes: Go's TLS client cannot be told to offer fewer, so the
	// hello the source sees is narrowed instead (the handshake itself is
	// real: the client then verifies the certificate chosen).
	narrow func(tls.SignatureScheme) bool
	hellos atomic.Int32
}

func (c *keyTypeCerts) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.hellos.Add(1)
	if c.narrow != nil {
		h := *hello
		h.SignatureSchemes = slices.DeleteFunc(slices.Clone(h.SignatureSchemes), func(s tls.SignatureScheme) bool { return !c.narrow(s) })
		hello = &h
	}
	if hello.SupportsCertificate(&c.ecdsa) == nil {
		return &c.ecdsa, nil
	}
	if hello.SupportsCertificate(&c.rsa) == nil {
		return &c.rsa, nil
	}
	return nil, errors.New("the client supports neither certificate")
}

func (c *keyTypeCerts) HTTPChallengeHandler(next http.Handler) http.Handler { return next }

var sharedKeyTypeCerts = sync.OnceValues(func() (*keyTypeCerts, error) {
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	c := &keyTypeCerts{pool: x509.NewCertPool()}
	for _, k := range []struct {
		key  crypto.Signer
		cert *tls.Certificate
	}{{ek, &c.ecdsa}, {rk, &c.rsa}} {
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(2),
			Subject:               pkix.Name{CommonName: "portico http3 test"},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().Add(24 * time.Hour),
			DNSNames:              []string{"example.com", "*.example.com"},
			KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			BasicConstraintsValid: true,
			IsCA:                  true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.key.Public(), k.key)
		if err != nil {
			return nil, err
		}
		leaf, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		c.pool.AddCert(leaf)
		*k.cert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k.key, Leaf: leaf}
	}
	return c, nil
})

func isECDSAScheme(s tls.SignatureScheme) bool {
	switch s {
	case tls.ECDSAWithP256AndSHA256, tls.ECDSAWithP384AndSHA384, tls.ECDSAWithP521AndSHA512:
		return true
	}
	return false
}

// TestHTTP3CertificatePerClientHello: a QUIC handshake's ClientHello goes
// to the certificate source as a TCP one does, and the client gets the
// certificate chosen for its signature schemes; a client asking for
// acme-tls/1 (tls-alpn-01, a TCP affair) gets no handshake.
func TestHTTP3CertificatePerClientHello(t *testing.T) {
	shared, err := sharedKeyTypeCerts()
	if err != nil {
		t.Fatal(err)
	}
	up := echoUpstream(t, "a")
	for _, tt := range []struct {
		name   string
		narrow func(tls.SignatureScheme) bool
		want   x509.PublicKeyAlgorithm
	}{
		{"both", nil, x509.ECDSA},
		{"ecdsa only", isECDSAScheme, x509.ECDSA},
		{"rsa only", func(s tls.SignatureScheme) bool { return !isECDSAScheme(s) }, x509.RSA},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := &keyTypeCerts{rsa: shared.rsa, ecdsa: shared.ecdsa, pool: shared.pool, narrow: tt.narrow}
			ts := startH3Logged(t, testConfig(proxySite([]string{"app.example.com"}, up.URL)), src, zap.NewNop())
			c, _ := ts.h3Client(t, src.pool)
			resp, body := get(t, c, "https://app.example.com/x")
			if resp.StatusCode != 200 || resp.Proto != "HTTP/3.0" || !strings.Contains(body, `"Upstream":"a"`) {
				t.Fatalf("GET: %s %s %q", resp.Proto, resp.Status, body)
			}
			if got := resp.TLS.PeerCertificates[0].PublicKeyAlgorithm; got != tt.want || src.hellos.Load() == 0 {
				t.Errorf("certificate %v (%d hellos), want %v", got, src.hellos.Load(), tt.want)
			}
		})
	}
	t.Run("acme-tls/1", func(t *testing.T) {
		ts := startH3(t, testConfig(proxySite([]string{"app.example.com"}, up.URL)))
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		conn, err := quic.DialAddr(ctx, ts.https, &tls.Config{RootCAs: ts.certs.Pool, ServerName: "app.example.com", NextProtos: []string{"acme-tls/1"}}, nil)
		if err == nil {
			conn.CloseWithError(0, "")
			t.Fatal("a QUIC handshake for acme-tls/1 succeeded")
		}
		if !strings.Contains(err.Error(), "no application protocol") {
			t.Errorf("handshake error %v, want no application protocol", err)
		}
	})
}

// TestHTTP3RoutesHeaderRulesAndAuthority: routes with strip_prefix, the
// site's and route's header rules, a fixed answer, and 421 for a Host the
// connection's certificate does not cover.
func TestHTTP3RoutesHeaderRulesAndAuthority(t *testing.T) {
	web, api, admin := headerEchoUpstream(t, "web"), headerEchoUpstream(t, "api"), headerEchoUpstream(t, "admin")
	ts := startH3(t, routedConfig(t, web.URL, api.URL, admin.URL))
	c, _ := ts.h3Client(t, ts.certs.Pool)

	e, resp := echoAt(t, c, "https://app.example.com/api/users?id=7", http.Header{"X-Debug": {"1"}})
	if resp.Proto != "HTTP/3.0" || e.Name != "api" || e.URI != "/users?id=7" {
		t.Fatalf("/api/users: %s reached %s with %q, want api with /users?id=7", resp.Proto, e.Name, e.URI)
	}
	h := e.Header
	if h.Get("X-Env") != "api" || h.Get("X-Api") != "1" || h.Get("X-Client") != "127.0.0.1" || h.Get("X-Host") != "app.example.com" ||
		h.Get("X-Debug") != "" || h.Get("X-Id") == "" || h.Get("X-Id") != h.Get("X-Request-Id") || h.Get("X-Forwarded-Proto") != "https" {
		t.Errorf("request headers at the upstream: %v", h)
	}
	if resp.Header.Get("X-Powered-By") != "" || resp.Header.Get("X-Frame-Options") != "" {
		t.Errorf("response rules (site removes X-Powered-By, route removes X-Frame-Options): %v", resp.Header)
	}
	e, resp = echoAt(t, c, "https://app.example.com/", nil)
	if e.Name != "web" || resp.Header.Get("X-Frame-Options") != "DENY" || resp.Header.Get("Alt-Svc") != "" {
		t.Errorf("/: %s, headers %v (no Alt-Svc on HTTP/3)", e.Name, resp.Header)
	}
	if resp, body := get(t, c, "https://app.example.com/ping"); resp.StatusCode != 200 || body != "pong\n" {
		t.Errorf("/ping: %s %q", resp.Status, body)
	}
	if resp, _ := do(t, c, "DELETE", "https://app.example.com/api/x", nil, nil); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("DELETE /api/x: %s, want 405", resp.Status)
	}

	// the client presents app.example.com in SNI and asks for a name the
	// certificate does not cover
	mis, _ := ts.h3Client(t, ts.certs.Pool)
	mis.Transport.(*http3.Transport).TLSClientConfig.ServerName = "app.example.com"
	if resp, body := get(t, mis, "https://elsewhere.test/"); resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("Host outside the certificate: %s %q, want 421", resp.Status, body)
	}
}

// TestHTTP3AccessLog: an HTTP/3 request's line says HTTP/3.0 and TLS 1.3,
// with its route, upstream and request ID.
func TestHTTP3AccessLog(t *testing.T) {
	web, api := headerEchoUpstream(t, "web"), headerEchoUpstream(t, "api")
	logPath := filepath.Join(t.TempDir(), "access.log")
	cfg := routedConfig(t, web.URL, api.URL, web.URL)
	cfg.Log = config.Log{Access: logPath, AccessFormat: "json"}
	ts := startH3(t, cfg)
	c, _ := ts.h3Client(t, ts.certs.Pool)
	e, _ := echoAt(t, c, "https://app.example.com/api/x?q=h3", http.Header{"User-Agent": {"probe/h3"}})
	l := readAccessLog(t, logPath, 1)[0]
	if l.Proto != "HTTP/3.0" || l.TLSVersion != "TLSv1.3" || l.Status != 200 || l.URI != "/api/x?q=h3" || l.Route != "/api/*" ||
		l.Site != "app.example.com" || l.RemoteIP != "127.0.0.1" || l.UserAgent != "probe/h3" || l.Bytes == 0 ||
		l.Upstream != strings.TrimPrefix(api.URL, "http://") || l.RequestID != e.Header.Get("X-Request-Id") {
		t.Errorf("access log line %+v", l)
	}
}

// TestHTTP3Metrics: HTTP/3 requests are counted per site and class, as
// TCP ones are.
func TestHTTP3Metrics(t *testing.T) {
	up := echoUpstream(t, "a")
	ts := startH3(t, testConfig(proxySite([]string{"app.example.com"}, up.URL), proxySite([]string{"down.example.com"}, closedURL(t))))
	reg := prometheus.NewRegistry()
	if err := ts.srv.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	c, _ := ts.h3Client(t, ts.certs.Pool)
	getSeen(t, c, "https://app.example.com/", nil)
	if resp, _ := get(t, c, "https://down.example.com/"); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("down.example.com: %s, want 502", resp.Status)
	}
	got := scrape(t, reg)
	for key, want := range map[string]float64{
		requests("app.example.com", "2xx"):  1,
		requests("down.example.com", "5xx"): 1,
		durations("app.example.com"):        1,
	} {
		if got[key] != want {
			t.Errorf("%s = %v, want %v", key, got[key], want)
		}
	}
}

// TestHTTP3AltSvc: HTTP/1.1 answers (the fast path's, proxied and its own
// errors, and net/http's after a hand-off) and HTTP/2 answers announce
// HTTP/3 on the https port; none do when http3 is off.
func TestHTTP3AltSvc(t *testing.T) {
	up := echoUpstream(t, "a")
	cfg := testConfig(proxySite([]string{"app.example.com"}, up.URL), proxySite([]string{"down.example.com"}, closedURL(t)))
	ts := startH3(t, cfg)
	want := `h3=":` + ts.httpsPort() + `"; ma=86400`
	clients := pathClients(t, ts, "app.example.com")
	for _, p := range paths {
		for _, url := range []string{"https://app.example.com/", "https://down.example.com/", "https://nosite.example.com/"} {
			resp, _ := get(t, clients[p], url)
			if got := resp.Header.Values("Alt-Svc"); len(got) != 1 || got[0] != want {
				t.Errorf("%s %s (%s): Alt-Svc %q, want %q", p, url, resp.Status, got, want)
			}
		}
	}

	off := startServer(t, testConfig(proxySite([]string{"app.example.com"}, up.URL)))
	for _, h2 := range []bool{false, true} {
		if resp, _ := get(t, off.client(t, h2), "https://app.example.com/"); resp.Header.Get("Alt-Svc") != "" {
			t.Errorf("http3 off, h2 %v: Alt-Svc %q", h2, resp.Header.Get("Alt-Svc"))
		}
	}
}

// TestHTTP3SwapUnderOpenConnection: a reload while HTTP/3 connections are
// open keeps them serving, with the new routes, on the same connections.
func TestHTTP3SwapUnderOpenConnection(t *testing.T) {
	a, b := echoUpstream(t, "a"), echoUpstream(t, "b")
	ts := startH3(t, testConfig(proxySite([]string{"app.example.com"}, a.URL)))
	c, dials := ts.h3Client(t, ts.certs.Pool)
	if s := getSeen(t, c, "https://app.example.com/", nil); s.Upstream != "a" {
		t.Fatalf("before Swap: %q", s.Upstream)
	}
	if resp, _ := get(t, c, "https://new.example.com/"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("new host before Swap: %s, want 404", resp.Status)
	}
	opened := dials.Load() // one per host: the client pools by host
	next := testConfig(proxySite([]string{"app.example.com"}, b.URL), proxySite([]string{"new.example.com"}, a.URL))
	next.Listen.HTTP3 = true
	if err := ts.srv.Swap(next); err != nil {
		t.Fatalf("Swap: %v", err)
	}
	if s := getSeen(t, c, "https://app.example.com/", nil); s.Upstream != "b" {
		t.Errorf("re-pointed host after Swap reached %q", s.Upstream)
	}
	if s := getSeen(t, c, "https://new.example.com/", nil); s.Upstream != "a" {
		t.Errorf("new host after Swap reached %q", s.Upstream)
	}
	if n := dials.Load(); n != opened {
		t.Errorf("%d QUIC connections after the Swap, want the %d opened before it", n, opened)
	}
}

// TestHTTP3ShutdownDrains: Shutdown lets an HTTP/3 request in flight finish
// and returns once it has, refusing new QUIC connections meanwhile.
func TestHTTP3ShutdownDrains(t *testing.T) {
	slow := newSlowUpstream(t)
	started := slow.started

	ts := startH3(t, testConfig(proxySite([]string{"slow.example.com"}, slow.URL)))
	c, _ := ts.h3Client(t, ts.certs.Pool)
	done := getAsync(c, "https://slow.example.com/")
	recv(t, started, "the slow request to reach its upstream")

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		shut <- ts.srv.Shutdown(ctx)
	}()
	eventually(t, "a new QUIC connection is refused", func() bool { return !quicAccepts(ts.https) })
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) before the in-flight request finished", err)
	case r := <-done:
		t.Fatalf("in-flight request ended early: %+v", r)
	default:
	}
	slow.releaseAll()
	r := recv(t, done, "the in-flight request to finish")
	if r.err != nil || r.status != http.StatusOK || r.body != "slow done" {
		t.Fatalf("in-flight HTTP/3 request during Shutdown: %d %q %v, want 200 \"slow done\"", r.status, r.body, r.err)
	}
	if err := recv(t, shut, "Shutdown to return"); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	// the UDP socket is closed: its port can be bound again
	ua, _ := net.ResolveUDPAddr("udp", ts.https)
	if uc, err := net.ListenUDP("udp", ua); err != nil {
		t.Errorf("the UDP port is still held after Shutdown: %v", err)
	} else {
		uc.Close()
	}
}

// quicAccepts reports whether a QUIC handshake with addr completes. A
// refused one ends with CONNECTION_REFUSED or an ICMP port unreachable;
// the timeout only bounds a lost packet.
func quicAccepts(addr string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}, ServerName: "app.example.com"}, nil)
	if err != nil {
		return false
	}
	conn.CloseWithError(0, "")
	return true
}

// TestHTTP3MaxConnections: max_connections caps open QUIC connections; a
// closed one frees its place.
func TestHTTP3MaxConnections(t *testing.T) {
	up := echoUpstream(t, "a")
	cfg := testConfig(proxySite([]string{"app.example.com"}, up.URL))
	cfg.Listen.MaxConnections = 1
	ts := startH3(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	tc := &tls.Config{RootCAs: ts.certs.Pool, NextProtos: []string{http3.NextProtoH3}, ServerName: "app.example.com"}
	first, err := quic.DialAddr(ctx, ts.https, tc, nil)
	if err != nil {
		t.Fatalf("first connection: %v", err)
	}
	if _, err := quic.DialAddr(ctx, ts.https, tc, nil); err == nil || !strings.Contains(err.Error(), "CONNECTION_REFUSED") {
		t.Fatalf("second connection over max_connections = 1: %v, want CONNECTION_REFUSED", err)
	}
	first.CloseWithError(0, "")
	eventually(t, "the closed connection frees its place", func() bool { return quicAccepts(ts.https) })
	if n := ts.srv.h3.open.Load(); n > 1 {
		t.Errorf("%d connections counted open", n)
	}
}

// TestHTTP3WarnsOfSmallUDPBuffers: one zap warning, with the sizes and
// the fix, when the kernel keeps the UDP buffers below what QUIC wants:
// at start when this machine's are (whether they are depends on its
// sysctls and privileges), and always for a socket made small on purpose.
func TestHTTP3WarnsOfSmallUDPBuffers(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	up := echoUpstream(t, "a")
	ts := startH3Logged(t, testConfig(proxySite([]string{"app.example.com"}, up.URL)), nil, zap.New(core))
	rcv, snd, ok := udpBufferSizes(ts.srv.h3.udp)
	small := ok && (rcv < udpBufferWanted || snd < udpBufferWanted)
	if n := logs.FilterMessage(msgSmallUDPBuffers).Len(); small && n != 1 || !small && n != 0 {
		t.Errorf("buffers %d/%d (wanted %d): %d warnings at start", rcv, snd, udpBufferWanted, n)
	}

	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	uc.SetReadBuffer(4096)
	if _, _, ok := udpBufferSizes(uc); !ok {
		t.Skip("UDP buffer sizes cannot be read on this system")
	}
	core, logs = observer.New(zap.WarnLevel)
	(&Server{logger: zap.New(core)}).warnSmallUDPBuffers(uc)
	got := logs.FilterMessage(msgSmallUDPBuffers).All()
	if len(got) != 1 || got[0].ContextMap()["wanted"] != int64(udpBufferWanted) || !strings.Contains(got[0].ContextMap()["fix"].(string), "net.core.rmem_max") {
		t.Errorf("warnings for a 4 KiB socket: %+v", got)
	}
}

// BenchmarkProxyHTTP3 compares HTTP/3 with HTTP/2 through the same
// started Server, to the same upstream (1 KiB answers on loopback): one
// client connection each, requests one at a time ("serial") and 4 per P
// at once on that connection ("parallel"). Both clients are net/http
// RoundTrippers (x/net's HTTP/2 in net/http, quic-go's HTTP/3), so their
// own costs are alike; ns/op includes them and the upstream.
//
//	go test ./proxy -run '^$' -bench BenchmarkProxyHTTP3 -benchtime 3s
func BenchmarkProxyHTTP3(b *testing.B) {
	const host = "bench.test"
	bc := testkit.SelfSigned(b, host)
	cfg := benchConfig(host, benchUpstream(b, 1024, nil))
	cfg.Listen.HTTP3 = true
	addr := startBenchProxy(b, bc, cfg)
	tc := &tls.Config{RootCAs: bc.Pool, ServerName: host}
	h2 := &http.Transport{
		TLSClientConfig:   tc,
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	h3 := &http3.Transport{
		TLSClientConfig: tc,
		Dial: func(ctx context.Context, _ string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
			return quic.DialAddr(ctx, addr, tc, qc)
		},
	}
	b.Cleanup(func() { h2.CloseIdleConnections(); h3.Close() })
	for _, c := range []struct {
		name  string
		rt    http.RoundTripper
		proto string
	}{{"h2", h2, "HTTP/2.0"}, {"h3", h3, "HTTP/3.0"}} {
		client := &http.Client{Transport: c.rt}
		get := func() error {
			resp, err := client.Get("https://" + host + "/")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				return err
			}
			if resp.StatusCode != 200 || resp.Proto != c.proto {
				return fmt.Errorf("%s %s", resp.Proto, resp.Status)
			}
			return nil
		}
		if err := get(); err != nil { // the connection, before timing
			b.Fatal(err)
		}
		b.Run(c.name+"/serial", func(b *testing.B) {
			b.SetBytes(1024)
			b.ReportAllocs()
			for b.Loop() {
				if err := get(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(c.name+"/parallel", func(b *testing.B) {
			b.SetParallelism(4)
			b.SetBytes(1024)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := get(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// TestHTTP3IsFixedAtStart: turning http3 on or off in a reload is
// reported as taking effect at the next restart.
func TestHTTP3IsFixedAtStart(t *testing.T) {
	if got := fixedListenChanges(config.Listen{}, config.Listen{HTTP3: true}); !slices.Equal(got, []string{"http3"}) {
		t.Errorf("fixedListenChanges = %q, want [http3]", got)
	}
	core, logs := observer.New(zap.WarnLevel)
	up := echoUpstream(t, "a")
	ts := startH3Logged(t, testConfig(proxySite([]string{"app.example.com"}, up.URL)), nil, zap.New(core))
	if err := ts.srv.Swap(testConfig(proxySite([]string{"app.example.com"}, up.URL))); err != nil {
		t.Fatal(err)
	}
	w := logs.FilterMessageSnippet("take effect at the next restart").All()
	if len(w) != 1 || !slices.Contains(w[0].ContextMap()["keys"].([]any), any("http3")) {
		t.Errorf("warnings after a reload that turns http3 off: %+v", w)
	}
	c, _ := ts.h3Client(t, ts.certs.Pool)
	if s := getSeen(t, c, "https://app.example.com/", nil); s.Upstream != "a" {
		t.Errorf("HTTP/3 after the reload reached %q", s.Upstream)
	}
}
