package proxy

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// codeClasses are the values of the code_class label, indexed by status/100-1.
var codeClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// metrics are the proxy's per-site request metrics, created by
// Server.RegisterMetrics.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec

	upHealthy  *prometheus.GaugeVec
	upRequests *prometheus.CounterVec
	upInFlight *prometheus.GaugeVec
}

func newMetrics() *metrics {
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_requests_total",
			Help: "Requests answered by a site, by site (its first host) and status code class.",
		}, []string{"site", "code_class"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "portico_upstream_duration_seconds",
			Help: "Time from routing a request to a site's upstreams until its response is sent, by site; upgraded (websocket) connections are not observed.",
			// The default buckets, 5ms to 10s, suit web upstreams.
			Buckets: prometheus.DefBuckets,
		}, []string{"site"}),
		upHealthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "portico_upstream_healthy",
			Help: "Whether an upstream of a pool may be picked (1) or is out after failed health checks or attempts (0), by pool and upstream.",
		}, []string{"pool", "upstream"}),
		upRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_upstream_requests_total",
			Help: "Answers from an upstream of a pool, by pool, upstream and status code class.",
		}, []string{"pool", "upstream", "code_class"}),
		upInFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "portico_upstream_in_flight",
			Help: "Requests an upstream of a pool is answering now, by pool and upstream.",
		}, []string{"pool", "upstream"}),
	}
}

func (m *metrics) register(reg prometheus.Registerer) error {
	var done []prometheus.Collector
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.upHealthy, m.upRequests, m.upInFlight} {
		if err := reg.Register(c); err != nil {
			for _, d := range done {
				reg.Unregister(d)
			}
			return err
		}
		done = append(done, c)
	}
	return nil
}

// upstreamMetrics are one upstream's series in one pool. A nil
// *upstreamMetrics (metrics off) records nothing.
type upstreamMetrics struct {
	healthy   prometheus.Gauge
	inFlightG prometheus.Gauge
	codes     [len(codeClasses)]prometheus.Counter
}

// forUpstream returns an upstream's series, made when its pool is built.
func (m *metrics) forUpstream(pool, upstream string) *upstreamMetrics {
	um := &upstreamMetrics{
		healthy:   m.upHealthy.WithLabelValues(pool, upstream),
		inFlightG: m.upInFlight.WithLabelValues(pool, upstream),
	}
	for i, class := range codeClasses {
		um.codes[i] = m.upRequests.WithLabelValues(pool, upstream, class)
	}
	return um
}

func (um *upstreamMetrics) setHealthy(ok bool) {
	if um == nil {
		return
	}
	if ok {
		um.healthy.Set(1)
	} else {
		um.healthy.Set(0)
	}
}

func (um *upstreamMetrics) inFlight(d float64) {
	if um != nil {
		um.inFlightG.Add(d)
	}
}

// answered counts an upstream's answer by its status class.
func (um *upstreamMetrics) answered(status int) {
	if um != nil && status >= 100 {
		um.codes[min(max(status/100-1, 0), len(codeClasses)-1)].Inc()
	}
}

func (m *metrics) unregister(reg prometheus.Registerer) {
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.upHealthy, m.upRequests, m.upInFlight} {
		reg.Unregister(c)
	}
}

// forSite returns the site's series, created once when the router is built so
// that a request only increments a counter it already holds.
func (m *metrics) forSite(name string) *siteMetrics {
	sm := &siteMetrics{duration: m.duration.WithLabelValues(name)}
	for i, class := range codeClasses {
		sm.codes[i] = m.requests.WithLabelValues(name, class)
	}
	return sm
}

// forget drops a site's series once it is no longer in the config, so that a
// fleet whose sites come and go does not export them forever.
func (m *metrics) forget(name string) {
	for _, class := range codeClasses {
		m.requests.DeleteLabelValues(name, class)
	}
	m.duration.DeleteLabelValues(name)
}

// siteMetrics are one site's series.
type siteMetrics struct {
	codes    [len(codeClasses)]prometheus.Counter
	duration prometheus.Observer
}

// done records a request the site has answered. proxied says whether it went
// to the upstreams (a fixed respond answer has no upstream duration).
func (sm *siteMetrics) done(w *statusWriter, start time.Time, proxied bool) {
	status := w.status
	if status == 0 {
		status = http.StatusOK // nothing written: net/http sends an empty 200
	}
	sm.observe(status, start, proxied && !w.hijacked)
}

// observe counts an answer with status and, when timed, records the time
// since start. Status 0 means nothing was sent (the client went away before
// its request was whole): no answer is counted.
func (sm *siteMetrics) observe(status int, start time.Time, timed bool) {
	if status > 0 {
		sm.codes[min(max(status/100-1, 0), len(codeClasses)-1)].Inc()
	}
	if timed {
		sm.duration.Observe(time.Since(start).Seconds())
	}
}

// statusWriter notes the status code a site sends. It keeps flushing,
// hijacking (websockets) and the rest of http.ResponseController working.
type statusWriter struct {
	http.ResponseWriter
	status   int   // final status sent; 0 until then
	bytes    int64 // body bytes written
	hijacked bool
}

// WriteHeader records the final status; 1xx informational answers are
// passed on without being taken for it.
func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// FlushError flushes buffered data to the client (http.ResponseController).
func (w *statusWriter) FlushError() error {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Flush is http.Flusher, for handlers that assert it.
func (w *statusWriter) Flush() { w.FlushError() }

// Hijack takes over the connection for a protocol switch, which answers 101.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.status, w.hijacked = http.StatusSwitchingProtocols, true
	}
	return conn, brw, err
}

// Unwrap gives http.ResponseController the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// RegisterMetrics creates the proxy's request metrics on reg and starts
// counting: portico_requests_total{site,code_class} and
// portico_upstream_duration_seconds{site}, where site is a site's first
// host. Sites removed by a reload lose their series. It may be called once,
// before or after Start.
func (s *Server) RegisterMetrics(reg prometheus.Registerer) error {
	s.swapMu.Lock()
	defer s.swapMu.Unlock()
	if s.metrics != nil {
		return errors.New("proxy metrics are already registered")
	}
	m := newMetrics()
	if err := m.register(reg); err != nil {
		return err
	}
	if err := reg.Register(s.access.dropped); err != nil {
		m.unregister(reg)
		return err
	}
	s.metrics = m
	if s.cfg == nil {
		return nil
	}
	// Rebuild the table so every site holds its series; requests already
	// routed finish uncounted on the old one.
	r, names, err := s.build(s.cfg)
	if err != nil {
		return err // cannot happen: the same config built before
	}
	s.router.Store(r)
	s.commitPools(r.pools)
	s.siteNames = names
	return nil
}
