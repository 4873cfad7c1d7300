// Package proxy holds Portico's listeners: :80 for ACME http-01 answers and
// redirects, :443 for TLS, routing by Host to sites and reverse proxying to
// their upstreams, graceful reload and shutdown. Certificates come from a
// Certificates implementation (tlsmgr.Manager); proxy never talks ACME or
// storage itself.
//
// HTTPS requests over HTTP/1.1 take a fast path (fastpath.go) that does
// not use net/http; HTTP/2, port 80 and whatever the fast path hands over
// are served by net/http with httputil.ReverseProxy, and HTTP/3 (when on)
// by quic-go's http3 server with the same handlers (http3.go). Every path sends
// plain upstream requests over the same pooled connections (transport.go).
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"

	"github.com/portico-proxy/portico/config"

	"github.com/portico-proxy/portico/proxy/accesslog"
	"github.com/portico-proxy/portico/proxy/h1"
)

// Certificates is what the proxy needs from the certificate manager.
type Certificates interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
	HTTPChallengeHandler(next http.Handler) http.Handler
}

// Server is Portico's front: an HTTP and an HTTPS listener sharing one
// router, which Swap replaces atomically.
type Server struct {
	logger    *zap.Logger
	certs     Certificates
	transport *http.Transport // for what leanTransport leaves to it
	upConns   *h1.Conns       // pooled upstream connections of every path
	lean      *h1.Transport   // the upstream transport of the net/http paths
	buffers   *bufferPool     // body copy buffers, shared by every site
	router    atomic.Pointer[Router]
	access    accessLog        // [log] access
	pools     map[string]*Pool // the [[pool]]s in use, under swapMu

	swapMu    sync.Mutex      // serialises Swap and RegisterMetrics
	cfg       *config.Config  // the config of the current router
	metrics   *metrics        // nil until RegisterMetrics
	siteNames map[string]bool // sites of the current router, for metrics

	httpAddr, httpsAddr string
	httpsPort           string // "" when 443: left out of redirects
	// listen is [listen] as it was at New: the listeners' settings are
	// fixed at start (trusted_proxies excepted, which Swap applies).
	listen config.Listen
	// proxySources are [listen] proxy_protocol's networks (fixed at start).
	proxySources trustedProxies

	mu       sync.Mutex
	servers  []*http.Server
	fast     *fastServer        // nil until Start
	stopFast context.CancelFunc // ends the fast path's dials and pool
	httpLn   net.Listener
	httpsLn  net.Listener
	h3       *h3Front // nil: [listen] http3 off
	serveErr chan error
}

// New builds a server for cfg. It does not listen until Start.
func New(cfg *config.Config, certs Certificates, logger *zap.Logger) (*Server, error) {
	s := &Server{
		logger:    logger,
		certs:     certs,
		transport: newTransport(),
		upConns:   h1.NewConns(),
		buffers:   newBufferPool(),
		httpAddr:  cfg.Listen.HTTP,
		httpsAddr: cfg.Listen.HTTPS,
		listen:    cfg.Listen,
		serveErr:  make(chan error, 2),
	}
	s.lean = &h1.Transport{Conns: s.upConns, Fallback: s.transport}
	var err error
	if s.proxySources, err = parseSources("listen.proxy_protocol", cfg.Listen.ProxyProtocol); err != nil {
		return nil, err
	}
	s.access.dropped = accesslog.NewDroppedCounter()
	if err := s.Swap(cfg); err != nil {
		return nil, err
	}
	return s, nil
}

