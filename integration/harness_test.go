package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portico-proxy/portico/integration/acmetest"
	"github.com/portico-proxy/portico/integration/testkit"
)

// porticoBin is the binary built once by TestMain and run by every test.
var porticoBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "portico-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	porticoBin = filepath.Join(dir, "portico")
	build := exec.Command("go", "build", "-race", "-o", porticoBin, "../cmd/portico")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build portico:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// portico is one Portico process under test.
type portico struct {
	t          testing.TB
	name       string
	configPath string
	httpsAddr  string
	cmd        *exec.Cmd
	log        *testkit.Buffer
	done       chan struct{}
}

// startPortico writes config to dir/portico.toml and runs Portico on it,
// waiting until its HTTPS port accepts connections. It is stopped (SIGTERM,
// then SIGKILL) at cleanup, and its log is shown if the test failed.
func startPortico(t testing.TB, dir, config, httpsAddr string) *portico {
	t.Helper()
	p := launchPortico(t, dir, config, httpsAddr)
	p.waitListening()
	return p
}

// launchPortico starts Portico without waiting for it to listen, so a test
// can start a fleet at the same moment.
func launchPortico(t testing.TB, dir, config, httpsAddr string) *portico {
	t.Helper()
	path := filepath.Join(dir, "portico.toml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &portico{t: t, name: filepath.Base(dir), configPath: path, httpsAddr: httpsAddr, log: &testkit.Buffer{}}
	p.launch()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("portico %s (%s) log:\n%s", p.name, p.httpsAddr, p.log.String())
		}
	})
	return p
}

func (p *portico) start() {
	p.t.Helper()
	p.launch()
	p.waitListening()
}

func (p *portico) launch() {
	p.t.Helper()
	p.cmd = exec.Command(porticoBin, "run", "-config", p.configPath)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.Env = append(os.Environ(), "GORACE=halt_on_error=1")
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(p.cmd, p.done)
}

func (p *portico) waitListening() {
	p.t.Helper()
	testkit.Eventually(p.t, 30*time.Second, "portico listening on "+p.httpsAddr, func() bool {
		select {
		case <-p.done:
			p.t.Fatalf("portico exited early:\n%s", p.log.String())
		default:
		}
		c, err := net.DialTimeout("tcp", p.httpsAddr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// stop sends SIGTERM and waits for a clean exit.
func (p *portico) stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(40 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *portico) exitCode() int { return p.cmd.ProcessState.ExitCode() }

func (p *portico) signal(sig os.Signal) {
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// writeConfig replaces the config file (for reload tests).
func (p *portico) writeConfig(config string) {
	if err := os.WriteFile(p.configPath, []byte(config), 0o600); err != nil {
		p.t.Fatal(err)
	}
}

// waitLog polls the log for a substring.
func (p *portico) waitLog(substr string, within time.Duration) {
	p.t.Helper()
	testkit.Eventually(p.t, within, "log line "+substr, func() bool { return strings.Contains(p.log.String(), substr) })
}

// client makes HTTPS requests to Portico at addr whatever the URL's host
// resolves to, trusting roots. tlsConf tweaks the TLS settings.
func client(addr string, roots *x509.CertPool, tweak func(*tls.Config)) *http.Client {
	tc := &tls.Config{RootCAs: roots}
	if tweak != nil {
		tweak(tc)
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: 15 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			},
			TLSClientConfig:   tc,
			ForceAttemptHTTP2: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// echo is an upstream that answers with its name and the request it saw.
type echoReply struct {
	Upstream string      `json:"upstream"`
	Host     string      `json:"host"`
	Path     string      `json:"path"`
	Header   http.Header `json:"header"`
}

func startEcho(t testing.TB, name string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(echoReply{Upstream: name, Host: r.Host, Path: r.URL.RequestURI(), Header: r.Header})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// getEcho fetches url and decodes an echo reply, failing the test otherwise.
func getEcho(t testing.TB, c *http.Client, url string) (echoReply, *http.Response) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var e echoReply
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(body, &e); err != nil {
			t.Fatalf("GET %s: not an echo reply: %s", url, body)
		}
	}
	return e, resp
}

// waitHTTPS polls until an HTTPS GET of url succeeds with status 200.
func waitHTTPS(t testing.TB, c *http.Client, url string, within time.Duration) {
	t.Helper()
	var last string
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		resp, err := c.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond) // polling interval
	}
	t.Fatalf("no 200 from %s within %v; last: %s", url, within, last)
}

// peerCert returns the leaf certificate Portico serves for name.
func peerCert(t testing.TB, addr, name string, roots *x509.CertPool, tweak func(*tls.Config)) *x509.Certificate {
	t.Helper()
	tc := &tls.Config{ServerName: name, RootCAs: roots}
	if tweak != nil {
		tweak(tc)
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, tc)
	if err != nil {
		t.Fatalf("TLS to %s for %s: %v", addr, name, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// env is a CA (Pebble), its DNS, and the ports Portico listens on for it.
type env struct {
	pebble    *acmetest.Pebble
	dns       *acmetest.DNS
	httpPort  int
	httpsPort int
}

func newEnv(t testing.TB, opts acmetest.PebbleOptions) *env {
	e := &env{dns: acmetest.StartDNS(t), httpPort: acmetest.FreePort(t), httpsPort: acmetest.FreePort(t)}
	opts.DNS, opts.HTTPPort, opts.TLSPort = e.dns, e.httpPort, e.httpsPort
	e.pebble = acmetest.StartPebble(t, opts)
	return e
}

// acmeConfig is the [acme], [listen] and [storage] part of a config for
// Portico on ip, against this env's Pebble.
func (e *env) acmeConfig(ip, storageDir string, challenges string) string {
	return fmt.Sprintf(`
[acme]
email = "ops@example.net"
agree_tos = true
ca = %q
ca_roots = [%q]
challenges = [%s]

[listen]
http = "%s:%d"
https = "%s:%d"

[storage]
path = %q

[renewal]
check_interval = "1s"
`, e.pebble.DirectoryURL(), e.pebble.RootsFile(), challenges, ip, e.httpPort, ip, e.httpsPort, storageDir)
}

// checkInterval sets [renewal] check_interval in a config made by
// acmeConfig (whose own is "1s", so the periodic pass hides what Apply
// alone does).
func checkInterval(cfg, interval string) string {
	return strings.Replace(cfg, `check_interval = "1s"`, fmt.Sprintf("check_interval = %q", interval), 1)
}

func (e *env) httpsAddr(ip string) string { return fmt.Sprintf("%s:%d", ip, e.httpsPort) }
func (e *env) httpAddr(ip string) string  { return fmt.Sprintf("%s:%d", ip, e.httpPort) }

func site(hosts []string, extra string) string {
	q := make([]string, len(hosts))
	for i, h := range hosts {
		q[i] = fmt.Sprintf("%q", h)
	}
	return fmt.Sprintf("\n[[site]]\nhosts = [%s]\n%s\n", strings.Join(q, ", "), extra)
}

// sigHUP asks Portico to reload its config.
var sigHUP = syscall.SIGHUP
