package kernel

import (
	"context"

	"github.com/nops-kernel/nops/internal/chaos"
)

// chaosStore applies the chaos toggles' database faults (docs/chaos.md) at the entry of every
// store transaction the kernel's use cases open: InTx, which every audited change (internal/control)
// and its outbox record pass through. Reads and the writes made outside a transaction (the relay's
// leases, the degraded modes' write probe) are not affected. A nested InTx draws once: only the
// outermost transaction of a call is faulted. The kernel wraps its store only with chaos.enabled.
type chaosStore struct {
	Store
	chaos *chaos.Chaos
}

type chaosTxKey struct{}

func (s chaosStore) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	if ctx.Value(chaosTxKey{}) == nil {
		if err := s.chaos.Inject(ctx, chaos.Database); err != nil {
			return err
		}
		ctx = context.WithValue(ctx, chaosTxKey{}, true)
	}
	return s.Store.InTx(ctx, fn)
}
