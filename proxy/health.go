package proxy

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
)

// healthChecker runs a pool's active checks ([[pool]] health_path): every
// health_interval, GET health_path on each upstream within health_timeout;
// unhealthy_after failures in a row take it out, healthy_after successes
// bring it back. One checker per pool per process: the pool, and so its
// health, is shared by every site and route that names it, and survives a
// reload that leaves the pool's settings as they were.
type healthChecker struct {
	p      *Pool
	client *http.Client

	mu      sync.Mutex
	cancel  context.CancelFunc
	done    chan struct{}
	streaks []int // per upstream: >0 successes in a row, <0 failures
}

func newHealthChecker(p *Pool) *healthChecker {
	return &healthChecker{p: p, streaks: make([]int, len(p.upstreams)),
		client: &http.Client{
			Timeout: p.cfg.HealthTimeout.Std(),
			// a check sees the upstream's own answer, not where it points
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}}
}

// start begins the checks (once).
func (h *healthChecker) start() {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan struct{})
	go h.run(ctx)
}

// stop ends the checks and waits for them.
func (h *healthChecker) stop() {
	if h == nil {
		return
	}
	h.mu.Lock()
	cancel, done := h.cancel, h.done
	h.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (h *healthChecker) run(ctx context.Context) {
	defer close(h.done)
	t := time.NewTicker(h.p.cfg.HealthInterval.Std())
	defer t.Stop()
	for {
		h.checkAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkAll checks every upstream at once.
func (h *healthChecker) checkAll(ctx context.Context) {
	var wg sync.WaitGroup
	for i := range h.p.upstreams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.record(i, h.check(ctx, i))
		}()
	}
	wg.Wait()
}

// check asks one upstream and reports whether it answered as healthy.
func (h *healthChecker) check(ctx context.Context, i int) bool {
	u := h.p.upstreams[i]
	scheme := u.url.Scheme
	if scheme == "h2c" {
		scheme = "http"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+u.url.Host+h.p.cfg.HealthPath, nil)
	if err != nil {
		return false
	}
	client := *h.client
	client.Transport = u.transport
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return statusMatches(h.p.cfg.HealthStatus, resp.StatusCode)
}

// statusMatches reports whether code is health_status: a class ("2xx") or
// a code ("204").
func statusMatches(want string, code int) bool {
	if len(want) == 3 && want[1:] == "xx" {
		return code/100 == int(want[0]-'0')
	}
	return want == strconv.Itoa(code)
}

// record counts a check's answer and moves the upstream in or out.
func (h *healthChecker) record(i int, ok bool) {
	h.mu.Lock()
	s := h.streaks[i]
	switch {
	case ok && s < 0, !ok && s > 0:
		s = 0
	}
	if ok {
		s++
	} else {
		s--
	}
	h.streaks[i] = s
	h.mu.Unlock()
	u := h.p.upstreams[i]
	switch {
	case !ok && -s == h.p.cfg.UnhealthyAfter && !u.down.Load():
		u.down.Store(true)
		u.m.setHealthy(false)
		h.p.logger.Warn("upstream failed its health checks; taken out", zap.String("upstream", u.label),
			zap.Int("failed_in_a_row", -s), zap.String("path", h.p.cfg.HealthPath))
	case ok && s == h.p.cfg.HealthyAfter && u.down.Load():
		u.down.Store(false)
		u.m.setHealthy(true)
		h.p.logger.Info("upstream passed its health checks; back in", zap.String("upstream", u.label), zap.Int("passed_in_a_row", s))
	}
}
