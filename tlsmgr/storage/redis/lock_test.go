package redisstorage_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portico-proxy/portico/integration/testkit"
	redisstorage "github.com/portico-proxy/portico/tlsmgr/storage/redis"
	"github.com/portico-proxy/portico/tlsmgr/storage/redis/redisserver"
)

// TestLockRefreshKeepsLockPastTTL holds a lock for several TTLs: the
// refresh must keep it, so another holder never gets in, and releasing
// it must let the other in at once.
func TestLockRefreshKeepsLockPastTTL(t *testing.T) {
	srv := redisserver.Start(t)
	const ttl = 500 * time.Millisecond
	ctx := t.Context()
	holder := newStorage(t, srv, redisstorage.Options{Prefix: "hb", LockTTL: ttl})
	other := newStorage(t, srv, redisstorage.Options{Prefix: "hb", LockTTL: ttl})
	raw := rawClient(t, srv)

	if err := holder.Lock(ctx, "long"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for time.Since(start) < 4*ttl {
		if ok, err := other.TryLock(ctx, "long"); ok || err != nil {
			t.Fatalf("after %v: another storage's TryLock = %v, %v while the lock is held", time.Since(start), ok, err)
		}
		if pttl, err := raw.PTTL(ctx, "hb:l:long").Result(); err != nil || pttl <= 0 {
			t.Fatalf("after %v: PTTL = %v, %v", time.Since(start), pttl, err)
		}
		<-tick.C
	}
	if err := holder.Unlock(ctx, "long"); err != nil {
		t.Fatal(err)
	}
	if ok, err := other.TryLock(ctx, "long"); !ok || err != nil {
		t.Fatalf("TryLock right after Unlock = %v, %v", ok, err)
	}
	if err := other.Unlock(ctx, "long"); err != nil {
		t.Fatal(err)
	}
}

// TestRenewLockLease checks that a lease longer than the TTL is granted
// and that the periodic refresh does not shorten it again.
func TestRenewLockLease(t *testing.T) {
	srv := redisserver.Start(t)
	const ttl = 300 * time.Millisecond
	ctx := t.Context()
	s := newStorage(t, srv, redisstorage.Options{Prefix: "lease", LockTTL: ttl})
	raw := rawClient(t, srv)

	if err := s.RenewLockLease(ctx, "job", time.Minute); !errors.Is(err, redisstorage.ErrLockNotHeld) {
		t.Errorf("RenewLockLease of a lock not held: %v, want ErrLockNotHeld", err)
	}
	if err := s.Lock(ctx, "job"); err != nil {
		t.Fatal(err)
	}
	if err := s.RenewLockLease(ctx, "job", time.Minute); err != nil {
		t.Fatalf("RenewLockLease: %v", err)
	}
	// Let several refreshes (every ttl/3) happen.
	start := time.Now()
	testkit.Eventually(t, 10*time.Second, "three TTLs to pass", func() bool { return time.Since(start) > 3*ttl })
	pttl, err := raw.PTTL(ctx, "lease:l:job").Result()
	if err != nil || pttl < 50*time.Second {
		t.Errorf("PTTL after refreshes = %v, %v; want the one-minute lease", pttl, err)
	}
	if err := s.Unlock(ctx, "job"); err != nil {
		t.Fatal(err)
	}
	if n, _ := raw.Exists(ctx, "lease:l:job").Result(); n != 0 {
		t.Error("lock key still exists after Unlock")
	}
}

// TestLockLostIsNotReleasedForOthers simulates a lock that expired
// while its holder still believed in it (for example during a Redis
// outage) and was then taken by someone else: the old holder must learn
// about it, and its Unlock must not release the new holder's lock.
func TestLockLostIsNotReleasedForOthers(t *testing.T) {
	srv := redisserver.Start(t)
	ctx := t.Context()
	old := newStorage(t, srv, redisstorage.Options{Prefix: "lost", LockTTL: time.Second})
	cur := newStorage(t, srv, redisstorage.Options{Prefix: "lost", LockTTL: time.Second})
	raw := rawClient(t, srv)

	if err := old.Lock(ctx, "job"); err != nil {
		t.Fatal(err)
	}
	if ok, err := cur.TryLock(ctx, "job"); ok || err != nil {
		t.Fatalf("TryLock by a second storage while held = %v, %v", ok, err)
	}
	if err := raw.Del(ctx, "lost:l:job").Err(); err != nil { // "expire" it
		t.Fatal(err)
	}
	if err := cur.Lock(ctx, "job"); err != nil {
		t.Fatal(err)
	}
	if err := old.RenewLockLease(ctx, "job", time.Minute); !errors.Is(err, redisstorage.ErrLockLost) {
		t.Errorf("RenewLockLease of a lost lock: %v, want ErrLockLost", err)
	}
	if err := old.Unlock(ctx, "job"); err != nil {
		t.Errorf("Unlock of a lost lock: %v, want nil", err)
	}
	if ok, err := old.TryLock(ctx, "job"); ok || err != nil {
		t.Fatalf("the old holder's Unlock released the new holder's lock (TryLock = %v, %v)", ok, err)
	}
	if err := cur.Unlock(ctx, "job"); err != nil {
		t.Fatal(err)
	}
}

// TestUnlockNotHeld checks that Unlock of a lock never taken, or
// already released, reports ErrLockNotHeld.
func TestUnlockNotHeld(t *testing.T) {
	srv := redisserver.Start(t)
	ctx := t.Context()
	s := newStorage(t, srv, redisstorage.Options{})
	if err := s.Unlock(ctx, "never"); !errors.Is(err, redisstorage.ErrLockNotHeld) {
		t.Errorf("Unlock of a lock never taken: %v", err)
	}
	if err := s.Lock(ctx, "once"); err != nil {
		t.Fatal(err)
	}
	if err := s.Unlock(ctx, "once"); err != nil {
		t.Fatal(err)
	}
	if err := s.Unlock(ctx, "once"); !errors.Is(err, redisstorage.ErrLockNotHeld) {
		t.Errorf("second Unlock: %v", err)
	}
}

// TestUnlockIgnoresCancelledContext: callers often unlock with the
// context of the operation that just failed or timed out; the lock must
// still be released.
func TestUnlockIgnoresCancelledContext(t *testing.T) {
	srv := redisserver.Start(t)
	s := newStorage(t, srv, redisstorage.Options{Prefix: "uc"})
	ctx, cancel := context.WithCancel(t.Context())
	if err := s.Lock(ctx, "job"); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := s.Unlock(ctx, "job"); err != nil {
		t.Fatalf("Unlock with a cancelled context: %v", err)
	}
	if n, _ := rawClient(t, srv).Exists(t.Context(), "uc:l:job").Result(); n != 0 {
		t.Error("lock still held after Unlock with a cancelled context")
	}
}

// TestCloseReleasesLocks: a node shutting down cleanly must not make
// the others wait for its locks to expire.
func TestCloseReleasesLocks(t *testing.T) {
	srv := redisserver.Start(t)
	ctx := t.Context()
	closing, err := redisstorage.New(redisstorage.Options{URL: srv.URL(), Prefix: "close"})
	if err != nil {
		t.Fatal(err)
	}
	if err := closing.Lock(ctx, "job"); err != nil {
		t.Fatal(err)
	}
	if err := closing.Close(); err != nil {
		t.Fatal(err)
	}
	other := newStorage(t, srv, redisstorage.Options{Prefix: "close"})
	if ok, err := other.TryLock(ctx, "job"); !ok || err != nil {
		t.Fatalf("TryLock after the holder closed = %v, %v", ok, err)
	}
	if err := other.Unlock(ctx, "job"); err != nil {
		t.Fatal(err)
	}
}

// childCmd prepares a re-execution of this test binary as a lock child.
func childCmd(t *testing.T, ctx context.Context, srv *redisserver.Server, mode, prefix string, ttl time.Duration, iterations, count int) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(),
		childEnv+"=1",
		childModeEnv+"="+mode,
		childURLEnv+"="+srv.URL(),
		childPrefixEnv+"="+prefix,
		childTTLEnv+"="+ttl.String(),
		childItersEnv+"="+strconv.Itoa(iterations),
		childCountEnv+"="+strconv.Itoa(count),
	)
	return cmd
}

