package consumers

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/metric"

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
	// raises its last event time to at when at is later: AddEventStats of one event. It joins
	// the transaction in ctx.
	IncrementEventStats(ctx context.Context, tenant, typ string, at time.Time) error
	// AddEventStats adds each add's Count to the count of its (Tenant, Type), creating the row
	// at Count, and raises the row's last event time to LastEventAt when later, in one statement
	// joining the transaction in ctx. adds go through NormalizeEventStatAdds first (an invalid
	// one is an errs.Invalid and adds nothing; two of one pair are summed).
	AddEventStats(ctx context.Context, adds []EventStatAdd) error
}

// EventStatAdd is what AddEventStats adds to one row of the projection: Count distinct events of
// Type in Tenant, the latest at LastEventAt.
type EventStatAdd struct {
	Tenant      string
	Type        string
	Count       int64
	LastEventAt time.Time
}

// countedEvent is what the event-stats consumer counts of one event.
type countedEvent struct {
	tenant, typ string
	at          time.Time
}

// EventStatsHandler is the event-stats consumer's handler for one delivery at a time: it parses
// the delivery's attributes strictly (events.ParseAttributes: the count needs no payload, so the
// data is checked to be a JSON object and not decoded) and, through a GroupBatcher (Once with
// group commit), counts the event in its tenant and type, so every distinct event is counted
// exactly once whatever the redeliveries. A group of events is counted with two statements
// whatever its size: one claims its event ids, one adds the newly claimed ones to their rows,
// summed per tenant and type. The kernel runs EventStatsBatchHandler instead, which takes its
// groups from the bus.
//
// A payload events.ParseAttributes rejects, or whose id, tenant or type disagree with the
// message's (the attributes the bus routed it by), is a bus.Terminal error: no retry can fix it.
// A store failure is an ordinary error, retried with backoff.
func EventStatsHandler(st EventStatsStore) bus.Handler { return eventStatsHandler(st, nil) }

// eventStatsHandler is EventStatsHandler recording its group sizes with meter (nil: not).
func eventStatsHandler(st EventStatsStore, meter metric.Meter) bus.Handler {
	// Counting is one small write per event: the handlers running at once share a commit.
	once := eventStatsBatcher(st, meter)
	return func(ctx context.Context, d bus.Delivery) error {
		ev, err := countedOf(d)
		if err != nil {
			return err
		}
		if err := once.Once(ctx, d.ID, ev); err != nil {
			return fmt.Errorf("%s: count event %s: %w", EventStatsName, d.ID, err)
		}
		return nil
	}
}

// EventStatsBatchHandler is the event-stats consumer's batch handler, the one the kernel runs
// (bus.BatchSubscriber): it parses each delivery of the batch as EventStatsHandler does and
// counts the valid ones as one group (GroupBatcher.Apply): one transaction claiming their event
// ids with one statement and adding the newly claimed ones with another. When that transaction
// fails, the events are counted one by one (each with Once), so that one event the store refuses
// fails alone and the others of its batch are counted and acknowledged, instead of the whole
// batch being retried — and dead-lettered — with it; each one still commits its claim and its
// count together, so every distinct event is counted exactly once. A malformed delivery is a
// bus.Terminal error for itself only.
func EventStatsBatchHandler(st EventStatsStore) bus.BatchHandler {
	return eventStatsBatchHandler(st, nil)
}

// eventStatsBatchHandler is EventStatsBatchHandler recording its group sizes with meter (nil:
// not).
func eventStatsBatchHandler(st EventStatsStore, meter metric.Meter) bus.BatchHandler {
	g := eventStatsBatcher(st, meter)
	return func(ctx context.Context, ds []bus.Delivery) []error {
		out := make([]error, len(ds))
		ids := make([]string, 0, len(ds))
		evs := make([]countedEvent, 0, len(ds))
		at := make([]int, 0, len(ds)) // ids[j] is ds[at[j]]'s
		for i, d := range ds {
			ev, err := countedOf(d)
			if err != nil {
				out[i] = err
				continue
			}
			ids = append(ids, d.ID)
			evs = append(evs, ev)
			at = append(at, i)
		}
		for j, err := range g.Apply(ctx, ids, evs) {
			if err != nil {
				out[at[j]] = fmt.Errorf("%s: count event %s: %w", EventStatsName, ids[j], err)
			}
		}
		return out
	}
}