// newTransport is the upstream transport shared by every site, so pooled
// upstream connections survive reloads.
func newTransport() *http.Transport {
	return &http.Transport{
		Proxy: nil, // never send upstream traffic through an environment proxy
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     false, // upstreams speak HTTP/1.1; h2 is for clients
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// Swap replaces the routing table with one built from cfg. Requests already
// routed finish on their old site; new ones see the new table. [listen]
// trusted_proxies takes effect too; the other [listen] settings of the proxy
// (addresses, limits, timeouts) are fixed at start, and a change to them is
// logged as a warning.
func (s *Server) Swap(cfg *config.Config) error {
	s.swapMu.Lock()
	defer s.swapMu.Unlock()
	first := s.cfg == nil
	r, names, err := s.build(cfg)
	var commitLog func()
	if err == nil {
		commitLog, err = s.access.apply(cfg.Log, first)
	}
	if err != nil {
		if s.metrics != nil {
			// drop the series made for new sites of the refused config
			for name := range names {
				if !s.siteNames[name] {
					s.metrics.forget(name)
				}
			}
		}
		return err
	}
	s.router.Store(r)
	commitLog()
	s.commitPools(r.pools)
	if s.metrics != nil {
		for name := range s.siteNames {
			if !names[name] {
				s.metrics.forget(name)
			}
		}
	}
	s.cfg, s.siteNames = cfg, names
	if first {
		return nil
	}
	if cfg.Listen.HTTP != s.httpAddr || cfg.Listen.HTTPS != s.httpsAddr {
		s.logger.Warn("listen addresses changed in the config; they take effect at the next restart",
			zap.String("http", cfg.Listen.HTTP), zap.String("https", cfg.Listen.HTTPS))
	}
	if keys := fixedListenChanges(s.listen, cfg.Listen); len(keys) > 0 {
		s.logger.Warn("[listen] settings changed in the config; they take effect at the next restart",
			zap.Strings("keys", keys))
	}
	return nil
}

// commitPools starts the health checks of the pools now in use and stops
// those of the pools a reload dropped or replaced.
func (s *Server) commitPools(pools map[string]*Pool) {
	for _, p := range pools {
		p.health.start()
	}
	for name, old := range s.pools {
		if pools[name] != old {
			old.health.stop()
		}
	}
	s.pools = pools
}

// fixedListenChanges names the [listen] limits and timeouts that differ
// between the running settings and a new config.
func fixedListenChanges(running, next config.Listen) []string {
	var keys []string
	if running.MaxConnections != next.MaxConnections {
		keys = append(keys, "max_connections")
	}
	if running.HeaderTimeout != next.HeaderTimeout {
		keys = append(keys, "header_timeout")
	}
	if running.IdleTimeout != next.IdleTimeout {
		keys = append(keys, "idle_timeout")
	}
	if running.MaxHeaderBytes != next.MaxHeaderBytes {
		keys = append(keys, "max_header_bytes")
	}
	if running.HTTP3 != next.HTTP3 {
		keys = append(keys, "http3")
	}
	if !slices.Equal(running.ProxyProtocol, next.ProxyProtocol) {
		keys = append(keys, "proxy_protocol")
	}
	return keys
}

// build makes the routing table for cfg and returns it with its sites'
// names (on error, the names of the sites built so far).
func (s *Server) build(cfg *config.Config) (*Router, map[string]bool, error) {
	r := newRouter()
	names := make(map[string]bool, len(cfg.Sites))
	trusted, err := parseTrustedProxies(cfg.Listen.TrustedProxies)
	if err != nil {
		return nil, names, err
	}
	r.trusted = trusted
	b := &builder{s: s, pools: map[string]*Pool{}}
	for _, pc := range cfg.Pools {
		if old := s.pools[pc.Name]; old != nil && reflect.DeepEqual(old.cfg, pc) && old.metered == (s.metrics != nil) {
			b.pools[pc.Name] = old
			continue
		}
		p, err := newPool(pc, b)
		if err != nil {
			return nil, names, fmt.Errorf("pool %s: %w", pc.Name, err)
		}
		b.pools[pc.Name] = p
		b.fresh = append(b.fresh, p)
	}
	for _, sc := range cfg.Sites {
		names[sc.Hosts[0]] = true // a site's name, as newSite gives it
		site, err := newSite(sc, b, trusted, s.logger, s.metrics)
		if err != nil {
			return nil, names, fmt.Errorf("site %s: %w", sc.Hosts[0], err)
		}
		for _, h := range sc.Hosts {
			r.add(h, site)
		}
	}
	if od := cfg.OnDemand; od != nil {
		site, err := newSite(config.Site{Hosts: []string{"on-demand"}, Upstreams: od.Upstreams}, b, trusted, s.logger, s.metrics)
		if err != nil {
			return nil, names, fmt.Errorf("on_demand: %w", err)
		}
		names["on-demand"] = true
		r.onDemand = site
	}
	r.validationRedirect = strings.TrimSuffix(cfg.ACME.ValidationRedirect, "/")
	r.pools = b.pools
	return r, names, nil
}

// TLSConfig is the :443 configuration: TLS 1.2 and 1.3 only, AEAD suites with
// forward secrecy only, h2 and HTTP/1.1, and acme-tls/1 for tls-alpn-01.
func (s *Server) TLSConfig() *tls.Config {
	tc := &tls.Config{
		MinVersion: tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		NextProtos:     []string{"h2", "http/1.1", "acme-tls/1"},
		GetCertificate: s.getCertificate,
	}
	// session tickets sealed with keys the fleet shares, so a client that
	// moves between instances behind a load balancer still resumes
	if t, ok := s.certs.(SessionTickets); ok {
		tc.WrapSession, tc.UnwrapSession = t.WrapSession, t.UnwrapSession
	}
	return tc
}

// getCertificate is the certificate source's, noting on the connection
// the certificate it presents, which each request's Host is checked
// against (authority.go). A TCP connection is a certConn; a QUIC
// handshake has no net.Conn, and finds its certConn in the context
// (http3.go).
func (s *Server) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	cert, err := s.certs.GetCertificate(hello)
	if err == nil {
		cc, ok := hello.Conn.(*certConn)
		if !ok {
			cc, _ = hello.Context().Value(certConnKey{}).(*certConn)
		}
		if cc != nil {
			cc.cert = cert
		}
	}
	return cert, err
}

// SessionTickets is implemented by a Certificates that seals TLS session
// tickets with keys shared across a fleet (tlsmgr.Manager does).
type SessionTickets interface {
	WrapSession(tls.ConnectionState, *tls.SessionState) ([]byte, error)
	UnwrapSession(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error)
}

// Start opens the listeners and serves in the background. An address in use
// or not permitted is returned at once, before anything is served: the
// listeners (with http3, the UDP one too) are opened before any serves,
// and a failure closes the others.
//
// Each listener accepts at most [listen] max_connections at once; a client
// has header_timeout to complete the TLS handshake and to send each
// request's headers (at most max_header_bytes, else 431), and a keep-alive
// connection is closed after idle_timeout without a request. Requests whose
// framing is ambiguous are refused (see framing.go).
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ln, err := net.Listen("tcp", s.httpsAddr)
	if err != nil {
		return fmt.Errorf("listen https on %s: %w", s.httpsAddr, listenHint(err))
	}
	var hl net.Listener
	if s.httpAddr != "" {
		hl, err = net.Listen("tcp", s.httpAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen http on %s: %w", s.httpAddr, listenHint(err))
		}
	}
	lim := s.limits()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	// the TCP handler chain, and the HTTP/3 listener's
	var h http.Handler = s.accessLogged(s.refuseMalformed(http.HandlerFunc(s.serveHTTPS)))
	if s.listen.HTTP3 {
		h3, err := s.startHTTP3(port, lim, h)
		if err != nil {
			ln.Close()
			if hl != nil {
				hl.Close()
			}
			return err
		}
		s.h3 = h3
		h = s.accessLogged(withAltSvc(h3.altSvc, s.refuseMalformed(http.HandlerFunc(s.serveHTTPS))))
	}
	s.httpsLn, s.httpLn = ln, hl
	if port != "443" {
		s.httpsPort = port
	}
	limit := func(l net.Listener) net.Listener {
		// the PROXY header comes first on the wire: below the limit and TLS
		l = newProxyListener(l, s.proxySources, lim.headerTimeout, s.logger.Named("proxy_protocol"))
		if lim.maxConns > 0 {
			return newLimitListener(l, lim.maxConns)
		}
		return l
	}
	httpsLog := zap.NewStdLog(s.logger.Named("https"))
	https := s.httpServer(lim, h, httpsLog)
	// A TLSConfig with "h2" makes Serve set up HTTP/2 for the *tls.Conn
	// the listener hands over; the listener does the handshakes with its
	// own copy.
	https.TLSConfig = s.TLSConfig()
	ctx, cancel := context.WithCancel(context.Background())
	s.fast, s.stopFast = newFastServer(ctx, s, lim, s.upConns), cancel
	if s.h3 != nil {
		s.fast.altSvc = s.h3.altSvc
	}
	go s.upConns.Run(ctx)
	tl := newTLSListener(limit(ln), s.TLSConfig(), lim.headerTimeout, lim.headLimit(), httpsLog.Printf, s.fast.serve)
	s.fast.handoff = tl.deliver
	s.servers = append(s.servers, https)
	go func() { s.serveErr <- https.Serve(tl) }()
	if hl != nil {
		plain := s.httpServer(lim, s.accessLogged(s.refuseMalformed(
			s.validationRedirect(s.certs.HTTPChallengeHandler(http.HandlerFunc(s.serveHTTP))))),
			zap.NewStdLog(s.logger.Named("http")))
		s.servers = append(s.servers, plain)
		go func() { s.serveErr <- plain.Serve(&framingListener{Listener: limit(hl), headLimit: lim.headLimit()}) }()
	}
	return nil
}

