package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/integration/testkit"
	"github.com/portico-proxy/portico/proxy"
	"github.com/portico-proxy/portico/proxy/admin"
	"github.com/portico-proxy/portico/tlsmgr"
)

// t0 is the clock of these tests.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) *time.Time { t := t0.Add(d); return &t }

const day = 24 * time.Hour

// localSite makes a config of the client tests one that serves something
// (a config with nothing to serve does not load).
const localSite = "[acme]\nca = \"local\"\n[[site]]\nhosts = [\"a.example.net\"]\nrespond = \"ok\"\n"

// fakeCerts stands in for tlsmgr.Manager behind the admin API.
type fakeCerts struct {
	mu      sync.Mutex
	status  []tlsmgr.CertStatus
	retried []string
}

func (f *fakeCerts) Status(context.Context) []tlsmgr.CertStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.status)
}

func (f *fakeCerts) Retry(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, st := range f.status {
		if st.Name == name {
			f.retried = append(f.retried, name)
			return nil
		}
	}
	return fmt.Errorf("%s: %w", name, tlsmgr.ErrNotManaged)
}

func (f *fakeCerts) setStatus(st []tlsmgr.CertStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status = st
}

func (f *fakeCerts) retriedNames() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.retried)
}

func (f *fakeCerts) RetryAll(context.Context) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, st := range f.status {
		if st.Failures > 0 {
			f.retried = append(f.retried, st.Name+"/"+st.KeyType)
			n++
		}
	}
	return n, nil
}

const longError = "obtaining certificate: [new.example.net] solving challenges: new.example.net:\n\tcannot get key authorization: no solvers available"

func testStatus() []tlsmgr.CertStatus {
	return []tlsmgr.CertStatus{
		{Name: "old.example.net", KeyType: "rsa2048", Issuer: "R11", NotBefore: at(-92 * day), NotAfter: at(-2*time.Hour - 30*time.Minute),
			RenewAt: at(-10 * day), Failures: 1, LastError: "rateLimited: too many certificates", NextRetry: at(-5 * time.Second)},
		{Name: "app.example.net", KeyType: "rsa2048", Issuer: "R11", NotBefore: at(-49 * day), NotAfter: at(41*day + 3*time.Hour), RenewAt: at(20*day + time.Hour)},
		{Name: "new.example.net", KeyType: "p256", Failures: 3, LastError: longError, NextRetry: at(9*time.Minute + 30*time.Second)},
		{Name: "app.example.net", KeyType: "p256", Issuer: "E5", NotBefore: at(-49 * day), NotAfter: at(41*day + 3*time.Hour), RenewAt: at(20*day + time.Hour)},
	}
}

// apiFixture is an admin API served by httptest for the CLI to call.
type apiFixture struct {
	certs   *fakeCerts
	cfgPath string

	mu        sync.Mutex
	reloads   int
	reloadErr error
}

func (f *apiFixture) reloadCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reloads
}

func (f *apiFixture) failReloads(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reloadErr = err
}

func (f *apiFixture) reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reloads++
	return f.reloadErr
}

// startAPI serves the admin API over network ("tcp" or "unix") with token
// and writes a config naming it; with token set the config reads it from
// $PORTICO_TEST_ADMIN_TOKEN, which is set to clientToken.
func startAPI(t *testing.T, network, token, clientToken string) *apiFixture {
	t.Helper()
	f := &apiFixture{certs: &fakeCerts{status: testStatus()}}
	h := admin.Handler(admin.Options{Certs: f.certs, Reload: f.reload, Token: token})
	srv := httptest.NewUnstartedServer(h)
	addr := srv.Listener.Addr().String()
	if network == "unix" {
		addr = filepath.Join(shortTempDir(t), "admin.sock")
		ln, err := admin.Listen(addr)
		if err != nil {
			t.Fatal(err)
		}
		srv.Listener.Close()
		srv.Listener = ln
	}
	srv.Start()
	t.Cleanup(srv.Close)
	cfg := fmt.Sprintf("[listen]\nhttps = \"127.0.0.1:0\"\nadmin = %q\n", addr)
	if clientToken != "" {
		t.Setenv("PORTICO_TEST_ADMIN_TOKEN", clientToken)
		cfg += "admin_token = \"{env.PORTICO_TEST_ADMIN_TOKEN}\"\n"
	}
	f.cfgPath = writeFile(t, t.TempDir(), "portico.toml", cfg+localSite)
	return f
}