// eventStatsBatcher counts groups of events with two statements: claim, then add.
func eventStatsBatcher(st EventStatsStore, meter metric.Meter) *GroupBatcher[countedEvent] {
	return NewGroupBatcher(st, st, EventStatsName, func(ctx context.Context, evs []countedEvent) error {
		return st.AddEventStats(ctx, sumEvents(evs))
	}, BatcherOptions{Max: EventStatsBatch, Meter: meter})
}

// countedOf parses what the event-stats consumer counts of d; a malformed delivery is a
// bus.Terminal error.
func countedOf(d bus.Delivery) (countedEvent, error) {
	e, err := events.ParseAttributes(d.Payload)
	if err != nil {
		return countedEvent{}, bus.Terminal(fmt.Errorf("%s: parse event %q: %w", EventStatsName, d.ID, err))
	}
	if e.ID != d.ID || e.Tenant != d.Tenant || string(e.Type) != d.Type {
		return countedEvent{}, bus.Terminal(fmt.Errorf("%s: event %q (tenant %q, type %q) delivered as %q (tenant %q, type %q)",
			EventStatsName, e.ID, e.Tenant, e.Type, d.ID, d.Tenant, d.Type))
	}
	return countedEvent{tenant: e.Tenant, typ: string(e.Type), at: e.Time}, nil
}

// sumEvents returns the additions of evs (distinct events), one per tenant and type.
func sumEvents(evs []countedEvent) []EventStatAdd {
	adds := make([]EventStatAdd, 0, 4)
	for _, ev := range evs {
		i := slices.IndexFunc(adds, func(a EventStatAdd) bool { return a.Tenant == ev.tenant && a.Type == ev.typ })
		if i < 0 {
			adds = append(adds, EventStatAdd{Tenant: ev.tenant, Type: ev.typ, Count: 1, LastEventAt: ev.at})
			continue
		}
		adds[i].Count++
		if ev.at.After(adds[i].LastEventAt) {
			adds[i].LastEventAt = ev.at
		}
	}
	return adds
}

// NormalizeEventStatAdds validates AddEventStats's argument and returns it with the additions
// of one (tenant, type) merged (counts summed, the latest time), sorted by tenant then type so
// that concurrent transactions update rows in one order; adapters call it. A row may be added to
// once per statement on PostgreSQL (ON CONFLICT DO UPDATE), hence the merge.
func NormalizeEventStatAdds(adds []EventStatAdd) ([]EventStatAdd, error) {
	out := make([]EventStatAdd, 0, len(adds))
	for _, a := range adds {
		if err := CheckEventStat(a.Tenant, a.Type, a.LastEventAt); err != nil {
			return nil, err
		}
		if a.Count <= 0 {
			return nil, errs.Field("count", "must be positive")
		}
		a.LastEventAt = a.LastEventAt.UTC()
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b EventStatAdd) int {
		return cmp.Or(strings.Compare(a.Tenant, b.Tenant), strings.Compare(a.Type, b.Type))
	})
	merged := out[:0]
	for _, a := range out {
		if n := len(merged); n > 0 && merged[n-1].Tenant == a.Tenant && merged[n-1].Type == a.Type {
			merged[n-1].Count += a.Count
			if a.LastEventAt.After(merged[n-1].LastEventAt) {
				merged[n-1].LastEventAt = a.LastEventAt
			}
			continue
		}
		merged = append(merged, a)
	}
	return merged, nil
}

// CheckEventStat validates IncrementEventStats's arguments, one addition of AddEventStats
// (NormalizeEventStatAdds calls it).
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