// limits are the listeners' [listen] settings, with the defaults for a
// config not passed through config.Load.
type limits struct {
	maxConns       int // 0: no limit
	headerTimeout  time.Duration
	idleTimeout    time.Duration
	maxHeaderBytes int
}

func (s *Server) limits() limits {
	l := limits{
		maxConns:       s.listen.MaxConnections,
		headerTimeout:  s.listen.HeaderTimeout.Std(),
		idleTimeout:    s.listen.IdleTimeout.Std(),
		maxHeaderBytes: s.listen.MaxHeaderBytes,
	}
	if l.headerTimeout <= 0 {
		l.headerTimeout = config.DefaultHeaderTimeout
	}
	if l.idleTimeout <= 0 {
		l.idleTimeout = config.DefaultIdleTimeout
	}
	if l.maxHeaderBytes <= 0 {
		l.maxHeaderBytes = config.DefaultMaxHeaderBytes
	}
	return l
}

// headLimit is the longest request head the framing tracker follows:
// net/http reads up to MaxHeaderBytes plus 4 KiB of slack before it answers
// 431, and the tracker must not give up earlier.
func (l limits) headLimit() int { return l.maxHeaderBytes + 8<<10 }

// httpServer is the http.Server of one listener.
//
// There is deliberately no WriteTimeout (nor ReadTimeout): net/http applies
// them to the whole exchange, from the end of the request headers to the
// end of the response, so any value would cut long downloads, server-sent
// event streams and websockets proxied from upstreams. Slow clients are
// bounded instead by ReadHeaderTimeout (nothing is proxied before the
// headers are in), IdleTimeout between requests, TCP keep-alives on
// connections whose peer vanished, and max_connections for the rest.
func (s *Server) httpServer(l limits, h http.Handler, errLog *log.Logger) *http.Server {
	return &http.Server{
		Handler: h,
		// refuseMalformed answers "OPTIONS *" itself, after its checks
		DisableGeneralOptionsHandler: true,
		ReadHeaderTimeout:            l.headerTimeout,
		IdleTimeout:                  l.idleTimeout,
		MaxHeaderBytes:               l.maxHeaderBytes,
		ConnContext:                  connContext,
		ErrorLog:                     errLog,
	}
}

