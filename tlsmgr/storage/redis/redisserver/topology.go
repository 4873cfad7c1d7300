package redisserver

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// MasterName is the name under which StartSentinel's sentinels monitor
// the master.
const MasterName = "portico"

// readyTimeout bounds how long StartSentinel and StartCluster wait for
// the processes to find each other.
const readyTimeout = 60 * time.Second

// noSyncDelay makes a master send a new replica its first copy at once,
// instead of waiting 5 s for more replicas to share one transfer.
var noSyncDelay = []string{"--repl-diskless-sync-delay", "0"}

// SentinelGroup is a master, its replicas and the sentinels watching
// them, as operators run Redis for automatic failover.
type SentinelGroup struct {
	Master    *Server
	Replicas  []*Server
	Sentinels []*Server
}

// SentinelAddrs are the sentinels' addresses, for a client.
func (g *SentinelGroup) SentinelAddrs() []string {
	out := make([]string, len(g.Sentinels))
	for i, s := range g.Sentinels {
		out[i] = s.Addr
	}
	return out
}

// StartSentinel starts a master with the given number of replicas and
// sentinels (quorum: a majority of them), and returns once the sentinels
// know the replicas and each other, so that a failover can happen. The
// sentinels declare a master down after one second without an answer.
func StartSentinel(t testing.TB, replicas, sentinels int) *SentinelGroup {
	t.Helper()
	g := &SentinelGroup{Master: startWith(t, &Server{extra: noSyncDelay})}
	host, port, _ := net.SplitHostPort(g.Master.Addr)
	for range replicas {
		g.Replicas = append(g.Replicas, startWith(t, &Server{extra: append([]string{"--replicaof", host, port}, noSyncDelay...)}))
	}
	quorum := sentinels/2 + 1
	for range sentinels {
		g.Sentinels = append(g.Sentinels, startWith(t, &Server{sentinel: []string{
			fmt.Sprintf("sentinel monitor %s %s %s %d", MasterName, host, port, quorum),
			"sentinel down-after-milliseconds " + MasterName + " 1000",
			"sentinel failover-timeout " + MasterName + " 10000",
			"sentinel parallel-syncs " + MasterName + " 1",
		}}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	for _, s := range g.Sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr})
		err := poll(ctx, func() error {
			m, err := c.Master(ctx, MasterName).Result()
			if err != nil {
				return err
			}
			if m["num-slaves"] != strconv.Itoa(replicas) || m["num-other-sentinels"] != strconv.Itoa(sentinels-1) {
				return fmt.Errorf("sentinel %s knows %s replicas and %s other sentinels", s.Addr, m["num-slaves"], m["num-other-sentinels"])
			}
			return nil
		})
		c.Close()
		if err != nil {
			t.Fatalf("redisserver: sentinels not ready: %v", err)
		}
	}
	// Replicas that have not finished their first sync cannot be promoted.
	for _, r := range g.Replicas {
		c := redis.NewClient(&redis.Options{Addr: r.Addr})
		err := poll(ctx, func() error {
			info, err := c.Info(ctx, "replication").Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "master_link_status:up") {
				return fmt.Errorf("replica %s not in sync", r.Addr)
			}
			return nil
		})
		c.Close()
		if err != nil {
			t.Fatalf("redisserver: replicas not ready: %v", err)
		}
	}
	return g
}

// CurrentMaster asks the first sentinel that answers where the master is
// now.
func (g *SentinelGroup) CurrentMaster(ctx context.Context) (string, error) {
	var last error
	for _, s := range g.Sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr})
		addr, err := c.GetMasterAddrByName(ctx, MasterName).Result()
		c.Close()
		if err == nil && len(addr) == 2 {
			return net.JoinHostPort(addr[0], addr[1]), nil
		}
		last = err
	}
	return "", fmt.Errorf("no sentinel knows the master: %v", last)
}

// Server returns the data server (master or replica) at addr.
func (g *SentinelGroup) Server(addr string) *Server {
	for _, s := range append([]*Server{g.Master}, g.Replicas...) {
		if s.Addr == addr {
			return s
		}
	}
	return nil
}

