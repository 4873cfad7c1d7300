package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
)

// scrape gathers reg into "name{label=value,...}" → value; a histogram
// gives its sample count under name_count.
func scrape(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, lp.GetName()+"="+lp.GetValue())
			}
			key := "{" + strings.Join(labels, ",") + "}"
			switch {
			case m.Counter != nil:
				out[mf.GetName()+key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[mf.GetName()+key] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[mf.GetName()+"_count"+key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

func requests(site, class string) string {
	return "portico_requests_total{code_class=" + class + ",site=" + site + "}"
}

func durations(site string) string {
	return "portico_upstream_duration_seconds_count{site=" + site + "}"
}

func TestRequestMetrics(t *testing.T) {
	up := echoUpstream(t, "a")
	missing := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(missing.Close)
	plain := false
	ts := startServer(t, testConfig(
		proxySite([]string{"app.example.com", "www.example.com"}, up.URL),
		proxySite([]string{"missing.example.com"}, missing.URL),
		proxySite([]string{"down.example.com"}, closedURL(t)),
		config.Site{Hosts: []string{"hello.example.com"}, Respond: "hello", RedirectHTTPS: &plain},
	))
	// registered after Start: the sites already built start counting
	reg := prometheus.NewRegistry()
	if err := ts.srv.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if err := ts.srv.RegisterMetrics(prometheus.NewRegistry()); err == nil {
		t.Error("second RegisterMetrics accepted")
	}
	got := scrape(t, reg)
	for _, site := range []string{"app.example.com", "missing.example.com", "down.example.com", "hello.example.com"} {
		for _, class := range codeClasses {
			if v, ok := got[requests(site, class)]; !ok || v != 0 {
				t.Errorf("before any request %s = %v, %v; want a 0 series", requests(site, class), v, ok)
			}
		}
	}

	c := ts.client(t, false)
	getSeen(t, c, "https://app.example.com/", nil)
	getSeen(t, c, "https://www.example.com/", nil)
	for url, want := range map[string]int{
		"https://missing.example.com/": http.StatusNotFound,
		"https://down.example.com/":    http.StatusBadGateway,
		"https://hello.example.com/":   http.StatusOK,
		"http://hello.example.com/":    http.StatusOK,
		"http://app.example.com/":      http.StatusPermanentRedirect, // answered by the listener, not the site
		"https://nosite.example.com/":  http.StatusNotFound,          // no site to count it
	} {
		if resp, _ := get(t, c, url); resp.StatusCode != want {
			t.Fatalf("%s: %s, want %d", url, resp.Status, want)
		}
	}

	got = scrape(t, reg)
	for key, want := range map[string]float64{
		requests("app.example.com", "2xx"):     2,
		requests("app.example.com", "3xx"):     0,
		requests("missing.example.com", "4xx"): 1,
		requests("down.example.com", "5xx"):    1,
		requests("hello.example.com", "2xx"):   2,
		durations("app.example.com"):           2,
		durations("missing.example.com"):       1,
		durations("down.example.com"):          1,
		durations("hello.example.com"):         0, // respond has no upstream
	} {
		if got[key] != want {
			t.Errorf("%s = %v, want %v", key, got[key], want)
		}
	}
	for key := range got {
		if strings.Contains(key, "www.example.com") || strings.Contains(key, "nosite") {
			t.Errorf("series %s: sites are labelled by their first host only", key)
		}
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}

	// A reload keeps the series of the sites that stay and drops the others.
	if err := ts.srv.Swap(testConfig(
		proxySite([]string{"app.example.com"}, up.URL),
		proxySite([]string{"new.example.com"}, up.URL),
	)); err != nil {
		t.Fatal(err)
	}
	getSeen(t, c, "https://app.example.com/", nil)
	got = scrape(t, reg)
	if got[requests("app.example.com", "2xx")] != 3 || got[durations("app.example.com")] != 3 {
		t.Errorf("app.example.com after Swap: %v requests, %v durations; want 3, 3", got[requests("app.example.com", "2xx")], got[durations("app.example.com")])
	}
	if _, ok := got[requests("new.example.com", "2xx")]; !ok {
		t.Error("no series for the site added by Swap")
	}
	for key := range got {
		if strings.Contains(key, "missing.example.com") || strings.Contains(key, "down.example.com") || strings.Contains(key, "hello.example.com") {
			t.Errorf("series %s of a removed site kept after Swap", key)
		}
	}

	// A refused config leaves no series for the sites it would have added.
	if err := ts.srv.Swap(testConfig(
		proxySite([]string{"app.example.com"}, up.URL),
		proxySite([]string{"extra.example.com"}, up.URL),
		proxySite([]string{"broken.example.com"}, "http://bad host:1"),
	)); err == nil {
		t.Fatal("Swap accepted a bad upstream")
	}
	got = scrape(t, reg)
	for key := range got {
		if strings.Contains(key, "extra.example.com") || strings.Contains(key, "broken.example.com") {
			t.Errorf("series %s left by a refused Swap", key)
		}
	}
	if _, ok := got[requests("new.example.com", "2xx")]; !ok || got[requests("app.example.com", "2xx")] != 3 {
		t.Error("a refused Swap dropped the running sites' series")
	}
}

// TestRequestMetricsRegisteredBeforeStart: the order run.go uses.
func TestRequestMetricsRegisteredBeforeStart(t *testing.T) {
	up := echoUpstream(t, "a")
	c := certs(t)
	srv, err := New(testConfig(proxySite([]string{"app.example.com"}, up.URL)), c.Source(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if err := srv.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		srv.Shutdown(ctx)
	})
	h, s := srv.Addrs()
	ts := &testServer{srv: srv, httpAddr: h, https: s, certs: c}
	getSeen(t, ts.client(t, true), "https://app.example.com/", nil)
	if got := scrape(t, reg); got[requests("app.example.com", "2xx")] != 1 || got[durations("app.example.com")] != 1 {
		t.Errorf("after one h2 request: %v", got)
	}
}

// TestRequestMetricsKeepStreamingAndUpgrades: the status-noting writer
// passes flushes and hijacks through; an upgrade counts as 1xx and its
// (connection-long) duration is not observed.
func TestRequestMetricsKeepStreamingAndUpgrades(t *testing.T) {
	ws := wsUpstream(t)
	release := make(chan struct{})
	sse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: first\n\n")
		http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(sse.Close)
	ts := startServer(t, testConfig(
		proxySite([]string{"ws.example.com"}, ws.URL),
		proxySite([]string{"sse.example.com"}, sse.URL),
	))
	reg := prometheus.NewRegistry()
	if err := ts.srv.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}

	// server-sent events: the first event arrives while the upstream waits
	c := ts.client(t, false)
	resp, err := c.Get("https://sse.example.com/events")
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "data: first\n" {
		t.Fatalf("first event %q, %v: the stream was not flushed", line, err)
	}
	close(release)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	// websocket upgrade through the hijacking writer
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: waitTimeout}, "tcp", ts.https, &tls.Config{
		ServerName: "ws.example.com", RootCAs: ts.certs.Pool, NextProtos: []string{"http/1.1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(waitTimeout))
	req, _ := http.NewRequest(http.MethodGet, "https://ws.example.com/ws", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Version", "13")
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	wsResp, err := http.ReadResponse(br, req)
	if err != nil || wsResp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", wsResp, err)
	}
	io.WriteString(conn, "ping\n")
	if got, err := br.ReadString('\n'); err != nil || got != "echo: ping\n" {
		t.Fatalf("echo %q, %v", got, err)
	}
	conn.Close()

	eventually(t, "both requests are counted", func() bool {
		got := scrape(t, reg)
		return got[requests("sse.example.com", "2xx")] == 1 && got[requests("ws.example.com", "1xx")] == 1
	})
	got := scrape(t, reg)
	if got[durations("sse.example.com")] != 1 || got[durations("ws.example.com")] != 0 {
		t.Errorf("durations: sse %v (want 1), ws %v (want 0)", got[durations("sse.example.com")], got[durations("ws.example.com")])
	}
}

// discardWriter is a ResponseWriter that allocates nothing.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}

// TestSiteMetricsCost: counting a request costs one small allocation (the
// status-noting writer) and no label lookups; a Site without metrics
// works as before.
func TestSiteMetricsCost(t *testing.T) {
	sc := config.Site{Hosts: []string{"app.example.com"}, Respond: "hi"}
	bare, err := newSite(sc, &builder{s: &Server{buffers: newBufferPool()}}, nil, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	m := newMetrics()
	counted, err := newSite(sc, &builder{s: &Server{buffers: newBufferPool()}}, nil, zap.NewNop(), m)
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodGet, "https://app.example.com/", nil)
	w := &discardWriter{h: http.Header{}}
	allocs := func(s *Site) float64 {
		return testing.AllocsPerRun(200, func() {
			clear(w.h)
			s.ServeHTTP(w, req)
		})
	}
	base, with := allocs(bare), allocs(counted)
	if with > base+1 {
		t.Errorf("ServeHTTP allocates %v times with metrics, %v without: want at most one more", with, base)
	}
	if v := testutil.ToFloat64(m.requests.WithLabelValues("app.example.com", "2xx")); v < 200 {
		t.Errorf("counted %v requests", v)
	}
}