// refuseMalformed answers 400 before anything else (ACME answers,
// redirects, proxying) sees the request:
//   - to a request whose method is not a token, whose target has a byte
//     outside visible ASCII or a fragment, or whose Host is not a valid
//     host. net/http checks these for HTTP/1.x but not for HTTP/2, where
//     ":method: GET /x" or a ":path" with a space would otherwise become a
//     request line that an upstream reads differently;
//   - and closes the connection, to an HTTP/1.x request the framing
//     tracker saw with both Content-Length and Transfer-Encoding, or with
//     Transfer-Encoding in HTTP/1.0.
func (s *Server) refuseMalformed(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if why := malformed(r); why != "" {
			s.logger.Info("refused a malformed request", zap.String("reason", why),
				zap.String("remote", r.RemoteAddr), zap.String("proto", r.Proto))
			http.Error(w, "400 Bad Request: "+why, http.StatusBadRequest)
			return
		}
		if f, ok := r.Context().Value(framingKey{}).(*h1.Framing); ok && r.ProtoMajor == 1 {
			if head, ok := f.Claim(r.Method, r.RequestURI, r.Proto); ok {
				if why := head.Ambiguity(); why != "" {
					s.logger.Info("refused a request with ambiguous framing", zap.String("reason", why),
						zap.String("remote", r.RemoteAddr), zap.String("host", r.Host))
					w.Header().Set("Connection", "close")
					http.Error(w, "400 Bad Request: ambiguous message framing: "+why, http.StatusBadRequest)
					return
				}
			}
		}
		if r.Method == http.MethodOptions && r.RequestURI == "*" {
			// net/http's own answer, which it gives before any handler
			// unless DisableGeneralOptionsHandler is set: set, so that
			// these requests are checked above too.
			w.Header().Set("Content-Length", "0")
			if r.ContentLength != 0 {
				io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, 4<<10))
			}
			return
		}
		next.ServeHTTP(w, r)
	})
}

