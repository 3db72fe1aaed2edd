package natsbus

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/errs"
)

// Headers of JetStream's atomic batch publish (ADR-50, NATS 2.12). nats.go v1.55 has no API
// for it, so the bus sets them itself.
const (
	hdrBatchID     = "Nats-Batch-Id"
	hdrBatchSeq    = "Nats-Batch-Sequence"
	hdrBatchCommit = "Nats-Batch-Commit"
)

// maxAtomicBatch is the most messages JetStream takes in one atomic batch by default. A server
// configured with a lower limit rejects larger batches, which are then published one message
// at a time.
const maxAtomicBatch = 1000

// useAtomic reports whether a Publish of n messages goes as atomic batches.
func (b *Bus) useAtomic(n int) bool {
	return b.cfg.AtomicBatchMin > 0 && n >= max(b.cfg.AtomicBatchMin, 2) && b.cfg.MaxPending >= 2 && b.atomicOn.Load()
}

// sendAtomic publishes msgs as atomic batches, in slice order: chunks of equal size (at most
// maxAtomicBatch and MaxPending messages), one after the other. A chunk holds one slot of the
// publish window per message from before its first message is sent until the outcome of its
// commit is known, and its batch either is stored whole, with one fsync under DurabilitySync,
// or not at all.
//
// All messages of a chunk but the last are published without a reply subject, so the server
// answers nothing for them; any failure among them (a rejected message, a gap, too many batches
// in flight) makes it reject the commit, whose answer therefore speaks for the whole batch. A
// chunk the server rejected is published again one message at a time before the next chunk is
// sent: messages it has already stored (a republished event within the dedup window) are then
// acknowledged as duplicates and the others stored, in order. A chunk whose outcome is unknown
// (no answer in time, connection lost) fails the call, as a single publish would.
func (b *Bus) sendAtomic(ctx context.Context, msgs []*nats.Msg) error {
	if err := b.begin(false); err != nil {
		return err
	}
	defer b.inflight.Done()
	for _, chunk := range chunks(msgs, min(maxAtomicBatch, b.cfg.MaxPending)) {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("publish: %w", context.Cause(ctx))
		}
		again, err := b.sendBatch(ctx, chunk)
		if err != nil {
			return err
		}
		if again {
			if err := b.pipeline(ctx, chunk); err != nil {
				return err
			}
		}
	}
	return nil
}

// chunks splits msgs into the fewest chunks of at most size messages, of equal size but for a
// last, smaller one.
func chunks(msgs []*nats.Msg, size int) [][]*nats.Msg {
	n := (len(msgs) + size - 1) / size
	per := (len(msgs) + n - 1) / n
	out := make([][]*nats.Msg, 0, n)
	for len(msgs) > 0 {
		k := min(per, len(msgs))
		out = append(out, msgs[:k])
		msgs = msgs[k:]
	}
	return out
}

// sendBatch publishes chunk as one atomic batch and waits for the answer to its commit. again
// reports a batch that the server rejected, or acknowledged in a way that does not vouch for
// every message: the caller publishes the chunk again one message at a time.
func (b *Bus) sendBatch(ctx context.Context, chunk []*nats.Msg) (again bool, err error) {
	n := len(chunk)
	if err := b.acquireN(ctx, n); err != nil {
		return false, err
	}
	id := rand.Text()
	for i, m := range chunk[:n-1] {
		if err := b.nc.PublishMsg(batchMsg(m, id, i+1, false)); err != nil {
			// The server drops the incomplete batch after its batch timeout.
			b.releaseN(n)
			if errors.Is(err, nats.ErrMaxPayload) {
				// Perhaps only with the batch headers: one by one tells.
				return true, nil
			}
			return false, b.publishErr(m.Subject, err)
		}
	}
	commit := batchMsg(chunk[n-1], id, n, true)
	type result struct {
		reply *nats.Msg
		err   error
	}
	res := make(chan result, 1)
	// The caller holds b.inflight, so this Add cannot race Close's Wait. The slots are given
	// back once the outcome is known, also when the caller stopped waiting.
	b.inflight.Add(1)
	go func() {
		defer b.inflight.Done()
		actx, cancel := context.WithTimeout(context.Background(), b.cfg.ackTimeout())
		defer cancel()
		reply, err := b.nc.RequestMsgWithContext(actx, commit)
		b.releaseN(n)
		res <- result{reply, err}
	}()
	select {
	case r := <-res:
		return b.batchOutcome(id, n, commit.Subject, r.reply, r.err)
	case <-ctx.Done():
		return false, errs.Wrap(errs.Unavailable, fmt.Errorf("publish: waiting for the broker's acknowledgement: %w", context.Cause(ctx)), "event bus unavailable")
	}
}

