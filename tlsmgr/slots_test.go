package tlsmgr

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/certmagic"
)

// TestOrderSlotsCapConcurrency: instances sharing one storage never hold
// more order slots at once than max_concurrent.
func TestOrderSlotsCapConcurrency(t *testing.T) {
	storage := &certmagic.FileStorage{Path: t.TempDir()}
	const slots, workers, rounds = 2, 8, 5
	var inFlight, peak atomic.Int32
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// each worker is its own "instance" with its own orderSlots value
			s := orderSlots{storage: storage, n: slots}
			for r := 0; r < rounds; r++ {
				release, err := s.acquire(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				n := inFlight.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				inFlight.Add(-1)
				release()
			}
		}()
	}
	wg.Wait()
	if p := peak.Load(); p > slots || p < 1 {
		t.Fatalf("peak %d orders in flight, cap %d", p, slots)
	}
}
