package consumers

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// DefaultBatch is the most applications a Batcher commits in one transaction.
const DefaultBatch = 64

// Batcher is Once with group commit: the applications that arrive while a transaction commits
// share the next one, so a consumer with many handlers running pays one commit (one fsync) per
// group instead of one per event. Each caller returns once the transaction holding its
// application committed, with the same exactly-once effect as Once: a claim and its effect
// commit or roll back together.
//
// When a group's transaction fails, its applications are retried one by one with Once, so a
// failing application fails only itself. The first caller that finds no commit running leads:
// it commits the groups, its own first, until none is waiting.
type Batcher struct {
	tx       TxRunner
	inbox    InboxStore
	consumer string
	max      int

	mu      sync.Mutex
	waiting []*onceReq
	leading bool
}

type onceReq struct {
	ctx     context.Context
	eventID string
	apply   func(ctx context.Context) error
	done    chan error // buffered: the leader never blocks on a caller that left
}

// NewBatcher returns a Batcher committing at most max applications per transaction (max ≤ 0:
// DefaultBatch).
func NewBatcher(tx TxRunner, inbox InboxStore, consumer string, max int) *Batcher {
	if max <= 0 {
		max = DefaultBatch
	}
	return &Batcher{tx: tx, inbox: inbox, consumer: consumer, max: max}
}

// Once applies eventID's effect at most once for the Batcher's consumer, like the package
// function Once, in a transaction possibly shared with other callers. When ctx ends while the
// application waits, Once returns ctx's error; the application may still commit (its event is
// then deduplicated on redelivery).
func (b *Batcher) Once(ctx context.Context, eventID string, apply func(ctx context.Context) error) error {
	if err := CheckClaim(b.consumer, eventID); err != nil {
		return err
	}
	r := &onceReq{ctx: ctx, eventID: eventID, apply: apply, done: make(chan error, 1)}
	b.mu.Lock()
	b.waiting = append(b.waiting, r)
	lead := !b.leading
	b.leading = true
	b.mu.Unlock()
	if lead {
		b.lead()
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Waiting returns how many applications wait for a commit (not counting a group in hand).
func (b *Batcher) Waiting() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.waiting)
}

// lead commits groups until nobody waits.
func (b *Batcher) lead() {
	for {
		b.mu.Lock()
		n := min(len(b.waiting), b.max)
		if n == 0 {
			b.leading = false
			b.mu.Unlock()
			return
		}
		group := b.waiting[:n:n]
		b.waiting = append([]*onceReq(nil), b.waiting[n:]...)
		b.mu.Unlock()
		b.commit(group)
	}
}

// commit applies group in one transaction, or one by one when that transaction fails.
func (b *Batcher) commit(group []*onceReq) {
	live := group[:0:0]
	for _, r := range group {
		if err := r.ctx.Err(); err != nil {
			r.done <- err // its caller left: the event comes again
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	if len(live) > 1 {
		// The transaction runs on behalf of several callers: none of their cancellations may
		// cut it short halfway for the others.
		err := b.tx.InTx(context.WithoutCancel(live[0].ctx), func(ctx context.Context) error {
			for _, r := range live {
				claimed, err := b.inbox.ClaimInbox(ctx, b.consumer, r.eventID, time.Now())
				if err != nil {
					return fmt.Errorf("consumer %s: claim event %s: %w", b.consumer, r.eventID, err)
				}
				if !claimed {
					continue
				}
				if err := r.apply(ctx); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil {
			for _, r := range live {
				r.done <- nil
			}
			return
		}
	}
	for _, r := range live {
		_, err := Once(r.ctx, b.tx, b.inbox, b.consumer, r.eventID, r.apply)
		r.done <- err
	}
}
