package proxy

// [[site]] compress against a started Server: real upstreams, real
// HTTP/1.1 and HTTP/2 clients that do not decompress themselves; bodies
// decoded with the standard library's gzip and klauspost's zstd.

import (
	"bufio"
	"bytes"
	stdgzip "compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

func TestNegotiateEncoding(t *testing.T) {
	both := []string{"zstd", "gzip"}
	for _, tt := range []struct {
		accept  string
		codings []string
		want    string
	}{
		{"", both, ""},
		{"gzip", both, "gzip"},
		{"gzip, deflate, br, zstd", both, "zstd"}, // equals: the site's order
		{"gzip, zstd", []string{"gzip", "zstd"}, "gzip"},
		{"gzip;q=1, zstd;q=0.5", both, "gzip"},
		{"zstd;q=0, gzip", both, "gzip"},
		{"zstd;q=0, gzip;q=0", both, ""},
		{"zstd;q=0.0, gzip;q=0.000", both, ""},
		{"*", both, "zstd"},
		{"*;q=0", both, ""},
		{"gzip;q=0.8, *;q=0.9", both, "zstd"},
		{"*, zstd;q=0", both, "gzip"},
		{"GZIP", both, "gzip"},
		{"br, deflate, identity", both, ""},
		{"gzip;q=0.5, zstd;q=0.500", both, "zstd"},
		{"gzip;q=bogus", both, ""},
		{"gzip;q=2", both, ""},
		{"gzip ; q=0.001", both, "gzip"},
		{"gzip;q=1.000", both, "gzip"},
		{"zstd", []string{"gzip"}, ""},
		{"gzip", nil, ""},
	} {
		if got := negotiateEncoding(tt.accept, tt.codings); got != tt.want {
			t.Errorf("negotiateEncoding(%q, %q) = %q, want %q", tt.accept, tt.codings, got, tt.want)
		}
	}
}

func TestCompressibleType(t *testing.T) {
	for ct, want := range map[string]bool{
		"text/html; charset=utf-8":      true,
		"text/css":                      true,
		"text/event-stream":             true,
		"application/json":              true,
		"Application/JSON; charset=x":   true,
		"application/javascript":        true,
		"application/xml":               true,
		"application/ld+json":           true,
		"application/problem+json":      true,
		"application/rss+xml":           true,
		"image/svg+xml":                 true,
		"application/wasm":              true,
		"image/png":                     false,
		"image/jpeg":                    false,
		"video/mp4":                     false,
		"application/zip":               false,
		"application/octet-stream":      false,
		"application/gzip":              false,
		"font/woff2":                    false,
		"":                              false,
		"multipart/byteranges; b=xyzzy": false,
	} {
		if got := compressibleType(ct); got != want {
			t.Errorf("compressibleType(%q) = %v, want %v", ct, got, want)
		}
	}
}

// textBody is n bytes of compressible text.
func textBody(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "<li id=\"item-%d\">item %d of the list</li>\n", i, i)
	}
	return b.String()[:n]
}

// compressUpstream answers by path with the answers the tests compress or
// not.
func compressUpstream(t *testing.T) *httptest.Server {
	t.Helper()
	big := textBody(8 << 10)
	var pre bytes.Buffer
	zw := stdgzip.NewWriter(&pre)
	io.WriteString(zw, big)
	zw.Close()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		switch r.URL.Path {
		case "/html":
			h.Set("Content-Type", "text/html; charset=utf-8")
			h.Set("Content-Length", fmt.Sprint(len(big)))
			h.Set("Etag", `"v1"`)
			h.Set("Vary", "Origin")
			io.WriteString(w, big)
		case "/json-stream": // no length: chunked
			h.Set("Content-Type", "application/json")
			h.Set("Etag", `W/"weak"`)
			io.WriteString(w, big[:4<<10])
			http.NewResponseController(w).Flush()
			io.WriteString(w, big[4<<10:])
		case "/svg":
			h.Set("Content-Type", "image/svg+xml")
			io.WriteString(w, big)
		case "/small":
			h.Set("Content-Type", "text/plain")
			h.Set("Content-Length", "1023")
			io.WriteString(w, big[:1023])
		case "/no-transform":
			h.Set("Content-Type", "text/html")
			h.Set("Cache-Control", "public, No-Transform")
			io.WriteString(w, big)
		case "/png":
			h.Set("Content-Type", "image/png")
			io.WriteString(w, big)
		case "/pre-encoded":
			h.Set("Content-Type", "text/html")
			h.Set("Content-Encoding", "gzip")
			w.Write(pre.Bytes())
		case "/file": // honours Range (206)
			http.ServeContent(w, r, "f.txt", time.Unix(1e9, 0), strings.NewReader(big))
		case "/no-content":
			h.Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusNoContent)
		case "/not-modified":
			h.Set("Content-Type", "text/plain")
			h.Set("Etag", `"v1"`)
			w.WriteHeader(http.StatusNotModified)
		}
	}))
	t.Cleanup(up.Close)
	return up
}

