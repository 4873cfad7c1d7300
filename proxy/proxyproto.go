package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"go.uber.org/zap"
)

// The PROXY protocol ([listen] proxy_protocol): a layer-4 load balancer
// opens each connection with a header naming the client it came from
// (v1, text, or v2, binary). It is the first layer above TCP on :80 and
// :443, below the connection limit and TLS (listen.go), so that everything
// above it (the TLS handshake's logs, net/http's Request.RemoteAddr, the
// fast path's peer, and with them X-Forwarded-For, trusted_proxies and the
// access log) sees the header's source as the peer.
//
// The header is read and checked by github.com/pires/go-proxyproto, lazily:
// at the connection's first read or RemoteAddr, in the goroutine that
// serves it (the TLS handshake's on :443, net/http's on :80), never in
// the accept loop, so that a slow balancer holds up no other connection.
//
//   - From a listed source the header is required (REQUIRE): a connection
//     that opens with anything else, or whose header has not arrived
//     within header_timeout, fails its first read and is closed. A v2
//     LOCAL header (the balancer's own health check) and a v1 UNKNOWN one
//     keep the connection's own address, as the protocol says.
//   - From anyone else a header is refused (REJECT): the connection is
//     closed, so that a client cannot claim another address; a connection
//     without one is served as it would be without proxy_protocol.
//
// A connection from an unlisted source reports its own addresses without
// looking for a header (none would be honoured), so that the look happens
// at its first read, under the deadline of whoever reads: net/http's
// header timeout on :80, the handshake's on :443. Otherwise net/http,
// which asks for the addresses before it sets its deadline, would give a
// client that sends nothing header_timeout twice.

// proxyListener applies the PROXY protocol to the connections of a TCP
// listener.
type proxyListener struct {
	net.Listener
	sources trustedProxies // the listed sources: REQUIRE; the rest: REJECT
	timeout time.Duration  // header_timeout
	logger  *zap.Logger
}

// newProxyListener wraps l, or returns it as it is when no source is
// listed (then a PROXY header is just bytes that TLS or HTTP refuse).
func newProxyListener(l net.Listener, sources trustedProxies, timeout time.Duration, logger *zap.Logger) net.Listener {
	if len(sources) == 0 {
		return l
	}
	return &proxyListener{Listener: l, sources: sources, timeout: timeout, logger: logger}
}

func (l *proxyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	policy, listed := proxyproto.REJECT, false
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil && l.sources.trustsAddr(ap.Addr()) {
		policy, listed = proxyproto.REQUIRE, true
	}
	pc := proxyproto.NewConn(c,
		proxyproto.WithPolicy(policy),
		proxyproto.SetReadHeaderTimeout(l.timeout),
		proxyproto.ValidateHeader(servedHeader))
	return &proxyConn{Conn: pc, raw: c, listed: listed, logger: l.logger}, nil
}

// servedHeader accepts the headers whose source can be a client's
// address: TCP over IPv4 or IPv6, and those that carry none (LOCAL,
// UNKNOWN), which keep the connection's own. A UDP or unix-socket source
// is no client of an HTTP listener.
func servedHeader(h *proxyproto.Header) error {
	if h.Command.IsLocal() {
		return nil
	}
	switch h.TransportProtocol {
	case proxyproto.TCPv4, proxyproto.TCPv6, proxyproto.UNSPEC:
		return nil
	}
	return fmt.Errorf("%w: transport %#x", errUnservedHeader, byte(h.TransportProtocol))
}

// errUnservedHeader is servedHeader's refusal.
var errUnservedHeader = errors.New("proxyproto: only headers for TCP over IPv4 or IPv6 are served")

// proxyConn is a connection after the PROXY protocol layer. Its fields
// hide the library's connection type, so that only net.Conn's methods
// (whose RemoteAddr is the header's source) and CloseWrite show through.
type proxyConn struct {
	net.Conn          // *proxyproto.Conn
	raw      net.Conn // the TCP connection under it
	listed   bool
	logger   *zap.Logger

	read    bool // a read has returned bytes: the header is behind
	logOnce sync.Once
}

// Read logs, once, why a connection failed its header (the caller then
// closes it).
func (c *proxyConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.read = true
	} else if err != nil && !c.read {
		if why := headerRefusal(err, c.listed); why != "" {
			c.logOnce.Do(func() {
				c.logger.Info("closed a connection for its PROXY protocol header", zap.String("reason", why),
					zap.String("peer", c.raw.RemoteAddr().String()), zap.Error(err))
			})
		}
	}
	return n, err
}

// RemoteAddr is the header's source from a listed source (the
// connection's own for LOCAL), and the connection's own from anyone else.
func (c *proxyConn) RemoteAddr() net.Addr {
	if !c.listed {
		return c.raw.RemoteAddr()
	}
	return c.Conn.RemoteAddr()
}

// LocalAddr is RemoteAddr's counterpart (the header's destination).
func (c *proxyConn) LocalAddr() net.Addr {
	if !c.listed {
		return c.raw.LocalAddr()
	}
	return c.Conn.LocalAddr()
}

// CloseWrite keeps net/http's half-close before closing (see limitListener).
func (c *proxyConn) CloseWrite() error { return closeWrite(c.raw) }

// headerErrors are the errors the library returns for a header it refused.
var headerErrors = []error{
	proxyproto.ErrCantReadVersion1Header, proxyproto.ErrVersion1HeaderTooLong, proxyproto.ErrLineMustEndWithCrlf,
	proxyproto.ErrCantReadProtocolVersionAndCommand, proxyproto.ErrCantReadAddressFamilyAndProtocol,
	proxyproto.ErrCantReadLength, proxyproto.ErrCantResolveSourceUnixAddress, proxyproto.ErrCantResolveDestinationUnixAddress,
	proxyproto.ErrUnknownProxyProtocolVersion, proxyproto.ErrUnsupportedProtocolVersionAndCommand,
	proxyproto.ErrUnsupportedAddressFamilyAndProtocol, proxyproto.ErrInvalidLength, proxyproto.ErrInvalidAddress,
	proxyproto.ErrInvalidPortNumber, proxyproto.ErrTruncatedTLV, proxyproto.ErrMalformedTLV, proxyproto.ErrIncompatibleTLV,
}

// headerRefusal says why a connection's first read failed for its PROXY
// header, or "" when it failed for another reason (the peer left).
func headerRefusal(err error, listed bool) string {
	switch {
	case errors.Is(err, proxyproto.ErrNoProxyProtocol) && listed:
		return "no PROXY header (within header_timeout) from a proxy_protocol source"
	case errors.Is(err, proxyproto.ErrSuperfluousProxyHeader):
		return "a PROXY header from a source not listed in proxy_protocol"
	case errors.Is(err, errUnservedHeader):
		return "a PROXY header for a transport other than TCP"
	}
	for _, e := range headerErrors {
		if errors.Is(err, e) {
			return "a malformed PROXY header"
		}
	}
	return ""
}
