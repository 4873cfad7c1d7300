package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"
)

// HTTP/3 ([listen] http3): QUIC on the UDP port of the https address.
//
//	UDP :443 ─► quic.Transport (ConnContext: max_connections, certConn)
//	          ─► quic.Listener (TLS 1.3, ALPN h3 only, no 0-RTT)
//	          ─► http3.Server ─► the HTTPS handler chain of net/http
//
// It serves the handler the TCP listener's net/http server serves, so
// routing, header rules, the 421 check, the access log and metrics are
// the same code. Certificates come through Server.getCertificate, as on
// TCP: the ClientHello of a QUIC handshake is the same TLS 1.3 one, so
// tlsmgr picks RSA or ECDSA the same way. acme-tls/1 is not offered: a
// tls-alpn-01 validation is made over TCP.
//
// 0-RTT is off: requests in early data can be replayed by an attacker, and
// Portico cannot tell which upstream requests are safe to run twice.

// h3Front is the running HTTP/3 listener.
type h3Front struct {
	udp    *net.UDPConn
	tr     *quic.Transport
	ln     *quic.Listener
	srv    *http3.Server
	altSvc string // the Alt-Svc value announcing it

	open atomic.Int64 // QUIC connections open (handshakes included)
}

// errTooManyConns refuses a QUIC connection over max_connections.
var errTooManyConns = errors.New("max_connections reached")

// startHTTP3 listens on UDP at the https address's host and at port, the
// port the TCP listener got (the same number when it was given; the one
// the kernel chose for TCP when it was 0, so that Alt-Svc announces a port
// that serves both), and serves h on it in the background.
func (s *Server) startHTTP3(port string, lim limits, h http.Handler) (*h3Front, error) {
	host, _, err := net.SplitHostPort(s.httpsAddr)
	if err != nil {
		return nil, fmt.Errorf("http3: https address %q: %w", s.httpsAddr, err)
	}
	addr := net.JoinHostPort(host, port)
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("http3: resolve %s: %w", addr, err)
	}
	quietQUICBufferWarning()
	udp, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("listen http3 on udp %s: %w", addr, listenHint(err))
	}
	f := &h3Front{udp: udp, altSvc: `h3=":` + port + `"; ma=86400`}
	f.tr = &quic.Transport{Conn: udp, ConnContext: f.connContext(lim.maxConns)}
	f.ln, err = f.tr.Listen(http3.ConfigureTLSConfig(s.quicTLSConfig()), &quic.Config{
		// as on TCP: header_timeout for the handshake, idle_timeout for
		// a connection with nothing to do
		HandshakeIdleTimeout: lim.headerTimeout,
		MaxIdleTimeout:       lim.idleTimeout,
		Allow0RTT:            false,
	})
	if err != nil {
		f.tr.Close()
		udp.Close()
		return nil, fmt.Errorf("http3: listen on udp %s: %w", addr, err)
	}
	s.warnSmallUDPBuffers(udp)
	f.srv = &http3.Server{
		Handler:        h,
		MaxHeaderBytes: lim.maxHeaderBytes,
		IdleTimeout:    lim.idleTimeout,
		Logger:         slog.New(zapslog.NewHandler(s.logger.Named("http3").Core())),
		// the request context holds the connection's certConn (made in
		// connContext, filled by getCertificate) for the 421 check
	}
	go func() {
		if err := f.srv.ServeListener(f.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("http3 listener stopped", zap.String("addr", addr), zap.Error(err))
		}
	}()
	return f, nil
}

