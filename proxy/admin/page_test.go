package admin

import (
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portico-proxy/portico/tlsmgr"
)

const day = 24 * time.Hour

// pageStatus is a realistic mix for the status page: valid, due for
// renewal, expired, failing without a certificate, a wildcard with a
// short-lived certificate, and a name no longer managed (removed by a
// reload after the page was rendered).
func pageStatus() []tlsmgr.CertStatus {
	at := func(d time.Duration) *time.Time { return ptr(t0.Add(d)) }
	return []tlsmgr.CertStatus{
		{Name: "app.example.net", KeyType: "rsa2048", Issuer: "R11", NotBefore: at(-49 * day), NotAfter: at(41 * day), RenewAt: at(11 * day)},
		{Name: "app.example.net", KeyType: "p256", Issuer: "E5", NotBefore: at(-49 * day), NotAfter: at(41 * day), RenewAt: at(11 * day)},
		{Name: "api.example.net", KeyType: "rsa2048", Issuer: "R10", NotBefore: at(-70 * day), NotAfter: at(20 * day), RenewAt: at(-10 * day),
			Failures: 1, LastError: "urn:ietf:params:acme:error:connection: Timeout during connect (likely firewall problem)", NextRetry: at(9 * time.Minute)},
		{Name: "api.example.net", KeyType: "p256", Issuer: "E6", NotBefore: at(-70 * day), NotAfter: at(20 * day), RenewAt: at(-10 * day)},
		{Name: "new.example.net", KeyType: "p256", Failures: 3, NextRetry: at(95 * time.Minute),
			LastError: "obtaining certificate: [new.example.net] solving challenges: urn:ietf:params:acme:error:dns: DNS problem: NXDOMAIN looking up A for new.example.net"},
		{Name: "new.example.net", KeyType: "rsa2048", Failures: 3, NextRetry: at(95 * time.Minute), LastError: "urn:ietf:params:acme:error:dns: DNS problem: NXDOMAIN looking up A for new.example.net"},
		{Name: "old.example.net", KeyType: "rsa2048", Issuer: "R11", NotBefore: at(-92 * day), NotAfter: at(-2 * day), RenewAt: at(-32 * day),
			Failures: 5, LastError: "urn:ietf:params:acme:error:rateLimited: too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s", NextRetry: at(20 * time.Hour)},
		{Name: "*.example.org", KeyType: "p256", Issuer: "E5", NotBefore: at(-2 * day), NotAfter: at(4 * day), RenewAt: at(2 * day)},
		{Name: "shop.example.net (+2 SAN)", Names: []string{"cdn.shop.example.net", "shop.example.net", "www.shop.example.net"}, KeyType: "p256", Issuer: "E6",
			NotBefore: at(-20 * day), NotAfter: at(25 * day), RenewAt: at(10 * day)},
		{Name: "gone.example.net", KeyType: "p256", Issuer: "E5", NotBefore: at(-10 * day), NotAfter: at(80 * day), RenewAt: at(50 * day), OCSP: "good"},
	}
}

func pageFake() *fakeCerts {
	return &fakeCerts{status: pageStatus(), managed: []string{"app.example.net", "api.example.net", "new.example.net", "old.example.net", "*.example.org", "shop.example.net (+2 SAN)"}}
}

// pageHandler is the admin API with the status page's clock at t0.
func pageHandler(o Options) http.Handler {
	h := Handler(o)
	h.(*api).now = func() time.Time { return t0 }
	return h
}

var nonceRE = regexp.MustCompile(`<script nonce="([^"]+)">`)

