package tlsmgr

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/caddyserver/certmagic"
)

// orderSlots caps the orders in flight at once across a fleet: an order
// first takes one of n slot locks in shared storage. Each instance's
// scheduler waits for a free slot, so a fleet started at once does not
// stampede the CA, whatever its size.
type orderSlots struct {
	storage certmagic.Storage
	n       int
}

func slotName(i int) string { return fmt.Sprintf("portico_order_slot_%d", i) }

// acquire takes a free slot, polling with jitter until one frees up or ctx
// ends, and returns its release function.
func (s orderSlots) acquire(ctx context.Context) (func(), error) {
	tl, ok := s.storage.(certmagic.TryLocker)
	if !ok {
		// a backend without TryLock cannot share slots; its own lock
		// around each name still prevents duplicate orders
		return func() {}, nil
	}
	start := rand.IntN(s.n) // spread instances over the slots
	for {
		for i := 0; i < s.n; i++ {
			name := slotName((start + i) % s.n)
			got, err := tl.TryLock(ctx, name)
			if err != nil {
				return nil, fmt.Errorf("take order slot: %w", err)
			}
			if got {
				return func() { s.storage.Unlock(context.WithoutCancel(ctx), name) }, nil
			}
		}
		wait := 200*time.Millisecond + time.Duration(rand.Int64N(int64(300*time.Millisecond)))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}