// shortTempDir is a fresh directory whose path leaves room for a socket
// name within the 108 bytes a unix socket path may have.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pcli")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func fixClock(t *testing.T) {
	t.Helper()
	old := now
	now = func() time.Time { return t0 }
	t.Cleanup(func() { now = old })
}

const wantTable = `NAME             KEY      ISSUER  EXPIRES         RENEW          FAILURES  NEXT RETRY   LAST ERROR
app.example.net  p256     E5      expires in 41d  renews in 20d  0         —            —
app.example.net  rsa2048  R11     expires in 41d  renews in 20d  0         —            —
new.example.net  p256     —       —               —              3         retry in 9m  obtaining certificate: [new.example.net] solving challenges…
old.example.net  rsa2048  R11     expired 2h ago  due 10d ago    1         due now      rateLimited: too many certificates

4 certificate(s), 2 with failures ('portico retry --all' retries them now)
`

func TestCertsTable(t *testing.T) {
	fixClock(t)
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			f := startAPI(t, network, "", "")
			code, stdout, stderr := run(t, "certs", "-config", f.cfgPath)
			if code != 0 || stderr != "" {
				t.Fatalf("exit %d\nstderr:\n%s", code, stderr)
			}
			if stdout != wantTable {
				t.Errorf("table:\n%s\nwant:\n%s", stdout, wantTable)
			}
		})
	}
}

// TestCertsTableAligned: every cell of a column starts where its title
// does, whatever the widths (one rune per character, "—" included).
func TestCertsTableAligned(t *testing.T) {
	var b strings.Builder
	printCertTable(&b, testStatus(), t0)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	header := []rune(lines[0])
	var starts []int
	for i := range header {
		if header[i] != ' ' && (i == 0 || header[i-1] == ' ' && header[i-2] == ' ') {
			starts = append(starts, i)
		}
	}
	if len(starts) != 8 {
		t.Fatalf("header %q: %d columns, want 8", lines[0], len(starts))
	}
	for _, l := range lines[1:5] {
		r := []rune(l)
		for _, s := range starts[1:] {
			if len(r) <= s || r[s-1] != ' ' || r[s] == ' ' {
				t.Errorf("row %q: no cell starting at column %d", l, s)
			}
		}
	}
}

func TestCertsJSON(t *testing.T) {
	f := startAPI(t, "tcp", "", "")
	code, stdout, stderr := run(t, "certs", "-json", "-config", f.cfgPath)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var got []tlsmgr.CertStatus
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, stdout)
	}
	if len(got) != 4 || got[0].Name != "app.example.net" || got[0].KeyType != "p256" || got[3].LastError != "rateLimited: too many certificates" {
		t.Errorf("got %+v", got)
	}
}

func TestCertsEmpty(t *testing.T) {
	f := startAPI(t, "tcp", "", "")
	f.certs.setStatus(nil)
	if code, stdout, _ := run(t, "certs", "-config", f.cfgPath); code != 0 || stdout != "no managed certificates\n" {
		t.Errorf("exit %d, stdout %q", code, stdout)
	}
}

