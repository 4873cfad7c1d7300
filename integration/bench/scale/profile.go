package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"time"

	"go.uber.org/zap"

	"github.com/portico-proxy/portico/config"
	"github.com/portico-proxy/portico/tlsmgr"
)

// profile loads the measured start's config and storage into a tlsmgr.Manager
// in this process, as `portico run` does (New, Start, Apply), with a CPU
// profile around Apply and a heap profile once it is done, and prints the live
// heap per cached certificate after a full GC: the figure RSS approximates.
func (r *run) profile(ctx context.Context) error {
	if err := os.MkdirAll(r.profileDir, 0o755); err != nil {
		return err
	}
	cfg, err := config.Load(r.cfgPath)
	if err != nil {
		return err
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	m, err := tlsmgr.New(cfg, zap.NewNop())
	if err != nil {
		return err
	}
	defer m.Stop()
	m.Start()
	cpu, err := os.Create(filepath.Join(r.profileDir, "cpu.pprof"))
	if err != nil {
		return err
	}
	defer cpu.Close()
	if err := pprof.StartCPUProfile(cpu); err != nil {
		return err
	}
	cpu0, _ := cpuTime(os.Getpid())
	t0 := time.Now()
	m.Apply(ctx, cfg)
	took := time.Since(t0)
	cpu1, _ := cpuTime(os.Getpid())
	pprof.StopCPUProfile()

	// the scheduler's first pass runs after Apply: let it finish
	waited, _, _ := waitIdle(os.Getpid(), 2*time.Minute)
	runtime.GC()
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	heap, err := os.Create(filepath.Join(r.profileDir, "heap.pprof"))
	if err != nil {
		return err
	}
	defer heap.Close()
	if err := pprof.WriteHeapProfile(heap); err != nil {
		return err
	}
	own := float64(r.pop.ownBytes) / float64(r.pop.certs)
	live := float64(after.HeapAlloc) - float64(before.HeapAlloc)
	fmt.Fprintf(os.Stderr, "  in-process: Apply took %v (CPU %v, %.0f µs per certificate), then busy %v; live heap after GC +%s: %.0f B per certificate, %.0f B beyond its own bytes\n",
		took.Round(time.Millisecond), cpu1-cpu0, float64((cpu1-cpu0).Microseconds())/float64(2*r.n),
		waited.Round(100*time.Millisecond), mib(int64(live)), live/float64(2*r.n), live/float64(2*r.n)-own)
	fmt.Fprintf(os.Stderr, "  profiles in %s (go tool pprof -top %s)\n", r.profileDir, filepath.Join(r.profileDir, "cpu.pprof"))
	runtime.KeepAlive(m)
	return nil
}