// TestLockMultiProcess runs several processes that each take the lock
// repeatedly and check, through a counter in Redis, that no other
// process is inside at the same time.
func TestLockMultiProcess(t *testing.T) {
	srv := redisserver.Start(t)
	raw := rawClient(t, srv)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	const (
		children   = 4
		iterations = 20
	)
	type child struct {
		cmd    *exec.Cmd
		output *bytes.Buffer
	}
	var all []child
	for i := 0; i < children; i++ {
		cmd := childCmd(t, ctx, srv, childContend, "multi", time.Second, iterations, children)
		out := new(bytes.Buffer)
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		all = append(all, child{cmd, out})
	}
	for i, c := range all {
		if err := c.cmd.Wait(); err != nil {
			t.Errorf("child %d: %v\n%s", i, err, c.output)
		}
	}
	violations, err := raw.Get(ctx, violationsKey).Int()
	if err != nil && !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	if violations != 0 {
		t.Errorf("%d overlapping critical sections observed", violations)
	}
	total, err := raw.Get(ctx, totalKey).Int()
	if err != nil {
		t.Fatal(err)
	}
	if total != children*iterations {
		t.Errorf("%d critical sections completed, want %d", total, children*iterations)
	}
	waits, err := raw.Get(ctx, waitsKey).Int()
	if err != nil && !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	if waits == 0 {
		t.Error("the lock was never busy: the children did not contend, so the test proved nothing")
	}
	t.Logf("%d of %d acquisitions had to wait", waits, total)
}

