package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"go.uber.org/zap"

	"github.com/portico-proxy/portico/proxy/accesslog"
	"github.com/portico-proxy/portico/proxy/h1"
)

// The HTTP/1.1 fast path serves keep-alive HTTPS requests that a site
// proxies to plain-HTTP upstreams without net/http: one goroutine per
// client connection reads a request head, writes it to a pooled upstream
// connection, reads the answer and relays it, with buffers reused across
// requests. Profiles of the net/http server with httputil.ReverseProxy and
// http.Transport showed about 70 µs of CPU per small request on this
// hardware, spent in goroutine hand-offs (the Transport's read and write
// loops, the server's background read), per-request allocations (headers,
// request and response objects, contexts) and extra syscalls; this path
// costs a fraction of that (see integration/bench/compare.sh).
//
// It is deliberately narrow. Any request it does not fully understand (see
// head.go), a site that answers itself or has an https upstream, a host no
// site serves, and every request that needs more than plain proxying
// (websocket upgrades, Expect: 100-continue, chunked request bodies) make
// it hand the connection, from that request on, to net/http: the bytes it
// has read are replayed to net/http's server through the framing tracker,
// so that path sees the connection exactly as if it had had it from the
// start. Routing, X-Forwarded-* policy, hop-by-hop headers, HSTS, 502
// answers, logs and metrics are the same on both paths.

// Connection states, for Shutdown.
const (
	connActive int32 = iota // reading or answering a request
	connIdle                // waiting for the next request
	connClosed              // closed by Shutdown
)

// fastServer runs the fast path of one HTTPS listener.
type fastServer struct {
	s       *Server
	lim     limits
	up      *h1.Conns
	handoff func(net.Conn) // gives a connection to net/http's server
	ctx     context.Context
	altSvc  string // the Alt-Svc value announcing HTTP/3; "": off

	mu       sync.Mutex
	conns    map[*fastConn]struct{}
	shutting atomic.Bool

	// requests proxied, and connections handed to net/http (for tests)
	served, handedOff atomic.Int64

	readers, writers sync.Pool
}

func newFastServer(ctx context.Context, s *Server, lim limits, up *h1.Conns) *fastServer {
	f := &fastServer{s: s, lim: lim, up: up, ctx: ctx, conns: map[*fastConn]struct{}{}}
	f.readers.New = func() any { return bufio.NewReaderSize(nil, 4<<10) }
	f.writers.New = func() any { return bufio.NewWriterSize(nil, 4<<10) }
	return f
}

// fastConn is one client connection on the fast path.
type fastConn struct {
	tc       *tls.Conn
	cc       *certConn // under tc: the certificate presented
	altSvc   string    // the server's, for the response heads (relay.go)
	state    atomic.Int32
	upstream atomic.Pointer[h1.Conn] // in use, for a forced close
	peer     netip.Addr              // the client's address, for trusted_proxies
	peerIP   string                  // the same, for X-Forwarded-For
	sni      string
	br       *bufio.Reader
	bw       *bufio.Writer
	req      h1.RequestHead
	resp     h1.ResponseHead
	// logPath is the request's path, copied before its body is read
	// (which may overwrite the head's bytes), for log lines after it.
	logPath []byte

	// the request core's decisions for the request (route, prepare)
	route               *Route
	reqID, client, host []byte
	vars                ruleVars
	xff                 [][]byte  // a trusted peer's X-Forwarded-For values
	u                   *upstream // answering the request, counted in flight

	// the access log's record, when the log is on: copies of the head's
	// fields made before the body is read, and what the answer was
	rec                                       accesslog.Record
	logHost, logMethod, logURI, logUA, logRef []byte
	sent                                      int64     // body bytes sent to the client
	upAddr                                    string    // the upstream, "" for none
	upStart                                   time.Time // when the request went to it
	tlsVersion                                uint16
}

