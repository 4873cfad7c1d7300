package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/proxy/h1"
)

// A Pool is upstreams and how requests are spread over them and routed
// around the failing ones, as one [[pool]] configures (a site's or a
// route's own upstreams make an unnamed pool with the defaults). Both
// request paths pick through it: the fast path for plain-http pools,
// Pool.RoundTrip for net/http's.
//
//   - selection (selection.go's policies): round_robin, least_conn
//     (requests in flight), ip_hash (the client after trusted_proxies),
//     random_two (the less loaded of two at random), first;
//   - passive checks: max_fails failed attempts within fail_window take an
//     upstream out for fail_window;
//   - active checks (health.go): health_path every health_interval, one
//     checker per pool per process, shared by every site using the pool;
//   - when every upstream is out, requests go to them all the same (fail
//     open, as nginx does), and the log says so once a minute;
//   - retries: another upstream for an idempotent request after any
//     failure, and for any request that never reached an upstream.
type Pool struct {
	name      string // "" for a site's or route's own upstreams
	cfg       config.Pool
	upstreams []*upstream
	// addrs are the upstreams' host:port for the HTTP/1.1 fast path; nil
	// when one is not plain http (https and h2c go through net/http).
	addrs   []string
	policy  policy
	next    atomic.Uint64
	limits  h1.Limits
	retries int
	logger  *zap.Logger

	allDownLogged atomic.Int64 // unix seconds of the last "every upstream is down"
	health        *healthChecker
	metered       bool // built with metrics on
}

// upstream is one upstream of a pool and what the pool knows of it.
type upstream struct {
	url       *url.URL
	addr      string // host:port
	transport http.RoundTripper
	label     string // for logs and metrics: the URL without credentials

	inFlight  atomic.Int64
	down      atomic.Bool  // active checks failed it
	outUntil  atomic.Int64 // passive checks: out until this unix nano
	mu        sync.Mutex
	failTimes []time.Time // failed attempts within the window

	m *upstreamMetrics // nil when metrics are off
}

// available reports whether the upstream may be picked.
func (u *upstream) available(now int64) bool {
	return !u.down.Load() && u.outUntil.Load() <= now
}

// fail records a failed attempt (passive check).
func (p *Pool) fail(u *upstream, now time.Time) {
	maxFails := 0
	if p.cfg.MaxFails != nil {
		maxFails = *p.cfg.MaxFails
	}
	if maxFails == 0 {
		return
	}
	window := p.cfg.FailWindow.Std()
	u.mu.Lock()
	keep := u.failTimes[:0]
	for _, t := range u.failTimes {
		if now.Sub(t) < window {
			keep = append(keep, t)
		}
	}
	u.failTimes = append(keep, now)
	out := len(u.failTimes) >= maxFails
	if out {
		u.failTimes = u.failTimes[:0]
	}
	u.mu.Unlock()
	if out {
		u.outUntil.Store(now.Add(window).UnixNano())
		p.logger.Warn("upstream taken out after failed attempts", zap.String("upstream", u.label),
			zap.Int("max_fails", maxFails), zap.Duration("for", window))
		u.m.setHealthy(false)
	}
}

// newPool builds a pool for cfg; b gives the transports of https and h2c
// upstreams.
func newPool(cfg config.Pool, b *builder) (*Pool, error) {
	p := &Pool{name: cfg.Name, cfg: cfg, logger: b.s.logger.With(zap.String("pool", poolLabel(cfg)))}
	p.policy = policies[cfg.Policy]
	if p.policy == nil {
		p.policy = policies[config.DefaultPolicy]
	}
	p.limits = h1.Limits{DialTimeout: cfg.DialTimeout.Std(), ResponseHeaderTimeout: cfg.ResponseHeaderTimeout.Std()}
	p.retries = config.DefaultRetries
	if cfg.Retries != nil {
		p.retries = *cfg.Retries
	}
	var tlsT, h2cT http.RoundTripper
	for _, r := range cfg.Upstreams {
		u, err := url.Parse(r)
		if err != nil {
			return nil, fmt.Errorf("upstream %q: %w", r, err)
		}
		up := &upstream{url: u, addr: u.Host, label: u.Redacted()}
		switch u.Scheme {
		case "http":
			if u.Port() == "" {
				up.addr = net.JoinHostPort(u.Hostname(), "80")
			}
			up.transport = b.s.lean
		case "https":
			if u.Port() == "" {
				up.addr = net.JoinHostPort(u.Hostname(), "443")
			}
			if tlsT == nil {
				if tlsT, err = tlsTransport(cfg, b.s.transport); err != nil {
					return nil, err
				}
			}
			up.transport = tlsT
		case "h2c":
			if h2cT == nil {
				h2cT = h2cTransport(cfg)
			}
			up.transport = h2cT
		default:
			return nil, fmt.Errorf("upstream %q: scheme %q", r, u.Scheme)
		}
		p.upstreams = append(p.upstreams, up)
	}
	for _, u := range p.upstreams {
		if u.url.Scheme != "http" {
			p.addrs = nil
			break
		}
		p.addrs = append(p.addrs, u.addr)
	}
	if b.s.metrics != nil {
		p.metered = true
		for _, u := range p.upstreams {
			u.m = b.s.metrics.forUpstream(poolLabel(cfg), u.label)
			u.m.setHealthy(true)
		}
	}
	if cfg.HealthPath != "" {
		p.health = newHealthChecker(p)
	}
	return p, nil
}

