package proxy

// The request core's features on every request path: routes and their
// actions, strip_prefix, methods, header rules, named pools shared by
// sites, X-Request-ID and the access log. Each check runs over the
// HTTP/1.1 fast path, a connection the fast path handed to net/http, and
// HTTP/2.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portico-proxy/portico/config"
)

// headerEcho is an upstream that answers with its name, the target it got
// and its request headers, and sends X-Powered-By (for response rules).
type headerEcho struct {
	Name   string
	URI    string
	Header http.Header
}

func headerEchoUpstream(t *testing.T, name string) *httptest.Server {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Powered-By", "upstream "+name)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(headerEcho{Name: name, URI: r.RequestURI, Header: r.Header})
	}))
	t.Cleanup(up.Close)
	return up
}

// pathClients returns a client for each request path: "fast" (HTTP/1.1
// served by the fast path), "handoff" (HTTP/1.1 on one connection that a
// chunked request made the fast path give to net/http) and "h2".
func pathClients(t *testing.T, ts *testServer, host string) map[string]*http.Client {
	t.Helper()
	out := map[string]*http.Client{"fast": ts.client(t, false), "h2": ts.client(t, true)}
	hc := ts.client(t, false)
	hc.Transport.(*http.Transport).MaxConnsPerHost = 1
	before := ts.srv.fast.handedOff.Load()
	// a body of unknown length goes chunked, which the fast path hands over
	resp, body := do(t, hc, "POST", "https://"+host+"/", io.MultiReader(strings.NewReader("x")), nil)
	if resp.StatusCode >= 500 {
		t.Fatalf("hand-off request: %s %s", resp.Status, body)
	}
	if ts.srv.fast.handedOff.Load() == before {
		t.Fatal("the chunked request was not handed to net/http")
	}
	out["handoff"] = hc
	return out
}

var paths = []string{"fast", "handoff", "h2"}

func routedConfig(t *testing.T, web, api, admin string) *config.Config {
	t.Helper()
	f := false
	site := config.Site{
		Hosts:         []string{"app.example.com"},
		Upstreams:     []string{web},
		RedirectHTTPS: &f,
		Headers: &config.Headers{
			RequestSet:     map[string]string{"X-Env": "prod", "X-Client": "{client_ip}", "X-Host": "{host}", "X-Id": "{request_id}"},
			RequestRemove:  []string{"X-Debug"},
			ResponseSet:    map[string]string{"X-Frame-Options": "DENY"},
			ResponseRemove: []string{"X-Powered-By"},
		},
		Routes: []config.Route{
			{Path: "/api/*", Pool: "api", StripPrefix: "/api", Methods: []string{"GET", "POST"},
				Headers: &config.Headers{RequestSet: map[string]string{"X-Api": "1", "X-Env": "api"}, ResponseRemove: []string{"X-Frame-Options"}}},
			{Path: "/api/admin/*", Upstreams: []string{admin}},
			{Path: "/ping", Respond: "pong\n", Status: 200},
			{Path: "/old/*", Redirect: "https://new.example.com{uri}", Status: 301},
		},
	}
	other := config.Site{Hosts: []string{"other.example.com"}, Pool: "api", RedirectHTTPS: &f}
	cfg := testConfig(site, other)
	cfg.Pools = []config.Pool{{Name: "api", Upstreams: []string{api}}}
	return cfg
}

func echoAt(t *testing.T, c *http.Client, url string, hdr http.Header) (headerEcho, *http.Response) {
	t.Helper()
	resp, body := do(t, c, "GET", url, nil, hdr)
	var e headerEcho
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &e) != nil {
		t.Fatalf("GET %s: %s %q", url, resp.Status, body)
	}
	return e, resp
}