// connContext is the Transport's ConnContext: it refuses a connection over
// max (0: no limit), counting it until it closes, and gives the connection
// a certConn, in the context that its handshake's ClientHelloInfo and its
// requests' contexts derive from. QUIC has no backlog to keep a connection
// waiting in, as TCP does: over the limit a new connection is refused at
// once (CONNECTION_REFUSED) and the client may fall back to TCP.
func (f *h3Front) connContext(max int) func(context.Context, *quic.ClientInfo) (context.Context, error) {
	return func(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) {
		if max > 0 {
			if f.open.Add(1) > int64(max) {
				f.open.Add(-1)
				return nil, errTooManyConns
			}
			// ctx ends when the connection does, or its handshake fails
			context.AfterFunc(ctx, func() { f.open.Add(-1) })
		}
		return context.WithValue(ctx, certConnKey{}, &certConn{}), nil
	}
}

// shutdown stops taking connections, lets the open ones finish their
// requests (they are sent GOAWAY) until ctx ends, then closes the rest
// and the socket.
//
// A connection is closed by its client once GOAWAY came and its requests
// are answered (RFC 9114 §5.2; quic-go's client, browsers and curl do);
// one that stays open is closed when ctx ends. Portico does not close an
// idle-looking QUIC connection itself, as net/http does a TCP one: a
// QUIC close discards response data not yet acknowledged, which a TCP
// close leaves for the kernel to deliver.
func (f *h3Front) shutdown(ctx context.Context) error {
	// handshakes in flight are refused from here; accepted connections
	// go on
	lnErr := f.ln.Close()
	err := f.srv.Shutdown(ctx)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return errors.Join(err, lnErr, f.tr.Close(), f.udp.Close())
}

// quicTLSConfig is the TLS configuration of QUIC handshakes: that of TCP
// (its certificate selection and shared session tickets), at TLS 1.3,
// which QUIC requires; http3.ConfigureTLSConfig sets the ALPN to h3 alone.
func (s *Server) quicTLSConfig() *tls.Config {
	tc := s.TLSConfig()
	tc.MinVersion = tls.VersionTLS13
	tc.CipherSuites = nil // not configurable in TLS 1.3
	return tc
}

// withAltSvc announces HTTP/3 on the answers of the TCP listener's
// net/http server (the fast path writes its own, relay.go). The value is
// set before next runs, so that every answer, refusals included, carries
// it; an HTTP/3 answer does not need it.
func withAltSvc(altSvc string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor < 3 {
			w.Header()["Alt-Svc"] = []string{altSvc}
		}
		next.ServeHTTP(w, r)
	})
}

// udpBufferWanted is the UDP socket buffer size quic-go asks the kernel
// for (its desiredBufferSize): smaller buffers drop packets under load.
const udpBufferWanted = 7 << 20

var quietOnce sync.Once

// quietQUICBufferWarning turns off quic-go's own warning about small UDP
// buffers, which it writes once per process with the standard library's
// log package (unstructured, to stderr): warnSmallUDPBuffers writes it
// through zap instead. An operator's own setting of the variable wins.
func quietQUICBufferWarning() {
	quietOnce.Do(func() {
		const env = "QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING"
		if _, set := os.LookupEnv(env); !set {
			os.Setenv(env, "true")
		}
	})
}

// warnSmallUDPBuffers logs, once per start (there is one UDP socket), when
// the kernel kept the socket's buffers below what quic-go asked for
// (net.core.rmem_max and wmem_max on Linux cap them for a process without
// CAP_NET_ADMIN).
func (s *Server) warnSmallUDPBuffers(c *net.UDPConn) {
	rcv, snd, ok := udpBufferSizes(c)
	if !ok || rcv >= udpBufferWanted && snd >= udpBufferWanted {
		return
	}
	s.logger.Warn(msgSmallUDPBuffers,
		zap.Int("receive_buffer", rcv), zap.Int("send_buffer", snd), zap.Int("wanted", udpBufferWanted),
		zap.String("fix", "sysctl -w net.core.rmem_max="+strconv.Itoa(udpBufferWanted)+" net.core.wmem_max="+strconv.Itoa(udpBufferWanted)))
}

const msgSmallUDPBuffers = "the kernel's UDP buffers are smaller than HTTP/3 needs under load; raise them (see https://github.com/quic-go/quic-go/wiki/UDP-Buffer-Sizes)"