func TestRetryName(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			f := startAPI(t, network, "", "")
			// the name as typed, flags on either side of it
			code, stdout, stderr := run(t, "retry", "New.Example.NET.", "-config", f.cfgPath)
			if code != 0 || stdout != "new.example.net: retrying now: p256 (3 failure(s)); follow with 'portico certs'\n" {
				t.Fatalf("exit %d\nstdout %q\nstderr %q", code, stdout, stderr)
			}
			if code, _, stderr := run(t, "retry", "-config", f.cfgPath, "old.example.net"); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if !slices.Equal(f.certs.retriedNames(), []string{"new.example.net", "old.example.net"}) {
				t.Errorf("retried %v", f.certs.retriedNames())
			}

			code, stdout, stderr = run(t, "retry", "-config", f.cfgPath, "nope.example.net")
			if code != 1 || stdout != "" || stderr != "portico: \"nope.example.net\" is not a name Portico manages: see GET /certificates\n" {
				t.Errorf("unmanaged name: exit %d\nstdout %q\nstderr %q", code, stdout, stderr)
			}
		})
	}
}

func TestRetryAll(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			f := startAPI(t, network, "", "")
			code, stdout, stderr := run(t, "retry", "--all", "-config", f.cfgPath)
			if code != 0 || stdout != "retrying 2 certificate(s) with failures now; follow with 'portico certs'\n" {
				t.Fatalf("exit %d\nstdout %q\nstderr %q", code, stdout, stderr)
			}
			if !slices.Equal(f.certs.retriedNames(), []string{"old.example.net/rsa2048", "new.example.net/p256"}) {
				t.Errorf("retried %v", f.certs.retriedNames())
			}
			f.certs.setStatus(testStatus()[1:2])
			if code, stdout, _ := run(t, "retry", "-all", "-config", f.cfgPath); code != 0 || stdout != "no certificate has failures: nothing to retry\n" {
				t.Errorf("nothing failing: exit %d, stdout %q", code, stdout)
			}
		})
	}
}

func TestRetryUsage(t *testing.T) {
	f := startAPI(t, "tcp", "", "")
	for _, args := range [][]string{
		{"retry", "-config", f.cfgPath},
		{"retry", "-config", f.cfgPath, "--all", "app.example.net"},
		{"retry", "-config", f.cfgPath, "a.example.net", "b.example.net"},
		{"retry", "--bogus"},
	} {
		if code, _, stderr := run(t, args...); code != 2 || !strings.Contains(stderr, "usage: portico retry") && !strings.Contains(stderr, "flag provided but not defined") {
			t.Errorf("%q: exit %d, stderr %q", args, code, stderr)
		}
	}
	if len(f.certs.retriedNames()) != 0 {
		t.Errorf("a usage error retried %v", f.certs.retriedNames())
	}
	if code, _, _ := run(t, "certs", "-config", f.cfgPath, "extra"); code != 2 {
		t.Errorf("certs with an argument: exit %d", code)
	}
	if code, _, _ := run(t, "reload", "-config", f.cfgPath, "extra"); code != 2 {
		t.Errorf("reload with an argument: exit %d", code)
	}
}

func TestReload(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			f := startAPI(t, network, "", "")
			code, stdout, stderr := run(t, "reload", "-config", f.cfgPath)
			if code != 0 || !strings.HasSuffix(stdout, ": config reloaded\n") || f.reloadCount() != 1 {
				t.Fatalf("exit %d, %d reloads\nstdout %q\nstderr %q", code, f.reloadCount(), stdout, stderr)
			}

			f.failReloads(config.Errors{{File: "/etc/portico/portico.toml", Line: 7, Key: "site[1].hosts", Msg: "missing: a site needs at least one host", Fix: "list the names"}})
			code, stdout, stderr = run(t, "reload", "-config", f.cfgPath)
			want := "portico: reload refused, the running config stays: 1 problem(s) in the config\n" +
				"  /etc/portico/portico.toml:7: site[1].hosts: missing: a site needs at least one host (fix: list the names)\n"
			if code != 1 || stdout != "" || stderr != want {
				t.Errorf("refused reload: exit %d\nstdout %q\nstderr %q\nwant %q", code, stdout, stderr, want)
			}
		})
	}
}

