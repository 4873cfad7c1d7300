package h1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/net/http/httpguts"
)

// Transport is the upstream RoundTripper of proxy's net/http paths
// (HTTP/2 clients, and HTTP/1.x connections the fast path handed over): a
// request it can send plainly goes over the pooled upstream connections
// (Conns), written and read on the caller's goroutine. http.Transport
// runs two goroutines per upstream connection and passes every request
// and response between them; under HTTP/2 load (128 streams at once) they
// cost about a third of the CPU per request and several MiB of stacks and
// buffers.
//
// What it does not do itself goes to http.Transport, which is proven for
// it: https upstreams, protocol upgrades (websockets), Expect:
// 100-continue, and request bodies of unknown length.
type Transport struct {
	// Conns are the pooled upstream connections.
	Conns *Conns
	// Fallback sends what Transport does not (http.Transport).
	Fallback http.RoundTripper
}

func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" || req.ContentLength < 0 || req.Method == http.MethodConnect ||
		req.Header["Upgrade"] != nil || req.Header["Expect"] != nil {
		return t.Fallback.RoundTrip(req)
	}
	res, err := t.roundTrip(req)
	if req.Body != nil {
		req.Body.Close() // a RoundTripper always closes the body
	}
	return res, err
}

// Limits bound a request's upstream exchange: the dial of a new
// connection and the wait for the response head (0: none of its own). A
// caller puts them in the request's context (WithLimits) for Transport.
type Limits struct {
	DialTimeout           time.Duration
	ResponseHeaderTimeout time.Duration
}

// responseHeads lends roundTrip its ResponseHead, whose Fields would
// otherwise grow anew for every response.
var responseHeads = sync.Pool{New: func() any { return &ResponseHead{Fields: make([]Field, 0, 16)} }}

type limitsKey struct{}

// WithLimits returns ctx carrying l for Transport.
func WithLimits(ctx context.Context, l *Limits) context.Context {
	return context.WithValue(ctx, limitsKey{}, l)
}

func limitsOf(ctx context.Context) *Limits {
	if l, ok := ctx.Value(limitsKey{}).(*Limits); ok {
		return l
	}
	return &Limits{}
}

func (t *Transport) roundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	lim := limitsOf(ctx)
	addr := req.URL.Host
	if req.URL.Port() == "" {
		addr += ":80"
	}
	hasBody := req.Body != nil && req.Body != http.NoBody && req.ContentLength > 0
	replayable := !hasBody && Idempotent([]byte(req.Method))
	uc, reused, err := t.Conns.Get(ctx, addr, lim.DialTimeout)
	if err != nil {
		return nil, err // a *net.OpError "dial": Pool moves to the next upstream
	}
	// r is not kept past this call: response copies what it needs
	r := responseHeads.Get().(*ResponseHead)
	defer responseHeads.Put(r)
	for {
		// a canceled request (the client went away) ends its connection
		stop := context.AfterFunc(ctx, func() { uc.Close() })
		err = t.send(uc, req, r, hasBody, lim.ResponseHeaderTimeout)
		if err == nil {
			return t.response(req, uc, r, stop)
		}
		stop()
		uc.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !MayResend(reused, replayable, r.NothingRead) {
			return nil, err
		}
		// the pooled connection had been closed by the upstream while
		// idle: once more, on a new one
		if uc, err = t.Conns.Dial(ctx, addr, lim.DialTimeout); err != nil {
			return nil, err
		}
		reused = false
	}
}

