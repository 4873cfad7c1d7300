package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/proxy"
	"github.com/portico-proxy/portico/tlsmgr"
)

// fakeCerts is a Certs with a fixed status; it records the retries asked of it.
type fakeCerts struct {
	status   []tlsmgr.CertStatus
	managed  []string
	retryErr error // returned by Retry and RetryAll when set

	mu       sync.Mutex
	retried  []string
	allCalls int
}

func (f *fakeCerts) Status(context.Context) []tlsmgr.CertStatus {
	return slices.Clone(f.status)
}

func (f *fakeCerts) Retry(_ context.Context, name string) error {
	if !slices.Contains(f.managed, name) {
		return fmt.Errorf("%s: %w", name, tlsmgr.ErrNotManaged)
	}
	if f.retryErr != nil {
		return f.retryErr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.retried = append(f.retried, name)
	return nil
}

func (f *fakeCerts) RetryAll(context.Context) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.allCalls++
	if f.retryErr != nil {
		return 1, f.retryErr
	}
	n := 0
	for _, st := range f.status {
		if st.Failures > 0 {
			n++
		}
	}
	return n, nil
}

func ptr(t time.Time) *time.Time { return &t }

var (
	t0       = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	testCert = []tlsmgr.CertStatus{
		{Name: "www.example.net", KeyType: "rsa2048"},
		{Name: "app.example.net", KeyType: "rsa2048", Issuer: "R11", NotBefore: ptr(t0), NotAfter: ptr(t0.Add(90 * 24 * time.Hour)), RenewAt: ptr(t0.Add(60 * 24 * time.Hour))},
		{Name: "www.example.net", KeyType: "p256", Failures: 2, LastError: "urn:ietf:params:acme:error:connection: timeout", NextRetry: ptr(t0.Add(10 * time.Minute))},
		{Name: "app.example.net", KeyType: "p256", Issuer: "E5", NotBefore: ptr(t0), NotAfter: ptr(t0.Add(90 * 24 * time.Hour)), RenewAt: ptr(t0.Add(60 * 24 * time.Hour)), Failures: 1, LastError: "rateLimited", NextRetry: ptr(t0.Add(time.Minute))},
	}
)

func newFake() *fakeCerts {
	return &fakeCerts{status: testCert, managed: []string{"app.example.net", "www.example.net", "*.example.org"}}
}

type answer struct {
	code int
	hdr  http.Header
	body string
}

// call sends one request to h the way a local tool does (Host localhost),
// with hdr's headers ("Host" sets the Host).
func call(t *testing.T, h http.Handler, method, path string, hdr map[string]string) answer {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	req.Host = "localhost:2019"
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return answer{code: rec.Code, hdr: rec.Header(), body: rec.Body.String()}
}

func decode[T any](t *testing.T, a answer) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(a.body), &v); err != nil {
		t.Fatalf("answer is not JSON %T: %v\n%s", v, err, a.body)
	}
	return v
}

func TestCertificatesSortedByNameThenKeyType(t *testing.T) {
	h := Handler(Options{Certs: newFake()})
	a := call(t, h, http.MethodGet, "/certificates", nil)
	if a.code != http.StatusOK || a.hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %s: %s", a.code, a.hdr.Get("Content-Type"), a.body)
	}
	got := decode[[]tlsmgr.CertStatus](t, a)
	var order []string
	for _, st := range got {
		order = append(order, st.Name+"/"+st.KeyType)
	}
	want := []string{"app.example.net/p256", "app.example.net/rsa2048", "www.example.net/p256", "www.example.net/rsa2048"}
	if !slices.Equal(order, want) {
		t.Errorf("order = %v, want %v", order, want)
	}
	if st := got[0]; st.Issuer != "E5" || !st.NotAfter.Equal(t0.Add(90*24*time.Hour)) || st.Failures != 1 || st.LastError != "rateLimited" || !st.NextRetry.Equal(t0.Add(time.Minute)) {
		t.Errorf("first = %+v", st)
	}
	// the wire names are the CLI's contract
	for _, key := range []string{`"name"`, `"key_type"`, `"issuer"`, `"not_after"`, `"renew_at"`, `"failures"`, `"last_error"`, `"next_retry"`} {
		if !strings.Contains(a.body, key) {
			t.Errorf("body has no %s:\n%s", key, a.body)
		}
	}
	// the status given to the handler is not reordered in place
	if testCert[0].Name != "www.example.net" {
		t.Error("handler sorted the Certs' own slice")
	}

	empty := Handler(Options{Certs: &fakeCerts{}})
	if a := call(t, empty, http.MethodGet, "/certificates", nil); a.code != http.StatusOK || strings.TrimSpace(a.body) != "[]" {
		t.Errorf("no certificates: %d %q, want 200 []", a.code, a.body)
	}
	if a := call(t, h, http.MethodHead, "/certificates", nil); a.code != http.StatusOK {
		t.Errorf("HEAD /certificates: %d", a.code)
	}
}

