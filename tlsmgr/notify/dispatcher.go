package notify

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
)

const (
	// queueSize is how many events wait per target; when it is full the
	// oldest waiting event is dropped.
	queueSize = 64
	// deliveryTimeout bounds the delivery of one event to one target,
	// retries included, so that a stuck target cannot hold its queue forever.
	deliveryTimeout = 5 * time.Minute
)

// Dispatcher delivers events to every target in the background. Each target
// has its own bounded queue and goroutine, so a slow or dead target delays
// neither the caller nor the other targets.
type Dispatcher struct {
	logger   *zap.Logger
	instance string
	workers  []*worker
	wg       sync.WaitGroup
	// ctx is cancelled when Close gives up waiting; it aborts deliveries
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.RWMutex
	closed bool
}

// worker is one target's queue and delivery goroutine.
type worker struct {
	target Notifier
	wake   chan struct{}

	mu      sync.Mutex
	queue   []Event
	closing bool
}

// NewDispatcher starts delivering to targets; a nil logger discards logs.
// Close stops it.
func NewDispatcher(targets []Notifier, logger *zap.Logger) *Dispatcher {
	if logger == nil {
		logger = zap.NewNop()
	}
	instance, _ := os.Hostname()
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dispatcher{
		logger:   logger.Named("notify"),
		instance: instance,
		ctx:      ctx,
		cancel:   cancel,
	}
	for _, t := range targets {
		if t == nil {
			continue
		}
		w := &worker{target: t, wake: make(chan struct{}, 1)}
		d.workers = append(d.workers, w)
		d.wg.Add(1)
		go d.run(w)
	}
	return d
}

// FromConfig builds one Notifier per [[notify]] table: a Webhook or an
// Email through [smtp]. (Validation rejects a table naming both; should one
// get here anyway, both targets are kept.)
func FromConfig(cfg *config.Config) []Notifier {
	if cfg == nil {
		return nil
	}
	var out []Notifier
	for _, n := range cfg.Notify {
		if n.Webhook != "" {
			out = append(out, NewWebhook(n.Webhook, nil))
		}
		if n.Email != "" {
			out = append(out, NewEmail(n.Email, cfg.SMTP))
		}
	}
	return out
}

// Send queues e for every target and returns at once. An empty Time,
// Instance or Message is filled in first. When a target's queue is full its
// oldest waiting event is dropped, with a log line. After Close, events are
// dropped.
//
// Send does not deduplicate: the caller decides what to report.
func (d *Dispatcher) Send(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if e.Instance == "" {
		e.Instance = d.instance
	}
	if e.Message == "" {
		e.Message = defaultMessage(e)
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		d.logger.Warn("notification dropped: notifier is shut down",
			zap.String("kind", e.Kind), zap.String("name", e.Name), zap.String("message", e.Message))
		return
	}
	for _, w := range d.workers {
		if old, dropped := w.push(e); dropped {
			d.logger.Warn("notification queue full; dropped the oldest notification",
				zap.String("target", w.target.String()),
				zap.String("kind", old.Kind), zap.String("name", old.Name),
				zap.Time("time", old.Time), zap.Int("queue_size", queueSize))
		}
	}
}

// Close stops accepting events and waits until every queued event has been
// delivered or given up on. If ctx ends first, deliveries in progress are
// aborted and an error reports how many events were not delivered. Close
// may be called more than once.
func (d *Dispatcher) Close(ctx context.Context) error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	for _, w := range d.workers {
		w.mu.Lock()
		w.closing = true
		w.mu.Unlock()
		w.signal()
	}
	done := make(chan struct{})
	go func() {
		d.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		d.cancel()
		return nil
	case <-ctx.Done():
		d.cancel()
		pending := 0
		for _, w := range d.workers {
			w.mu.Lock()
			pending += len(w.queue)
			w.mu.Unlock()
		}
		return fmt.Errorf("close notifier: %d queued notification(s) not delivered, deliveries in progress aborted: %w",
			pending, context.Cause(ctx))
	}
}

// run delivers w's queue until Close, draining it first.
func (d *Dispatcher) run(w *worker) {
	defer d.wg.Done()
	for {
		e, ok := w.pop(d.ctx)
		if !ok {
			return
		}
		d.deliver(w.target, e)
	}
}

// deliver sends one event to one target and logs the outcome.
func (d *Dispatcher) deliver(t Notifier, e Event) {
	fields := []zap.Field{
		zap.String("target", t.String()),
		zap.String("kind", e.Kind),
		zap.String("name", e.Name),
		zap.String("key_type", e.KeyType),
	}
	defer func() {
		// a broken notifier must not take the proxy down
		if r := recover(); r != nil {
			d.logger.Error("notifier panicked", append(fields, zap.Any("panic", r))...)
		}
	}()
	ctx, cancel := context.WithTimeout(d.ctx, deliveryTimeout)
	defer cancel()
	start := time.Now()
	if err := t.Notify(ctx, e); err != nil {
		msg := "notification not delivered"
		if d.ctx.Err() != nil {
			msg = "notification not delivered: abandoned at shutdown"
		}
		d.logger.Error(msg, append(fields, zap.Error(err))...)
		return
	}
	d.logger.Debug("notification delivered", append(fields, zap.Duration("took", time.Since(start)))...)
}

// push appends e, dropping and returning the oldest waiting event when the
// queue is full.
func (w *worker) push(e Event) (old Event, dropped bool) {
	w.mu.Lock()
	if len(w.queue) >= queueSize {
		old, dropped = w.queue[0], true
		w.queue[0] = Event{}
		w.queue = w.queue[1:]
	}
	w.queue = append(w.queue, e)
	w.mu.Unlock()
	w.signal()
	return old, dropped
}

// pop waits for the next event. It reports false once the queue is closed
// and empty, or when ctx ends.
func (w *worker) pop(ctx context.Context) (Event, bool) {
	for {
		if ctx.Err() != nil {
			return Event{}, false
		}
		w.mu.Lock()
		if len(w.queue) > 0 {
			e := w.queue[0]
			w.queue[0] = Event{}
			w.queue = w.queue[1:]
			w.mu.Unlock()
			return e, true
		}
		closing := w.closing
		w.mu.Unlock()
		if closing {
			return Event{}, false
		}
		select {
		case <-w.wake:
		case <-ctx.Done():
			return Event{}, false
		}
	}
}

func (w *worker) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}