// TestRoutesOnEveryPath: the longest route wins, on the path's normal
// form; strip_prefix, respond, redirect, methods and the default action;
// a named pool shared by two sites.
func TestRoutesOnEveryPath(t *testing.T) {
	web, api, admin := headerEchoUpstream(t, "web"), headerEchoUpstream(t, "api"), headerEchoUpstream(t, "admin")
	ts := startServer(t, routedConfig(t, web.URL, api.URL, admin.URL))
	for _, p := range paths {
		t.Run(p, func(t *testing.T) {
			c := pathClients(t, ts, "app.example.com")[p]
			for _, tc := range []struct{ path, upstream, uri string }{
				{"/", "web", "/"},
				{"/api", "api", "/"},
				{"/api/", "api", "/"},
				{"/api/x?q=1", "api", "/x?q=1"},
				{"/apix", "web", "/apix"},
				{"/%61pi/x", "api", "/x"},         // decoded for matching, sent in normal form
				{"//api/x", "api", "/x"},          // repeated slashes collapse
				{"/api/../x", "web", "/api/../x"}, // resolves to /x: the default
				{"/api/admin/y", "admin", "/api/admin/y"},
				{"/api/%2Fx", "api", "/%2Fx"},       // an encoded slash stays in its segment
				{"/ping/more", "web", "/ping/more"}, // /ping is exact
			} {
				e, _ := echoAt(t, c, "https://app.example.com"+tc.path, nil)
				if e.Name != tc.upstream || e.URI != tc.uri {
					t.Errorf("%s: reached %s with %q, want %s with %q", tc.path, e.Name, e.URI, tc.upstream, tc.uri)
				}
			}
			resp, body := get(t, c, "https://app.example.com/ping")
			if resp.StatusCode != 200 || body != "pong\n" || resp.Header.Get("X-Frame-Options") != "DENY" {
				t.Errorf("/ping: %s %q %v", resp.Status, body, resp.Header)
			}
			resp, _ = get(t, c, "https://app.example.com/old/page?a=b")
			if resp.StatusCode != 301 || resp.Header.Get("Location") != "https://new.example.com/old/page?a=b" {
				t.Errorf("/old/page: %s Location %q", resp.Status, resp.Header.Get("Location"))
			}
			resp, _ = do(t, c, "DELETE", "https://app.example.com/api/x", nil, nil)
			if resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET, POST" {
				t.Errorf("DELETE /api/x: %s Allow %q", resp.Status, resp.Header.Get("Allow"))
			}
			// the named pool serves another site too
			if e, _ := echoAt(t, pathClients(t, ts, "other.example.com")[p], "https://other.example.com/z", nil); e.Name != "api" || e.URI != "/z" {
				t.Errorf("other.example.com/z reached %s %q", e.Name, e.URI)
			}
		})
	}
	if ts.srv.fast.served.Load() == 0 {
		t.Error("the fast path served nothing")
	}
}

