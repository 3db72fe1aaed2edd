package natsbus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/errs"
)

// backpressureRetryAfter is the Retry-After hint of a publish that found the window full.
const backpressureRetryAfter = time.Second

// ackTimeout is how long a sent message waits for the broker's acknowledgement: longer than the
// wait for room, so that a stalled broker makes new publishes fail with backpressure after
// PublishTimeout while the ones in the window are still waiting, instead of freeing the window
// just in time to let them in.
func (c Config) ackTimeout() time.Duration { return 2 * c.PublishTimeout }

// Publish implements bus.Publisher: the messages are validated, then sent pipelined in slice
// order (each holding a slot of the publish window until the broker acknowledged it), and
// Publish returns once every one was acknowledged, or with the first error. After an error
// nothing more of the call is sent; what was already sent may still be stored. At least
// Config.AtomicBatchMin messages go as atomic batches instead when the server supports them
// (see sendAtomic); the order and the error contract are the same.
func (b *Bus) Publish(ctx context.Context, msgs ...bus.Message) error {
	for i, m := range msgs {
		if err := m.Validate(); err != nil {
			return fmt.Errorf("publish message %d of %d: %w", i+1, len(msgs), err)
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	out := make([]*nats.Msg, len(msgs))
	for i, m := range msgs {
		out[i] = b.eventMsg(b.subj.Event(m.Tenant, m.Type), m, m.ID)
	}
	start := time.Now()
	var err error
	if b.useAtomic(len(out)) {
		err = b.sendAtomic(ctx, out)
	} else {
		err = b.send(ctx, out, false)
	}
	b.ins.Published(ctx, len(msgs), time.Since(start), err)
	return err
}

// Redeliver implements bus.Bus: m goes to consumer's retry subject on the event stream, with
// dedupKey as the broker's dedup key; m.ID stays the event id (header Nops-Id).
func (b *Bus) Redeliver(ctx context.Context, consumer string, m bus.Message, dedupKey string) error {
	if !bus.ValidToken(consumer) {
		return errs.Field("consumer", "must be 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")
	}
	if dedupKey == "" || len(dedupKey) > 256 {
		return errs.Field("dedup_key", "must be 1 to 256 characters")
	}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("redeliver %s to %s: %w", m.ID, consumer, err)
	}
	msg := b.eventMsg(b.subj.Retry(consumer, m.Tenant, m.Type), m, dedupKey)
	start := time.Now()
	err := b.send(ctx, []*nats.Msg{msg}, false)
	b.ins.Published(ctx, 1, time.Since(start), err)
	if err != nil {
		return fmt.Errorf("redeliver %s to %s: %w", m.ID, consumer, err)
	}
	return nil
}

// eventMsg is m as a NATS message on subject of the event stream with dedup key msgID. The
// event id has a header of its own (Nops-Id) only when it differs from the dedup key.
func (b *Bus) eventMsg(subject string, m bus.Message, msgID string) *nats.Msg {
	h := nats.Header{
		jetstream.MsgIDHeader:          {msgID},
		jetstream.ExpectedStreamHeader: {b.eventsName},
		hdrTenant:                      {m.Tenant},
		hdrType:                        {m.Type},
		hdrContentType:                 {contentTypeEvent},
	}
	if msgID != m.ID {
		h[hdrID] = []string{m.ID}
	}
	if m.TraceParent != "" {
		h[hdrTraceParent] = []string{m.TraceParent}
	}
	return &nats.Msg{Subject: subject, Header: h, Data: m.Payload}
}

// send publishes msgs asynchronously in order, each once it holds a slot of the publish window,
// and waits for their acknowledgements; see Publish. A slot is given back when its message's
// outcome is known (the client times acknowledgements out after ackTimeout), so a caller that
// stops waiting early (backpressure, ctx) leaves a goroutine behind that gives back the slots
// of what it sent.
func (b *Bus) send(ctx context.Context, msgs []*nats.Msg, deadLetter bool) error {
	if err := b.begin(deadLetter); err != nil {
		return err
	}
	defer b.inflight.Done()
	return b.pipeline(ctx, msgs)
}

// pipeline is send for a caller that holds b.inflight.
func (b *Bus) pipeline(ctx context.Context, msgs []*nats.Msg) error {
	var (
		pending  []jetstream.PubAckFuture // sent, outcome unknown, oldest first
		firstErr error
	)
	// settle1 records the outcome of the oldest pending publish and gives its slot back.
	settle1 := func(ack *jetstream.PubAck, err error) {
		paf := pending[0]
		pending = pending[1:]
		<-b.slots
		if err == nil && ack == nil {
			err = errors.New("no acknowledgement")
		}
		if err != nil && firstErr == nil {
			firstErr = b.publishErr(paf.Msg().Subject, err)
		}
	}
	for _, m := range msgs {
		if firstErr != nil {
			break
		}
		if err := ctx.Err(); err != nil {
			firstErr = fmt.Errorf("publish: %w", context.Cause(ctx))
			break
		}
		if err := b.acquire(ctx, &pending, settle1); err != nil {
			// No room (or the caller gave up): fail now rather than wait for what this call
			// already sent.
			b.abandon(pending)
			if firstErr != nil {
				return firstErr
			}
			return err
		}
		if firstErr != nil {
			<-b.slots
			break
		}
		paf, err := b.pubJS.PublishMsgAsync(m)
		if err != nil {
			<-b.slots
			firstErr = b.publishErr(m.Subject, err)
			break
		}
		pending = append(pending, paf)
	}
	for len(pending) > 0 {
		select {
		case ack := <-pending[0].Ok():
			settle1(ack, nil)
		case err := <-pending[0].Err():
			settle1(nil, err)
		case <-ctx.Done():
			b.abandon(pending)
			if firstErr != nil {
				return firstErr
			}
			return errs.Wrap(errs.Unavailable, fmt.Errorf("publish: waiting for the broker's acknowledgement: %w", context.Cause(ctx)), "event bus unavailable")
		}
	}
	return firstErr
}

// acquire takes a slot of the publish window. While there is none it also settles the caller's
// own oldest pending publish as soon as its outcome arrives (a batch larger than the window
// makes progress on its own acknowledgements). It gives up after PublishTimeout, or at ctx's
// deadline, with a backpressure error.
func (b *Bus) acquire(ctx context.Context, pending *[]jetstream.PubAckFuture, settle1 func(*jetstream.PubAck, error)) error {
	select {
	case b.slots <- struct{}{}:
		return nil
	default:
	}
	start := time.Now()
	wait := b.cfg.PublishTimeout
	if deadline, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(deadline))
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		var okc <-chan *jetstream.PubAck
		var errc <-chan error
		if len(*pending) > 0 {
			okc, errc = (*pending)[0].Ok(), (*pending)[0].Err()
		}
		select {
		case b.slots <- struct{}{}:
			return nil
		case ack := <-okc:
			settle1(ack, nil)
		case err := <-errc:
			settle1(nil, err)
		case <-timer.C:
			return bus.Backpressure(time.Since(start).Round(time.Millisecond), backpressureRetryAfter)
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return bus.Backpressure(time.Since(start).Round(time.Millisecond), backpressureRetryAfter)
			}
			return fmt.Errorf("publish: waiting for room: %w", context.Cause(ctx))
		}
	}
}

// abandon hands the slots of publishes whose caller stopped waiting to a goroutine that gives
// each back once its outcome is known. The caller holds b.inflight, so the Add cannot race
// Close's Wait.
func (b *Bus) abandon(pending []jetstream.PubAckFuture) {
	if len(pending) == 0 {
		return
	}
	b.inflight.Add(1)
	go func() {
		defer b.inflight.Done()
		for _, paf := range pending {
			select {
			case <-paf.Ok():
			case <-paf.Err():
			}
			<-b.slots
		}
	}()
}

// publishErr classifies a failed publish to subject for callers.
func (b *Bus) publishErr(subject string, err error) error {
	if errors.Is(err, nats.ErrMaxPayload) {
		return errs.Wrap(errs.Invalid, fmt.Errorf("publish to %s: %w", subject, err), "the message is too large for the event bus")
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum {
		return errs.Wrap(errs.Invalid, fmt.Errorf("publish to %s: %w", subject, err), "the message is too large for the event bus")
	}
	return unavailable(err, "publish to %s", subject)
}
