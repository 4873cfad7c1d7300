package proxy

import "math/bits"

// A policy picks one upstream among avail (a bit per upstream index, never
// zero), for a request from client (its address after trusted_proxies, or
// nil). Policies are named by [[pool]] policy; none allocates.
type policy func(p *Pool, avail uint64, client []byte) int

var policies = map[string]policy{
	"round_robin": roundRobin,
	"least_conn":  leastConn,
	"ip_hash":     ipHash,
	"random_two":  randomTwo,
	"first":       first,
}

// roundRobin takes the upstreams in turn, skipping those not available.
func roundRobin(p *Pool, avail uint64, _ []byte) int {
	return nextFrom(p, avail, int(p.next.Add(1)%uint64(len(p.upstreams))))
}

// nextFrom returns the first available upstream at or after index start,
// wrapping around.
func nextFrom(p *Pool, avail uint64, start int) int {
	n := len(p.upstreams)
	for i := 0; i < n; i++ {
		k := (start + i) % n
		if avail&bit(k) != 0 {
			return k
		}
	}
	return bits.TrailingZeros64(avail)
}

// first takes the first available upstream in the order configured
// (a primary and its stand-bys).
func first(_ *Pool, avail uint64, _ []byte) int { return bits.TrailingZeros64(avail) }

// leastConn takes the available upstream with the fewest requests in
// flight; among equals, the next in turn.
func leastConn(p *Pool, avail uint64, _ []byte) int {
	n := len(p.upstreams)
	start := int(p.next.Add(1) % uint64(n))
	best, bestLoad := -1, int64(0)
	for i := 0; i < n; i++ {
		k := (start + i) % n
		if avail&bit(k) == 0 {
			continue
		}
		if load := p.upstreams[k].inFlight.Load(); best < 0 || load < bestLoad {
			best, bestLoad = k, load
		}
	}
	return best
}

// ipHash sends a client to the same upstream while that one is available
// (then to the next available one after it).
func ipHash(p *Pool, avail uint64, client []byte) int {
	if len(client) == 0 {
		return roundRobin(p, avail, client)
	}
	h := maphashBytes(client)
	return nextFrom(p, avail, int(h%uint64(len(p.upstreams))))
}

// randomTwo takes two available upstreams at random and the less loaded
// of them ("the power of two choices").
func randomTwo(p *Pool, avail uint64, _ []byte) int {
	n := bits.OnesCount64(avail)
	if n == 1 {
		return bits.TrailingZeros64(avail)
	}
	a := nthSet(avail, random(n))
	b := nthSet(avail, (a2i(avail, a)+1+random(n-1))%n)
	if p.upstreams[b].inFlight.Load() < p.upstreams[a].inFlight.Load() {
		return b
	}
	return a
}

// nthSet returns the index of the n-th (0-based) set bit of m.
func nthSet(m uint64, n int) int {
	for ; n > 0; n-- {
		m &= m - 1
	}
	return bits.TrailingZeros64(m)
}

// a2i returns the rank of bit index k among the set bits of m.
func a2i(m uint64, k int) int { return bits.OnesCount64(m & (1<<k - 1)) }