func TestStatusPage(t *testing.T) {
	h := pageHandler(Options{Certs: pageFake()})
	a := call(t, h, http.MethodGet, "/", nil)
	if a.code != http.StatusOK || a.hdr.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("%d %s:\n%s", a.code, a.hdr.Get("Content-Type"), a.body)
	}
	m := nonceRE.FindStringSubmatch(a.body)
	if m == nil {
		t.Fatal("no script with a nonce")
	}
	csp := a.hdr.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'nonce-" + m[1] + "'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if a.hdr.Get("X-Frame-Options") != "DENY" || a.hdr.Get("Cache-Control") != "no-store" {
		t.Errorf("headers %v", a.hdr)
	}
	// self-contained: nothing loaded from elsewhere
	for _, bad := range []string{"src=\"http", "href=\"http", "<link", "@import", "url("} {
		if strings.Contains(a.body, bad) {
			t.Errorf("page loads an external asset: %q", bad)
		}
	}
	for _, want := range []string{
		"10 certificate(s) for 7 name(s)", "4 failing", "1 expired", "2 due for renewal", "2 without a certificate yet",
		"as of 2026-03-01 12:00 UTC",
		`<button type="button" class="retry" data-name="app.example.net">Retry</button>`,
		`<button type="button" class="retry" data-name="*.example.org">Retry</button>`,
		`<td class="name" rowspan="2">app.example.net`,
		"expires <b>2026-04-11 12:00 UTC</b> (in 41d)",
		"next renewal <b>2026-03-12 12:00 UTC</b> (in 11d)",
		"next renewal <b>2026-02-19 12:00 UTC</b> (10d ago)",
		"next retry in 1h",
		"expired</span> expires <b>2026-02-27 12:00 UTC</b> (2d ago)",
		"no certificate yet",
		"OCSP good",
		"one certificate for cdn.shop.example.net, shop.example.net, www.shop.example.net</small>",
		`<text x="`, // the axis
		"Mar 1",
	} {
		if !strings.Contains(a.body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if n := strings.Count(a.body, `class="retry"`); n != 7 {
		t.Errorf("%d Retry buttons, want one per name (7)", n)
	}
	if n := strings.Count(a.body, `<tr class="cert"`); n != 10 {
		t.Errorf("%d certificate rows, want 10", n)
	}
	// rows in name order, key types within a name
	var order []string
	for _, m := range regexp.MustCompile(`<tr class="cert" data-name="([^"]+)" data-key-type="([^"]+)"`).FindAllStringSubmatch(a.body, -1) {
		order = append(order, m[1]+"/"+m[2])
	}
	if want := []string{"*.example.org/p256", "api.example.net/p256", "api.example.net/rsa2048", "app.example.net/p256", "app.example.net/rsa2048",
		"gone.example.net/p256", "new.example.net/p256", "new.example.net/rsa2048", "old.example.net/rsa2048", "shop.example.net (&#43;2 SAN)/p256"}; !slices.Equal(order, want) {
		t.Errorf("rows %v\nwant %v", order, want)
	}
	if a := call(t, h, http.MethodHead, "/", nil); a.code != http.StatusOK {
		t.Errorf("HEAD /: %d", a.code)
	}
}

func TestStatusPageEscapes(t *testing.T) {
	f := &fakeCerts{status: []tlsmgr.CertStatus{{
		Name: `x.example.net"><script>alert(1)</script>`, KeyType: "p256", Issuer: `<b>Evil</b> & "Co"`,
		Failures: 1, LastError: `</code><script>alert("err")</script><img src=x onerror=alert(2)>`, NextRetry: ptr(t0.Add(time.Minute)),
	}}}
	a := call(t, pageHandler(Options{Certs: f}), http.MethodGet, "/", nil)
	if a.code != http.StatusOK {
		t.Fatalf("%d", a.code)
	}
	if n := strings.Count(a.body, "<script"); n != 1 {
		t.Errorf("%d <script in the page, want only the page's own", n)
	}
	for _, bad := range []string{"<b>Evil", "<img", `"><script`} {
		if strings.Contains(a.body, bad) {
			t.Errorf("unescaped %q in the page", bad)
		}
	}
	for _, want := range []string{"&lt;b&gt;Evil&lt;/b&gt; &amp; &#34;Co&#34;", "&lt;/code&gt;&lt;script&gt;alert(&#34;err&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;",
		`data-name="x.example.net&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"`} {
		if !strings.Contains(a.body, want) {
			t.Errorf("page lacks the escaped %q", want)
		}
	}
}

func TestStatusPageEmpty(t *testing.T) {
	a := call(t, pageHandler(Options{Certs: &fakeCerts{}}), http.MethodGet, "/", nil)
	if a.code != http.StatusOK || !strings.Contains(a.body, "No managed certificates") || strings.Contains(a.body, "<table") {
		t.Errorf("%d:\n%s", a.code, a.body)
	}
}

// TestStatusPageWithToken: without the token the page is the token form
// and no data (answered 401, like every other request without it); with
// it, the certificates.
func TestStatusPageWithToken(t *testing.T) {
	const token = "0123456789abcdef-s3cret"
	h := pageHandler(Options{Certs: pageFake(), Token: token})
	for _, hdr := range []map[string]string{nil, {"Authorization": "Bearer wrong-token-0123456789"}} {
		a := call(t, h, http.MethodGet, "/", hdr)
		if a.code != http.StatusUnauthorized || a.hdr.Get("Content-Type") != "text/html; charset=utf-8" {
			t.Fatalf("%v: %d %s", hdr, a.code, a.hdr.Get("Content-Type"))
		}
		if !strings.Contains(a.body, `<form class="login" id="login">`) || strings.Contains(a.body, "example.net") || strings.Contains(a.body, "<table") {
			t.Errorf("%v: the token form shows data or no form:\n%s", hdr, a.body)
		}
	}
	// every other request without the token is still refused as before
	if a := call(t, h, http.MethodGet, "/certificates", nil); a.code != http.StatusUnauthorized || !strings.Contains(a.body, "missing or wrong admin token") {
		t.Errorf("GET /certificates: %d %s", a.code, a.body)
	}
	if a := call(t, h, http.MethodPost, "/", nil); a.code != http.StatusUnauthorized {
		t.Errorf("POST / without a token: %d", a.code)
	}
	a := call(t, h, http.MethodGet, "/", map[string]string{"Authorization": "Bearer " + token})
	if a.code != http.StatusOK || !strings.Contains(a.body, `data-name="app.example.net"`) || !strings.Contains(a.body, `id="forget"`) {
		t.Errorf("with the token: %d\n%s", a.code, a.body)
	}
}

func TestStatusPageMethods(t *testing.T) {
	h := pageHandler(Options{Certs: pageFake()})
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		if a := call(t, h, m, "/", nil); a.code != http.StatusMethodNotAllowed || a.hdr.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s /: %d Allow %q", m, a.code, a.hdr.Get("Allow"))
		}
	}
}

