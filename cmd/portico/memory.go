package main

import (
	"context"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Go's garbage collector lets the heap grow to twice the live heap before
// it collects (GOGC=100). Most of a large Portico's heap is long-lived:
// parsed certificates, about 7 KB each, which would then cost 14 KB of
// memory each. A soft memory limit a quarter above the live heap (plus a
// floor) keeps memory near the live size when the live heap is large (8.5
// KiB per cached certificate beyond its own bytes at 10,000 certificates,
// against 15), while a small Portico, whose live heap is a few MiB, keeps
// Go's default pacing and pays no extra collections on its request and
// handshake paths. A lower GOGC everywhere did the same for memory but cost
// 8–10% more CPU per handshake and per HTTP/2 request in the benchmarks.

const (
	// memoryHeadroom is the part of the live heap the limit adds.
	memoryHeadroom = 0.25
	// memoryFloor is added to every limit: goroutine stacks, buffers
	// and the runtime's own memory count against it too.
	memoryFloor = 32 << 20
	// memoryRetune is how often the limit follows the live heap.
	memoryRetune = time.Second
)

// memoryLimitFor is the soft memory limit for a live heap of live bytes.
func memoryLimitFor(live uint64) int64 {
	return int64(float64(live)*(1+memoryHeadroom)) + memoryFloor
}

// tuneMemory sets the soft memory limit from the live heap now and then
// every memoryRetune until ctx ends, unless the environment sets GOGC or
// GOMEMLIMIT (the operator's choice wins). When the live heap grows (a
// reload with more names), the limit follows within a second; until then
// the collector works harder, at most half the CPU by Go's own rule.
func tuneMemory(ctx context.Context) {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	retune := func() {
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			debug.SetMemoryLimit(memoryLimitFor(sample[0].Value.Uint64()))
		}
	}
	retune()
	t := time.NewTicker(memoryRetune)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			retune()
		}
	}
}