func TestRetryName(t *testing.T) {
	f := newFake()
	h := Handler(Options{Certs: f})
	a := call(t, h, http.MethodPost, "/certificates/app.example.net/retry", nil)
	if a.code != http.StatusAccepted {
		t.Fatalf("%d: %s", a.code, a.body)
	}
	if r := decode[RetryResult](t, a); r != (RetryResult{Name: "app.example.net", Status: "retrying"}) {
		t.Errorf("answer = %+v", r)
	}
	// a wildcard name, escaped as a client sends it
	if a := call(t, h, http.MethodPost, "/certificates/%2A.example.org/retry", nil); a.code != http.StatusAccepted {
		t.Errorf("wildcard: %d: %s", a.code, a.body)
	}
	if !slices.Equal(f.retried, []string{"app.example.net", "*.example.org"}) {
		t.Errorf("retried = %v", f.retried)
	}

	a = call(t, h, http.MethodPost, "/certificates/nope.example.net/retry", nil)
	if a.code != http.StatusNotFound {
		t.Fatalf("unmanaged name: %d: %s", a.code, a.body)
	}
	if e := decode[Error](t, a); !strings.Contains(e.Error, `"nope.example.net" is not a name Portico manages`) {
		t.Errorf("error = %q", e.Error)
	}

	f.retryErr = errors.New("storage unreachable")
	a = call(t, h, http.MethodPost, "/certificates/app.example.net/retry", nil)
	if e := decode[Error](t, a); a.code != http.StatusInternalServerError || !strings.Contains(e.Error, "storage unreachable") {
		t.Errorf("failing retry: %d %q", a.code, e.Error)
	}
}

func TestRetryAll(t *testing.T) {
	f := newFake()
	h := Handler(Options{Certs: f})
	a := call(t, h, http.MethodPost, "/retry", nil)
	if a.code != http.StatusAccepted {
		t.Fatalf("%d: %s", a.code, a.body)
	}
	if r := decode[RetryAllResult](t, a); r.Rescheduled != 2 || !strings.Contains(a.body, `"rescheduled": 2`) {
		t.Errorf("answer = %s", a.body)
	}
	f.retryErr = errors.New("storage unreachable")
	a = call(t, h, http.MethodPost, "/retry", nil)
	if e := decode[Error](t, a); a.code != http.StatusInternalServerError || !strings.Contains(e.Error, "after 1 certificate(s): storage unreachable") {
		t.Errorf("failing retry: %d %q", a.code, e.Error)
	}
	if f.allCalls != 2 {
		t.Errorf("RetryAll called %d times", f.allCalls)
	}
}