// batchMsg is m as message seq of atomic batch id, the commit when commit is set. m itself is
// left as it is, for publishing it again on its own.
func batchMsg(m *nats.Msg, id string, seq int, commit bool) *nats.Msg {
	h := maps.Clone(m.Header)
	h[hdrBatchID] = []string{id}
	h[hdrBatchSeq] = []string{strconv.Itoa(seq)}
	if commit {
		h[hdrBatchCommit] = []string{"1"}
	}
	return &nats.Msg{Subject: m.Subject, Header: h, Data: m.Data}
}

// batchAck is the server's answer to the commit of an atomic batch.
type batchAck struct {
	Stream string              `json:"stream"`
	Seq    uint64              `json:"seq"`
	Batch  string              `json:"batch"`
	Count  int                 `json:"count"`
	Error  *jetstream.APIError `json:"error"`
}

// batchOutcome judges the answer (reply, or the request's error err) to the commit of batch id
// of n messages on subject: nil when the server stored the whole batch, again when it rejected
// it or answered something that does not vouch for all n messages, and an error when the
// outcome is unknown.
func (b *Bus) batchOutcome(id string, n int, subject string, reply *nats.Msg, err error) (again bool, _ error) {
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("atomic batch commit: no acknowledgement within %s: %w", b.cfg.ackTimeout(), nats.ErrTimeout)
		}
		return false, b.publishErr(subject, err)
	}
	var ack batchAck
	if err := json.Unmarshal(reply.Data, &ack); err != nil {
		b.logger.Warn("unreadable answer to an atomic batch commit; publishing its messages one by one", "batch", id, "error", err.Error())
		return true, nil
	}
	if ack.Error != nil {
		// Nothing of the batch was stored: most often a message id already in the dedup
		// window (code 10201), or more than the server's 50 batches in flight on the stream
		// (its first message is turned away, so the commit finds the batch incomplete: 10176).
		b.logger.Debug("atomic batch rejected; publishing its messages one by one", "batch", id, "messages", n, "code", int(ack.Error.ErrorCode), "error", ack.Error.Error())
		return true, nil
	}
	if ack.Stream == "" || ack.Seq == 0 || ack.Batch != id || ack.Count != n {
		// The commit was stored as an ordinary message, so the server may have dropped others
		// of the batch without a word: one by one stores what is missing.
		b.atomicOn.Store(false)
		b.logger.Warn("nats acknowledged an atomic batch as a single message; publishing one message at a time from now on",
			"batch", id, "messages", n, "acknowledged_batch", ack.Batch, "acknowledged_count", ack.Count)
		return true, nil
	}
	return false, nil
}

// acquireN takes n slots of the publish window for one batch. Batches gather their slots one
// batch at a time, so that two of them never hold part of the window each while waiting for the
// rest; every other slot belongs to a message already sent, which gives it back. Like acquire it
// gives up after PublishTimeout, or at ctx's deadline, with a backpressure error, returning the
// slots it took.
func (b *Bus) acquireN(ctx context.Context, n int) error {
	var (
		start = time.Now()
		timer *time.Timer
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	// expired is the timer's channel, started on the first wait: a window with room costs no
	// timer.
	expired := func() <-chan time.Time {
		if timer == nil {
			wait := b.cfg.PublishTimeout
			if deadline, ok := ctx.Deadline(); ok {
				wait = min(wait, time.Until(deadline))
			}
			timer = time.NewTimer(wait)
		}
		return timer.C
	}
	giveUp := func() error {
		if errors.Is(ctx.Err(), context.Canceled) {
			return fmt.Errorf("publish: waiting for room: %w", context.Cause(ctx))
		}
		return bus.Backpressure(time.Since(start).Round(time.Millisecond), backpressureRetryAfter)
	}
	// take sends on c, waiting at most until the timer or ctx ends.
	take := func(c chan struct{}) bool {
		select {
		case c <- struct{}{}:
			return true
		default:
		}
		select {
		case c <- struct{}{}:
			return true
		case <-expired():
			return false
		case <-ctx.Done():
			return false
		}
	}
	if !take(b.batchGate) {
		return giveUp()
	}
	defer func() { <-b.batchGate }()
	for got := range n {
		if !take(b.slots) {
			b.releaseN(got)
			return giveUp()
		}
	}
	return nil
}

// releaseN gives n slots of the publish window back.
func (b *Bus) releaseN(n int) {
	for range n {
		<-b.slots
	}
}
