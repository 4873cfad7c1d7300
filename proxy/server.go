// Package proxy holds Portico's listeners: :80 for ACME http-01 answers and
// redirects, :443 for TLS, routing by Host to sites and reverse proxying to
// their upstreams, graceful reload and shutdown. Certificates come from a
// Certificates implementation (tlsmgr.Manager); proxy never talks ACME or
// storage itself.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
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
	transport *http.Transport
	router    atomic.Pointer[Router]

	swapMu    sync.Mutex      // serialises Swap and RegisterMetrics
	cfg       *config.Config  // the config of the current router
	metrics   *metrics        // nil until RegisterMetrics
	siteNames map[string]bool // sites of the current router, for metrics

	httpAddr, httpsAddr string
	httpsPort           string // "" when 443: left out of redirects

	mu       sync.Mutex
	servers  []*http.Server
	httpLn   net.Listener
	httpsLn  net.Listener
	serveErr chan error
}

// New builds a server for cfg. It does not listen until Start.
func New(cfg *config.Config, certs Certificates, logger *zap.Logger) (*Server, error) {
	s := &Server{
		logger:    logger,
		certs:     certs,
		transport: newTransport(),
		httpAddr:  cfg.Listen.HTTP,
		httpsAddr: cfg.Listen.HTTPS,
		serveErr:  make(chan error, 2),
	}
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
// routed finish on their old site; new ones see the new table. Listener
// addresses are fixed at start.
func (s *Server) Swap(cfg *config.Config) error {
	s.swapMu.Lock()
	defer s.swapMu.Unlock()
	r, names, err := s.build(cfg)
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
	if s.metrics != nil {
		for name := range s.siteNames {
			if !names[name] {
				s.metrics.forget(name)
			}
		}
	}
	s.cfg, s.siteNames = cfg, names
	if s.httpAddr != "" && (cfg.Listen.HTTP != s.httpAddr || cfg.Listen.HTTPS != s.httpsAddr) {
		s.logger.Warn("listen addresses changed in the config; they take effect at the next restart",
			zap.String("http", cfg.Listen.HTTP), zap.String("https", cfg.Listen.HTTPS))
	}
	return nil
}

// build makes the routing table for cfg and returns it with its sites'
// names (on error, the names of the sites built so far).
func (s *Server) build(cfg *config.Config) (*Router, map[string]bool, error) {
	r := newRouter()
	names := make(map[string]bool, len(cfg.Sites))
	for _, sc := range cfg.Sites {
		names[sc.Hosts[0]] = true // a site's name, as newSite gives it
		site, err := newSite(sc, s.transport, s.logger, s.metrics)
		if err != nil {
			return nil, names, fmt.Errorf("site %s: %w", sc.Hosts[0], err)
		}
		for _, h := range sc.Hosts {
			r.add(h, site)
		}
	}
	if od := cfg.OnDemand; od != nil {
		site, err := newSite(config.Site{Hosts: []string{"on-demand"}, Upstreams: od.Upstreams}, s.transport, s.logger, s.metrics)
		if err != nil {
			return nil, names, fmt.Errorf("on_demand: %w", err)
		}
		names["on-demand"] = true
		r.onDemand = site
	}
	r.validationRedirect = strings.TrimSuffix(cfg.ACME.ValidationRedirect, "/")
	return r, names, nil
}

// TLSConfig is the :443 configuration: TLS 1.2 and 1.3 only, AEAD suites with
// forward secrecy only, h2 and HTTP/1.1, and acme-tls/1 for tls-alpn-01.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{
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
		GetCertificate: s.certs.GetCertificate,
	}
}

// Start opens the listeners and serves in the background. An address in use
// or not permitted is returned at once, before anything is served: both
// listeners are opened before either serves, and a failure closes the other.
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
	s.httpsLn, s.httpLn = ln, hl
	if _, port, err := net.SplitHostPort(ln.Addr().String()); err == nil && port != "443" {
		s.httpsPort = port
	}
	https := &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTPS),
		TLSConfig:         s.TLSConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          zap.NewStdLog(s.logger.Named("https")),
	}
	s.servers = append(s.servers, https)
	go func() { s.serveErr <- https.ServeTLS(ln, "", "") }()
	if hl != nil {
		plain := &http.Server{
			Handler:           s.validationRedirect(s.certs.HTTPChallengeHandler(http.HandlerFunc(s.serveHTTP))),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          zap.NewStdLog(s.logger.Named("http")),
		}
		s.servers = append(s.servers, plain)
		go func() { s.serveErr <- plain.Serve(hl) }()
	}
	return nil
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
	servers := s.servers
	s.mu.Unlock()
	// Shut the servers down together: one at a time would keep accepting on
	// the second listener while the first drains.
	errs := make([]error, len(servers))
	var wg sync.WaitGroup
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
	s.transport.CloseIdleConnections()
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