func TestReload(t *testing.T) {
	calls := 0
	var fail error
	h := Handler(Options{Certs: newFake(), Reload: func() error { calls++; return fail }})
	a := call(t, h, http.MethodPost, "/reload", nil)
	if a.code != http.StatusOK || decode[ReloadResult](t, a).Status != "reloaded" || calls != 1 {
		t.Fatalf("%d: %s (reload called %d times)", a.code, a.body, calls)
	}

	fail = config.Errors{
		{File: "/etc/portico.toml", Line: 3, Key: "acme.email", Msg: "missing", Fix: "set email"},
		{File: "/etc/portico.toml", Line: 9, Key: "site[1].hosts", Msg: "bad host"},
	}
	a = call(t, h, http.MethodPost, "/reload", nil)
	e := decode[Error](t, a)
	if a.code != http.StatusBadRequest || !strings.Contains(e.Error, "the running config stays") || !strings.Contains(e.Error, "2 problem(s)") {
		t.Fatalf("%d: %s", a.code, a.body)
	}
	if len(e.Problems) != 2 || e.Problems[0] != "/etc/portico.toml:3: acme.email: missing (fix: set email)" {
		t.Errorf("problems = %q", e.Problems)
	}

	fail = errors.New("site app.example.net: bad upstream")
	a = call(t, h, http.MethodPost, "/reload", nil)
	if e := decode[Error](t, a); a.code != http.StatusBadRequest || !strings.Contains(e.Error, "bad upstream") || e.Problems != nil {
		t.Errorf("%d: %s", a.code, a.body)
	}

	none := Handler(Options{Certs: newFake()})
	if a := call(t, none, http.MethodPost, "/reload", nil); a.code != http.StatusNotImplemented {
		t.Errorf("no Reload: %d", a.code)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCertCollector(newFake()))
	h := Handler(Options{Certs: newFake(), Gatherer: reg})
	a := call(t, h, http.MethodGet, "/metrics", nil)
	if a.code != http.StatusOK {
		t.Fatalf("%d: %s", a.code, a.body)
	}
	for _, want := range []string{
		`portico_certificate_expiry_timestamp_seconds{key_type="p256",name="app.example.net"} 1.7801424e+09`,
		`portico_certificate_failures{key_type="p256",name="www.example.net"} 2`,
		`portico_certificate_failures{key_type="rsa2048",name="app.example.net"} 0`,
		"portico_retries_pending 2",
	} {
		if !strings.Contains(a.body, want) {
			t.Errorf("metrics lack %q:\n%s", want, a.body)
		}
	}
	if strings.Contains(a.body, `portico_certificate_expiry_timestamp_seconds{key_type="rsa2048",name="www.example.net"}`) {
		t.Error("expiry exported for a name without a certificate")
	}

	off := Handler(Options{Certs: newFake()})
	if a := call(t, off, http.MethodGet, "/metrics", nil); a.code != http.StatusNotFound || decode[Error](t, a).Error != "metrics are not enabled" {
		t.Errorf("no Gatherer: %d %s", a.code, a.body)
	}
}