// Cluster is a Redis Cluster.
type Cluster struct {
	Nodes    []*Server // the masters, in slot order
	Replicas []*Server // Replicas[i] replicates Nodes[i], when started with replicas
}

// Addrs are the nodes' addresses, for a client's seed list.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr
	}
	return out
}

// StartCluster starts masters cluster-enabled nodes, splits the 16384
// slots evenly between them, joins them (CLUSTER MEET) and returns once
// every node reports the cluster ok and knows every other.
func StartCluster(t testing.TB, masters int) *Cluster {
	t.Helper()
	return startCluster(t, masters, false)
}

// StartClusterWithReplicas is StartCluster with one replica per master,
// returning once every master has its replica connected.
func StartClusterWithReplicas(t testing.TB, masters int) *Cluster {
	t.Helper()
	return startCluster(t, masters, true)
}

func startCluster(t testing.TB, masters int, replicas bool) *Cluster {
	t.Helper()
	c := &Cluster{}
	node := func() *Server {
		return startWith(t, &Server{extra: append([]string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000",
		}, noSyncDelay...)})
	}
	for range masters {
		c.Nodes = append(c.Nodes, node())
		if replicas {
			c.Replicas = append(c.Replicas, node())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	clients := make([]*redis.Client, masters)
	for i, n := range c.Nodes {
		clients[i] = redis.NewClient(&redis.Options{Addr: n.Addr})
		defer clients[i].Close()
	}
	const slots = 16384
	for i, cl := range clients {
		lo, hi := i*slots/masters, (i+1)*slots/masters-1
		if err := cl.ClusterAddSlotsRange(ctx, lo, hi).Err(); err != nil {
			t.Fatalf("redisserver: CLUSTER ADDSLOTSRANGE %d %d on %s: %v", lo, hi, c.Nodes[i].Addr, err)
		}
	}
	for _, n := range slices.Concat(c.Nodes[1:], c.Replicas) {
		host, port, _ := net.SplitHostPort(n.Addr)
		p, _ := strconv.Atoi(port)
		if err := clients[0].ClusterMeet(ctx, host, strconv.Itoa(p)).Err(); err != nil {
			t.Fatalf("redisserver: CLUSTER MEET %s: %v", n.Addr, err)
		}
	}
	for i, cl := range clients {
		err := poll(ctx, func() error {
			info, err := cl.ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") ||
				!strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(masters+len(c.Replicas))+"\r") ||
				!strings.Contains(info, "cluster_slots_ok:16384") {
				return fmt.Errorf("node %s: %s", c.Nodes[i].Addr, strings.Join(strings.Fields(info)[:6], " "))
			}
			return nil
		})
		if err != nil {
			t.Fatalf("redisserver: cluster not ready: %v", err)
		}
	}
	for i, r := range c.Replicas {
		c.replicate(ctx, t, clients[i], r)
	}
	return c
}

// replicate makes r a replica of the master m is connected to, and waits
// until m sees it connected.
func (c *Cluster) replicate(ctx context.Context, t testing.TB, m *redis.Client, r *Server) {
	t.Helper()
	id, err := m.ClusterMyID(ctx).Result()
	if err != nil {
		t.Fatalf("redisserver: CLUSTER MYID: %v", err)
	}
	rc := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rc.Close()
	// The replica must have heard of the master (gossip) before it can
	// follow it.
	err = poll(ctx, func() error { return rc.Do(ctx, "CLUSTER", "REPLICATE", id).Err() })
	if err == nil {
		err = poll(ctx, func() error {
			info, err := m.Info(ctx, "replication").Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "connected_slaves:1") || !strings.Contains(info, "state=online") {
				return fmt.Errorf("replica %s not online", r.Addr)
			}
			return nil
		})
	}
	if err != nil {
		t.Fatalf("redisserver: replica %s: %v", r.Addr, err)
	}
}

// poll calls check every 50ms until it succeeds or ctx ends, and returns
// its last error then.
func poll(ctx context.Context, check func() error) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-tick.C:
		}
	}
}