// TestHeaderRulesOnEveryPath: site rules, then route rules over them;
// placeholders; X-Request-ID generated for an untrusted client and passed
// upstream.
func TestHeaderRulesOnEveryPath(t *testing.T) {
	web, api := headerEchoUpstream(t, "web"), headerEchoUpstream(t, "api")
	ts := startServer(t, routedConfig(t, web.URL, api.URL, web.URL))
	for _, p := range paths {
		t.Run(p, func(t *testing.T) {
			c := pathClients(t, ts, "app.example.com")[p]
			hdr := http.Header{"X-Debug": {"1"}, "X-Env": {"client"}, "X-Request-Id": {"forged"}, "X-Keep": {"k"}}
			e, resp := echoAt(t, c, "https://app.example.com/page", hdr)
			got := e.Header
			switch {
			case got.Get("X-Env") != "prod" || len(got.Values("X-Env")) != 1:
				t.Errorf("X-Env %q, want the rule's prod alone", got.Values("X-Env"))
			case got.Get("X-Debug") != "":
				t.Errorf("X-Debug %q was not removed", got.Get("X-Debug"))
			case got.Get("X-Keep") != "k":
				t.Errorf("X-Keep %q, want it passed", got.Get("X-Keep"))
			case got.Get("X-Client") != "127.0.0.1":
				t.Errorf("{client_ip} gave %q", got.Get("X-Client"))
			case got.Get("X-Host") != "app.example.com":
				t.Errorf("{host} gave %q", got.Get("X-Host"))
			case len(got.Get("X-Request-Id")) != 16 || got.Get("X-Request-Id") == "forged" || got.Get("X-Id") != got.Get("X-Request-Id"):
				t.Errorf("X-Request-Id %q, {request_id} %q: want one new 16-digit ID", got.Get("X-Request-Id"), got.Get("X-Id"))
			}
			if resp.Header.Get("X-Powered-By") != "" || resp.Header.Get("X-Frame-Options") != "DENY" {
				t.Errorf("response rules: X-Powered-By %q, X-Frame-Options %q", resp.Header.Get("X-Powered-By"), resp.Header.Get("X-Frame-Options"))
			}
			// the route's rules override the site's
			e, resp = echoAt(t, c, "https://app.example.com/api/v", hdr)
			if e.Header.Get("X-Env") != "api" || e.Header.Get("X-Api") != "1" || e.Header.Get("X-Debug") != "" {
				t.Errorf("route rules: %v", e.Header)
			}
			if resp.Header.Get("X-Frame-Options") != "" || resp.Header.Get("X-Powered-By") != "" {
				t.Errorf("route response rules: %v", resp.Header)
			}
		})
	}
}

// TestRequestIDFromTrustedProxy: a trusted proxy's X-Request-ID and the
// client it names in X-Forwarded-For are kept.
func TestRequestIDFromTrustedProxy(t *testing.T) {
	web := headerEchoUpstream(t, "web")
	cfg := routedConfig(t, web.URL, web.URL, web.URL)
	cfg.Listen.TrustedProxies = []string{"127.0.0.1/32"}
	ts := startServer(t, cfg)
	for _, p := range paths {
		t.Run(p, func(t *testing.T) {
			c := pathClients(t, ts, "app.example.com")[p]
			e, _ := echoAt(t, c, "https://app.example.com/", http.Header{"X-Request-Id": {"abc-123"}, "X-Forwarded-For": {"203.0.113.9, 127.0.0.1"}})
			if e.Header.Get("X-Request-Id") != "abc-123" || e.Header.Get("X-Client") != "203.0.113.9" {
				t.Errorf("X-Request-Id %q, client %q", e.Header.Get("X-Request-Id"), e.Header.Get("X-Client"))
			}
		})
	}
}

// accessLine is a JSON access-log line.
type accessLine struct {
	TS               string  `json:"ts"`
	RemoteIP         string  `json:"remote_ip"`
	Host             string  `json:"host"`
	Method           string  `json:"method"`
	URI              string  `json:"uri"`
	Proto            string  `json:"proto"`
	Status           int     `json:"status"`
	Bytes            int64   `json:"bytes"`
	Duration         float64 `json:"duration"`
	Upstream         string  `json:"upstream"`
	UpstreamDuration float64 `json:"upstream_duration"`
	Site             string  `json:"site"`
	Route            string  `json:"route"`
	RequestID        string  `json:"request_id"`
	UserAgent        string  `json:"user_agent"`
	Referer          string  `json:"referer"`
	TLSVersion       string  `json:"tls_version"`
}

// readAccessLog polls the log file until it holds n lines.
func readAccessLog(t *testing.T, path string, n int) []accessLine {
	t.Helper()
	var lines []accessLine
	eventually(t, "the access log has its lines", func() bool {
		data, _ := os.ReadFile(path)
		lines = lines[:0]
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			var l accessLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatalf("access log line %q: %v", sc.Text(), err)
			}
			lines = append(lines, l)
		}
		return len(lines) >= n
	})
	return lines
}

