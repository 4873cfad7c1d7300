package proxy

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/proxy/accesslog"
)

// The access log ([log] access): one record per request, written by the
// path that answered it. The fast path fills its record from buffers it
// keeps per connection (no allocation); the net/http paths fill theirs in
// accessLogged, the outermost handler, so that every answer, Portico's own
// refusals included, is logged once.

// accessLog holds the running access log and the counter of the lines it
// dropped, which outlives the logs a reload replaces.
type accessLog struct {
	log     atomic.Pointer[accesslog.Log] // nil: off
	cfg     config.Log
	dropped prometheus.Counter
}

// apply opens the log cfg names when it differs from the running one, and
// returns a function that makes it current and closes the old one; the
// caller calls it only once the rest of the config is accepted. An error
// (a file that cannot be opened) leaves the running log as it was.
func (a *accessLog) apply(cfg config.Log, first bool) (commit func(), err error) {
	if !first && cfg == a.cfg {
		return func() {}, nil
	}
	l, err := accesslog.Open(cfg.Access, cfg.AccessFormat, a.dropped)
	if err != nil {
		return nil, fmt.Errorf("log.access: %w", err)
	}
	return func() {
		old := a.log.Swap(l)
		a.cfg = cfg
		if old != nil {
			old.Close() // what it holds is written first
		}
	}, nil
}

// current returns the running log, nil when it is off.
func (a *accessLog) current() *accesslog.Log { return a.log.Load() }

// ReopenAccessLog reopens the access log's file at its path, for logrotate
// (SIGUSR1): lines written after it go to the new file.
func (s *Server) ReopenAccessLog() error {
	return s.access.current().Reopen()
}

// accessLogged logs every request that next answers on the net/http paths.
func (s *Server) accessLogged(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l := s.access.current()
		if l == nil {
			next.ServeHTTP(w, r)
			return
		}
		st := &requestState{start: time.Now()}
		r = r.WithContext(context.WithValue(r.Context(), requestStateKey{}, st))
		sw := &statusWriter{ResponseWriter: w}
		// deferred: an answer aborted mid-body is logged too
		defer func() {
			if st.vars.requestID == nil {
				rt := s.router.Load()
				st.vars.clientIP = []byte(rt.trusted.clientIP(r))
				st.vars.requestID = rt.trusted.requestID(r)
			}
			rec := accesslog.Record{
				Time:      st.start,
				Host:      bytesOf(r.Host),
				Method:    bytesOf(r.Method),
				URI:       bytesOf(r.RequestURI),
				Proto:     r.Proto,
				Status:    sw.status,
				Bytes:     sw.bytes,
				Duration:  time.Since(st.start),
				Upstream:  st.upstream,
				Site:      st.site,
				Route:     st.route,
				RequestID: st.vars.requestID,
				UserAgent: bytesOf(r.UserAgent()),
				Referer:   bytesOf(r.Referer()),
			}
			if rec.Status == 0 && !sw.hijacked {
				rec.Status = http.StatusOK // nothing written: net/http sends an empty 200
			}
			rec.RemoteIP, _ = netip.ParseAddr(string(st.vars.clientIP))
			if !st.upStart.IsZero() {
				rec.UpstreamDuration = time.Since(st.upStart)
			}
			if r.TLS != nil {
				rec.TLSVersion = r.TLS.Version
			}
			l.Write(&rec)
		}()
		next.ServeHTTP(sw, r)
	})
}

// logFast writes the fast path's record of the request just answered.
func (f *fastServer) logFast(l *accesslog.Log, c *fastConn, site *Site, status int, start time.Time) {
	rec := &c.rec
	*rec = accesslog.Record{
		Time:      start,
		Host:      c.logHost,
		Method:    c.logMethod,
		URI:       c.logURI,
		Proto:     "HTTP/1.1",
		Status:    status,
		Bytes:     c.sent,
		Duration:  time.Since(start),
		Upstream:  c.upAddr,
		Site:      site.name,
		Route:     c.route.path,
		RequestID: c.reqID,
		UserAgent: c.logUA,
		Referer:   c.logRef,
	}
	rec.RemoteIP, _ = netip.ParseAddr(unsafe.String(unsafe.SliceData(c.client), len(c.client)))
	if !c.upStart.IsZero() {
		rec.UpstreamDuration = time.Since(c.upStart)
	}
	rec.TLSVersion = c.tlsVersion
	l.Write(rec)
}

// bytesOf is s's bytes, for a record the log formats before it returns
// (it keeps nothing).
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }
