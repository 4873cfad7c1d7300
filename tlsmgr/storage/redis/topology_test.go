package redisstorage_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/portico-proxy/portico/integration/testkit"
	redisstorage "github.com/portico-proxy/portico/tlsmgr/storage/redis"
	"github.com/portico-proxy/portico/tlsmgr/storage/redis/redisserver"
	"github.com/portico-proxy/portico/tlsmgr/storage/storagetest"
)

// TestConformanceSentinel runs the storage suite through Sentinel, on a
// master with one replica: every Store also waits for the replica.
func TestConformanceSentinel(t *testing.T) {
	g := redisserver.StartSentinel(t, 1, 1)
	var n atomic.Int32
	storagetest.Run(t, func(t *testing.T) certmagic.Storage {
		return newStorage(t, nil, redisstorage.Options{
			Sentinels:  g.SentinelAddrs(),
			MasterName: redisserver.MasterName,
			Prefix:     fmt.Sprintf("sentinel%d", n.Add(1)),
			LockTTL:    time.Second,
		})
	})
}

// TestConformanceCluster runs the storage suite on a 3-master Cluster,
// where the keys of one Storage are spread over the slots of all three.
func TestConformanceCluster(t *testing.T) {
	c := redisserver.StartCluster(t, 3)
	var n atomic.Int32
	storagetest.Run(t, func(t *testing.T) certmagic.Storage {
		return newStorage(t, nil, redisstorage.Options{
			Cluster: c.Addrs(),
			Prefix:  fmt.Sprintf("cluster%d", n.Add(1)),
			LockTTL: time.Second,
		})
	})
}

// TestStoreWaitsForReplica checks that a Store returns only once a replica
// has the value (read straight from the replica afterwards), and that
// with the replica frozen a Store fails with ErrNotReplicated instead of
// claiming a write a failover could lose.
func TestStoreWaitsForReplica(t *testing.T) {
	g := redisserver.StartSentinel(t, 1, 1)
	s := newStorage(t, nil, redisstorage.Options{Sentinels: g.SentinelAddrs(), MasterName: redisserver.MasterName})
	// another with a short wait, for the frozen replica
	impatient := newStorage(t, nil, redisstorage.Options{
		Sentinels:         g.SentinelAddrs(),
		MasterName:        redisserver.MasterName,
		ReplicaAckTimeout: 300 * time.Millisecond,
	})
	replica := rawClient(t, g.Replicas[0])
	ctx := t.Context()
	for i := range 20 {
		key := fmt.Sprintf("certificates/ca/n%d.example/n%d.example.crt", i, i)
		want := fmt.Sprintf("cert %d", i)
		if err := s.Store(ctx, key, []byte(want)); err != nil {
			t.Fatalf("Store: %v", err)
		}
		got, err := replica.HGet(ctx, "portico:v:"+key, "value").Result()
		if err != nil || got != want {
			t.Fatalf("replica right after Store(%q) = %q, %v; want %q", key, got, err, want)
		}
	}

	if err := g.Replicas[0].Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	err := impatient.Store(ctx, "acme/ca/users/a@example.net/a.json", []byte("{}"))
	if err := g.Replicas[0].Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(err, redisstorage.ErrNotReplicated) {
		t.Fatalf("Store with the only replica frozen: %v, want ErrNotReplicated", err)
	}
}

