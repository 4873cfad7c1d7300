package tlsmgr

import (
	"context"
	"crypto/tls"
	"errors"
	"io/fs"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// loadTimeout bounds the storage reads of one name's certificates.
const loadTimeout = 10 * time.Second

// storeLoader brings the stored certificates of newly managed names into
// certmagic's cache. Loading thousands of them takes seconds (parsing an
// RSA private key alone costs about 0.1 ms of CPU, and a remote storage a
// round trip per read), so a name is "pending" from the moment it is managed
// until its certificates are cached: Apply loads the pending names with
// bounded parallelism while the listener already serves, and a handshake
// for a pending name that the bulk load has not reached yet loads that name
// at once. Each name is loaded once (single flight): a handshake that finds
// its name being loaded waits for that load instead of starting another.
type storeLoader struct {
	m *Manager
	// handshakes bounds the loads that handshakes start themselves, so a
	// burst of hellos for many pending names cannot open unbounded
	// storage reads
	handshakes chan struct{}
	// count is the number of pending names, read without the lock so
	// that handshakes skip the loader entirely once everything is loaded
	count atomic.Int64

	mu      sync.Mutex
	pending map[string]*loadCall // by managed name
}

// loadCall is one pending name's load.
type loadCall struct {
	done    chan struct{} // closed when the load is over (whatever its outcome)
	started bool
	// wanted is false once the name stopped being managed while its load
	// was in flight: what the load cached is then removed again
	wanted bool
}

func newStoreLoader(m *Manager) *storeLoader {
	return &storeLoader{
		m:          m,
		handshakes: make(chan struct{}, 4*runtime.GOMAXPROCS(0)),
		pending:    map[string]*loadCall{},
	}
}

// workers is the bulk load's parallelism: loading is CPU-bound (key
// parsing) on a local disk, so one worker per CPU; more only add garbage
// in flight and delay the handshakes that load their own name.
func (l *storeLoader) workers() int { return max(1, runtime.GOMAXPROCS(0)) }

// add marks names as pending. Call it before the names become managed, so
// that no handshake finds a managed name that is neither cached nor pending.
func (l *storeLoader) add(names []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, n := range names {
		if c := l.pending[n]; c != nil {
			c.wanted = true // dropped and added back while loading
			continue
		}
		l.pending[n] = &loadCall{done: make(chan struct{}), wanted: true}
		l.count.Add(1)
	}
}

// forget drops names that are no longer managed: a load not started yet
// never starts, one in flight removes what it cached when it ends.
func (l *storeLoader) forget(names []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, n := range names {
		c := l.pending[n]
		if c == nil {
			continue
		}
		c.wanted = false
		if !c.started {
			delete(l.pending, n)
			l.count.Add(-1)
			close(c.done)
		}
	}
}

// isPending reports whether name waits for its load.
func (l *storeLoader) isPending(name string) bool {
	if l.count.Load() == 0 {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pending[name] != nil
}

// load loads a pending name, or waits (until ctx ends) for the load in
// flight. It reports whether name was pending.
func (l *storeLoader) load(ctx context.Context, name string) bool {
	if l.count.Load() == 0 {
		return false
	}
	l.mu.Lock()
	c := l.pending[name]
	if c == nil {
		l.mu.Unlock()
		return false
	}
	if c.started {
		l.mu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
		}
		return true
	}
	c.started = true
	l.mu.Unlock()
	l.run(name, c)
	return true
}

// run loads name for the call c, which the caller has started. The reads
// use the Manager's context, not the caller's: a client that hangs up
// during its handshake must not leave the name unloaded.
func (l *storeLoader) run(name string, c *loadCall) {
	m := l.m
	for _, f := range m.familiesFor(name) {
		lctx, cancel := context.WithTimeout(m.ctx, loadTimeout)
		_, err := f.cfg.CacheManagedCertificate(withSiteReads(lctx), name)
		cancel()
		if err != nil && !errors.Is(err, fs.ErrNotExist) && m.ctx.Err() == nil {
			m.logger.Warn("could not load certificate from storage; will retry",
				zap.String("name", name), zap.String("key_type", f.keyType), zap.Error(err))
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending[name] == c {
		delete(l.pending, name)
		l.count.Add(-1)
	}
	if c.wanted {
		m.refresh(name)
	} else {
		// no longer managed: take back what the load cached (under the
		// lock, so that adding the name again waits for this)
		m.cache.RemoveManaged([]certmagic.SubjectIssuer{{Subject: name}})
		m.index.set(name, nil)
	}
	close(c.done)
}

// loadAll loads the pending names among names, workers at a time, and
// returns when each of them is loaded (by this call, by a handshake or by
// the scheduler) or ctx or the Manager ends.
func (l *storeLoader) loadAll(ctx context.Context, names []string) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(l.workers(), len(names)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(names) || ctx.Err() != nil || l.m.ctx.Err() != nil {
					return
				}
				l.load(ctx, names[i])
			}
		}()
	}
	wg.Wait()
}

// loadForHandshake loads the certificates of a pending name (or of the
// pending wildcard that covers it) for a handshake that found none, and
// reports whether there was one to load. It waits at most until the
// handshake gives up.
func (l *storeLoader) loadForHandshake(hello *tls.ClientHelloInfo, name string) bool {
	if l.count.Load() == 0 {
		return false
	}
	key := name
	if !l.isPending(key) {
		dot := strings.IndexByte(name, '.')
		if dot <= 0 {
			return false
		}
		key = "*" + name[dot:]
		if !l.isPending(key) {
			return false
		}
	}
	ctx := hello.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, loadTimeout)
	defer cancel()
	select {
	case l.handshakes <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	defer func() { <-l.handshakes }()
	return l.load(ctx, key)
}
