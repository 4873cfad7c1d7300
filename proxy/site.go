package proxy

import (
	"context"
	"errors"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"

	"github.com/portico-proxy/portico/proxy/h1"
	"github.com/portico-proxy/portico/proxy/route"
)

// Site serves one [[site]]: its routes and default action, with HSTS on
// HTTPS responses when configured.
type Site struct {
	name     string // first host, for logs
	redirect bool
	hsts     string               // Strict-Transport-Security value, or ""
	routes   *route.Table[*Route] // nil: none
	def      *Route               // the default action; nil: 404
	metrics  *siteMetrics         // nil when metrics are off
	trusted  trustedProxies
	logger   *zap.Logger // with the site's name
	maxBody  int64       // max_body_bytes; 0: no limit
	compress []string    // [[site]] compress: codings in order; nil: none
}

func newSite(sc config.Site, b *builder, trusted trustedProxies, logger *zap.Logger, m *metrics) (*Site, error) {
	s := &Site{name: sc.Hosts[0], redirect: sc.Redirects(), trusted: trusted, maxBody: sc.MaxBodyBytes, compress: sc.Compress}
	s.logger = logger.With(zap.String("site", s.name))
	if m != nil {
		s.metrics = m.forSite(s.name)
	}
	if d := sc.HSTSMaxAge.Std(); d > 0 {
		s.hsts = "max-age=" + strconv.FormatInt(int64(d/time.Second), 10)
	}
	if err := s.buildRoutes(sc, b); err != nil {
		return nil, err
	}
	return s, nil
}

// reverseProxy is the net/http path's proxy for a route to its pool.
func (s *Site) reverseProxy(rt *Route, b *builder) *httputil.ReverseProxy {
	log := s.logger
	// ReverseProxy logs here what it cannot answer with an error status,
	// such as an upstream that failed in the middle of a response body.
	errLog, _ := zap.NewStdLogAt(log, zap.WarnLevel) // fails only for an unknown level
	return &httputil.ReverseProxy{
		// without a pool every response allocates a fresh 32 KiB copy
		// buffer: 81% of the bytes allocated per request (pprof)
		BufferPool: b.s.buffers,
		Rewrite: func(pr *httputil.ProxyRequest) {
			// Rewrite starts from a request without hop-by-hop and
			// X-Forwarded-* headers: the client's are replaced, unless
			// it is a trusted proxy.
			s.trusted.setForwarded(pr)
			pr.Out.Host = pr.In.Host
			st := stateOf(pr.In)
			pr.Out.Header["X-Request-Id"] = []string{string(st.vars.requestID)}
			if rt.strip != "" {
				p := route.StripPrefix(requestPath(pr.In), rt.strip)
				pr.Out.URL.RawPath = p
				if u, err := url.PathUnescape(p); err == nil {
					pr.Out.URL.Path = u
				}
			}
			rt.rules.applyRequest(pr.Out.Header, &st.vars)
		},
		ModifyResponse: func(resp *http.Response) error {
			rt.rules.applyResponse(resp.Header, &stateOf(resp.Request).vars)
			return nil
		},
		Transport: rt.pool,
		ErrorLog:  errLog,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var down *UpstreamsDownError
			if errors.As(err, &down) {
				log.Error(logUpstreamsDown, zap.Strings("upstreams", down.Failures))
				http.Error(w, msgUpstreamsDown, http.StatusBadGateway)
				return
			}
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				tooLarge(w, r)
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
				http.Error(w, msgBodyRefused, http.StatusBadRequest)
				return
			}
			if r.Context().Err() != nil {
				return // the client went away
			}
			log.Warn(logUpstreamFailed, zap.String("path", r.URL.Path), zap.Error(err))
			http.Error(w, msgUpstreamFailed, http.StatusBadGateway)
		},
	}
}

// ServeHTTP answers a request routed to this site (net/http's paths),
// counting it when metrics are on.
func (s *Site) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.hsts != "" && r.TLS != nil {
		w.Header()["Strict-Transport-Security"] = []string{s.hsts}
	}
	rt := s.match(requestPath(r))
	if rt == nil {
		http.Error(w, "404 Not Found: no route of this site takes this path", http.StatusNotFound)
		return
	}
	if s.maxBody > 0 {
		if r.ContentLength > s.maxBody {
			tooLarge(w, r)
			return
		}
		// a body of unknown length is cut at the limit: the transport's
		// read fails and the error handler answers 413
		r.Body = http.MaxBytesReader(w, r.Body, s.maxBody)
	}
	st, ok := r.Context().Value(requestStateKey{}).(*requestState)
	if !ok {
		st = &requestState{}
		r = r.WithContext(context.WithValue(r.Context(), requestStateKey{}, st))
	}
	st.vars.clientIP = []byte(s.trusted.clientIP(r))
	st.vars.host = []byte(stripPort(r.Host))
	st.vars.requestID = s.trusted.requestID(r)
	st.site, st.route = s.name, rt.path
	if s.metrics == nil {
		s.serveRoute(w, r, rt)
		return
	}
	sw := &statusWriter{ResponseWriter: w}
	// deferred, so that a response aborted mid-body (http.ErrAbortHandler)
	// is counted too
	defer s.metrics.done(sw, time.Now(), rt.action == actProxy)
	s.serveRoute(sw, r, rt)
}

// tooLarge answers 413 to a body over max_body_bytes and ends an HTTP/1.x
// connection (the rest of the body is not read).
func tooLarge(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
	}
	http.Error(w, "413 Request Entity Too Large: the body is longer than this site takes", http.StatusRequestEntityTooLarge)
}

// requestState is what the core decided for a request on the net/http
// path, for the stages after routing (forwarding, header rules, logs).
type requestState struct {
	vars        ruleVars
	start       time.Time // the request's head was read (access log on)
	site, route string    // where it was routed
	upstream    string    // the upstream that got it last, "" for none
	upStart     time.Time // when it was sent there first
}

type requestStateKey struct{}

// stateOf returns r's state (an empty one outside Site.ServeHTTP).
func stateOf(r *http.Request) *requestState {
	if st, ok := r.Context().Value(requestStateKey{}).(*requestState); ok {
		return st
	}
	return &requestState{}
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