// TestAccessLogOnEveryPath: one JSON line per request with every field,
// the request ID the upstream got; Reopen after a rename (logrotate).
func TestAccessLogOnEveryPath(t *testing.T) {
	web, api := headerEchoUpstream(t, "web"), headerEchoUpstream(t, "api")
	dir := t.TempDir()
	logPath := filepath.Join(dir, "access.log")
	cfg := routedConfig(t, web.URL, api.URL, web.URL)
	cfg.Log = config.Log{Access: logPath, AccessFormat: "json"}
	ts := startServer(t, cfg)
	clients := map[string]map[string]*http.Client{}
	for _, p := range paths {
		clients[p] = pathClients(t, ts, "app.example.com") // one hand-off request each: logged too
	}
	want := 3 // the hand-off requests
	for _, p := range paths {
		c := clients[p][p]
		hdr := http.Header{"User-Agent": {"probe/" + p}, "Referer": {"https://ref.example/" + p}}
		e, _ := echoAt(t, c, "https://app.example.com/api/x?q="+p, hdr)
		resp, _ := do(t, c, "GET", "https://app.example.com/ping", nil, hdr)
		resp.Body.Close()
		want += 2
		lines := readAccessLog(t, logPath, want)
		var api, ping *accessLine
		for i := range lines {
			switch l := &lines[i]; {
			case l.URI == "/api/x?q="+p:
				api = l
			case l.URI == "/ping" && l.UserAgent == "probe/"+p:
				ping = l
			}
		}
		if api == nil || ping == nil {
			t.Fatalf("%s: lines missing: %+v", p, lines)
		}
		proto := "HTTP/1.1"
		if p == "h2" {
			proto = "HTTP/2.0"
		}
		ts0, err := time.Parse(time.RFC3339, api.TS)
		switch {
		case err != nil || time.Since(ts0) > time.Minute || !strings.Contains(api.TS, ".") || !strings.HasSuffix(api.TS, "Z"):
			t.Errorf("%s: ts %q", p, api.TS)
		case api.RemoteIP != "127.0.0.1" || api.Host != "app.example.com" || api.Method != "GET" || api.Proto != proto:
			t.Errorf("%s: %+v", p, api)
		case api.Status != 200 || api.Bytes == 0 || api.Duration <= 0 || api.UpstreamDuration <= 0 || api.UpstreamDuration > api.Duration:
			t.Errorf("%s: status/bytes/durations %+v", p, api)
		case api.Upstream != strings.TrimPrefix(cfg.Pools[0].Upstreams[0], "http://"):
			t.Errorf("%s: upstream %q", p, api.Upstream)
		case api.Site != "app.example.com" || api.Route != "/api/*" || api.RequestID != e.Header.Get("X-Request-Id"):
			t.Errorf("%s: site %q route %q request_id %q (upstream got %q)", p, api.Site, api.Route, api.RequestID, e.Header.Get("X-Request-Id"))
		case api.UserAgent != "probe/"+p || api.Referer != "https://ref.example/"+p || api.TLSVersion != "TLSv1.3":
			t.Errorf("%s: user_agent %q referer %q tls %q", p, api.UserAgent, api.Referer, api.TLSVersion)
		case ping.Route != "/ping" || ping.Upstream != "" || ping.Bytes != 5 || ping.Status != 200 || ping.UpstreamDuration != 0:
			t.Errorf("%s: /ping line %+v", p, ping)
		}
	}
	// logrotate: the file is moved away, then Portico is told to reopen
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if err := ts.srv.ReopenAccessLog(); err != nil {
		t.Fatal(err)
	}
	get(t, clients["fast"]["fast"], "https://app.example.com/after-rotation")
	if l := readAccessLog(t, logPath, 1); l[0].URI != "/after-rotation" {
		t.Errorf("first line after the rotation: %+v", l[0])
	}
}