// serve is the life of an HTTP/1.x connection after its TLS handshake.
func (f *fastServer) serve(tc *tls.Conn) {
	c := &fastConn{tc: tc, cc: certConnOf(tc), altSvc: f.altSvc}
	if !f.track(c) {
		tc.Close()
		return
	}
	c.sni = tc.ConnectionState().ServerName
	remote := tc.RemoteAddr().String()
	c.peerIP, _, _ = net.SplitHostPort(remote)
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		c.peer = ap.Addr() // parsed once: trusted_proxies is checked per request
	}
	c.tlsVersion = tc.ConnectionState().Version
	c.br, c.bw = f.readers.Get().(*bufio.Reader), f.writers.Get().(*bufio.Writer)
	c.br.Reset(tc)
	c.bw.Reset(tc)
	handedOff := false
	defer func() {
		f.untrack(c)
		if !handedOff {
			tc.Close()
		}
		c.br.Reset(nil)
		c.bw.Reset(nil)
		f.readers.Put(c.br)
		f.writers.Put(c.bw)
	}()
	wait := f.lim.headerTimeout // the first request is due at once
	for {
		tc.SetReadDeadline(time.Now().Add(wait))
		c.state.Store(connIdle)
		if _, err := c.br.Peek(1); err != nil {
			return // closed, idle too long, or closed by Shutdown
		}
		if !c.state.CompareAndSwap(connIdle, connActive) {
			return
		}
		n, ok, err := c.readHead(f.lim.headerTimeout)
		if err != nil {
			return // a timeout or a broken connection: closed without an answer, as net/http does
		}
		var site *Site
		if ok && c.req.Parse(c.head(n)) {
			site = f.route(c)
		}
		if site == nil {
			f.handOff(c)
			handedOff = true
			return
		}
		if c.req.ContentLength > 0 {
			// as net/http: no deadline on bodies. Without a body, the
			// exchange does not read from the client, and the next turn
			// sets the idle deadline.
			tc.SetReadDeadline(time.Time{})
		}
		if !f.exchange(c, site, n) || f.shutting.Load() {
			c.closeGently()
			return
		}
		wait = f.lim.idleTimeout
	}
}

// closeGently ends the connection after an answer: the write side first,
// then a wait (at most half a second) for the client to close its own, so
// that request bytes still unread in the kernel do not turn the close into
// a reset that destroys the answer in flight. net/http waits the same way.
func (c *fastConn) closeGently() {
	c.tc.CloseWrite() // close_notify
	closeWrite(c.tc.NetConn())
	c.tc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	c.br.WriteTo(io.Discard)
}

// head returns the first n buffered bytes.
func (c *fastConn) head(n int) []byte {
	b, _ := c.br.Peek(n)
	return b
}

// readHead waits until the buffer holds a whole request head and returns
// its length, or ok false when the fast path does not take it (a head
// larger than the buffer, or with bare LF line ends). The rest of the head
// is due within timeout; when it is here already (one TLS record, the
// usual case), no read is left for that deadline to bound, and none is set.
func (c *fastConn) readHead(timeout time.Duration) (n int, ok bool, err error) {
	deadline := false
	for {
		b := c.head(c.br.Buffered())
		n, odd := h1.HeadLen(b)
		switch {
		case odd:
			return 0, false, nil
		case n > 0:
			return n, true, nil
		case len(b) == c.br.Size():
			return 0, false, nil
		}
		if !deadline {
			c.tc.SetReadDeadline(time.Now().Add(timeout))
			deadline = true
		}
		if _, err := c.br.Peek(len(b) + 1); err != nil {
			return 0, false, err
		}
	}
}

// route returns the site for the request, or nil when the fast path does
// not serve it.
func (f *fastServer) route(c *fastConn) *Site {
	rt := f.s.router.Load()
	// Lookup keeps no reference to the string, which aliases the read
	// buffer only while this request is routed.
	host := unsafe.String(&c.req.Host[0], len(c.req.Host))
	if !c.cc.covers(host) {
		return nil // net/http answers 421 (Server.serveHTTPS)
	}
	site := rt.Lookup(host)
	if site == nil && rt.onDemand != nil && strings.EqualFold(stripPort(host), c.sni) {
		site = rt.onDemand
	}
	if site == nil {
		return nil
	}
	// what the fast path does not do itself (a fixed answer, a redirect,
	// a 404 or 405, an https upstream), net/http does (Site.ServeHTTP)
	r := site.matchBytes(pathOf(c.req.URI))
	if r == nil || r.action != actProxy || r.pool.addrs == nil || !r.takesBytes(c.req.Method) ||
		site.maxBody > 0 && c.req.ContentLength > site.maxBody {
		return nil
	}
	// A site that compresses, to a client that accepts one of its
	// encodings: net/http compresses (compress.go). Compressing here too
	// would be a second copy of that policy (types, sizes, ETag, Vary,
	// flushes) in wire code that relays bytes without allocating, for a
	// saving lost in the cost of compression itself (BenchmarkCompress:
	// milliseconds of CPU per MiB against the tens of microseconds of
	// net/http per request). The hand-off costs that connection the fast
	// path, from this request on; requests without Accept-Encoding, or
	// to sites without compress, stay here.
	if len(site.compress) > 0 && c.acceptsCompression(site.compress) {
		return nil
	}
	c.route = r
	return site
}