func TestCertCollector(t *testing.T) {
	want := `
# HELP portico_certificate_expiry_timestamp_seconds When the certificate in use expires, as a Unix time; absent until a certificate is obtained.
# TYPE portico_certificate_expiry_timestamp_seconds gauge
portico_certificate_expiry_timestamp_seconds{key_type="p256",name="app.example.net"} 1.7801424e+09
portico_certificate_expiry_timestamp_seconds{key_type="rsa2048",name="app.example.net"} 1.7801424e+09
# HELP portico_certificate_failures Consecutive failed attempts to obtain or renew the certificate, from the failure ledger (0 after a success).
# TYPE portico_certificate_failures gauge
portico_certificate_failures{key_type="p256",name="app.example.net"} 1
portico_certificate_failures{key_type="p256",name="www.example.net"} 2
portico_certificate_failures{key_type="rsa2048",name="app.example.net"} 0
portico_certificate_failures{key_type="rsa2048",name="www.example.net"} 0
# HELP portico_retries_pending Certificates (name and key type) with failures, waiting for their next retry.
# TYPE portico_retries_pending gauge
portico_retries_pending 2
`
	if err := testutil.CollectAndCompare(NewCertCollector(newFake()), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	if err := testutil.CollectAndCompare(NewCertCollector(&fakeCerts{}), strings.NewReader(`
# HELP portico_retries_pending Certificates (name and key type) with failures, waiting for their next retry.
# TYPE portico_retries_pending gauge
portico_retries_pending 0
`)); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.CollectAndLint(NewCertCollector(newFake())); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// expiriesOnly is a Certs whose full Status must not be used by a scrape.
type expiriesOnly struct{ *fakeCerts }

func (e expiriesOnly) Status(context.Context) []tlsmgr.CertStatus {
	panic("a metrics scrape asked for the full status (renewal times)")
}

func (e expiriesOnly) Expiries(ctx context.Context) []tlsmgr.CertStatus {
	return e.fakeCerts.Status(ctx)
}

func TestCollectorUsesExpiriesWhenOffered(t *testing.T) {
	want := `
# HELP portico_retries_pending Certificates (name and key type) with failures, waiting for their next retry.
# TYPE portico_retries_pending gauge
portico_retries_pending 2
`
	if err := testutil.CollectAndCompare(NewCertCollector(expiriesOnly{newFake()}), strings.NewReader(want), "portico_retries_pending"); err != nil {
		t.Error(err)
	}
}

func TestMethodNotAllowed(t *testing.T) {
	h := Handler(Options{Certs: newFake(), Reload: func() error { return nil }, Gatherer: prometheus.NewRegistry()})
	for _, tc := range []struct{ method, path, allow string }{
		{http.MethodPost, "/certificates", "GET, HEAD"},
		{http.MethodDelete, "/certificates", "GET, HEAD"},
		{http.MethodGet, "/certificates/app.example.net/retry", "POST"},
		{http.MethodGet, "/retry", "POST"},
		{http.MethodPut, "/retry", "POST"},
		{http.MethodGet, "/reload", "POST"},
		{http.MethodPost, "/metrics", "GET, HEAD"},
	} {
		a := call(t, h, tc.method, tc.path, nil)
		if a.code != http.StatusMethodNotAllowed || a.hdr.Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d Allow %q, want 405 Allow %q", tc.method, tc.path, a.code, a.hdr.Get("Allow"), tc.allow)
			continue
		}
		if e := decode[Error](t, a); !strings.Contains(e.Error, "is not allowed") {
			t.Errorf("%s %s: error %q", tc.method, tc.path, e.Error)
		}
	}
}

func TestUnknownEndpoint(t *testing.T) {
	h := Handler(Options{Certs: newFake()})
	for _, path := range []string{"/index.html", "/certificate", "/certificates/app.example.net", "/certificates/app.example.net/renew"} {
		a := call(t, h, http.MethodGet, path, nil)
		if a.code != http.StatusNotFound || !strings.Contains(decode[Error](t, a).Error, "no such endpoint") {
			t.Errorf("GET %s: %d %s", path, a.code, a.body)
		}
	}
}

func TestToken(t *testing.T) {
	const token = "0123456789abcdef-s3cret"
	f := newFake()
	h := Handler(Options{Certs: f, Token: token, Reload: func() error { return nil }})
	refused := map[string]map[string]string{
		"no header":              nil,
		"empty bearer":           {"Authorization": "Bearer "},
		"wrong token":            {"Authorization": "Bearer 0123456789abcdef-s3creT"},
		"prefix of the token":    {"Authorization": "Bearer 0123456789abcdef"},
		"token with more":        {"Authorization": "Bearer " + token + "x"},
		"basic scheme":           {"Authorization": "Basic " + token},
		"token without a scheme": {"Authorization": token},
		"token in another field": {"X-Admin-Token": token},
	}
	for name, hdr := range refused {
		for _, ep := range []struct{ method, path string }{
			{http.MethodGet, "/certificates"},
			{http.MethodPost, "/retry"},
			{http.MethodPost, "/reload"},
			{http.MethodGet, "/nope"},     // 401 before 404: nothing is told without the token
			{http.MethodDelete, "/retry"}, // and before 405
		} {
			a := call(t, h, ep.method, ep.path, hdr)
			if a.code != http.StatusUnauthorized {
				t.Errorf("%s: %s %s: %d, want 401", name, ep.method, ep.path, a.code)
				continue
			}
			if !strings.HasPrefix(a.hdr.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s: WWW-Authenticate %q", name, a.hdr.Get("WWW-Authenticate"))
			}
			if strings.Contains(a.body, "s3cret") || strings.Contains(a.body, "0123456789") {
				t.Errorf("%s: the answer echoes the token: %s", name, a.body)
			}
		}
	}
	if f.allCalls != 0 {
		t.Errorf("RetryAll ran %d times without the token", f.allCalls)
	}

	for _, auth := range []string{"Bearer " + token, "bearer " + token, "BEARER  " + token} {
		// with a token, Host and Origin do not matter: a browser cannot
		// send the header on its own
		a := call(t, h, http.MethodGet, "/certificates", map[string]string{"Authorization": auth, "Host": "admin.internal:2019", "Origin": "https://ops.example.net"})
		if a.code != http.StatusOK {
			t.Errorf("%q: %d %s", auth, a.code, a.body)
		}
	}
	if a := call(t, h, http.MethodPost, "/retry", map[string]string{"Authorization": "Bearer " + token}); a.code != http.StatusAccepted {
		t.Errorf("POST /retry with the token: %d", a.code)
	}
}

func TestTokenComparisonIgnoresLength(t *testing.T) {
	// The comparison is of SHA-256 sums, so it takes the same path for a
	// token of any length; a length mismatch must not short-circuit it.
	a := Handler(Options{Certs: newFake(), Token: "t"}).(*api)
	if len(a.tokenSum) != 32 {
		t.Fatalf("tokenSum is %d bytes, want a SHA-256", len(a.tokenSum))
	}
	for _, tc := range []struct {
		auth string
		ok   bool
	}{{"Bearer t", true}, {"Bearer tt", false}, {"Bearer " + strings.Repeat("t", 4096), false}, {"", false}} {
		req := httptest.NewRequest(http.MethodGet, "/certificates", nil)
		req.Header.Set("Authorization", tc.auth)
		if got := a.authorized(req); got != tc.ok {
			t.Errorf("authorized(%.20q) = %v", tc.auth, got)
		}
	}
}

func TestWithoutTokenBrowserRequestsAreRefused(t *testing.T) {
	f := newFake()
	h := Handler(Options{Certs: f, Reload: func() error { return nil }})
	for name, hdr := range map[string]map[string]string{
		"cross-site form post":     {"Origin": "https://evil.example.net"},
		"same-origin after rebind": {"Host": "evil.example.net:2019"},
		"bare other host":          {"Host": "evil.example.net"},
	} {
		a := call(t, h, http.MethodPost, "/retry", hdr)
		if a.code != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", name, a.code)
		}
	}
	if f.allCalls != 0 {
		t.Errorf("RetryAll ran %d times for a browser", f.allCalls)
	}
	for _, host := range []string{"localhost", "localhost:2019", "127.0.0.1:2019", "[::1]:2019", "127.0.0.5"} {
		if a := call(t, h, http.MethodGet, "/certificates", map[string]string{"Host": host}); a.code != http.StatusOK {
			t.Errorf("Host %s: %d %s", host, a.code, a.body)
		}
	}
}

