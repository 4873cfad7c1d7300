package main

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestMemoryLimitFor(t *testing.T) {
	for live, want := range map[uint64]int64{
		0:         32 << 20,
		8 << 20:   42 << 20,
		400 << 20: 532 << 20,
	} {
		if got := memoryLimitFor(live); got != want {
			t.Errorf("memoryLimitFor(%d MiB) = %d MiB, want %d MiB", live>>20, got>>20, want>>20)
		}
	}
}

// TestTuneMemorySetsLimitFromLiveHeap runs the tuner in this process: the
// soft limit it sets follows the live heap, and the operator's GOMEMLIMIT
// turns it off.
func TestTuneMemorySetsLimitFromLiveHeap(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1)) // restore
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	ballast := make([]byte, 64<<20) // live while the test runs
	for i := range ballast {
		ballast[i] = 1
	}
	runtime.GC()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tuneMemory(ctx); close(done) }()
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		metrics.Read(sample)
		live := sample[0].Value.Uint64()
		limit := debug.SetMemoryLimit(-1)
		if live >= 64<<20 && limit >= int64(live) && limit <= memoryLimitFor(live)+(8<<20) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("memory limit %d MiB for a live heap of %d MiB, want about %d MiB", limit>>20, live>>20, memoryLimitFor(live)>>20)
		}
		time.Sleep(10 * time.Millisecond) // polling the runtime's figures
	}
	cancel()
	<-done
	runtime.KeepAlive(ballast)

	// the operator's setting wins: the tuner does nothing
	debug.SetMemoryLimit(1 << 40)
	t.Setenv("GOMEMLIMIT", "1TiB")
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	tuneMemory(ctx)
	if got := debug.SetMemoryLimit(-1); got != 1<<40 {
		t.Errorf("with GOMEMLIMIT set, the limit was changed to %d", got)
	}
}