// send writes req to uc and reads the first response head that is not
// 100 Continue; other informational answers go to the request's
// httptrace Got1xxResponse, where ReverseProxy passes them on.
//
// Nothing is written that a strict HTTP/1.1 parser would read otherwise
// than it is meant: the method must be a token, the target visible ASCII,
// the host a valid Host value, header names tokens and values free of
// control characters (as http.Transport checks). The server in front
// refuses such requests first (proxy.Server.refuseMalformed); this is the
// transport's own guarantee.
func (t *Transport) send(uc *Conn, req *http.Request, r *ResponseHead, hasBody bool, headerTimeout time.Duration) error {
	target := req.URL.RequestURI()
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	switch {
	case !IsToken(req.Method):
		return fmt.Errorf("invalid method %q", req.Method)
	case !ValidTarget(target) || target[0] != '/' && target != "*":
		return fmt.Errorf("invalid request target %q", target)
	case !httpguts.ValidHostHeader(host):
		return fmt.Errorf("invalid Host %q", host)
	}
	w := uc.Writer
	w.WriteString(req.Method)
	w.WriteByte(' ')
	w.WriteString(target)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(host)
	w.WriteString("\r\n")
	for name, values := range req.Header {
		if name == "Host" || name == "Content-Length" || name == "Transfer-Encoding" || name == "Connection" {
			continue
		}
		if name == "User-Agent" && len(values) == 1 && values[0] == "" {
			continue // ReverseProxy's way of asking for none, as http.Transport reads it
		}
		if !IsToken(name) {
			return fmt.Errorf("invalid header name %q", name)
		}
		for _, v := range values {
			if !ValidFieldValue(v) {
				return fmt.Errorf("header %s: control character in the value", name)
			}
			w.WriteString(name)
			w.WriteString(": ")
			w.WriteString(v)
			w.WriteString("\r\n")
		}
	}
	switch {
	case hasBody:
		w.WriteString("Content-Length: ")
		w.Write(AppendInt(w.AvailableBuffer(), req.ContentLength))
		w.WriteString("\r\n")
	case req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch:
		w.WriteString("Content-Length: 0\r\n") // as http.Transport does
	}
	w.WriteString("\r\n")
	if hasBody {
		if n, err := io.CopyN(w, clientBody{req.Body}, req.ContentLength); err != nil {
			if err == io.EOF {
				err = fmt.Errorf("%w: shorter than its length", ErrClientBody)
			}
			return fmt.Errorf("send request body (%d of %d bytes): %w", n, req.ContentLength, err)
		}
	}
	r.NothingRead = false
	if err := w.Flush(); err != nil {
		r.NothingRead = true
		return fmt.Errorf("send request: %w", err)
	}
	isHead := req.Method == http.MethodHead
	if headerTimeout > 0 {
		uc.SetReadDeadline(time.Now().Add(headerTimeout))
		defer uc.SetReadDeadline(time.Time{})
	}
	for {
		if err := uc.ReadResponse(r, isHead); err != nil {
			return err
		}
		switch {
		case r.Status >= 200:
			return nil
		case r.Status == 101:
			return errors.New("101 Switching Protocols to a request that asked for no upgrade")
		case r.Status != 100:
			if trace := httptrace.ContextClientTrace(req.Context()); trace != nil && trace.Got1xxResponse != nil {
				if err := trace.Got1xxResponse(r.Status, textproto.MIMEHeader(r.header(false))); err != nil {
					return err
				}
			}
		}
	}
}

// clientBody marks the errors of reading a request body as the client's
// (errClientBody), apart from those of writing it upstream.
type clientBody struct{ r io.Reader }

func (b clientBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w: %w", ErrClientBody, err)
	}
	return n, err
}

// header returns r's header lines as an http.Header; Transfer-Encoding is
// left out (the body is decoded), and so is Content-Length when the body is
// chunked. Trailer stays (ReverseProxy drops it as hop-by-hop and announces
// the trailers itself).
func (r *ResponseHead) header(chunked bool) http.Header {
	// The names and values are copied out of the read buffer into one
	// string, and the values' slices share one array: three allocations
	// for the whole head, where a string per name, a string per value and
	// a slice per value made an HTTP/2 request's largest share of garbage
	// (pprof under h2load). A name already in canonical form is a
	// substring of that one string, as CanonicalMIMEHeaderKey returns its
	// argument when there is nothing to change.
	size, n := 0, 0
	for _, f := range r.Fields {
		if keepField(f, chunked) {
			size += len(f.Name) + len(f.Value)
			n++
		}
	}
	h := make(http.Header, n)
	if n == 0 {
		return h
	}
	buf := make([]byte, 0, size)
	for _, f := range r.Fields {
		if keepField(f, chunked) {
			buf = append(append(buf, f.Name...), f.Value...)
		}
	}
	all := unsafe.String(unsafe.SliceData(buf), len(buf)) // buf is not written again
	values := make([]string, n)
	at, i := 0, 0
	for _, f := range r.Fields {
		if !keepField(f, chunked) {
			continue
		}
		key := textproto.CanonicalMIMEHeaderKey(all[at : at+len(f.Name)])
		at += len(f.Name)
		values[i] = all[at : at+len(f.Value)]
		at += len(f.Value)
		if prev, ok := h[key]; ok {
			h[key] = append(prev, values[i])
		} else {
			h[key] = values[i : i+1 : i+1] // an append by the caller copies
		}
		i++
	}
	return h
}

