//go:build !race

// The race detector makes sync.Pool drop what it is given, at random, so
// allocations are counted without it: `make test` runs this file in a run
// of its own without -race.

package proxy

import (
	"crypto/tls"
	"testing"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/integration/testkit"
)

// TestFastPathAllocatesNothing: with 1,000 routes, header rules, the
// access log and HTTP/3 (so Alt-Svc) on, the fast path serves a request without allocating: the
// process allocates no more per request than a client talking TLS straight
// to an upstream (crypto/tls allocates on each record read; the
// hand-written client and upstream allocate nothing).
func TestFastPathAllocatesNothing(t *testing.T) {
	const host = "bench.test"
	bc := testkit.SelfSigned(t, host)
	clientTLS := &tls.Config{RootCAs: bc.Pool, ServerName: host, NextProtos: []string{"http/1.1"}}
	perRequest := func(c *benchClient) float64 {
		for range 100 { // warm: buffers grown, pools filled
			if err := c.get(); err != nil {
				t.Fatal(err)
			}
		}
		// averaged over many requests, so that the rare allocation of a
		// background goroutine (the log's writer, a timer) rounds away
		return testing.AllocsPerRun(2000, func() {
			if err := c.get(); err != nil {
				t.Fatal(err)
			}
		})
	}
	direct := benchUpstream(t, 1024, &tls.Config{GetCertificate: bc.Source().GetCertificate})
	baseline := perRequest(dialBenchClient(t, direct, clientTLS, host))
	cfg := benchRoutedConfig(t, host, benchUpstream(t, 1024, nil), 1000)
	cfg.Listen.HTTP3 = true // the fast path's answers carry Alt-Svc too
	addr := startBenchProxy(t, bc, cfg)
	if n := perRequest(dialBenchClient(t, addr, clientTLS, host)); n > baseline {
		t.Errorf("%v allocations per request through the proxy, %v without it: the fast path allocates", n, baseline)
	}
}

// TestPoolPickAllocatesNothing: picking an upstream allocates nothing,
// whatever the policy.
func TestPoolPickAllocatesNothing(t *testing.T) {
	for _, policy := range config.Policies {
		p := benchPool(t, policy)
		client := []byte("203.0.113.7")
		if n := testing.AllocsPerRun(1000, func() { p.pick(client, 0) }); n != 0 {
			t.Errorf("%s: %v allocations per pick", policy, n)
		}
	}
}
