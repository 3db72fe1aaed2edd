package natsbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/errs"
)

// replayBatch is how many messages a replay asks the server for at a time.
const replayBatch = 256

// Replay implements bus.Bus with an ordered (ephemeral, unacknowledged) consumer on the event
// stream starting at from, filtered on f's event subjects (redeliveries to one consumer are not
// events of their own and are left out). It ends at the first message stored at or after to, or
// once it has caught up with the stream. A zero from starts at the oldest message; a zero to
// replays up to the end of the stream.
func (b *Bus) Replay(ctx context.Context, from, to time.Time, f bus.Filter, fn func(bus.Stored) error) (bus.ReplayResult, error) {
	var res bus.ReplayResult
	if err := f.Validate(); err != nil {
		return res, fmt.Errorf("replay: %w", err)
	}
	if !to.IsZero() && !to.After(from) {
		return res, errs.Field("to", "must be after from")
	}
	if fn == nil {
		return res, errs.Field("fn", "must not be nil")
	}
	info, err := b.events.Info(ctx)
	if err != nil {
		return res, unavailable(err, "replay")
	}
	if info.State.Msgs > 0 {
		res.Oldest = info.State.FirstTime.UTC()
	}
	subjects := b.eventSubjects(f)
	if len(subjects) > 1 && !b.multiFilter {
		// NATS < 2.10: one filter subject per consumer; fn only sees what f matches anyway.
		subjects = []string{b.cfg.Namespace + ".events.>"}
	}
	occ := jetstream.OrderedConsumerConfig{
		FilterSubjects:    subjects,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: time.Minute,
	}
	if !from.IsZero() {
		occ.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		start := from.UTC()
		occ.OptStartTime = &start
	}
	cons, err := b.events.OrderedConsumer(ctx, occ)
	if err != nil {
		return res, unavailable(err, "replay: create a consumer")
	}
	defer b.deleteOrdered(cons)
	if ci := cons.CachedInfo(); ci == nil || ci.NumPending == 0 {
		return res, nil
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(replayBatch))
	if err != nil {
		return res, unavailable(err, "replay: consume")
	}
	defer it.Stop()
	for {
		msg, err := b.replayNext(ctx, it, cons)
		if err != nil {
			return res, err
		}
		if msg == nil {
			return res, nil // caught up
		}
		md, err := msg.Metadata()
		if err != nil {
			return res, fmt.Errorf("replay: %w", err)
		}
		if !to.IsZero() && !md.Timestamp.Before(to) {
			return res, nil
		}
		st := bus.Stored{
			Message:  b.decode(msg.Subject(), msg.Headers(), msg.Data()),
			Position: strconv.FormatUint(md.Sequence.Stream, 10),
			StoredAt: md.Timestamp.UTC(),
		}
		if f.Match(st.Tenant, st.Type) {
			if err := fn(st); err != nil {
				return res, err
			}
			res.Matched++
		}
		if md.NumPending == 0 {
			return res, nil
		}
	}
}

// replayIdle is how long a replay waits for its next message before asking the server whether
// anything is left (messages counted as pending may have expired meanwhile).
const replayIdle = 5 * time.Second

// replayNext returns the next message of a replay, or nil once nothing is pending any more.
func (b *Bus) replayNext(ctx context.Context, it jetstream.MessagesContext, cons jetstream.Consumer) (jetstream.Msg, error) {
	for {
		nctx, cancel := context.WithTimeout(ctx, replayIdle)
		msg, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if err == nil {
			return msg, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("replay: %w", context.Cause(ctx))
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			return nil, unavailable(err, "replay")
		}
		ci, err := cons.Info(ctx)
		if err != nil {
			return nil, unavailable(err, "replay")
		}
		if ci.NumPending == 0 {
			return nil, nil
		}
	}
}

// deleteOrdered removes a replay's consumer now instead of after its inactivity threshold.
func (b *Bus) deleteOrdered(cons jetstream.Consumer) {
	ci := cons.CachedInfo()
	if ci == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.events.DeleteConsumer(ctx, ci.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		b.logger.Debug("replay consumer not deleted; it expires by itself", "consumer", ci.Name, "error", err.Error())
	}
}