// rawClient is a client that asks for no encoding itself and decodes
// nothing: over HTTP/1.1 or h2 to :443, or to :80.
func (ts *testServer) rawClient(t *testing.T, h2 bool) *http.Client {
	c := ts.client(t, h2)
	c.Transport.(*http.Transport).DisableCompression = true
	return c
}

// decode decodes a body of coding ("" for identity).
func decode(t *testing.T, coding string, body []byte) string {
	t.Helper()
	var r io.Reader
	switch coding {
	case "":
		return string(body)
	case "gzip":
		zr, err := stdgzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("gzip: %v", err)
		}
		r = zr
	case "zstd":
		zr, err := zstd.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("zstd: %v", err)
		}
		defer zr.Close()
		r = zr
	default:
		t.Fatalf("unexpected Content-Encoding %q", coding)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decode %s: %v", coding, err)
	}
	return string(b)
}

func TestCompression(t *testing.T) {
	up := compressUpstream(t)
	site := proxySite([]string{"app.example.com"}, up.URL)
	site.Compress = []string{"zstd", "gzip"}
	f := false
	site.RedirectHTTPS = &f
	ts := startServer(t, testConfig(site))
	big := textBody(8 << 10)
	tests := []struct {
		name, method, path string
		hdr                http.Header
		status             int
		coding             string // the Content-Encoding wanted
		body               string // decoded
		etag               string
	}{
		{"html zstd preferred", "GET", "/html", http.Header{"Accept-Encoding": {"gzip, deflate, br, zstd"}}, 200, "zstd", big, `W/"v1"`},
		{"html gzip by q", "GET", "/html", http.Header{"Accept-Encoding": {"zstd;q=0.5, gzip"}}, 200, "gzip", big, `W/"v1"`},
		{"html zstd refused", "GET", "/html", http.Header{"Accept-Encoding": {"zstd;q=0, *"}}, 200, "gzip", big, `W/"v1"`},
		{"html star", "GET", "/html", http.Header{"Accept-Encoding": {"*"}}, 200, "zstd", big, `W/"v1"`},
		{"html none acceptable", "GET", "/html", http.Header{"Accept-Encoding": {"br, gzip;q=0"}}, 200, "", big, `"v1"`},
		{"html no Accept-Encoding", "GET", "/html", nil, 200, "", big, `"v1"`},
		{"json without length, weak etag", "GET", "/json-stream", http.Header{"Accept-Encoding": {"gzip"}}, 200, "gzip", big, `W/"weak"`},
		{"svg", "GET", "/svg", http.Header{"Accept-Encoding": {"zstd"}}, 200, "zstd", big, ""},
		{"below 1 KiB", "GET", "/small", http.Header{"Accept-Encoding": {"gzip"}}, 200, "", big[:1023], ""},
		{"no-transform", "GET", "/no-transform", http.Header{"Accept-Encoding": {"gzip"}}, 200, "", big, ""},
		{"image", "GET", "/png", http.Header{"Accept-Encoding": {"gzip"}}, 200, "", big, ""},
		{"pre-encoded by the upstream", "GET", "/pre-encoded", http.Header{"Accept-Encoding": {"zstd, gzip"}}, 200, "gzip", big, ""},
		{"whole file", "GET", "/file", http.Header{"Accept-Encoding": {"gzip"}}, 200, "gzip", big, ""},
		{"range", "GET", "/file", http.Header{"Accept-Encoding": {"gzip"}, "Range": {"bytes=0-99"}}, 206, "", big[:100], ""},
		{"head", "HEAD", "/html", http.Header{"Accept-Encoding": {"gzip"}}, 200, "", "", `"v1"`},
		{"204", "GET", "/no-content", http.Header{"Accept-Encoding": {"gzip"}}, 204, "", "", ""},
		{"304", "GET", "/not-modified", http.Header{"Accept-Encoding": {"gzip"}, "If-None-Match": {`"v1"`}}, 304, "", "", `"v1"`},
	}
	for _, p := range []struct {
		name, base string
		h2         bool
	}{{"http1.1", "https://app.example.com", false}, {"h2", "https://app.example.com", true}, {"port80", "http://app.example.com", false}} {
		for _, tt := range tests {
			t.Run(p.name+"/"+tt.name, func(t *testing.T) {
				resp, body := do(t, ts.rawClient(t, p.h2), tt.method, p.base+tt.path, nil, tt.hdr)
				if resp.StatusCode != tt.status || (resp.ProtoMajor == 2) != p.h2 {
					t.Fatalf("%s %s, want %d", resp.Proto, resp.Status, tt.status)
				}
				ce := resp.Header.Get("Content-Encoding")
				if ce != tt.coding {
					t.Fatalf("Content-Encoding %q, want %q", ce, tt.coding)
				}
				if got := decode(t, ce, []byte(body)); got != tt.body {
					t.Errorf("decoded body of %d bytes, want %d", len(got), len(tt.body))
				}
				if got := resp.Header.Get("Etag"); got != tt.etag {
					t.Errorf("ETag %q, want %q", got, tt.etag)
				}
				compressed := tt.coding != "" && tt.path != "/pre-encoded"
				vary := strings.Join(resp.Header.Values("Vary"), ", ")
				if compressed {
					// the upstream's length is dropped; net/http sets the
					// compressed one itself when the answer fits its buffer
					if !strings.Contains(vary, "Accept-Encoding") || resp.ContentLength != -1 && resp.ContentLength != int64(len(body)) ||
						resp.Header.Get("Accept-Ranges") != "" {
						t.Errorf("compressed answer with Vary %q, Content-Length %q, Accept-Ranges %q",
							vary, resp.Header.Get("Content-Length"), resp.Header.Get("Accept-Ranges"))
					}
					if tt.path == "/html" && vary != "Origin, Accept-Encoding" {
						t.Errorf("Vary %q, want the upstream's with Accept-Encoding added", vary)
					}
					if len(body) >= len(tt.body) {
						t.Errorf("%d bytes compressed from %d", len(body), len(tt.body))
					}
				} else if strings.Contains(vary, "Accept-Encoding") {
					t.Errorf("an answer not compressed got Vary %q", vary)
				}
			})
		}
	}
}