// keepField reports whether a response head's field goes into its
// http.Header.
func keepField(f Field, chunked bool) bool {
	return f.Kind != KindTransferEncoding && (f.Kind != KindContentLength || !chunked)
}

// response builds the http.Response for the head in r; its body reads the
// rest from uc, which goes back to the pool once the body is read whole.
func (t *Transport) response(req *http.Request, uc *Conn, r *ResponseHead, stop func() bool) (*http.Response, error) {
	res := &http.Response{
		Status:        string(r.Line),
		StatusCode:    r.Status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        r.header(r.Chunked),
		ContentLength: r.ContentLength,
		Close:         r.Close,
		Request:       req,
	}
	b := &leanBody{t: t, uc: uc, stop: stop, reuse: !r.Close, remain: r.ContentLength}
	switch {
	case r.Bodyless, r.ContentLength == 0 && !r.Chunked:
		b.finish()
		res.Body = http.NoBody
		if req.Method != http.MethodHead {
			res.ContentLength = 0
		}
		return res, nil
	case r.Chunked:
		res.TransferEncoding = []string{"chunked"}
		res.ContentLength = -1
		b.chunked, b.remain = true, 0
		for _, v := range res.Header["Trailer"] {
			for _, name := range splitList(v) {
				if res.Trailer == nil {
					res.Trailer = http.Header{}
				}
				res.Trailer[textproto.CanonicalMIMEHeaderKey(name)] = nil
			}
		}
		b.trailer = res.Trailer
	case r.ContentLength < 0:
		b.untilEOF = true
	}
	res.Body = b
	return res, nil
}

// splitList splits a comma-separated header value into trimmed items.
func splitList(v string) []string {
	var out []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// leanBody reads a response body from its upstream connection: remain
// bytes, chunks, or until the upstream closes.
type leanBody struct {
	t     *Transport
	uc    *Conn
	stop  func() bool // unregisters the request's cancel hook
	reuse bool        // the connection may serve another request once done

	remain   int64 // bytes left of the body, or of the current chunk
	chunked  bool
	started  bool // a chunk was read: its CRLF comes before the next size
	untilEOF bool
	trailer  http.Header

	mu   sync.Mutex // Close may come from another goroutine than Read
	done bool       // the body was read whole, or closed
	err  error
}

func (b *leanBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	if b.done {
		return 0, io.EOF
	}
	br := b.uc.Reader
	if b.chunked && b.remain == 0 {
		if err := b.nextChunk(br); err != nil {
			return 0, b.fail(err)
		}
		if b.done {
			return 0, io.EOF
		}
	}
	if !b.untilEOF && int64(len(p)) > b.remain {
		p = p[:b.remain]
	}
	n, err := br.Read(p)
	if !b.untilEOF {
		b.remain -= int64(n)
	}
	switch {
	case b.untilEOF && err == io.EOF:
		b.reuse = false
		b.finish()
		return n, io.EOF
	case err != nil:
		return n, b.fail(chunkErr(err))
	case !b.chunked && !b.untilEOF && b.remain == 0:
		b.finish()
		return n, io.EOF
	}
	return n, nil
}

// nextChunk reads the next chunk-size line (and, after the last chunk,
// the trailers).
func (b *leanBody) nextChunk(br *bufio.Reader) error {
	if b.started {
		if err := readChunkEnd(br); err != nil {
			return err
		}
	}
	size, err := readChunkSize(br)
	if err != nil {
		return err
	}
	b.started = true
	if size > 0 {
		b.remain = size
		return nil
	}
	err = readTrailers(br, func(line []byte, colon int) error {
		if b.trailer != nil {
			key := textproto.CanonicalMIMEHeaderKey(string(line[:colon]))
			b.trailer[key] = append(b.trailer[key], string(trimSP(line[colon+1:])))
		}
		return nil
	})
	if err != nil {
		return err
	}
	b.finish()
	return nil
}

// finish gives the connection back to the pool if it can serve again.
func (b *leanBody) finish() {
	b.done = true
	if b.stop() && b.reuse {
		b.t.Conns.Put(b.uc)
		return
	}
	b.uc.Close()
}

func (b *leanBody) fail(err error) error {
	b.err = err
	b.done = true
	b.stop()
	b.uc.Close()
	return err
}

// Close ends the body; a body not read whole ends its connection.
func (b *leanBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.done {
		b.done = true
		b.err = errors.New("response body closed")
		b.stop()
		b.uc.Close()
	}
	return nil
}
