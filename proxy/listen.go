package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/portico-proxy/portico/proxy/h1"
)

// The listener stacks:
//
//	:80   TCP ─► [proxyListener] ─► limitListener ─► framingListener ─► http.Server (HTTP/1.x)
//	:443  TCP ─► [proxyListener] ─► limitListener ─► tlsListener ─┬─► *tls.Conn ─► http.Server (h2)
//	                                                              └─► tlsSniffConn ─► http.Server (HTTP/1.x)
//	:443  UDP ─► quic.Transport ─► http3.Server (HTTP/3, [listen] http3; http3.go)
//
// The PROXY protocol layer (proxyproto.go, only with [listen]
// proxy_protocol) is the first: its header precedes every other byte, and
// the address it carries must be the peer of every layer above.
// The limit counts TCP connections, handshakes included. The framing
// tracker (framing.go) has to see HTTP/1.x bytes after decryption, and
// net/http reads a *tls.Conn itself, so on :443 Portico completes the TLS
// handshake and gives net/http an HTTP/1.x connection as a plain net.Conn
// that reports its TLS state (net/http then sets Request.TLS from it).

// limitListener accepts at most n connections at once; Accept waits until
// one of them closes, and the rest wait in the kernel's backlog. It has
// golang.org/x/net/netutil.LimitListener's semantics, but its connections
// keep CloseWrite: net/http half-closes a connection before closing it after
// an error answer (400, 431), so the client reads the answer rather than a
// reset, and netutil's connection wrapper hides that method.
type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func newLimitListener(l net.Listener, n int) *limitListener {
	return &limitListener{Listener: l, sem: make(chan struct{}, n), done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: net.ErrClosed}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.closeOnce.Do(func() { close(l.done) })
	return err
}

type limitConn struct {
	net.Conn
	releaseOnce sync.Once
	release     func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.releaseOnce.Do(c.release)
	return err
}

func (c *limitConn) CloseWrite() error { return closeWrite(c.Conn) }

// closeWrite half-closes c if it can.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// sniffConn is a client connection whose reads feed a framing tracker.
type sniffConn struct {
	net.Conn
	frames *h1.Framing
}

// Read passes on what it reads after the tracker has seen it. Once the
// tracker refuses the bytes, nothing more is passed: net/http sees a read
// error, fails the request whose body it was reading and closes the
// connection.
func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		if why := c.frames.Feed(p[:n]); why != "" {
			return 0, fmt.Errorf("%w: %s", h1.ErrRefusedFraming, why)
		}
	}
	return n, err
}

// CloseWrite keeps net/http's half-close before closing (see limitListener).
func (c *sniffConn) CloseWrite() error { return closeWrite(c.Conn) }

// tlsSniffConn is an HTTP/1.x connection on :443, after the handshake.
type tlsSniffConn struct {
	*sniffConn
	tls *tls.Conn
}

// ConnectionState makes net/http set Request.TLS.
func (c *tlsSniffConn) ConnectionState() tls.ConnectionState { return c.tls.ConnectionState() }

// framingListener wraps the :80 connections in a framing tracker.
type framingListener struct {
	net.Listener
	headLimit int
}

func (l *framingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sniffConn{Conn: c, frames: h1.NewFraming(l.headLimit)}, nil
}

// framingKey is the context key of a connection's framing tracker.
type framingKey struct{}

// connContext puts an HTTP/1.x connection's framing tracker in the context
// of its requests (http.Server.ConnContext).
// The certConn under a :443 connection goes there too, for the Host check.
func connContext(ctx context.Context, c net.Conn) context.Context {
	switch c := c.(type) {
	case *sniffConn:
		return context.WithValue(ctx, framingKey{}, c.frames)
	case *tlsSniffConn:
		ctx = context.WithValue(ctx, certConnKey{}, certConnOf(c.tls))
		return context.WithValue(ctx, framingKey{}, c.frames)
	case *tls.Conn:
		return context.WithValue(ctx, certConnKey{}, certConnOf(c))
	}
	return ctx
}

