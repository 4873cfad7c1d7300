package redisstorage

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotReplicated is returned (wrapped) by Store when the master has
// replicas but not all of them acknowledged the write within
// ReplicaAckTimeout. The
// master has the value, but a failover now could lose it, so the write
// is not reported as done: certmagic keeps the certificate it has in
// memory and stores it again at its next attempt.
var ErrNotReplicated = errors.New("no replica acknowledged the write")

// writeAcked runs script on the master that owns routeKey and, when that
// master has replicas, waits (WAIT, bounded by ReplicaAckTimeout) until
// every replica connected to it has the write. Every one, not one: a
// Sentinel promotes the replica it thinks is most up to date from the
// offsets it last polled, and under load that was seen to be a replica
// that had not yet got a write another one had acknowledged (the
// certificate was gone after the failover). Replication is asynchronous, so
// without this a certificate stored a moment before the master dies
// would be gone after the failover, although certmagic was told it was
// stored and will not store it again. WAIT covers the writes made on its
// own connection, hence the pipeline: both commands travel on one
// connection (and are resent together if it breaks).
//
// The WAIT is sent inside a pipeline, whose replies are read within the
// client's ReadTimeout (3s by default): ReplicaAckTimeout must stay below
// it.
func (s *Storage) writeAcked(ctx context.Context, routeKey string, script *redis.Script, keys []string, args ...any) error {
	if s.cluster == nil {
		return s.writeAckedOn(ctx, s.client, script, keys, args...)
	}
	// On a Cluster the write goes to the node client of the slot's
	// master, which does not retry: when that master dies, retry here,
	// asking for a fresh slot map each time, until a replica has taken
	// the slot over (a few seconds) or failoverRetryTime has passed.
	deadline := time.Now().Add(failoverRetryTime)
	backoff := 50 * time.Millisecond
	for {
		node, err := s.masterFor(ctx, routeKey)
		if err == nil {
			err = s.writeAckedOn(ctx, node, script, keys, args...)
		}
		if err == nil || !failoverError(err) || time.Now().After(deadline) {
			return err
		}
		s.cluster.ReloadState(ctx)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		backoff = min(2*backoff, time.Second)
	}
}

// failoverRetryTime bounds how long a Cluster write is retried while the
// master of its slot is unreachable; it matches what go-redis's own
// retries (failoverRetries) add up to.
const failoverRetryTime = 15 * time.Second

// failoverError tells whether err may go away once the cluster has
// promoted a replica or moved a slot: the master is unreachable, the
// cluster is down, or the slot now lives elsewhere.
func failoverError(err error) bool {
	if reachable, known := classify(err); known && !reachable {
		return true
	}
	msg := err.Error()
	return strings.HasPrefix(msg, "MOVED ") || strings.HasPrefix(msg, "ASK ")
}

func (s *Storage) writeAckedOn(ctx context.Context, node redis.UniversalClient, script *redis.Script, keys []string, args ...any) error {
	n, err := connectedReplicas(ctx, node)
	if err != nil {
		return err
	}
	if n == 0 {
		return script.Run(ctx, node, keys, args...).Err()
	}
	var eval *redis.Cmd
	var wait *redis.Cmd
	_, err = node.Pipelined(ctx, func(p redis.Pipeliner) error {
		eval = script.Eval(ctx, p, keys, args...)
		wait = p.Do(ctx, "WAIT", n, s.ackTimeout.Milliseconds())
		return nil
	})
	if eval != nil && eval.Err() != nil {
		return eval.Err()
	}
	if err != nil {
		return err
	}
	if acks, err := wait.Int64(); err != nil || acks < int64(n) {
		return fmt.Errorf("%w within %v (%d of the %d connected)", ErrNotReplicated, s.ackTimeout, acks, n)
	}
	return nil
}

// masterFor is the client of the master that holds key: the client
// itself for standalone and Sentinel, the owner of key's slot on a
// Cluster.
func (s *Storage) masterFor(ctx context.Context, key string) (redis.UniversalClient, error) {
	if s.cluster == nil {
		return s.client, nil
	}
	c, err := s.cluster.MasterForKey(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("finding the master of the key's slot: %w", err)
	}
	return c, nil
}

// connectedReplicas asks a master how many replicas are connected to it.
func connectedReplicas(ctx context.Context, c redis.UniversalClient) (int, error) {
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return 0, fmt.Errorf("asking for replication state: %w", err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "connected_slaves:"); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				return 0, fmt.Errorf("parsing connected_slaves %q: %w", v, err)
			}
			return n, nil
		}
	}
	return 0, nil
}