// prepare notes what the request's headers and log need once its head's
// bytes may be gone: its request ID, client address and host.
func (c *fastConn) prepare(site *Site, logging bool) {
	h := &c.req
	trusted := len(site.trusted) > 0 && site.trusted.trustsAddr(c.peer)
	c.reqID = c.reqID[:0]
	if trusted {
		for _, f := range h.Fields {
			if f.Kind == h1.KindXRequestID && usableRequestID(f.Value) {
				c.reqID = append(c.reqID, f.Value...)
				break
			}
		}
	}
	if len(c.reqID) == 0 {
		c.reqID = appendRequestID(c.reqID)
	}
	c.client = append(c.client[:0], c.peerIP...)
	c.xff = c.xff[:0]
	if trusted && h.XFF > 0 {
		for _, f := range h.Fields {
			if f.Kind == h1.KindXForwardedFor {
				c.xff = append(c.xff, f.Value)
			}
		}
		c.client = site.trusted.appendClient(c.client[:0], c.peerIP, c.xff)
	}
	c.host = append(c.host[:0], stripPort(unsafe.String(&h.Host[0], len(h.Host)))...)
	c.vars = ruleVars{clientIP: c.client, host: c.host, requestID: c.reqID}
	c.sent, c.upAddr, c.upStart = 0, "", time.Time{}
	if !logging {
		return
	}
	c.logHost = append(c.logHost[:0], h.Host...)
	c.logMethod = append(c.logMethod[:0], h.Method...)
	c.logURI = append(c.logURI[:0], h.URI...)
	c.logUA, c.logRef = c.logUA[:0], c.logRef[:0]
	for _, f := range h.Fields {
		switch {
		case f.Kind != h1.KindOther:
		case len(f.Name) == len("User-Agent") && bytes.EqualFold(f.Name, []byte("User-Agent")):
			c.logUA = append(c.logUA, f.Value...)
		case len(f.Name) == len("Referer") && bytes.EqualFold(f.Name, []byte("Referer")):
			c.logRef = append(c.logRef, f.Value...)
		}
	}
}

// handOff gives the connection to net/http's server from the request at
// the front of the buffer on.
func (f *fastServer) handOff(c *fastConn) {
	c.tc.SetReadDeadline(time.Time{})
	var pending []byte
	if n := c.br.Buffered(); n > 0 {
		pending = bytes.Clone(c.head(n))
	}
	f.untrack(c) // net/http's Shutdown drains it from now on
	f.handedOff.Add(1)
	rc := &replayConn{Conn: c.tc, pending: pending}
	f.handoff(&tlsSniffConn{sniffConn: &sniffConn{Conn: rc, frames: h1.NewFraming(f.lim.headLimit())}, tls: c.tc})
}

