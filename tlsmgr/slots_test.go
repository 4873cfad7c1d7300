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

// TestOnDemandOrderCap: new on-demand orders beyond max_per_minute are
// refused, for the whole fleet (the count is in shared storage).
func TestOnDemandOrderCap(t *testing.T) {
	a, b := testManager(t), testManager(t)
	b.storage = a.storage // two instances of one fleet
	ctx := context.Background()
	for i, m := range []*Manager{a, b, a} {
		err := m.takeOnDemandOrder(ctx, 3)
		if err != nil {
			t.Fatalf("order %d refused under the cap: %v", i+1, err)
		}
	}
	if err := b.takeOnDemandOrder(ctx, 3); err != errOnDemandRate {
		t.Fatalf("fourth order in a minute: %v, want the cap", err)
	}
}