// malformed says what is wrong with r's method, target or Host, or "".
// A target must be in origin form (/path?query), in absolute form with an
// http or https URL, or "*" for OPTIONS: net/http also takes "a:b" as a
// URL whose opaque part ("b") would become the upstream's target.
func malformed(r *http.Request) string {
	switch {
	case !h1.IsToken(r.Method):
		return "the method is not a token"
	case !h1.ValidTarget(r.RequestURI):
		return "the request target has a character outside visible ASCII, or a fragment"
	case !(r.RequestURI[0] == '/' || r.RequestURI == "*" && r.Method == http.MethodOptions ||
		(r.URL.Scheme == "http" || r.URL.Scheme == "https") && r.URL.Opaque == "" && r.URL.Host != ""):
		return "the request target is neither a path nor an http(s) URL"
	case !httpguts.ValidHostHeader(r.Host):
		return "invalid Host"
	}
	return ""
}

func listenHint(err error) error {
	if errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("%w (ports below 1024 need root or CAP_NET_BIND_SERVICE; or listen on a high port)", err)
	}
	return err
}

// Addrs returns the bound HTTP and HTTPS addresses ("" when not listening).
func (s *Server) Addrs() (httpAddr, httpsAddr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.httpLn != nil {
		httpAddr = s.httpLn.Addr().String()
	}
	if s.httpsLn != nil {
		httpsAddr = s.httpsLn.Addr().String()
	}
	return
}

// Shutdown stops accepting on every listener at once, lets in-flight
// requests finish until ctx ends, then closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	servers, fast, stopFast, h3 := s.servers, s.fast, s.stopFast, s.h3
	s.mu.Unlock()
	// Shut the servers down together: one at a time would keep accepting on
	// the second listener while the first drains.
	errs := make([]error, len(servers)+2)
	var wg sync.WaitGroup
	if h3 != nil {
		wg.Go(func() { errs[len(servers)+1] = h3.shutdown(ctx) })
	}
	if fast != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[len(servers)] = fast.shutdown(ctx)
		}()
	}
	for i, srv := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Shutdown(ctx); err != nil {
				errs[i] = err
				srv.Close()
			}
		}()
	}
	wg.Wait()
	s.access.current().Close() // what it holds is written
	s.swapMu.Lock()
	for _, p := range s.pools {
		p.health.stop()
	}
	s.swapMu.Unlock()
	s.transport.CloseIdleConnections()
	if stopFast != nil {
		stopFast() // closes the fast path's idle upstream connections
	}
	return errors.Join(errs...)
}

// ValidationHostParam carries the validated hostname to the central
// validation server in a redirected http-01 request.
const ValidationHostParam = "portico_host"

// acmeChallengePath is where ACME http-01 requests arrive.
const acmeChallengePath = "/.well-known/acme-challenge/"

// validationRedirect sends ACME http-01 requests to the central validation
// server when [acme] validation_redirect is set (the frontend answers none
// itself); a Portico there with the same storage answers them.
func (s *Server) validationRedirect(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if to := s.router.Load().validationRedirect; to != "" && strings.HasPrefix(r.URL.Path, acmeChallengePath) {
			// the answer is stored under the name being validated, which
			// the redirected request's Host no longer carries: pass it on
			http.Redirect(w, r, to+r.URL.EscapedPath()+"?"+url.Values{ValidationHostParam: {stripPort(r.Host)}}.Encode(), http.StatusFound)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) serveHTTPS(w http.ResponseWriter, r *http.Request) {
	if cc, _ := r.Context().Value(certConnKey{}).(*certConn); !cc.covers(r.Host) {
		misdirected(w)
		return
	}
	rt := s.router.Load()
	site := rt.Lookup(r.Host)
	if site == nil && rt.onDemand != nil && r.TLS != nil && strings.EqualFold(stripPort(r.Host), r.TLS.ServerName) {
		// an on-demand hostname: the handshake got it a certificate, so
		// the ask endpoint allowed it
		site = rt.onDemand
	}
	if site == nil {
		http.Error(w, "404 Not Found: no site is configured for this host", http.StatusNotFound)
		return
	}
	site.ServeHTTP(w, r)
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	rt := s.router.Load()
	site := rt.Lookup(r.Host)
	if site == nil && rt.onDemand != nil && stripPort(r.Host) != "" {
		site = &Site{redirect: true} // on-demand hostnames are served over HTTPS
	}
	if site == nil {
		http.Error(w, "404 Not Found: no site is configured for this host", http.StatusNotFound)
		return
	}
	if site.redirect {
		host := stripPort(r.Host)
		if s.httpsPort != "" {
			host = net.JoinHostPort(host, s.httpsPort)
		} else if strings.IndexByte(host, ':') >= 0 {
			host = "[" + host + "]" // IPv6 literal
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
		return
	}
	site.ServeHTTP(w, r)
}