// TestLockHolderKilled kills a lock holder with SIGKILL: it gets no
// chance to unlock, so its lock must expire on its own, roughly one TTL
// after the last refresh: not immediately, and not much later.
func TestLockHolderKilled(t *testing.T) {
	srv := redisserver.Start(t)
	const ttl = time.Second
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	s := newStorage(t, srv, redisstorage.Options{Prefix: "killed", LockTTL: ttl})

	cmd := childCmd(t, ctx, srv, childHold, "killed", ttl, 0, 1)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe() // held open: the child holds the lock until it closes
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := false
	t.Cleanup(func() {
		if !waited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})

	locked := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && line != childLockedLine+"\n" {
			err = errors.New("unexpected output " + strconv.Quote(line))
		}
		locked <- err
	}()
	select {
	case err := <-locked:
		if err != nil {
			t.Fatalf("child did not report the lock: %v\n%s", err, stderr.String())
		}
	case <-ctx.Done():
		t.Fatalf("child did not take the lock in time\n%s", stderr.String())
	}

	// The child's refresh keeps its lock alive past the TTL.
	lockedAt := time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for time.Since(lockedAt) < 2*ttl {
		if ok, err := s.TryLock(ctx, childLockName); ok || err != nil {
			t.Fatalf("TryLock succeeded (%v, %v) while the child held the lock", ok, err)
		}
		<-tick.C
	}

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	_ = cmd.Wait()
	waited = true

	if ok, err := s.TryLock(ctx, childLockName); ok || err != nil {
		t.Fatalf("lock was free (%v, %v) right after its holder was killed; want it to expire after the TTL", ok, err)
	}
	const margin = 2 * time.Second
	deadline := killedAt.Add(ttl + margin)
	for {
		ok, err := s.TryLock(ctx, childLockName)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lock of a killed holder still held %v after the kill (TTL %v)", time.Since(killedAt), ttl)
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	elapsed := time.Since(killedAt)
	// The last refresh was at most ttl/3 before the kill, so at least
	// about 2/3 of the TTL was left; allow for scheduling delays.
	if elapsed < ttl/3 {
		t.Errorf("lock was taken over %v after the kill; want about the TTL (%v)", elapsed, ttl)
	}
	t.Logf("lock taken over %v after its holder was killed (TTL %v)", elapsed, ttl)
	if err := s.Unlock(ctx, childLockName); err != nil {
		t.Fatal(err)
	}
}
