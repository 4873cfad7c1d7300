package redisstorage

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// ErrLockNotHeld is returned (wrapped) by Unlock and RenewLockLease for
// a lock name this Storage does not currently hold.
var ErrLockNotHeld = errors.New("lock not held by this storage")

// ErrLockLost is returned (wrapped) by RenewLockLease when the lock is
// held locally but no longer in Redis: it expired (for example because
// Redis was unreachable for longer than the TTL) and may now belong to
// someone else. The work it protected may have overlapped with another
// holder's.
var ErrLockLost = errors.New("lock lost: it expired or was taken over by another owner")

// heldLock is this process's record of a lock it holds (or is in the
// middle of acquiring).
type heldLock struct {
	// token is the value stored at the lock key; only the holder knows
	// it, so only the holder can extend or delete the lock.
	token string

	// The fields below are guarded by Storage.mu.

	// pending is true while TryLock has reserved the name locally but
	// not yet acquired it in Redis.
	pending bool
	cancel  context.CancelFunc // stops the refresh goroutine
	done    chan struct{}      // closed when the refresh goroutine has exited
}

// Lock acquires the named lock, waiting until it is free or ctx is done.
// The lock excludes every other holder: other processes and other
// goroutines of this process alike (each call uses its own token).
//
// While held, the lock is refreshed every LockTTL/3 until Unlock, for as
// long as that takes (certmagic holds its issuance lock across retries
// that can span days). If the holder dies, the refreshes stop and the
// lock expires within LockTTL.
//
// Errors other than ctx's are returned promptly rather than retried, as
// certmagic.FileStorage does; certmagic retries the surrounding
// operation.
func (s *Storage) Lock(ctx context.Context, name string) error {
	for {
		ok, err := s.TryLock(ctx, name)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		// Jitter spreads out waiters so they do not retry in lockstep.
		wait := s.pollInterval/2 + mrand.N(s.pollInterval/2+1)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("redis lock %q: %w", name, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// TryLock makes one attempt to acquire the named lock and reports
// whether it succeeded. A successfully acquired lock behaves exactly as
// one taken by Lock and must be released with Unlock.
func (s *Storage) TryLock(ctx context.Context, name string) (bool, error) {
	if err := context.Cause(ctx); err != nil {
		return false, fmt.Errorf("redis lock %q: %w", name, err)
	}
	h := &heldLock{token: s.tokenPrefix + crand.Text(), pending: true}

	// Reserve the name locally first: if another goroutine of this
	// process holds it, there is no need to ask Redis, and the map keeps
	// at most one entry per name, which Unlock relies on.
	s.mu.Lock()
	if _, busy := s.locks[name]; busy {
		s.mu.Unlock()
		return false, nil
	}
	s.locks[name] = h
	s.mu.Unlock()

	key := s.lockKey(name)
	ok, err := s.acquire(ctx, key, h.token)
	if err != nil || !ok {
		s.mu.Lock()
		delete(s.locks, name)
		s.mu.Unlock()
		if err != nil {
			// The SET may have reached Redis although we saw an error
			// (cancelled context, lost reply). Remove it if so, instead
			// of letting it block everyone for a whole TTL. Waiting
			// longer than the TTL is pointless: it expires by then.
			if _, rerr := s.release(ctx, name, h.token, min(unlockTimeout, s.lockTTL)); rerr != nil {
				s.logger.Debug("cleaning up after failed lock attempt", zap.String("lock", name), zap.Error(rerr))
			}
			return false, fmt.Errorf("redis lock %q: %w", name, err)
		}
		return false, nil
	}

	refreshCtx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	h.pending = false
	h.cancel = cancel
	h.done = make(chan struct{})
	done := h.done
	s.mu.Unlock()
	go s.refresh(refreshCtx, name, h, done)
	return true, nil
}

// Unlock releases the named lock if this Storage holds it. The lock in
// Redis is deleted only if it still carries this holder's token, so a
// holder whose lock expired can never release a lock that someone else
// has taken since.
//
// certmagic calls Unlock with a context that is never cancelled, and
// callers may pass one that is already done when their operation timed
// out; Unlock therefore ignores ctx's cancellation and bounds its own
// Redis call instead.
//
// If the lock had already expired in Redis, nothing remains to release
// and Unlock returns nil (logging a warning): the lock is not held when
// Unlock returns, which is all the caller can ask for.
func (s *Storage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	h, ok := s.locks[name]
	if ok && h.pending {
		ok = false
	}
	if ok {
		delete(s.locks, name)
	}
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("redis unlock %q: %w", name, ErrLockNotHeld)
	}

	h.cancel()
	<-h.done

	released, err := s.release(ctx, name, h.token, unlockTimeout)
	if err != nil {
		// The refresh has stopped, so the lock expires within LockTTL
		// (or the longest lease granted by RenewLockLease).
		return fmt.Errorf("redis unlock %q: %w", name, err)
	}
	if !released {
		s.logger.Warn("lock had already expired or been taken over before unlock",
			zap.String("lock", name))
	}
	return nil
}

// RenewLockLease makes the held lock lockKey live for at least
// leaseDuration from now. certmagic calls it before each retry of a
// certificate order. The periodic refresh never shortens a longer lease,
// so the lease holds even if this process loses contact with Redis; a
// crashed holder then blocks others for up to leaseDuration instead of
// LockTTL.
func (s *Storage) RenewLockLease(ctx context.Context, lockKey string, leaseDuration time.Duration) error {
	s.mu.Lock()
	h, ok := s.locks[lockKey]
	if ok && h.pending {
		ok = false
	}
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("redis renew lock lease %q: %w", lockKey, ErrLockNotHeld)
	}
	owned, err := s.extend(ctx, lockKey, h.token, leaseDuration)
	if err != nil {
		return fmt.Errorf("redis renew lock lease %q: %w", lockKey, err)
	}
	if !owned {
		return fmt.Errorf("redis renew lock lease %q: %w", lockKey, ErrLockLost)
	}
	return nil
}

// refresh extends the lock every LockTTL/3 until ctx is cancelled by
// Unlock or the lock turns out to be lost. A failed refresh (Redis
// unreachable) is retried at the next tick: with three refreshes per
// TTL, two can fail before the lock expires.
func (s *Storage) refresh(ctx context.Context, name string, h *heldLock, done chan struct{}) {
	defer close(done)
	interval := s.lockTTL / 3
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		callCtx, cancel := context.WithTimeout(ctx, interval)
		owned, err := s.extend(callCtx, name, h.token, s.lockTTL)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, redis.ErrClosed):
			return
		case err != nil && !s.Up():
			// The outage itself is logged once (health.go).
			s.logger.Debug("refreshing lock failed while storage is unreachable; retrying",
				zap.String("lock", name), zap.Error(err))
		case err != nil:
			s.logger.Warn("refreshing lock failed; retrying",
				zap.String("lock", name), zap.Error(err))
		case !owned:
			s.logger.Error("lock lost: it expired or was taken over while held; the work it protects may overlap with another holder",
				zap.String("lock", name))
			return
		}
	}
}