// poolLabel names a pool in logs and metrics: its name, or its first
// upstream for a site's or route's own.
func poolLabel(cfg config.Pool) string {
	if cfg.Name != "" {
		return cfg.Name
	}
	if len(cfg.Upstreams) > 0 {
		if u, err := url.Parse(cfg.Upstreams[0]); err == nil {
			return u.Redacted()
		}
	}
	return ""
}

// tlsTransport is the transport of a pool's https:// upstreams: the shared
// one's settings, the pool's CA, server name and client certificate, and
// HTTP/2 when the upstream offers it.
func tlsTransport(cfg config.Pool, base *http.Transport) (*http.Transport, error) {
	t := base.Clone()
	t.ForceAttemptHTTP2 = true
	tc := &tls.Config{ServerName: cfg.TLSServerName, MinVersion: tls.VersionTLS12}
	if cfg.TLSCA != "" {
		pem, err := os.ReadFile(cfg.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("pool %s: tls_ca: %w", cfg.Name, err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("pool %s: tls_ca %s holds no PEM certificate", cfg.Name, cfg.TLSCA)
		}
	}
	if cfg.TLSClientCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSClientCert, cfg.TLSClientKey)
		if err != nil {
			return nil, fmt.Errorf("pool %s: tls_client_cert: %w", cfg.Name, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	t.TLSClientConfig = tc
	return t, nil
}

// h2cTransport is the transport of a pool's h2c:// upstreams: HTTP/2
// without TLS (gRPC services), dialled within dial_timeout.
func h2cTransport(cfg config.Pool) http.RoundTripper {
	d := &net.Dialer{Timeout: cfg.DialTimeout.Std(), KeepAlive: 30 * time.Second}
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	return &http.Transport{
		Proxy:       nil,
		DialContext: d.DialContext,
		Protocols:   &protocols,
		// pings find a connection whose upstream vanished
		HTTP2: &http.HTTP2Config{SendPingTimeout: 30 * time.Second},
	}
}

// pick returns the upstream for a request's next attempt, among those not
// in tried (a bit per upstream index), by the pool's policy, or -1 when
// every upstream was tried. When no untried upstream is available (every
// one is out), it picks among them all the same: fail open.
func (p *Pool) pick(client []byte, tried uint64) int {
	now := time.Now().UnixNano()
	avail := uint64(0)
	untried := uint64(0)
	for i, u := range p.upstreams {
		if i < 64 && tried&(1<<i) != 0 {
			continue
		}
		untried |= bit(i)
		if u.available(now) {
			avail |= bit(i)
		}
	}
	if untried == 0 {
		return -1
	}
	if avail == 0 {
		p.logAllDown()
		avail = untried
	}
	return p.policy(p, avail, client)
}

func bit(i int) uint64 {
	if i >= 64 {
		return 0 // pools beyond 64 upstreams: the rest are never retried
	}
	return 1 << i
}

// logAllDown says, at most once a minute, that the pool fails open.
func (p *Pool) logAllDown() {
	now := time.Now().Unix()
	last := p.allDownLogged.Load()
	if now-last < 60 || !p.allDownLogged.CompareAndSwap(last, now) {
		return
	}
	p.logger.Error("every upstream of the pool is down; sending requests to them anyway")
}

// UpstreamsDownError is returned when no upstream of a pool accepted a
// connection; it names each upstream and why.
type UpstreamsDownError struct {
	Failures []string // "http://10.0.0.5:8080: connection refused"
}

func (e *UpstreamsDownError) Error() string {
	return "no upstream accepted a connection: " + strings.Join(e.Failures, "; ")
}

// RoundTrip sends req to an upstream picked by the pool's policy (the
// net/http paths), moving to another one when the connection cannot be
// made, and, for a request that can be sent twice (idempotent, no body),
// when the exchange failed, up to retries times. The request body is kept
// open across attempts that sent none of it.
func (p *Pool) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := h1.WithLimits(req.Context(), &p.limits)
	st, _ := req.Context().Value(requestStateKey{}).(*requestState)
	var client []byte
	if st != nil {
		client = st.vars.clientIP
	}
	body := req.Body
	replayable := (body == nil || body == http.NoBody) && h1.Idempotent([]byte(req.Method))
	if body != nil && body != http.NoBody {
		req.Body = keepOpen{body}
	}
	var failures []string
	var tried uint64
	var lastErr error // of the last attempt that reached an upstream
	retries := 0
	for {
		i := p.pick(client, tried)
		if i < 0 {
			break
		}
		tried |= bit(i)
		u := p.upstreams[i]
		// A shallow copy with its own URL: the transports read the
		// header and never change it, and req is ReverseProxy's own copy
		// already (a deep Clone here was a fifth of the bytes allocated
		// per HTTP/2 request).
		out := req.WithContext(ctx)
		target := *req.URL
		out.URL = &target
		out.URL.Scheme, out.URL.Host = u.url.Scheme, u.url.Host
		if u.url.Scheme == "h2c" {
			out.URL.Scheme = "http"
		}
		if st != nil {
			st.upstream = u.addr
			if st.upStart.IsZero() {
				st.upStart = time.Now()
			}
		}
		u.inFlight.Add(1)
		u.m.inFlight(1)
		resp, err := u.transport.RoundTrip(out)
		if err == nil {
			u.m.answered(resp.StatusCode)
			if resp.StatusCode == http.StatusSwitchingProtocols {
				// ReverseProxy writes to an upgraded body: kept as it is
				u.inFlight.Add(-1)
				u.m.inFlight(-1)
			} else {
				resp.Body = &inFlightBody{ReadCloser: resp.Body, u: u}
			}
			return resp, nil
		}
		u.inFlight.Add(-1)
		u.m.inFlight(-1)
		if req.Context().Err() != nil {
			return nil, err // the client went away: not the upstream's failure
		}
		p.fail(u, time.Now())
		failures = append(failures, u.label+": "+dialReason(err))
		switch {
		case isDialError(err):
			continue // it never reached an upstream: always another one
		case replayable && retries < p.retries:
			retries++
			lastErr = err
			p.logger.Info("retrying an idempotent request on another upstream", zap.String("upstream", u.label), zap.Error(err))
			continue
		}
		return nil, err
	}
	if lastErr != nil {
		return nil, lastErr // an upstream was reached, and failed
	}
	return nil, &UpstreamsDownError{Failures: failures}
}

// inFlightBody ends a request's time in flight when its answer's body is
// closed (ReverseProxy closes it once copied).
type inFlightBody struct {
	io.ReadCloser
	u    *upstream
	once sync.Once
}

func (b *inFlightBody) Close() error {
	b.once.Do(func() {
		b.u.inFlight.Add(-1)
		b.u.m.inFlight(-1)
	})
	return b.ReadCloser.Close()
}

type keepOpen struct{ io.ReadCloser }

func (keepOpen) Close() error { return nil }

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial" && !errors.Is(err, context.Canceled)
}