// tlsListener completes TLS handshakes for the :443 server, each in its own
// goroutine and within timeout (the header timeout, as net/http would), so
// a slow client never holds up the others. It hands the server the
// *tls.Conn for h2, and a tlsSniffConn for HTTP/1.x.
type tlsListener struct {
	inner     net.Listener
	config    *tls.Config
	timeout   time.Duration
	headLimit int
	logf      func(format string, args ...any)
	// http1 serves an HTTP/1.x connection after its handshake (the fast
	// path), handing it to the server through deliver when it must; nil:
	// every connection goes to the server.
	http1 func(*tls.Conn)

	ctx    context.Context // canceled by Close: ends handshakes in progress
	cancel context.CancelFunc
	ready  chan net.Conn
	failed chan struct{} // closed when the inner listener failed for good
	err    error         // why, set before failed is closed
}

func newTLSListener(inner net.Listener, config *tls.Config, timeout time.Duration, headLimit int, logf func(string, ...any), http1 func(*tls.Conn)) *tlsListener {
	ctx, cancel := context.WithCancel(context.Background())
	l := &tlsListener{inner: inner, config: config, timeout: timeout, headLimit: headLimit, logf: logf, http1: http1,
		ctx: ctx, cancel: cancel, ready: make(chan net.Conn), failed: make(chan struct{})}
	go l.acceptLoop()
	return l
}

func (l *tlsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.failed:
		return nil, l.err
	case <-l.ctx.Done():
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: net.ErrClosed}
	}
}

func (l *tlsListener) Close() error {
	l.cancel()
	return l.inner.Close()
}

func (l *tlsListener) Addr() net.Addr { return l.inner.Addr() }

// acceptLoop accepts TCP connections and starts their handshakes. Like
// http.Server, it retries temporary errors (out of file descriptors) after
// a growing pause.
func (l *tlsListener) acceptLoop() {
	var delay time.Duration
	for {
		c, err := l.inner.Accept()
		if err == nil {
			delay = 0
			go l.handshake(c)
			continue
		}
		if l.ctx.Err() != nil {
			return // closed
		}
		var ne net.Error
		//lint:ignore SA1019 as net/http's Serve does: EMFILE and the like pass
		if errors.As(err, &ne) && ne.Temporary() {
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.logf("http: Accept error: %v; retrying in %v", err, delay)
			select {
			case <-time.After(delay):
				continue
			case <-l.ctx.Done():
				return
			}
		}
		l.err = err
		close(l.failed)
		return
	}
}

func (l *tlsListener) handshake(raw net.Conn) {
	// The deadline bounds the handshake's reads and writes. The context is
	// not bounded by it, as net/http's is not: it is the one
	// GetCertificate sees, and an on-demand certificate order started by
	// a client that gave up must go on for the next one.
	raw.SetDeadline(time.Now().Add(l.timeout))
	tc := tls.Server(&certConn{Conn: raw}, l.config)
	if err := tc.HandshakeContext(l.ctx); err != nil {
		reason := err.Error()
		// what net/http answers a client speaking plain HTTP to :443
		var re tls.RecordHeaderError
		if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
			io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
			reason = "client sent an HTTP request to an HTTPS server"
		}
		l.logf("http: TLS handshake error from %s: %s", raw.RemoteAddr(), reason)
		raw.Close()
		return
	}
	raw.SetDeadline(time.Time{})
	var c net.Conn
	switch tc.ConnectionState().NegotiatedProtocol {
	case "h2":
		c = tc // net/http serves HTTP/2 on a *tls.Conn itself
	case "acme-tls/1":
		tc.Close() // a tls-alpn-01 validation: the handshake was all of it
		return
	default:
		if l.http1 != nil {
			l.http1(tc)
			return
		}
		c = &tlsSniffConn{sniffConn: &sniffConn{Conn: tc, frames: h1.NewFraming(l.headLimit)}, tls: tc}
	}
	l.deliver(c)
}

// deliver hands c to the server, or closes it if the listener is closed.
func (l *tlsListener) deliver(c net.Conn) {
	select {
	case l.ready <- c:
	case <-l.ctx.Done():
		c.Close()
	}
}

// looksLikeHTTP reports whether a TLS record header is the start of a
// plain HTTP request.
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// bodyRefused reports whether r's connection had its bytes refused by its
// framing tracker.
func bodyRefused(r *http.Request) bool {
	f, ok := r.Context().Value(framingKey{}).(*h1.Framing)
	if !ok {
		return false
	}
	return f.Refused()
}
