package control

import (
	"context"

	"github.com/nops-kernel/nops/internal/events"
)

// ActionDegradation is the audit action of a replica entering or leaving a degraded mode
// (internal/degrade). Stable string: auditors filter on it. Recorded in the global tree.
const ActionDegradation = "degradation.change"

// RecordDegradation records a degraded-mode change: its audit record and, when event is true,
// its nops.degradation.changed.v1 event, in one transaction. It fails like any write when the
// database refuses writes (read_only mode): the caller then publishes the event on the bus
// directly and retries the record later.
func (c *Control) RecordDegradation(ctx context.Context, p events.DegradationChanged, event bool) error {
	if err := p.Validate(); err != nil {
		return err
	}
	return c.mutate(ctx, func(context.Context) (outcome, error) {
		o := outcome{
			action:   ActionDegradation,
			resource: events.DegradationSubject(p.Mode),
			reason:   "allowed: " + p.Change + " (" + p.Trigger + "): " + p.Reason,
		}
		if event {
			o.event = p
		} else {
			o.reason += "; event published on the bus directly"
		}
		return o, nil
	})
}