func dialReason(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	return err.Error()
}

// the process-wide seed of ip_hash
var ipHashSeed = maphash.MakeSeed()

// random is the source of random_two (a fast, goroutine-safe one).
func random(n int) int { return rand.IntN(n) }

// maphashBytes hashes a client address for ip_hash.
func maphashBytes(b []byte) uint64 { return maphash.Bytes(ipHashSeed, b) }

// PoolStatus is a pool as the admin API and status page show it.
type PoolStatus struct {
	Name      string           `json:"name"`   // the [[pool]]'s name, or a site's or route's first upstream
	Policy    string           `json:"policy"` // round_robin, least_conn…
	Health    string           `json:"health"` // the active check ("GET /healthz every 5s"), or ""
	Upstreams []UpstreamStatus `json:"upstreams"`
}

// UpstreamStatus is one upstream of a pool.
type UpstreamStatus struct {
	URL      string `json:"url"`
	State    string `json:"state"` // "up", "out: health checks", "out: failed attempts"
	InFlight int64  `json:"in_flight"`
}

// PoolStatus lists the pools of the running config, the named ones first,
// then the sites' and routes' own.
func (s *Server) PoolStatus() []PoolStatus {
	rt := s.router.Load()
	seen := map[*Pool]bool{}
	var named, own []PoolStatus
	add := func(p *Pool, into *[]PoolStatus) {
		if p == nil || seen[p] {
			return
		}
		seen[p] = true
		*into = append(*into, p.status())
	}
	names := make([]string, 0, len(rt.pools))
	for n := range rt.pools {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		add(rt.pools[n], &named)
	}
	for _, site := range rt.sites() {
		if site.def != nil {
			add(site.def.pool, &own)
		}
		for _, r := range site.routes.Routes() {
			add(r.Value.pool, &own)
		}
	}
	return append(named, own...)
}

func (p *Pool) status() PoolStatus {
	ps := PoolStatus{Name: poolLabel(p.cfg), Policy: p.cfg.Policy}
	if p.cfg.HealthPath != "" {
		ps.Health = "GET " + p.cfg.HealthPath + " every " + p.cfg.HealthInterval.Std().String()
	}
	now := time.Now().UnixNano()
	for _, u := range p.upstreams {
		st := UpstreamStatus{URL: u.label, State: "up", InFlight: u.inFlight.Load()}
		switch {
		case u.down.Load():
			st.State = "out: health checks"
		case u.outUntil.Load() > now:
			st.State = "out: failed attempts"
		}
		ps.Upstreams = append(ps.Upstreams, st)
	}
	return ps
}