// TestReloadOfABrokenFile: the CLI reads the same file first; when it does
// not load, it says so and sends nothing.
func TestReloadOfABrokenFile(t *testing.T) {
	f := startAPI(t, "tcp", "", "")
	if err := os.WriteFile(f.cfgPath, []byte("[listen]\nhttps = \"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := run(t, "reload", "-config", f.cfgPath)
	if code != 1 || !strings.Contains(stderr, "listen.https") || !strings.Contains(stderr, "nothing sent: the running config stays") || f.reloadCount() != 0 {
		t.Errorf("exit %d, %d reloads, stderr %q", code, f.reloadCount(), stderr)
	}
}

func TestClientToken(t *testing.T) {
	const token = "0123456789abcdef-s3cret"
	f := startAPI(t, "tcp", token, token)
	if code, _, stderr := run(t, "certs", "-config", f.cfgPath); code != 0 {
		t.Fatalf("right token: exit %d: %s", code, stderr)
	}

	f = startAPI(t, "unix", token, "0123456789abcdef-wrong")
	code, stdout, stderr := run(t, "retry", "--all", "-config", f.cfgPath)
	if code != 1 || stdout != "" || !strings.Contains(stderr, "missing or wrong admin token") || !strings.Contains(stderr, "admin_token differs") {
		t.Errorf("wrong token: exit %d\nstdout %q\nstderr %q", code, stdout, stderr)
	}
	if strings.Contains(stderr, "s3cret") || strings.Contains(stderr, "wrong\"") {
		t.Errorf("stderr shows a token: %q", stderr)
	}
	if len(f.certs.retriedNames()) != 0 {
		t.Errorf("retried %v with a wrong token", f.certs.retriedNames())
	}

	f = startAPI(t, "tcp", token, "")
	if code, _, stderr := run(t, "certs", "-config", f.cfgPath); code != 1 || !strings.Contains(stderr, "requires a token: set [listen] admin_token") {
		t.Errorf("no token: exit %d: %q", code, stderr)
	}
}

func TestClientAdminDisabled(t *testing.T) {
	path := writeFile(t, t.TempDir(), "portico.toml", "[listen]\nhttps = \"127.0.0.1:0\"\n"+localSite)
	for _, args := range [][]string{{"certs"}, {"retry", "a.example.net"}, {"retry", "--all"}, {"reload"}} {
		code, stdout, stderr := run(t, append(args, "-config", path)...)
		want := "portico: the admin API is disabled: set [listen] admin = \"127.0.0.1:2019\" in the config and restart portico\n"
		if code != 1 || stdout != "" || stderr != want {
			t.Errorf("%v: exit %d\nstdout %q\nstderr %q", args, code, stdout, stderr)
		}
	}
}

func TestClientUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	for _, addr := range []string{closed, filepath.Join(shortTempDir(t), "none.sock")} {
		path := writeFile(t, t.TempDir(), "portico.toml", fmt.Sprintf("[listen]\nhttps = \"127.0.0.1:0\"\nadmin = %q\n", addr)+localSite)
		code, _, stderr := run(t, "certs", "-config", path)
		if code != 1 || !strings.HasPrefix(stderr, "portico: cannot reach the admin API at "+addr+" (is portico running?): ") {
			t.Errorf("%s: exit %d, stderr %q", addr, code, stderr)
		}
	}
}

func TestShortDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Hour, "0s"},
		{0, "0s"},
		{999 * time.Millisecond, "0s"},
		{45 * time.Second, "45s"},
		{59*time.Second + 999*time.Millisecond, "59s"},
		{time.Minute, "1m"},
		{9*time.Minute + 59*time.Second, "9m"},
		{59 * time.Minute, "59m"},
		{time.Hour, "1h"},
		{3*time.Hour + 59*time.Minute, "3h"},
		{36 * time.Hour, "36h"},
		{47*time.Hour + 59*time.Minute, "47h"},
		{48 * time.Hour, "2d"},
		{41*day + 23*time.Hour, "41d"},
		{400 * day, "400d"},
	} {
		if got := tlsmgr.ShortDuration(tc.d); got != tc.want {
			t.Errorf("shortDuration(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestTableCells(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{expiresCell(nil, t0), "—"},
		{expiresCell(at(41*day+time.Hour), t0), "expires in 41d"},
		{expiresCell(at(-2*time.Hour-time.Minute), t0), "expired 2h ago"},
		{expiresCell(at(0), t0), "expired 0s ago"},
		{renewCell(nil, t0), "—"},
		{renewCell(at(20*day), t0), "renews in 20d"},
		{renewCell(at(-45*time.Second), t0), "due 45s ago"},
		{retryCell(0, at(time.Minute), t0), "—"},
		{retryCell(2, nil, t0), "—"},
		{retryCell(2, at(9*time.Minute+10*time.Second), t0), "retry in 9m"},
		{retryCell(2, at(-time.Second), t0), "due now"},
		{oneLine("a\n\tb  c", 60), "a b c"},
		{oneLine(strings.Repeat("é", 61), 60), strings.Repeat("é", 59) + "…"},
		{oneLine(strings.Repeat("x", 60), 60), strings.Repeat("x", 60)},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

// TestStartAdmin is run.go's wiring: the admin API on a unix socket with
// every metric, driven by the CLI.
func TestStartAdmin(t *testing.T) {
	cfg := &config.Config{
		Listen: config.Listen{HTTPS: "127.0.0.1:0", Admin: filepath.Join(shortTempDir(t), "admin.sock")},
		Sites:  []config.Site{{Hosts: []string{"app.example.net"}, Respond: "hi"}},
	}
	srv, err := proxy.New(cfg, testkit.StaticCerts{}, zap.NewNop()) // never started: no handshakes
	if err != nil {
		t.Fatal(err)
	}
	certs := &fakeCerts{status: testStatus()}
	var reloads atomic.Int32
	hs, addr, err := startAdmin(cfg.Listen, certs, srv, func() error { reloads.Add(1); return nil }, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hs.Close() })
	if addr != cfg.Listen.Admin {
		t.Errorf("addr %q, want the socket", addr)
	}
	path := writeFile(t, t.TempDir(), "portico.toml", fmt.Sprintf("[listen]\nhttps = \"127.0.0.1:0\"\nadmin = %q\n", addr)+localSite)
	if code, stdout, stderr := run(t, "certs", "-config", path); code != 0 || !strings.Contains(stdout, "new.example.net  p256") {
		t.Errorf("certs: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, _, stderr := run(t, "reload", "-config", path); code != 0 || reloads.Load() != 1 {
		t.Errorf("reload: exit %d, %d reloads: %s", code, reloads.Load(), stderr)
	}

	c, err := newAdminClient(cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	body, err := c.call(http.MethodGet, "/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`portico_requests_total{code_class="2xx",site="app.example.net"} 0`,
		`portico_upstream_duration_seconds_count{site="app.example.net"} 0`,
		`portico_certificate_expiry_timestamp_seconds{key_type="p256",name="app.example.net"}`,
		`portico_certificate_failures{key_type="p256",name="new.example.net"} 3`,
		"portico_retries_pending 2",
		"go_goroutines ",
		"process_open_fds ",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// a second instance on the same socket does not start
	if _, _, err := startAdmin(cfg.Listen, certs, srv, nil, zap.NewNop()); err == nil {
		t.Error("second startAdmin succeeded")
	}
	srv2, _ := proxy.New(cfg, testkit.StaticCerts{}, zap.NewNop()) // never started: no handshakes
	if _, _, err := startAdmin(cfg.Listen, certs, srv2, nil, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second admin API on a socket in use: %v", err)
	}
}
