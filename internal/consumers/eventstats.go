package consumers

import (
	"context"
	"fmt"
	"time"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
)

// EventStatsName is the event-stats consumer's name: its durable consumer group on the bus, its
// inbox key and the DLQ's consumer name.
const EventStatsName = "event-stats"

// EventStat is one row of the event-stats projection: how many distinct events of one type a
// tenant has had, and the time of the latest.
type EventStat struct {
	Tenant      string
	Type        string
	Count       int64
	LastEventAt time.Time // the largest event time counted, UTC
}

// EventStatsReader reads the projection; GET /v1/events/stats uses it.
type EventStatsReader interface {
	// EventStats returns the rows of tenant, or of every tenant when tenant is "", sorted by
	// tenant then type (byte order). No rows is an empty result, not an error.
	EventStats(ctx context.Context, tenant string) ([]EventStat, error)
}

// EventStatsStore is what the event-stats consumer needs of the database.
type EventStatsStore interface {
	TxRunner
	InboxStore
	EventStatsReader
	// IncrementEventStats adds one to the count of (tenant, typ), creating the row at 1, and
	// raises its last event time to at when at is later. It joins the transaction in ctx.
	IncrementEventStats(ctx context.Context, tenant, typ string, at time.Time) error
}

// EventStatsHandler is the event-stats consumer's handler: it parses the delivery's attributes
// strictly (events.ParseAttributes: the count needs no payload, so the data is checked to be a
// JSON object and not decoded) and, through a Batcher (Once with group commit), counts the event
// in its tenant and type, so every distinct event is counted exactly once whatever the
// redeliveries.
//
// A payload events.ParseAttributes rejects, or whose id, tenant or type disagree with the
// message's (the attributes the bus routed it by), is a bus.Terminal error: no retry can fix it.
// A store failure is an ordinary error, retried with backoff.
func EventStatsHandler(st EventStatsStore) bus.Handler {
	// Counting is one small write per event: the handlers running at once share a commit.
	once := NewBatcher(st, st, EventStatsName, DefaultBatch)
	return func(ctx context.Context, d bus.Delivery) error {
		e, err := events.ParseAttributes(d.Payload)
		if err != nil {
			return bus.Terminal(fmt.Errorf("%s: parse event %q: %w", EventStatsName, d.ID, err))
		}
		if e.ID != d.ID || e.Tenant != d.Tenant || string(e.Type) != d.Type {
			return bus.Terminal(fmt.Errorf("%s: event %q (tenant %q, type %q) delivered as %q (tenant %q, type %q)",
				EventStatsName, e.ID, e.Tenant, e.Type, d.ID, d.Tenant, d.Type))
		}
		err = once.Once(ctx, e.ID, func(ctx context.Context) error {
			return st.IncrementEventStats(ctx, e.Tenant, string(e.Type), e.Time)
		})
		if err != nil {
			return fmt.Errorf("%s: count event %s: %w", EventStatsName, e.ID, err)
		}
		return nil
	}
}

// CheckEventStat validates IncrementEventStats's arguments; adapters call it.
func CheckEventStat(tenant, typ string, at time.Time) error {
	switch {
	case !bus.ValidToken(tenant):
		return errs.Field("tenant", "must be 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")
	case typ == "" || len(typ) > 255:
		return errs.Field("type", "must be 1 to 255 bytes")
	case at.IsZero():
		return errs.Field("at", "is required")
	}
	return nil
}
