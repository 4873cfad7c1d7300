package proxy

// The PROXY protocol ([listen] proxy_protocol) against a started Server:
// real TCP connections from 127.0.0.1 that open with headers written by
// go-proxyproto, real TLS and HTTP clients above them.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
)

// ppHeader is a PROXY header from src ("": v2 LOCAL, v1 UNKNOWN).
func ppHeader(t *testing.T, version byte, src string) []byte {
	t.Helper()
	h := &proxyproto.Header{Version: version, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
	if src != "" {
		ip := net.ParseIP(src)
		dst := net.ParseIP("192.0.2.1")
		if ip.To4() == nil {
			dst = net.ParseIP("2001:db8::1")
		}
		h = proxyproto.HeaderProxyFromAddrs(version, &net.TCPAddr{IP: ip, Port: 40000}, &net.TCPAddr{IP: dst, Port: 443})
	}
	b, err := h.Format()
	if err != nil {
		t.Fatalf("format a PROXY header: %v", err)
	}
	return b
}

// dialWith opens a TCP connection to addr from 127.0.0.1 and writes
// header (none when nil) first.
func dialWith(ctx context.Context, addr string, header []byte) (net.Conn, error) {
	d := &net.Dialer{Timeout: waitTimeout, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if len(header) > 0 {
		if _, err := c.Write(header); err != nil {
			c.Close()
			return nil, fmt.Errorf("write the PROXY header: %w", err)
		}
	}
	return c, nil
}

// ppClient is a real net/http client whose connections open with header:
// to :443 over HTTP/1.1 (the fast path) or h2, or to :80.
func (ts *testServer) ppClient(t *testing.T, header []byte, h2 bool) *http.Client {
	t.Helper()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			target := ts.httpAddr
			if strings.HasSuffix(addr, ":443") {
				target = ts.https
			}
			return dialWith(ctx, target, header)
		},
		TLSClientConfig:   &tls.Config{RootCAs: ts.certs.Pool},
		ForceAttemptHTTP2: h2,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: waitTimeout}
}

func ppConfig(t *testing.T, up string, sources ...string) (*config.Config, string) {
	cfg := hardenedConfig(up)
	cfg.Listen.ProxyProtocol = sources
	logPath := filepath.Join(t.TempDir(), "access.log")
	cfg.Log = config.Log{Access: logPath, AccessFormat: "json"}
	return cfg, logPath
}

// TestProxyProtocolAddressIsTheClient: from a listed source, the address
// of a v1 or v2 header (TCP4, TCP6) is the client's on every path, in
// X-Forwarded-For and the access log; a v2 LOCAL (v1 UNKNOWN) header keeps the
// connection's own.
func TestProxyProtocolAddressIsTheClient(t *testing.T) {
	up := newCountingUpstream(t)
	cfg, logPath := ppConfig(t, up.URL, "127.0.0.1/32")
	ts := startServer(t, cfg)
	headers := []struct {
		name    string
		version byte
		src     string
		client  string
	}{
		{"v1-tcp4", 1, "203.0.113.7", "203.0.113.7"},
		{"v1-tcp6", 1, "2001:db8::7", "2001:db8::7"},
		{"v2-tcp4", 2, "203.0.113.8", "203.0.113.8"},
		{"v2-tcp6", 2, "2001:db8::8", "2001:db8::8"},
		{"v2-local", 2, "", "127.0.0.1"},
		{"v1-unknown", 1, "", "127.0.0.1"},
	}
	paths := []struct {
		name, url string
		h2        bool
		proto     string
	}{
		{"fast", "https://app.example.com", false, "HTTP/1.1"},
		{"h2", "https://app.example.com", true, "HTTP/2.0"},
		{"http", "http://app.example.com", false, "HTTP/1.1"},
	}
	lines := 0
	for _, h := range headers {
		for _, p := range paths {
			t.Run(h.name+"/"+p.name, func(t *testing.T) {
				fastBefore := ts.srv.fast.served.Load()
				uri := "/pp?case=" + h.name + "-" + p.name
				resp, body := get(t, ts.ppClient(t, ppHeader(t, h.version, h.src), p.h2), p.url+uri)
				if resp.StatusCode != http.StatusOK || body != "upstream ok" || resp.Proto != p.proto {
					t.Fatalf("%s %s %q", resp.Proto, resp.Status, body)
				}
				if fast := ts.srv.fast.served.Load() - fastBefore; (fast == 1) != (p.name == "fast") {
					t.Errorf("the fast path served %d requests", fast)
				}
				got := up.received()
				if xff := got[len(got)-1].Header.Values("X-Forwarded-For"); len(xff) != 1 || xff[0] != h.client {
					t.Errorf("upstream saw X-Forwarded-For %q, want %q", xff, h.client)
				}
				lines++
				var rec *accessLine
				for _, l := range readAccessLog(t, logPath, lines) {
					if l.URI == uri {
						rec = &l
					}
				}
				if rec == nil || rec.RemoteIP != h.client || rec.Proto != p.proto {
					t.Errorf("access log line %+v, want remote_ip %s", rec, h.client)
				}
			})
		}
	}
}

