package redisstorage_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	redisstorage "github.com/portico-proxy/portico/tlsmgr/storage/redis"
)

// The multi-process lock tests re-execute the test binary. With childEnv
// set to "1", TestMain runs runLockChild instead of the tests, configured
// by the other variables.
const (
	childEnv        = "PORTICO_LOCK_CHILD"
	childModeEnv    = "PORTICO_LOCK_CHILD_MODE" // childContend or childHold
	childURLEnv     = "PORTICO_LOCK_CHILD_URL"
	childPrefixEnv  = "PORTICO_LOCK_CHILD_PREFIX"
	childTTLEnv     = "PORTICO_LOCK_CHILD_TTL"
	childItersEnv   = "PORTICO_LOCK_CHILD_ITERATIONS"
	childCountEnv   = "PORTICO_LOCK_CHILD_COUNT" // contending children, for the start barrier
	childLockName   = "issue_cert_child.example.net"
	childLockedLine = "LOCKED"
)

const (
	// childContend: loop acquiring the lock, checking through a Redis
	// counter that nobody else is inside, releasing.
	childContend = "contend"
	// childHold: acquire the lock, print childLockedLine, then hold it
	// until stdin closes or the process is killed.
	childHold = "hold"
)

// Counters the contending children share, outside any storage prefix.
const (
	readyKey      = "locktest:ready"
	insideKey     = "locktest:inside"
	violationsKey = "locktest:violations"
	totalKey      = "locktest:total"
	waitsKey      = "locktest:waits"
)

// runLockChild is the child's main function. Its exit code is 0 on
// success; failures are explained on stderr.
func runLockChild() int {
	if err := lockChild(); err != nil {
		fmt.Fprintf(os.Stderr, "lock child %d: %v\n", os.Getpid(), err)
		return 1
	}
	return 0
}

func lockChild() error {
	url := os.Getenv(childURLEnv)
	ttl, err := time.ParseDuration(os.Getenv(childTTLEnv))
	if err != nil {
		return fmt.Errorf("bad %s: %w", childTTLEnv, err)
	}
	s, err := redisstorage.New(redisstorage.Options{
		URL:     url,
		Prefix:  os.Getenv(childPrefixEnv),
		LockTTL: ttl,
	})
	if err != nil {
		return err
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	switch mode := os.Getenv(childModeEnv); mode {
	case childHold:
		if err := s.Lock(ctx, childLockName); err != nil {
			return err
		}
		fmt.Println(childLockedLine)
		// Hold the lock (its refresh keeps running) until the parent
		// kills us or goes away.
		_, _ = io.Copy(io.Discard, os.Stdin)
		return nil

	case childContend:
		iterations, err := strconv.Atoi(os.Getenv(childItersEnv))
		if err != nil {
			return fmt.Errorf("bad %s: %w", childItersEnv, err)
		}
		opts, err := redis.ParseURL(url)
		if err != nil {
			return err
		}
		raw := redis.NewClient(opts)
		defer raw.Close()
		if err := startBarrier(ctx, raw); err != nil {
			return err
		}
		for i := 0; i < iterations; i++ {
			// Count the times the lock was busy, so the parent can
			// tell that the processes really contended.
			ok, err := s.TryLock(ctx, childLockName)
			if err != nil {
				return fmt.Errorf("iteration %d: %w", i, err)
			}
			if !ok {
				raw.Incr(ctx, waitsKey)
				if err := s.Lock(ctx, childLockName); err != nil {
					return fmt.Errorf("iteration %d: %w", i, err)
				}
			}
			if err := criticalSection(ctx, raw); err != nil {
				return fmt.Errorf("iteration %d: %w", i, err)
			}
			if err := s.Unlock(ctx, childLockName); err != nil {
				return fmt.Errorf("iteration %d: %w", i, err)
			}
		}
		return nil

	default:
		return fmt.Errorf("unknown %s %q", childModeEnv, mode)
	}
}

// startBarrier makes the contending children start together: process
// start-up under -race takes long enough that the first child could
// otherwise finish before the last one begins. It polls, with the
// context's deadline.
func startBarrier(ctx context.Context, raw *redis.Client) error {
	want, err := strconv.ParseInt(os.Getenv(childCountEnv), 10, 64)
	if err != nil {
		return fmt.Errorf("bad %s: %w", childCountEnv, err)
	}
	if err := raw.Incr(ctx, readyKey).Err(); err != nil {
		return err
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		n, err := raw.Get(ctx, readyKey).Int64()
		if err != nil {
			return err
		}
		if n >= want {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d children to start: %w", want, ctx.Err())
		}
	}
}

// criticalSection runs while holding the lock. The increment must find
// the counter at zero; anything else means another process is inside
// too, which is recorded for the parent to see. The extra round trips
// widen the window in which an overlap would be caught.
func criticalSection(ctx context.Context, raw *redis.Client) error {
	n, err := raw.Incr(ctx, insideKey).Result()
	if err != nil {
		return err
	}
	if n != 1 {
		raw.Incr(ctx, violationsKey)
	}
	for j := 0; j < 3; j++ {
		v, err := raw.Get(ctx, insideKey).Int64()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		if v != 1 {
			raw.Incr(ctx, violationsKey)
		}
	}
	if err := raw.Decr(ctx, insideKey).Err(); err != nil {
		return err
	}
	return raw.Incr(ctx, totalKey).Err()
}
