package redisstorage

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// DefaultPingInterval is the PingInterval used when it is zero.
const DefaultPingInterval = 5 * time.Second

// health tracks whether Redis answers, from the outcome of every command
// the Storage sends (a go-redis hook) and from a periodic PING. An outage
// is logged once when it starts and once when it ends, however many
// operations fail in between: a fleet that loses its Redis keeps serving
// from its caches, and a log line per failed operation would bury
// everything else.
type health struct {
	s *Storage

	mu    sync.Mutex
	down  bool
	since time.Time // start of the current outage

	stop chan struct{}
	done chan struct{}
}

// init installs the hook and, unless interval is negative, starts the
// periodic PING.
func (h *health) init(s *Storage, interval time.Duration) {
	h.s = s
	routeLibraryLog()
	s.client.AddHook(healthHook{h})
	h.stop = make(chan struct{})
	h.done = make(chan struct{})
	if interval < 0 {
		close(h.done)
		return
	}
	if interval == 0 {
		interval = DefaultPingInterval
	}
	go h.loop(interval)
}

func (h *health) loop(interval time.Duration) {
	defer close(h.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), interval)
		// The hook records the outcome.
		_ = h.s.client.Ping(ctx).Err()
		cancel()
	}
}

// close stops the periodic PING and waits for it to return.
func (h *health) close() {
	select {
	case <-h.stop:
	default:
		close(h.stop)
	}
	<-h.done
}

// observe records the outcome of one command or pipeline.
func (h *health) observe(ctx context.Context, err error) {
	reachable, known := classify(err)
	if !known || (!reachable && ctx.Err() != nil) {
		// A caller that gave up says nothing about Redis.
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case !reachable && !h.down:
		h.down, h.since = true, time.Now()
		if ctx.Value(quietKey{}) != nil {
			return
		}
		h.s.logger.Error("storage unreachable: certificates are served from memory; ordering, renewing and solving challenges wait until it is back",
			zap.String("redis", h.s.redactedURL), zap.Error(err))
	case reachable && h.down:
		h.down = false
		h.s.logger.Info("storage reachable again",
			zap.String("redis", h.s.redactedURL), zap.Duration("outage", time.Since(h.since).Round(time.Millisecond)))
	}
}

// quietKey marks the context of a command whose failure its caller
// reports (Ping): the outage is recorded but not logged a second time.
type quietKey struct{}

// Up reports whether Redis answered the last command sent to it; it is
// true until something fails. tlsmgr exports it as portico_storage_up.
func (s *Storage) Up() bool {
	s.health.mu.Lock()
	defer s.health.mu.Unlock()
	return !s.health.down
}

// classify tells whether err shows Redis reachable (an answer, even an
// error reply) or unreachable (no connection, or a server that cannot
// serve: no master, loading, cluster down). known is false for the
// client's own errors, such as a closed client.
func classify(err error) (reachable, known bool) {
	if err == nil || errors.Is(err, redis.Nil) || errors.Is(err, redis.TxFailedErr) {
		return true, true
	}
	if errors.Is(err, redis.ErrClosed) {
		return false, false
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		msg := rerr.Error()
		for _, p := range []string{"READONLY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "NOREPLICAS"} {
			if strings.HasPrefix(msg, p) {
				return false, true
			}
		}
		return true, true
	}
	var nerr net.Error
	if errors.As(err, &nerr) || errors.Is(err, context.DeadlineExceeded) ||
		strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "EOF") ||
		strings.Contains(err.Error(), "no reachable") || strings.Contains(err.Error(), "all sentinels") {
		return false, true
	}
	return false, false
}

// healthHook feeds every command's outcome to health.
type healthHook struct{ h *health }

func (k healthHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (k healthHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		k.h.observe(ctx, err)
		return err
	}
}

func (k healthHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		k.h.observe(ctx, err)
		return err
	}
}

// libraryLog receives go-redis's own log lines (a failed dial, a new
// master found through the sentinels). By default go-redis prints them to
// stderr, one per failed attempt, which during an outage is the flood
// health exists to prevent. They go to zap's global logger at debug level
// instead (a no-op unless the program installs one): go-redis has one
// logger per process, and tying it to one Storage's logger would outlive
// that Storage.
type libraryLog struct{}

func (libraryLog) Printf(_ context.Context, format string, v ...any) {
	if ce := zap.L().Named("go-redis").Check(zap.DebugLevel, "go-redis"); ce != nil {
		ce.Write(zap.String("detail", fmt.Sprintf(format, v...)))
	}
}

var libraryLogOnce sync.Once

// routeLibraryLog installs libraryLog.
func routeLibraryLog() {
	libraryLogOnce.Do(func() { redis.SetLogger(libraryLog{}) })
}