// TestProxyProtocolTrustedProxiesSeeTheHeader: trusted_proxies is decided
// on the header's source, not on the balancer's address.
func TestProxyProtocolTrustedProxiesSeeTheHeader(t *testing.T) {
	up := newCountingUpstream(t)
	cfg, _ := ppConfig(t, up.URL, "127.0.0.1/32")
	cfg.Listen.TrustedProxies = []string{"198.51.100.0/24"} // the header's source, not 127.0.0.1
	ts := startServer(t, cfg)
	hdr := http.Header{"X-Forwarded-For": {"203.0.113.9"}}
	for _, p := range []struct {
		url string
		h2  bool
	}{{"https://app.example.com/t", false}, {"https://app.example.com/t", true}, {"http://app.example.com/t", false}} {
		for src, want := range map[string]string{
			"198.51.100.5": "203.0.113.9, 198.51.100.5", // a trusted proxy: its chain is kept
			"192.0.2.77":   "192.0.2.77",                // anyone else: replaced
		} {
			resp, _ := do(t, ts.ppClient(t, ppHeader(t, 2, src), p.h2), http.MethodGet, p.url, nil, hdr)
			got := up.received()
			if xff := got[len(got)-1].Header.Get("X-Forwarded-For"); resp.StatusCode != 200 || xff != want {
				t.Errorf("%s h2=%v from %s: %s, X-Forwarded-For %q, want %q", p.url, p.h2, src, resp.Status, xff, want)
			}
		}
	}
}

// closedUnanswered reads c until the server closes it and fails the test
// if anything was answered.
func closedUnanswered(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: the connection is still open after %v", what, waitTimeout)
	}
	if len(b) > 0 {
		t.Errorf("%s: answered %q, want the connection closed", what, b)
	}
}

