package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/integration/testkit"
	"github.com/portico-proxy/portico/proxy"
)

// expires is the test certificates' expiry, which health prints.
var expires = time.Date(2030, 1, 2, 3, 4, 0, 0, time.UTC)

// healthConfig writes a config whose HTTPS listener is https and whose
// first site is host.
func healthConfig(t *testing.T, https, host string) string {
	t.Helper()
	return writeFile(t, t.TempDir(), "portico.toml", fmt.Sprintf(`[acme]
ca = "local"

[listen]
http = ""
https = %q

[[site]]
hosts = [%q, "other.example.net"]
respond = "ok"
`, https, host))
}

// tlsServer accepts TLS on loopback with getCert and records the SNI of
// every ClientHello.
type tlsServer struct {
	addr string
	mu   sync.Mutex
	sni  []string
}

func startTLS(t *testing.T, getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tlsServer {
	t.Helper()
	s := &tlsServer{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.TLS = &tls.Config{GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		s.mu.Lock()
		s.sni = append(s.sni, hello.ServerName)
		s.mu.Unlock()
		return getCert(hello)
	}}
	srv.Config.ErrorLog = nopLog()
	srv.StartTLS()
	t.Cleanup(srv.Close)
	s.addr = srv.Listener.Addr().String()
	return s
}

func (s *tlsServer) snis() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.sni...)
}

// rawServer accepts TCP on loopback and hands each connection to handle,
// with a channel closed when the test ends.
func rawServer(t *testing.T, handle func(net.Conn, <-chan struct{})) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	t.Cleanup(func() { ln.Close(); close(stop); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); handle(c, stop) }()
		}
	}()
	return ln.Addr().String()
}

func oneLineOut(t *testing.T, what, s string) {
	t.Helper()
	if strings.Count(s, "\n") != 1 || !strings.HasSuffix(s, "\n") {
		t.Errorf("%s is not one line: %q", what, s)
	}
}

func TestHealthCertificate(t *testing.T) {
	cert := testkit.SelfSignedWith(t, testkit.Options{NotAfter: expires}, "app.example.net")
	s := startTLS(t, cert.Source().GetCertificate)
	code, stdout, stderr := run(t, "health", "-config", healthConfig(t, s.addr, "App.Example.NET"))
	want := "healthy: https " + s.addr + " (SNI app.example.net): TLS handshake completed; certificate app.example.net, expires 2030-01-02 03:04 UTC\n"
	if code != 0 || stdout != want || stderr != "" {
		t.Errorf("exit %d\nstdout %q\nwant   %q\nstderr %q", code, stdout, want, stderr)
	}
	if got := s.snis(); len(got) != 1 || got[0] != "app.example.net" {
		t.Errorf("SNI sent: %q, want the first site's first host", got)
	}
}

// TestHealthAlert: a listener that speaks TLS but has no certificate for
// the name yet is up: Portico is serving and reports the certificate
// problem through its logs, alerts and metrics.
func TestHealthAlert(t *testing.T) {
	s := startTLS(t, func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, errors.New("no certificate yet") })
	code, stdout, stderr := run(t, "health", "-config", healthConfig(t, s.addr, "new.example.net"))
	if code != 0 || !strings.HasPrefix(stdout, "healthy: https "+s.addr+" (SNI new.example.net): TLS answered with an alert (tls: internal error)") {
		t.Errorf("exit %d\nstdout %q\nstderr %q", code, stdout, stderr)
	}
	oneLineOut(t, "stdout", stdout)
}

