package proxy

import (
	"errors"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"

	"github.com/portico-proxy/portico/proxy/h1"
)

// Site serves one [[site]]: a fixed answer or its upstream pool, with HSTS
// on HTTPS responses when configured.
type Site struct {
	name     string // first host, for logs
	redirect bool
	hsts     string // Strict-Transport-Security value, or ""
	respond  []byte
	pool     *Pool
	proxy    *httputil.ReverseProxy
	metrics  *siteMetrics // nil when metrics are off
	trusted  trustedProxies
	logger   *zap.Logger // with the site's name
}

func newSite(sc config.Site, transport http.RoundTripper, buffers httputil.BufferPool, trusted trustedProxies, logger *zap.Logger, m *metrics) (*Site, error) {
	s := &Site{name: sc.Hosts[0], redirect: sc.Redirects(), trusted: trusted}
	s.logger = logger.With(zap.String("site", s.name))
	if m != nil {
		s.metrics = m.forSite(s.name)
	}
	if d := sc.HSTSMaxAge.Std(); d > 0 {
		s.hsts = "max-age=" + strconv.FormatInt(int64(d/time.Second), 10)
	}
	if sc.Respond != "" {
		s.respond = []byte(sc.Respond)
		return s, nil
	}
	pool, err := newPool(sc.Upstreams, transport)
	if err != nil {
		return nil, err
	}
	s.pool = pool
	log := s.logger
	// ReverseProxy logs here what it cannot answer with an error status,
	// such as an upstream that failed in the middle of a response body.
	errLog, _ := zap.NewStdLogAt(log, zap.WarnLevel) // fails only for an unknown level
	s.proxy = &httputil.ReverseProxy{
		// without a pool every response allocates a fresh 32 KiB copy
		// buffer: 81% of the bytes allocated per request (pprof)
		BufferPool: buffers,
		Rewrite: func(pr *httputil.ProxyRequest) {
			// Rewrite starts from a request without hop-by-hop and
			// X-Forwarded-* headers: the client's are replaced, unless
			// it is a trusted proxy.
			trusted.setForwarded(pr)
			pr.Out.Host = pr.In.Host
		},
		Transport: pool,
		ErrorLog:  errLog,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var down *UpstreamsDownError
			if errors.As(err, &down) {
				log.Error("every upstream is down", zap.Strings("upstreams", down.Failures))
				http.Error(w, "502 Bad Gateway: no upstream of this site is reachable", http.StatusBadGateway)
				return
			}
			// (a refused body cancels the request before the transport
			// sees why: net/http cancels it on any read error)
			if errors.Is(err, h1.ErrClientBody) || bodyRefused(r) {
				// the request body was cut short or refused: the client's
				// fault, and its connection cannot go on
				log.Info("refused a request body", zap.String("path", r.URL.Path), zap.Error(err))
				if r.ProtoMajor == 1 {
					w.Header().Set("Connection", "close")
				}
				http.Error(w, "400 Bad Request: the request body was malformed or ended early", http.StatusBadRequest)
				return
			}
			if r.Context().Err() != nil {
				return // the client went away
			}
			log.Warn("upstream request failed", zap.String("path", r.URL.Path), zap.Error(err))
			http.Error(w, "502 Bad Gateway: the upstream did not answer", http.StatusBadGateway)
		},
	}
	return s, nil
}

// ServeHTTP answers a request routed to this site, counting it when metrics
// are on.
func (s *Site) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.metrics == nil {
		s.serve(w, r)
		return
	}
	sw := &statusWriter{ResponseWriter: w}
	// deferred, so that a response aborted mid-body (http.ErrAbortHandler)
	// is counted too
	defer s.metrics.done(sw, time.Now(), s.proxy != nil)
	s.serve(sw, r)
}

func (s *Site) serve(w http.ResponseWriter, r *http.Request) {
	if s.hsts != "" && r.TLS != nil {
		w.Header()["Strict-Transport-Security"] = []string{s.hsts}
	}
	if s.respond != nil {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write(s.respond)
		return
	}
	s.proxy.ServeHTTP(w, r)
}

// bufferPool lends the 32 KiB buffers ReverseProxy copies bodies through.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte    { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }

// newBufferPool makes the pool a Server shares among its sites: one pool
// keeps the fewest buffers alive.
func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32*1024); return &b }}}
}