// acquire runs acquireLua: it takes the lock if it is free and reports
// whether the lock now carries token.
func (s *Storage) acquire(ctx context.Context, key, token string) (bool, error) {
	n, err := s.scripts.acquire.Run(ctx, s.client, []string{key}, token, s.lockTTL.Milliseconds()).Int64()
	if err != nil {
		return false, err
	}
	return n == 1, nil
}

// extend runs extendLua: it reports whether the lock still carries
// token and, if so, ensures it lives at least d from now.
func (s *Storage) extend(ctx context.Context, name, token string, d time.Duration) (bool, error) {
	ms := max(d.Milliseconds(), 1)
	n, err := s.scripts.extend.Run(ctx, s.client, []string{s.lockKey(name)}, token, ms).Int64()
	if err != nil {
		return false, err
	}
	return n == 1, nil
}

// release runs unlockLua with a context detached from ctx's
// cancellation and bounded by timeout, and reports whether the lock was
// ours and has been deleted.
func (s *Storage) release(ctx context.Context, name, token string, timeout time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	n, err := s.scripts.unlock.Run(ctx, s.client, []string{s.lockKey(name)}, token).Int64()
	if err != nil {
		return false, err
	}
	return n == 1, nil
}

// releaseAllLocks stops refreshing and releases every lock held, for
// Close.
func (s *Storage) releaseAllLocks() {
	s.mu.Lock()
	held := make(map[string]*heldLock, len(s.locks))
	for name, h := range s.locks {
		if !h.pending {
			held[name] = h
			delete(s.locks, name)
		}
	}
	s.mu.Unlock()
	for name, h := range held {
		h.cancel()
		<-h.done
		if _, err := s.release(context.Background(), name, h.token, unlockTimeout); err != nil {
			s.logger.Warn("releasing lock on close failed; it will expire",
				zap.String("lock", name), zap.Error(err))
		}
	}
}
