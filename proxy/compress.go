package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/portico-proxy/portico/proxy/h1"
)

// Compression ([[site]] compress): a site's proxied answers are compressed
// on the net/http paths, by a ResponseWriter that Site.ServeHTTP puts
// around the route's ReverseProxy when the client accepts one of the
// site's encodings. The HTTP/1.1 fast path hands such requests to
// net/http (fastServer.route), so that this file is the one copy of the
// policy.
//
// What is compressed: answers of a compressible type (compressibleType)
// and of at least minCompressSize bytes, or of unknown length, that the
// upstream did not encode itself nor mark Cache-Control: no-transform. Never Range requests or 206 answers
// (their byte ranges are of the identity encoding), HEAD, 204 and 304
// (no body), 1xx. A compressed answer loses its Content-Length (the length
// is not known before the end) and Accept-Ranges, gets Vary:
// Accept-Encoding and has a strong ETag weakened (the bytes differ from
// the identity's, the meaning does not: RFC 9110 §8.8.1).
//
// Streams stay streams: when the handler flushes (ReverseProxy does after
// every write of an event stream, and at its flush interval), the
// compressor is flushed first, so that what the upstream sent reaches the
// client at once.

// minCompressSize is the smallest body compressed: below it the encoding's
// framing (18 bytes for gzip) and CPU cost more than the bytes saved.
const minCompressSize = 1 << 10

// The default levels are fast ones: a proxy compresses every answer
// afresh, and the first levels get most of the size for a fraction of the
// CPU of the higher ones (BenchmarkCompress).
const (
	gzipLevel = gzip.BestSpeed
	zstdLevel = zstd.SpeedFastest
)

// encoder is a pooled compressor of one encoding.
type encoder interface {
	io.Writer
	Flush() error
	Close() error
	Reset(io.Writer)
}

// zstdEncoder adapts zstd.Encoder's Reset to encoder's.
type zstdEncoder struct{ *zstd.Encoder }

func (e zstdEncoder) Reset(w io.Writer) { e.Encoder.Reset(w) }

var (
	gzipPool = sync.Pool{New: func() any {
		w, err := gzip.NewWriterLevel(nil, gzipLevel)
		if err != nil {
			panic(fmt.Sprintf("gzip level %d: %v", gzipLevel, err)) // a constant: never
		}
		return w
	}}
	zstdPool = sync.Pool{New: func() any {
		// one goroutine per stream (the default starts one per CPU);
		// a 1 MiB window keeps each pooled encoder small and is within
		// what browsers decode (RFC 8878 §3.1.1.1.2: 8 MiB at most)
		e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstdLevel), zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(1<<20))
		if err != nil {
			panic(fmt.Sprintf("zstd encoder: %v", err)) // constant options: never
		}
		return zstdEncoder{e}
	}}
)

// getEncoder returns a pooled encoder of coding writing to w.
func getEncoder(coding string, w io.Writer) encoder {
	var e encoder
	if coding == "zstd" {
		e = zstdPool.Get().(zstdEncoder)
	} else {
		e = gzipPool.Get().(*gzip.Writer)
	}
	e.Reset(w)
	return e
}

// putEncoder returns e to its pool, writing to nothing.
func putEncoder(coding string, e encoder) {
	e.Reset(nil)
	if coding == "zstd" {
		zstdPool.Put(e)
	} else {
		gzipPool.Put(e)
	}
}

// negotiateEncoding picks the coding of codings (the site's, in order of
// preference) that an Accept-Encoding value gives the highest q-value, or
// "" for none. A coding the client does not name takes the q of "*" if it
// sent one, else is not acceptable; q=0 refuses. Among equal q-values the
// site's order wins. It does not allocate (the fast path calls it).
func negotiateEncoding(accept string, codings []string) string {
	best, bestQ := "", 0
	for _, c := range codings {
		q, named, star := 0, false, -1
		for rest := accept; rest != ""; {
			var item string
			item, rest, _ = strings.Cut(rest, ",")
			name, params, _ := strings.Cut(item, ";")
			name = strings.TrimSpace(name)
			iq := qValue(params)
			switch {
			case strings.EqualFold(name, c):
				if !named || iq > q {
					q = iq
				}
				named = true
			case name == "*":
				star = max(star, iq)
			}
		}
		if !named && star >= 0 {
			q = star
		}
		if q > bestQ {
			best, bestQ = c, q
		}
	}
	return best
}

// acceptsCompression reports whether a fast-path request's Accept-Encoding
// allows one of the site's codings (each field on its own: a request
// that splits the header over several lines is handed off when one of
// them allows, which is never wrong, net/http deciding again).
func (c *fastConn) acceptsCompression(codings []string) bool {
	for _, f := range c.req.Fields {
		if f.Kind == h1.KindOther && len(f.Name) == len("Accept-Encoding") && bytes.EqualFold(f.Name, []byte("Accept-Encoding")) &&
			len(f.Value) > 0 && negotiateEncoding(unsafe.String(&f.Value[0], len(f.Value)), codings) != "" {
			return true
		}
	}
	return false
}

// qValue reads the q parameter of an Accept-Encoding item's parameters, in
// thousandths (1000 without one; 0 when malformed, so as to refuse).
func qValue(params string) int {
	for rest := params; rest != ""; {
		var p string
		p, rest, _ = strings.Cut(rest, ";")
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "q") {
			continue
		}
		v = strings.TrimSpace(v)
		// qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
		if v == "" || len(v) > 5 || v[0] != '0' && v[0] != '1' || len(v) > 1 && v[1] != '.' {
			return 0
		}
		q := int(v[0]-'0') * 1000
		for i, scale := 2, 100; i < len(v); i, scale = i+1, scale/10 {
			if v[i] < '0' || v[i] > '9' {
				return 0
			}
			q += int(v[i]-'0') * scale
		}
		return min(q, 1000)
	}
	return 1000
}