// TestCompressionFastPathHandsOff: an HTTP/1.1 request that accepts one of
// the site's encodings goes to net/http; one that does not stays on the
// fast path, as do requests to sites without compress.
func TestCompressionFastPathHandsOff(t *testing.T) {
	up := compressUpstream(t)
	site := proxySite([]string{"app.example.com"}, up.URL)
	site.Compress = []string{"gzip"}
	plain := proxySite([]string{"plain.example.com"}, up.URL)
	ts := startServer(t, testConfig(site, plain))
	f := ts.srv.fast
	for _, tt := range []struct {
		host, accept string
		handedOff    bool
	}{
		{"app.example.com", "", false},
		{"app.example.com", "zstd, br", false},
		{"app.example.com", "gzip;q=0", false},
		{"app.example.com", "gzip", true},
		{"plain.example.com", "gzip", false},
	} {
		served, handed := f.served.Load(), f.handedOff.Load()
		hdr := http.Header{}
		if tt.accept != "" {
			hdr.Set("Accept-Encoding", tt.accept)
		}
		resp, _ := do(t, ts.rawClient(t, false), "GET", "https://"+tt.host+"/html", nil, hdr)
		gotHanded := f.handedOff.Load()-handed == 1
		if gotHanded != tt.handedOff || gotHanded == (f.served.Load()-served == 1) {
			t.Errorf("%s with Accept-Encoding %q: handed off %v, want %v", tt.host, tt.accept, gotHanded, tt.handedOff)
		}
		if want := map[bool]string{true: "gzip"}[tt.handedOff]; resp.Header.Get("Content-Encoding") != want {
			t.Errorf("%s with Accept-Encoding %q: Content-Encoding %q", tt.host, tt.accept, resp.Header.Get("Content-Encoding"))
		}
	}
}