// replayConn is a connection whose first reads return bytes already read
// from it.
type replayConn struct {
	net.Conn
	pending []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite keeps net/http's half-close before closing.
func (c *replayConn) CloseWrite() error { return closeWrite(c.Conn) }

func (f *fastServer) track(c *fastConn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.shutting.Load() {
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *fastServer) untrack(c *fastConn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
}

// shutdown closes idle connections until every connection has finished
// its request and closed, or ctx ends; then it closes the rest.
func (f *fastServer) shutdown(ctx context.Context) error {
	f.mu.Lock()
	f.shutting.Store(true)
	f.mu.Unlock()
	poll := time.Millisecond
	for {
		f.mu.Lock()
		for c := range f.conns {
			if c.state.CompareAndSwap(connIdle, connClosed) {
				c.tc.Close()
			}
		}
		n := len(f.conns)
		f.mu.Unlock()
		if n == 0 {
			return nil
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			f.mu.Lock()
			for c := range f.conns {
				c.tc.Close()
				if uc := c.upstream.Load(); uc != nil {
					uc.Close()
				}
			}
			f.mu.Unlock()
			return ctx.Err()
		case <-t.C:
		}
		poll = min(2*poll, 500*time.Millisecond)
	}
}

// exchange proxies the request whose head, n bytes, is at the front of the
// read buffer, and reports whether the connection can carry another.
func (f *fastServer) exchange(c *fastConn, site *Site, n int) bool {
	f.served.Add(1)
	l := f.s.access.current()
	var start time.Time
	if site.metrics != nil || l != nil {
		start = time.Now()
	}
	c.prepare(site, l != nil)
	status, keep := f.proxy(c, site, n)
	// before the last flush, so that a client that has its answer finds
	// it counted and logged
	if site.metrics != nil {
		site.metrics.observe(status, start, true)
	}
	if l != nil {
		f.logFast(l, c, site, status, start)
	}
	return c.bw.Flush() == nil && keep
}

// proxy sends the request to the site's upstreams and relays the answer,
// leaving its end in the client's buffer. It returns the status sent (0
// for none) and whether the client connection stays open.
func (f *fastServer) proxy(c *fastConn, site *Site, n int) (int, bool) {
	h := &c.req
	// decided now: h's slices are not valid once the body is read (send)
	isHead := string(h.Method) == "HEAD"
	c.logPath = append(c.logPath[:0], pathOf(h.URI)...)
	keep := !h.Close
	// A request without a body to an idempotent method can be sent again
	// on a new connection when a pooled one turns out to have been closed
	// by the upstream, as net/http's Transport does.
	replayable := h.ContentLength <= 0 && h1.Idempotent(h.Method)
	pool := c.route.pool
	var (
		uc       *h1.Conn
		reused   bool
		failures []string
		err      error
		tried    uint64
		retries  int
	)
	// the upstream answering, whose requests in flight count this one
	defer func() {
		if c.u != nil {
			c.u.inFlight.Add(-1)
			c.u.m.inFlight(-1)
			c.u = nil
		}
	}()
	for {
		uc, reused, failures = f.connect(c, pool, &tried, failures)
		if uc == nil {
			if err == nil {
				site.logger.Error(logUpstreamsDown, zap.Strings("upstreams", failures))
				// the request body, if any, is unread: the connection ends
				keep = keep && h.ContentLength <= 0
				c.br.Discard(n)
				return f.sendError(c, site, 502, msgUpstreamsDown, keep), keep
			}
			break // err is the last attempt's
		}
		c.upstream.Store(uc)
		if c.upStart.IsZero() && f.s.access.current() != nil {
			c.upStart = time.Now()
		}
		c.upAddr = uc.Addr
		if err = f.send(c, site, uc, n, isHead, pool); err != nil {
			uc.Close()
			if h1.MayResend(reused, replayable, c.resp.NothingRead) {
				// the pooled connection had been closed by the upstream
				// while idle: once more, on a new one
				if uc, err = f.up.Dial(f.ctx, c.upAddr, pool.limits.DialTimeout); err == nil {
					c.upstream.Store(uc)
					if err = f.send(c, site, uc, n, isHead, pool); err != nil {
						uc.Close()
					}
				}
			}
		}
		if err == nil || errors.Is(err, h1.ErrClientBody) {
			break
		}
		pool.fail(c.u, time.Now())
		if !replayable || retries >= pool.retries {
			break
		}
		// an idempotent request without a body: another upstream
		retries++
		site.logger.Info("retrying an idempotent request on another upstream", zap.String("upstream", c.u.label), zap.Error(err))
		c.u.inFlight.Add(-1)
		c.u.m.inFlight(-1)
		c.u = nil
	}
	defer c.upstream.Store(nil)
	if h.ContentLength <= 0 {
		c.br.Discard(n) // send left the head for a second try
	}
	for err == nil && c.resp.Status < 200 {
		if c.resp.Status == 101 {
			uc.Close()
			err = errors.New("101 Switching Protocols to a request that asked for no upgrade")
			break
		}
		// informational answers (103 Early Hints) go on to the client;
		// 100 Continue does not, as no Expect was sent
		if c.resp.Status != 100 {
			writeResponseHead(c.bw, &c.resp, site, c, true, true)
			if err := c.bw.Flush(); err != nil {
				uc.Close()
				return 0, false
			}
		}
		if err = uc.ReadResponse(&c.resp, isHead); err != nil {
			uc.Close()
		}
	}
	if pool.limits.ResponseHeaderTimeout > 0 && uc != nil {
		uc.SetReadDeadline(time.Time{}) // the head is in: the body may take its time
	}
	if err != nil {
		if errors.Is(err, h1.ErrClientBody) {
			return 0, false // the client went away in the middle of its body
		}
		site.logger.Warn(logUpstreamFailed, zap.ByteString("path", c.logPath), zap.Error(err))
		// a body may be left half read: then the connection ends
		keep = keep && h.ContentLength <= 0
		return f.sendError(c, site, 502, msgUpstreamFailed, keep), keep
	}
	r := &c.resp
	c.u.m.answered(r.Status)
	keep = keep && !f.shutting.Load()
	writeResponseHead(c.bw, r, site, c, false, keep)
	var rerr, werr error
	switch {
	case r.Bodyless:
	case r.Chunked:
		c.sent, rerr, werr = h1.RelayChunked(c.bw, uc.Reader)
	case r.ContentLength >= 0:
		c.sent, rerr, werr = h1.Pipe(c.bw, uc.Reader, r.ContentLength)
	default:
		c.sent, rerr, werr = h1.PipeChunking(c.bw, uc.Reader)
	}
	switch {
	case rerr != nil:
		uc.Close()
		site.logger.Warn("upstream read error during body copy", zap.ByteString("path", c.logPath), zap.Error(rerr))
		return r.Status, false // the client sees the answer cut short
	case werr != nil:
		uc.Close()
		return r.Status, false
	case r.Close:
		uc.Close()
	default:
		f.up.Put(uc)
	}
	return r.Status, keep
}

// send writes the request whose head, n bytes, is at the front of the
// client's buffer to uc, with its body, and reads the response head. The
// head stays in the buffer (n is not discarded) unless the request has a
// body. A failure with nothing read back is marked in c.resp.nothingRead.
//
// isHead is decided by the caller before anything is read: once the body
// is read, the head's slices (h.method, h.uri…) may point at body bytes,
// since the client's buffer is refilled from its start when a body
// arrives in a read of its own. A body "HEAD" in its own TLS record once
// made a POST's answer be relayed as a HEAD's, leaving its body in a
// pooled upstream connection for the next client to receive.
func (f *fastServer) send(c *fastConn, site *Site, uc *h1.Conn, n int, isHead bool, pool *Pool) error {
	h := &c.req
	c.resp.NothingRead = false
	writeRequestHead(uc.Writer, h, c, site)
	if h.ContentLength > 0 {
		c.br.Discard(n)
		_, rerr, werr := h1.Pipe(uc.Writer, c.br, h.ContentLength)
		if rerr != nil {
			return fmt.Errorf("%w: %w", h1.ErrClientBody, rerr)
		}
		if werr != nil {
			return fmt.Errorf("send request body: %w", werr)
		}
	}
	if err := uc.Writer.Flush(); err != nil {
		c.resp.NothingRead = true // a write to a connection the upstream closed
		return fmt.Errorf("send request: %w", err)
	}
	if t := pool.limits.ResponseHeaderTimeout; t > 0 {
		uc.SetReadDeadline(time.Now().Add(t)) // cleared once the final head is in
	}
	return uc.ReadResponse(&c.resp, isHead)
}

// connect returns a connection to the upstream of p that its policy picks
// among those not tried yet (reused when it comes from the pool), moving on
// when a dial fails (a passive failure of that upstream), or nil when every
// upstream was tried; failures says why each failed. It notes the upstream
// in c.u, counting the request in its requests in flight.
func (f *fastServer) connect(c *fastConn, p *Pool, tried *uint64, failures []string) (*h1.Conn, bool, []string) {
	for {
		k := p.pick(c.client, *tried)
		if k < 0 {
			return nil, false, failures
		}
		*tried |= bit(k)
		u := p.upstreams[k]
		uc, reused, err := f.up.Get(f.ctx, u.addr, p.limits.DialTimeout)
		if err == nil {
			c.u = u
			u.inFlight.Add(1)
			u.m.inFlight(1)
			return uc, reused, failures
		}
		p.fail(u, time.Now())
		failures = append(failures, u.label+": "+dialReason(err))
	}
}

// sendError answers with a short text error, as http.Error does (into
// the buffer, which exchange flushes).
func (f *fastServer) sendError(c *fastConn, site *Site, code int, msg string, keep bool) int {
	w := c.bw
	w.WriteString("HTTP/1.1 ")
	w.Write(h1.AppendInt(w.AvailableBuffer(), int64(code)))
	w.WriteString(" ")
	w.WriteString(http.StatusText(code))
	w.WriteString("\r\n")
	if site.hsts != "" {
		w.WriteString("Strict-Transport-Security: ")
		w.WriteString(site.hsts)
		w.WriteString("\r\n")
	}
	writeAltSvc(w, c.altSvc)
	w.WriteString("Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nContent-Length: ")
	w.Write(h1.AppendInt(w.AvailableBuffer(), int64(len(msg)+1)))
	if !keep {
		w.WriteString("\r\nConnection: close")
	}
	w.WriteString("\r\n\r\n")
	w.WriteString(msg)
	w.WriteString("\n")
	c.sent = int64(len(msg) + 1)
	return code
}

// pathOf is the path of a request target, for logs (the query may hold
// secrets).
func pathOf(uri []byte) []byte {
	if i := bytes.IndexByte(uri, '?'); i >= 0 {
		return uri[:i]
	}
	return uri
}