// compressibleType reports whether answers of a Content-Type are worth
// compressing: text and the structured text formats (JSON, JavaScript,
// XML and their +json/+xml kin, SVG), WebAssembly and uncompressed fonts.
// Images, audio, video and archives are compressed already.
func compressibleType(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	if strings.HasPrefix(mt, "text/") {
		return true
	}
	if strings.HasSuffix(mt, "+json") || strings.HasSuffix(mt, "+xml") {
		return true // application/ld+json, application/rss+xml, image/svg+xml…
	}
	switch mt {
	case "application/json", "application/javascript", "application/x-javascript", "application/ecmascript",
		"application/xml", "application/wasm", "application/x-ndjson", "application/yaml", "application/x-yaml",
		"application/toml", "application/graphql", "application/x-www-form-urlencoded",
		"font/ttf", "font/otf", "application/vnd.ms-fontobject", "image/x-icon", "image/vnd.microsoft.icon", "image/bmp":
		return true
	}
	return false
}

// mayCompress reports whether the answer to r may be compressed at all,
// before its answer is known, and with which of codings ("" for none).
func mayCompress(r *http.Request, codings []string) string {
	if len(codings) == 0 || r.Method == http.MethodHead || r.Header.Get("Range") != "" {
		return ""
	}
	return negotiateEncoding(strings.Join(r.Header.Values("Accept-Encoding"), ","), codings)
}

// compressWriter compresses an answer with coding when its head, seen in
// WriteHeader, allows it; otherwise it passes everything through.
type compressWriter struct {
	http.ResponseWriter
	coding  string
	decided bool
	enc     encoder // nil: not compressing
}

func newCompressWriter(w http.ResponseWriter, coding string) *compressWriter {
	return &compressWriter{ResponseWriter: w, coding: coding}
}

func (w *compressWriter) WriteHeader(code int) {
	if w.decided || code < 200 {
		w.ResponseWriter.WriteHeader(code) // 1xx pass; a second head is net/http's to refuse
		return
	}
	w.decided = true
	h := w.Header()
	if w.compresses(code, h) {
		h.Del("Content-Length")
		h.Del("Accept-Ranges")
		h.Set("Content-Encoding", w.coding)
		if !varies(h) {
			h.Add("Vary", "Accept-Encoding")
		}
		if et := h.Get("Etag"); et != "" && !strings.HasPrefix(et, "W/") {
			h.Set("Etag", "W/"+et)
		}
		w.enc = getEncoder(w.coding, w.ResponseWriter)
	}
	w.ResponseWriter.WriteHeader(code)
}

// compresses decides on an answer's status and headers.
func (w *compressWriter) compresses(code int, h http.Header) bool {
	switch {
	case code == http.StatusNoContent || code == http.StatusPartialContent || code == http.StatusNotModified:
		return false
	case h.Get("Content-Encoding") != "" || h.Get("Content-Range") != "":
		return false // encoded by the upstream, or a range of the identity
	case noTransform(h):
		return false // the upstream forbids it (RFC 9110 §7.7)
	case !compressibleType(h.Get("Content-Type")):
		return false
	}
	if cl := h.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n < minCompressSize {
			return false
		}
	}
	return true
}

// noTransform reports whether Cache-Control has no-transform.
func noTransform(h http.Header) bool {
	for _, v := range h.Values("Cache-Control") {
		for _, d := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(d), "no-transform") {
				return true
			}
		}
	}
	return false
}

// varies reports whether a Vary header already covers Accept-Encoding.
func varies(h http.Header) bool {
	for _, v := range h.Values("Vary") {
		for _, f := range strings.Split(v, ",") {
			f = strings.TrimSpace(f)
			if f == "*" || strings.EqualFold(f, "Accept-Encoding") {
				return true
			}
		}
	}
	return false
}

func (w *compressWriter) Write(p []byte) (int, error) {
	if !w.decided {
		w.WriteHeader(http.StatusOK)
	}
	if w.enc == nil {
		return w.ResponseWriter.Write(p)
	}
	return w.enc.Write(p)
}

// FlushError flushes the compressor, then the connection: what the
// handler wrote so far reaches the client (http.ResponseController).
func (w *compressWriter) FlushError() error {
	if !w.decided {
		w.WriteHeader(http.StatusOK)
	}
	if w.enc != nil {
		if err := w.enc.Flush(); err != nil {
			return fmt.Errorf("flush %s: %w", w.coding, err)
		}
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Flush is FlushError for callers of http.Flusher.
func (w *compressWriter) Flush() { w.FlushError() }

// Hijack passes a websocket's (or any upgrade's) hijack on: an upgrade's
// head is 101, which is never compressed.
func (w *compressWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap gives http.ResponseController the writer below.
func (w *compressWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// close ends the compressed stream (its last block and checksum) and
// returns the encoder to its pool.
func (w *compressWriter) close() error {
	if w.enc == nil {
		return nil
	}
	err := w.enc.Close()
	putEncoder(w.coding, w.enc)
	w.enc = nil
	if err != nil {
		return fmt.Errorf("end the %s stream: %w", w.coding, err)
	}
	return nil
}

// abandon returns the encoder of an answer cut short to its pool without
// ending its stream.
func (w *compressWriter) abandon() {
	if w.enc != nil {
		putEncoder(w.coding, w.enc)
		w.enc = nil
	}
}