// TestCompressionStreamsEvents: a compressed event stream is flushed
// through: the first event arrives while the upstream holds the stream
// open.
func TestCompressionStreamsEvents(t *testing.T) {
	release := make(chan struct{})
	finished := make(chan struct{}, 1)
	over := make(chan struct{}) // closed when the test ends, failed or not
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			select {
			case finished <- struct{}{}:
			default:
			}
		}()
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: tick\ndata: first\n\n")
		http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		case <-over:
			return
		}
		io.WriteString(w, "data: second\n\n")
	}))
	t.Cleanup(up.Close)
	t.Cleanup(func() { close(over) }) // before up.Close, which waits for handlers
	site := proxySite([]string{"app.example.com"}, up.URL)
	site.Compress = []string{"zstd", "gzip"}
	ts := startServer(t, testConfig(site))
	for _, coding := range []string{"gzip", "zstd"} {
		for _, h2 := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/h2=%v", coding, h2), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://app.example.com/events", nil)
				req.Header.Set("Accept-Encoding", coding)
				resp, err := ts.rawClient(t, h2).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if resp.Header.Get("Content-Encoding") != coding || (resp.ProtoMajor == 2) != h2 {
					t.Fatalf("%s, Content-Encoding %q", resp.Proto, resp.Header.Get("Content-Encoding"))
				}
				var zr io.Reader
				if coding == "gzip" {
					zr, err = stdgzip.NewReader(resp.Body)
				} else {
					var d *zstd.Decoder
					d, err = zstd.NewReader(resp.Body, zstd.WithDecoderConcurrency(1))
					if d != nil {
						defer d.Close()
					}
					zr = d
				}
				if err != nil {
					t.Fatalf("%s reader: %v", coding, err)
				}
				br := bufio.NewReader(zr)
				var got string
				for got != "event: tick\ndata: first\n\n" {
					line, err := br.ReadString('\n')
					if err != nil {
						t.Fatalf("the first event was not received while the upstream held the stream: %v (got %q)", err, got)
					}
					got += line
				}
				select {
				case <-finished:
					t.Fatal("the upstream finished before the first event was read")
				default:
				}
				select {
				case release <- struct{}{}:
				case <-time.After(waitTimeout):
					t.Fatal("the upstream handler is not waiting to end the stream")
				}
				rest, err := io.ReadAll(br)
				if err != nil || string(rest) != "data: second\n\n" {
					t.Fatalf("rest of the stream %q, %v", rest, err)
				}
				recv(t, finished, "the upstream handler to return")
			})
		}
	}
}

// BenchmarkCompress is the CPU that compressing 1 MiB of text (HTML-like
// markup) costs at the default levels: ns/op is per MiB.
func BenchmarkCompress(b *testing.B) {
	data := []byte(textBody(1 << 20))
	for _, coding := range []string{"gzip", "zstd"} {
		b.Run(coding, func(b *testing.B) {
			var out countWriter
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				out = 0
				e := getEncoder(coding, &out)
				e.Write(data)
				e.Close()
				putEncoder(coding, e)
			}
			b.ReportMetric(float64(out)/float64(len(data)), "ratio")
		})
	}
}

type countWriter int64

func (w *countWriter) Write(p []byte) (int, error) { *w += countWriter(len(p)); return len(p), nil }

// TestCompressionLeavesWebSocketsAlone: an upgrade that accepts gzip (as
// browsers' do) is handed to net/http and switches protocols unencoded.
func TestCompressionLeavesWebSocketsAlone(t *testing.T) {
	up := wsUpstream(t)
	site := proxySite([]string{"app.example.com"}, up.URL)
	site.Compress = []string{"gzip"}
	ts := startServer(t, testConfig(site))
	conn := ts.dialRaw(t, true)
	conn.SetDeadline(time.Now().Add(waitTimeout))
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: app.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAccept-Encoding: gzip, deflate, br\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Content-Encoding") != "" {
		t.Fatalf("upgrade: %s, Content-Encoding %q", resp.Status, resp.Header.Get("Content-Encoding"))
	}
	io.WriteString(conn, "hello\n")
	if got, err := br.ReadString('\n'); err != nil || got != "echo: hello\n" {
		t.Fatalf("echo %q, %v", got, err)
	}
}