// TestSameOriginRequests: the page's own requests carry the admin API's
// origin, which the browser guard accepts on loopback; every other Origin,
// and a same-origin request under a rebound non-loopback Host, is refused.
func TestSameOriginRequests(t *testing.T) {
	f := pageFake()
	h := pageHandler(Options{Certs: f})
	for _, tc := range []struct {
		host, origin string
		code         int
	}{
		{"127.0.0.1:2019", "http://127.0.0.1:2019", http.StatusAccepted},
		{"localhost:2019", "http://localhost:2019", http.StatusAccepted},
		{"localhost:2019", "http://LOCALHOST:2019", http.StatusAccepted},
		{"[::1]:2019", "http://[::1]:2019", http.StatusAccepted},
		{"127.0.0.1:2019", "http://127.0.0.1:2020", http.StatusForbidden},
		{"127.0.0.1:2019", "https://127.0.0.1:2019", http.StatusForbidden},
		{"127.0.0.1:2019", "http://localhost:2019", http.StatusForbidden},
		{"127.0.0.1:2019", "null", http.StatusForbidden},
		{"127.0.0.1:2019", "https://evil.example.net", http.StatusForbidden},
		{"evil.example.net:2019", "http://evil.example.net:2019", http.StatusForbidden},
	} {
		a := call(t, h, http.MethodPost, "/certificates/app.example.net/retry", map[string]string{"Host": tc.host, "Origin": tc.origin})
		if a.code != tc.code {
			t.Errorf("Host %s Origin %s: %d, want %d: %s", tc.host, tc.origin, a.code, tc.code, a.body)
		}
	}
	if got := f.retriedNames(); len(got) != 4 {
		t.Errorf("retried %v, want the 4 same-origin requests", got)
	}
}

func TestTicks(t *testing.T) {
	scale := func(time.Time) float64 { return 0 }
	for _, tc := range []struct {
		lo, hi time.Time
		want   []string
	}{
		{t0.Add(-92 * day), t0.Add(41 * day), []string{"Dec 1", "Jan 1", "Feb 1", "Mar 1", "Apr 1"}},
		{t0.Add(-2 * day), t0.Add(4 * day), []string{"Feb 28", "Mar 2", "Mar 4"}},
		{t0.Add(-24 * time.Hour), t0.Add(24 * time.Hour), []string{"Feb 28 12h", "Mar 1 00h", "Mar 1 12h", "Mar 2 00h", "Mar 2 12h"}},
		{t0.Add(-400 * day), t0.Add(400 * day), []string{"Jul 2025", "Jan 2026", "Jul 2026", "Jan 2027"}},
	} {
		var got []string
		for _, tk := range ticks(tc.lo, tc.hi, scale) {
			got = append(got, tk.Label)
		}
		if len(got) > 8 || !slices.Equal(got, tc.want) {
			t.Errorf("ticks(%v, %v) = %q, want %q", tc.lo, tc.hi, got, tc.want)
		}
	}
}

func (f *fakeCerts) retriedNames() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.retried)
}