func TestHealthUnhealthy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()

	silent := rawServer(t, func(c net.Conn, stop <-chan struct{}) { <-stop })
	hangup := rawServer(t, func(net.Conn, <-chan struct{}) {})
	plain := rawServer(t, func(c net.Conn, _ <-chan struct{}) {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Read(make([]byte, 512))
		c.Write([]byte("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n"))
	})
	for _, tc := range []struct {
		name, addr, want string
		args             []string
	}{
		{"nothing listens", closed, "connection refused: nothing listens there (is portico running?)", nil},
		{"no answer", silent, "no TLS answer within 300ms", []string{"-timeout", "300ms"}},
		{"closed at once", hangup, "the connection was closed without a TLS answer", nil},
		{"plain HTTP", plain, "the answer is not TLS: is another server (plain HTTP?) on this port?", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"health", "-config", healthConfig(t, tc.addr, "app.example.net")}, tc.args...)
			start := time.Now()
			code, stdout, stderr := run(t, args...)
			want := "unhealthy: https " + tc.addr + " (SNI app.example.net): " + tc.want + "\n"
			if code != 1 || stdout != "" || stderr != want {
				t.Errorf("exit %d\nstdout %q\nstderr %q\nwant   %q", code, stdout, stderr, want)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

// TestHealthTimeout: by default the whole check takes at most 3 s.
func TestHealthTimeout(t *testing.T) {
	silent := rawServer(t, func(c net.Conn, stop <-chan struct{}) { <-stop })
	start := time.Now()
	code, _, stderr := run(t, "health", "-config", healthConfig(t, silent, "app.example.net"))
	d := time.Since(start)
	if code != 1 || !strings.HasSuffix(stderr, ": no TLS answer within 3s\n") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	if d < 2900*time.Millisecond || d > 4*time.Second {
		t.Errorf("took %v, want about 3s", d)
	}
}

func TestHealthConfigProblems(t *testing.T) {
	dir := t.TempDir()
	bad := writeFile(t, dir, "bad.toml", "[listen]\nhttps = \"\"\nbogus = 1\n")
	code, stdout, stderr := run(t, "health", "-config", bad)
	if code != 1 || stdout != "" || !strings.HasPrefix(stderr, "unhealthy: config "+bad+": "+bad+":") || !strings.Contains(stderr, "(and 2 more problem(s): run portico validate)") {
		t.Errorf("exit %d\nstdout %q\nstderr %q", code, stdout, stderr)
	}
	oneLineOut(t, "stderr", stderr)

	code, _, stderr = run(t, "health", "-config", dir+"/missing.toml")
	if code != 1 || !strings.HasPrefix(stderr, "unhealthy: read config "+dir+"/missing.toml") {
		t.Errorf("missing file: exit %d %q", code, stderr)
	}
	oneLineOut(t, "stderr", stderr)

	if code, _, _ := run(t, "health", "-config", bad, "extra"); code != 2 {
		t.Errorf("extra argument: exit %d", code)
	}
}

func TestHealthSNI(t *testing.T) {
	for _, tc := range []struct {
		sites []config.Site
		want  string
	}{
		{[]config.Site{{Hosts: []string{"app.example.net", "www.example.net"}}, {Hosts: []string{"b.example.net"}}}, "app.example.net"},
		{[]config.Site{{Hosts: []string{"*.example.net"}}}, "healthcheck.example.net"},
		{[]config.Site{{}, {Hosts: []string{"b.example.net"}}}, "b.example.net"},
		{nil, ""},
	} {
		if got := healthSNI(&config.Config{Sites: tc.sites}); got != tc.want {
			t.Errorf("healthSNI(%v) = %q, want %q", tc.sites, got, tc.want)
		}
	}
}

func TestDialAddr(t *testing.T) {
	for in, want := range map[string]string{
		":443":             "127.0.0.1:443",
		"0.0.0.0:8443":     "127.0.0.1:8443",
		"[::]:443":         "[::1]:443",
		"127.0.0.2:443":    "127.0.0.2:443",
		"[::1]:8443":       "[::1]:8443",
		"example.net:443":  "example.net:443",
		"192.0.2.10:10443": "192.0.2.10:10443",
	} {
		if got := dialAddr(in); got != want {
			t.Errorf("dialAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestHealthOfPortico: against Portico's own HTTPS listener, given as
// ":PORT" (every interface) the way a container config writes it.
func TestHealthOfPortico(t *testing.T) {
	cfg := &config.Config{
		Listen: config.Listen{HTTPS: "127.0.0.1:0"},
		Sites:  []config.Site{{Hosts: []string{"app.example.net"}, Respond: "ok"}},
	}
	srv, err := proxy.New(cfg, testkit.SelfSigned(t, "app.example.net").Source(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	_, httpsAddr := srv.Addrs()
	_, port, _ := net.SplitHostPort(httpsAddr)
	code, stdout, stderr := run(t, "health", "-config", healthConfig(t, ":"+port, "app.example.net"))
	if code != 0 || !strings.HasPrefix(stdout, "healthy: https 127.0.0.1:"+port+" (SNI app.example.net): TLS handshake completed; certificate app.example.net") {
		t.Errorf("exit %d\nstdout %q\nstderr %q", code, stdout, stderr)
	}
}

func nopLog() *log.Logger { return log.New(io.Discard, "", 0) }