// shortTempDir is a fresh directory with a short path: a unix socket path
// must fit in 108 bytes.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "padm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// unixClient is an HTTP client that reaches every URL through the socket.
func unixClient(path string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		},
	}}
}

func serve(t *testing.T, ln net.Listener, h http.Handler) {
	t.Helper()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
}

func TestListenUnixSocket(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "admin.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	serve(t, ln, Handler(Options{Certs: newFake()}))
	c := unixClient(path)
	resp, err := c.Get("http://localhost/certificates")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "app.example.net") {
		t.Errorf("%s: %s", resp.Status, body)
	}

	// a second Portico on the same socket is refused, not given it
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("Listen on a socket in use: %v", err)
	}
}

func TestListenRemovesStaleSocket(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "admin.sock")
	old, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	old.(*net.UnixListener).SetUnlinkOnClose(false) // as after a crash
	old.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}
	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln.Close()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after Close: %v", err)
	}
}

func TestListenLeavesOtherFilesAlone(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "admin.sock")
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "is not a unix socket") {
		t.Errorf("Listen over a regular file: %v", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "keep me" {
		t.Errorf("file changed: %q %v", b, err)
	}
}

func TestListenTCP(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if ln.Addr().Network() != "tcp" {
		t.Errorf("network %s", ln.Addr().Network())
	}
	serve(t, ln, Handler(Options{Certs: newFake(), Token: "0123456789abcdef"}))
	req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/certificates", nil)
	req.Header.Set("Authorization", "Bearer 0123456789abcdef")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("%s", resp.Status)
	}
	if _, err := Listen(ln.Addr().String()); err == nil || !strings.HasPrefix(err.Error(), "admin API: ") {
		t.Errorf("Listen on a port in use: %v", err)
	}
}

// TestPools: GET /pools lists the pools and their upstreams' states, and
// the status page shows them.
func TestPools(t *testing.T) {
	pools := []proxy.PoolStatus{{Name: "api", Policy: "least_conn", Health: "GET /healthz every 5s", Upstreams: []proxy.UpstreamStatus{
		{URL: "http://10.0.0.7:9000", State: "up", InFlight: 2},
		{URL: "http://10.0.0.8:9000", State: "out: health checks"},
	}}}
	h := Handler(Options{Certs: newFake(), Pools: func() []proxy.PoolStatus { return pools }})
	a := call(t, h, http.MethodGet, "/pools", nil)
	if got := decode[[]proxy.PoolStatus](t, a); a.code != http.StatusOK || !reflect.DeepEqual(got, pools) {
		t.Fatalf("GET /pools: %d %s", a.code, a.body)
	}
	for _, key := range []string{`"name"`, `"policy"`, `"health"`, `"upstreams"`, `"url"`, `"state"`, `"in_flight"`} {
		if !strings.Contains(a.body, key) {
			t.Errorf("body has no %s:\n%s", key, a.body)
		}
	}
	page := call(t, h, http.MethodGet, "/", nil).body
	for _, want := range []string{`data-pool="api" data-state="out: health checks"`, "least_conn", "GET /healthz every 5s", "http://10.0.0.7:9000"} {
		if !strings.Contains(page, want) {
			t.Errorf("the status page has no %q", want)
		}
	}
	if a := call(t, Handler(Options{Certs: newFake()}), http.MethodGet, "/pools", nil); strings.TrimSpace(a.body) != "[]" {
		t.Errorf("without pools: %s", a.body)
	}
}