// TestProxyProtocolRefusals: a header from a source not listed, a listed
// source without one, a header after header_timeout and one for UDP are
// closed without an answer; plain connections from unlisted sources are
// served.
func TestProxyProtocolRefusals(t *testing.T) {
	up := newCountingUpstream(t)
	request := "GET /r HTTP/1.1\r\nHost: app.example.com\r\n\r\n"
	// the server's own certificate is trusted: a refused handshake must be
	// Portico closing the connection, not an unknown CA
	tlsConf := func(ts *testServer) *tls.Config {
		return &tls.Config{ServerName: "app.example.com", RootCAs: ts.certs.Pool, NextProtos: []string{"http/1.1"}}
	}
	// sends header then a request on :80, and header then a TLS handshake
	// on :443; both must be closed
	refusedOnBoth := func(t *testing.T, ts *testServer, header []byte) {
		t.Helper()
		c, err := dialWith(context.Background(), ts.httpAddr, header)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, request)
		closedUnanswered(t, c, "http")
		c, err = dialWith(context.Background(), ts.https, header)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(waitTimeout))
		if err := tls.Client(c, tlsConf(ts)).Handshake(); err == nil {
			t.Error("https: the TLS handshake succeeded, want the connection closed")
		}
	}
	t.Run("header from an unlisted source", func(t *testing.T) {
		cfg, _ := ppConfig(t, up.URL, "127.0.0.2/32")
		ts, logs := startLogged(t, cfg)
		for _, h := range [][]byte{ppHeader(t, 1, "203.0.113.7"), ppHeader(t, 2, "203.0.113.7"), ppHeader(t, 2, "")} {
			refusedOnBoth(t, ts, h)
		}
		eventually(t, "the refusals are logged", func() bool {
			return logs.FilterField(zap.String("reason", "a PROXY header from a source not listed in proxy_protocol")).Len() == 6
		})
		// plain connections from it are served as usual
		for _, p := range []string{"https://app.example.com/plain", "http://app.example.com/plain"} {
			resp, _ := get(t, ts.ppClient(t, nil, false), p)
			got := up.received()
			if xff := got[len(got)-1].Header.Get("X-Forwarded-For"); resp.StatusCode != 200 || xff != "127.0.0.1" {
				t.Errorf("%s: %s, X-Forwarded-For %q", p, resp.Status, xff)
			}
		}
		resp, _ := get(t, ts.ppClient(t, nil, true), "https://app.example.com/plain")
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
			t.Errorf("h2: %s %s", resp.Proto, resp.Status)
		}
	})
	t.Run("silent client from an unlisted source", func(t *testing.T) {
		// closed after one header_timeout on :80, not one to look for a
		// PROXY header and another for the request's headers
		cfg, _ := ppConfig(t, up.URL, "127.0.0.2/32")
		cfg.Listen.HeaderTimeout = config.Duration(time.Second)
		ts := startServer(t, cfg)
		start := time.Now()
		c, err := dialWith(context.Background(), ts.httpAddr, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if d := recv(t, awaitClose(c), "the server to close a silent connection").Sub(start); d < time.Second || d > 1900*time.Millisecond {
			t.Errorf("closed after %v, want header_timeout (1s)", d)
		}
	})
	t.Run("listed source without a header", func(t *testing.T) {
		cfg, _ := ppConfig(t, up.URL, "127.0.0.1/32")
		ts, logs := startLogged(t, cfg)
		refusedOnBoth(t, ts, nil)
		eventually(t, "the refusals are logged", func() bool {
			return logs.FilterField(zap.String("reason", "no PROXY header (within header_timeout) from a proxy_protocol source")).Len() == 2
		})
	})
	t.Run("header for UDP", func(t *testing.T) {
		cfg, _ := ppConfig(t, up.URL, "127.0.0.1/32")
		ts := startServer(t, cfg)
		h := proxyproto.HeaderProxyFromAddrs(2, &net.UDPAddr{IP: net.IPv4(203, 0, 113, 7), Port: 1}, &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 443})
		b, err := h.Format()
		if err != nil {
			t.Fatal(err)
		}
		refusedOnBoth(t, ts, b)
	})
	t.Run("header after header_timeout", func(t *testing.T) {
		up := newCountingUpstream(t)
		cfg, _ := ppConfig(t, up.URL, "127.0.0.1/32")
		cfg.Listen.HeaderTimeout = config.Duration(300 * time.Millisecond)
		ts := startServer(t, cfg)
		for _, addr := range []string{ts.httpAddr, ts.https} {
			start := time.Now()
			c, err := dialWith(context.Background(), addr, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			closed := awaitClose(c) // nothing sent: the server closes first
			at := recv(t, closed, "the server to close a connection without a header")
			if d := at.Sub(start); d < cfg.Listen.HeaderTimeout.Std() {
				t.Errorf("%s: closed after %v, before header_timeout", addr, d)
			}
			// the header, late, finds the connection closed
			c.Write(ppHeader(t, 2, "203.0.113.7"))
			io.WriteString(c, request)
			closedUnanswered(t, c, addr)
		}
		if n := len(up.received()); n != 0 {
			t.Errorf("the upstream got %d requests", n)
		}
	})
}