// TestOutageLoggedOnce checks that losing Redis is logged once, however
// many operations fail, that Up follows it, and that the recovery is
// logged once too.
func TestOutageLoggedOnce(t *testing.T) {
	srv := redisserver.StartPersistent(t)
	core, logs := observer.New(zap.InfoLevel)
	s := newStorage(t, srv, redisstorage.Options{Logger: zap.New(core), PingInterval: 50 * time.Millisecond})
	ctx := t.Context()
	if err := s.Store(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if !s.Up() {
		t.Fatal("Up() = false with Redis running")
	}
	srv.Stop()
	for range 5 {
		if _, err := s.Load(ctx, "k"); err == nil {
			t.Fatal("Load succeeded with Redis stopped")
		}
	}
	testkit.Eventually(t, 10*time.Second, "Up() = false", func() bool { return !s.Up() })
	srv.Restart()
	testkit.Eventually(t, 10*time.Second, "Up() = true", func() bool { return s.Up() })
	if got, err := s.Load(ctx, "k"); err != nil || string(got) != "v" {
		t.Fatalf("Load after the outage = %q, %v", got, err)
	}
	down := logs.FilterMessageSnippet("storage unreachable").Len()
	up := logs.FilterMessageSnippet("storage reachable again").Len()
	if down != 1 || up != 1 {
		for _, e := range logs.All() {
			t.Log(e.Message)
		}
		t.Fatalf("outage logged %d times, recovery %d times; want 1 and 1", down, up)
	}
}

// TestClusterKeysShareSlots checks the Cluster layout: a certificate's
// files and its issuance lock hash to one slot, while the fleet's own keys
// (ledger, ticket keys, on-demand budget, order slot locks) work wherever
// they hash and spread over several slots.
func TestClusterKeysShareSlots(t *testing.T) {
	c := redisserver.StartCluster(t, 3)
	s := newStorage(t, nil, redisstorage.Options{Cluster: c.Addrs()})
	ctx := t.Context()
	site := "certificates-p256/acme-v02.example-directory/www.example.com/www.example.com"
	for _, ext := range []string{".crt", ".key", ".json", ".pair"} {
		if err := s.Store(ctx, site+ext, []byte(ext)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Lock(ctx, "issue_cert_www.example.com"); err != nil {
		t.Fatal(err)
	}
	defer s.Unlock(ctx, "issue_cert_www.example.com")
	for i := range 30 {
		if err := s.Store(ctx, fmt.Sprintf("portico/ledger/p256/n%d.json", i), []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}

	// The fleet-wide keys and locks Portico uses, wherever they hash.
	for _, k := range []string{"portico/session_ticket_keys.json", "portico/ondemand/rate.json", "portico/ondemand/names/a.example"} {
		if err := s.Store(ctx, k, []byte(k)); err != nil {
			t.Fatalf("Store(%q): %v", k, err)
		}
		if got, err := s.Load(ctx, k); err != nil || string(got) != k {
			t.Fatalf("Load(%q) = %q, %v", k, got, err)
		}
	}
	other := newStorage(t, nil, redisstorage.Options{Cluster: c.Addrs()})
	for _, name := range []string{"portico_order_slot_0", "portico_order_slot_1", "portico_ondemand_rate", "portico_renew_p256_www.example.com"} {
		if ok, err := s.TryLock(ctx, name); err != nil || !ok {
			t.Fatalf("TryLock(%q) = %v, %v", name, ok, err)
		}
		if ok, err := other.TryLock(ctx, name); err != nil || ok {
			t.Fatalf("a second storage's TryLock(%q) = %v, %v; want false", name, ok, err)
		}
		if err := s.Unlock(ctx, name); err != nil {
			t.Fatalf("Unlock(%q): %v", name, err)
		}
	}

	raw := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	defer raw.Close()
	certSlots := map[int64]bool{}
	ledgerSlots := map[int64]bool{}
	var mu sync.Mutex // ForEachMaster runs its function concurrently
	err := raw.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		keys, err := m.Keys(ctx, "portico:*").Result()
		if err != nil {
			return err
		}
		for _, k := range keys {
			slot, err := raw.ClusterKeySlot(ctx, k).Result()
			if err != nil {
				return err
			}
			mu.Lock()
			switch {
			case strings.Contains(k, "www.example.com"):
				certSlots[slot] = true
			case strings.Contains(k, "ledger/p256/"):
				ledgerSlots[slot] = true
			}
			mu.Unlock()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(certSlots) != 1 {
		t.Errorf("a certificate's keys are in %d slots, want 1", len(certSlots))
	}
	if len(ledgerSlots) < 10 {
		t.Errorf("30 ledger entries are in %d slots; want them spread", len(ledgerSlots))
	}
	keys, err := s.List(ctx, "portico/ledger/p256", false)
	if err != nil || len(keys) != 30 {
		t.Fatalf("List(ledger) = %d keys, %v; want 30", len(keys), err)
	}
}

// TestClusterStoreWaitsForReplica: on a Cluster whose masters have
// replicas, a Store returns once the replica of the key's master has the
// value, and fails with ErrNotReplicated while that replica is frozen.
func TestClusterStoreWaitsForReplica(t *testing.T) {
	c := redisserver.StartClusterWithReplicas(t, 3)
	s := newStorage(t, nil, redisstorage.Options{Cluster: c.Addrs()})
	// another with a short wait, for the frozen replicas
	impatient := newStorage(t, nil, redisstorage.Options{Cluster: c.Addrs(), ReplicaAckTimeout: 300 * time.Millisecond})
	ctx := t.Context()
	// A connection in READONLY mode per replica answers reads of its
	// master's slots (and MOVED for the others).
	var replicas []*redis.Conn
	for _, r := range c.Replicas {
		conn := redis.NewClient(&redis.Options{Addr: r.Addr}).Conn()
		t.Cleanup(func() { conn.Close() })
		if err := conn.ReadOnly(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		replicas = append(replicas, conn)
	}
	for i := range 20 {
		name := fmt.Sprintf("n%d.example", i)
		key := "certificates-p256/ca/" + name + "/" + name + ".crt"
		want := "cert " + name
		if err := s.Store(ctx, key, []byte(want)); err != nil {
			t.Fatalf("Store: %v", err)
		}
		found := 0
		for _, r := range replicas {
			if got, err := r.HGet(ctx, "portico:v:{"+name+"}"+key, "value").Result(); err == nil && got == want {
				found++
			}
		}
		if found != 1 {
			t.Fatalf("right after Store(%q), %d replicas have it; want 1", key, found)
		}
	}

	for _, r := range c.Replicas {
		if err := r.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	err := impatient.Store(ctx, "acme/ca/users/a@example.net/a.json", []byte("{}"))
	for _, r := range c.Replicas {
		if err := r.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	}
	if !errors.Is(err, redisstorage.ErrNotReplicated) {
		t.Fatalf("Store with the replicas frozen: %v, want ErrNotReplicated", err)
	}
}

// TestClusterFailover: a Cluster master is SIGKILLed; Stores sent right
// after it died, to every slot, succeed once its replica has taken over
// (retried, not failed), and everything written before and after is there.
func TestClusterFailover(t *testing.T) {
	c := redisserver.StartClusterWithReplicas(t, 3)
	s := newStorage(t, nil, redisstorage.Options{Cluster: c.Addrs()})
	ctx := t.Context()
	key := func(i int) string { return fmt.Sprintf("certificates/ca/n%d.example/n%d.example.crt", i, i) }
	const n = 30
	for i := range n {
		if err := s.Store(ctx, key(i), []byte("before")); err != nil {
			t.Fatal(err)
		}
	}
	c.Nodes[0].Stop() // SIGKILL
	start := time.Now()
	for i := range n {
		if err := s.Store(ctx, key(i), []byte("after")); err != nil {
			t.Fatalf("Store(%q) %v after the master died: %v", key(i), time.Since(start), err)
		}
	}
	t.Logf("all %d Stores done %v after the master died", n, time.Since(start).Round(time.Millisecond))
	for i := range n {
		if got, err := s.Load(ctx, key(i)); err != nil || string(got) != "after" {
			t.Errorf("Load(%q) = %q, %v; want %q", key(i), got, err, "after")
		}
	}
	if keys, err := s.List(ctx, "certificates/ca", false); err != nil || len(keys) != n {
		t.Errorf("List after the failover: %d keys, %v; want %d", len(keys), err, n)
	}
}
