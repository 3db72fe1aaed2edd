package consumers

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// DefaultBatch is the most applications a Batcher commits in one transaction.
const DefaultBatch = 64

// BatchSizeMetric is the histogram of the applications each group commit holds, by consumer:
// 1 means the consumer paid a transaction per event.
const BatchSizeMetric = "nops_consumer_batch_size"

// GroupBatcher is Once with group commit for effects that apply a whole group at once: the
// applications that arrive while a transaction commits share the next one, so a consumer with
// many handlers running pays one commit (one fsync) per group instead of one per event. In that
// transaction the group claims all its event ids with one statement (InboxStore.ClaimInboxBatch)
// and applies the items of the events it newly claimed — each distinct event once, however often
// the group holds it — with one call of apply, which can then write them with a few statements
// whatever the group's size. Each caller returns once the transaction holding its application
// committed, with the same exactly-once effect as Once: the claims and the effect commit or roll
// back together.
//
// When a group's transaction fails, its applications are retried one by one with Once (apply
// with a single item), so a failing application fails only itself. A group of one goes that way
// directly. The first caller that finds no commit running leads: it commits the groups, its own
// first, until none is waiting.
type GroupBatcher[T any] struct {
	tx       TxRunner
	inbox    InboxStore
	consumer string
	max      int
	apply    func(ctx context.Context, items []T) error
	sizes    metric.Int64Histogram // nil: not recorded
	sizeAttr metric.RecordOption

	mu      sync.Mutex
	waiting []*groupReq[T]
	leading bool
}

type groupReq[T any] struct {
	ctx     context.Context
	eventID string
	item    T
	done    chan error // buffered: the leader never blocks on a caller that left
}

// BatcherOptions are a batcher's optional settings.
type BatcherOptions struct {
	// Max is the most applications one transaction commits (≤ 0: DefaultBatch).
	Max int
	// Meter, when set, records the size of every group committed in BatchSizeMetric.
	Meter metric.Meter
}

// NewGroupBatcher returns a GroupBatcher applying the claimed items of each group with apply,
// which must make its changes through store methods called with the ctx it receives.
func NewGroupBatcher[T any](tx TxRunner, inbox InboxStore, consumer string, apply func(ctx context.Context, items []T) error, o BatcherOptions) *GroupBatcher[T] {
	if o.Max <= 0 {
		o.Max = DefaultBatch
	}
	b := &GroupBatcher[T]{tx: tx, inbox: inbox, consumer: consumer, max: o.Max, apply: apply}
	if o.Meter != nil {
		b.sizes = batchSizes(o.Meter)
		b.sizeAttr = metric.WithAttributeSet(attribute.NewSet(attribute.String("consumer", consumer)))
	}
	return b
}

// batchSizes returns the BatchSizeMetric instrument of m. Its name and options are constants
// (TestBatchSizeMetric records through it); OpenTelemetry returns a usable instrument even with
// an error, so one is not a reason to run a consumer without it.
func batchSizes(m metric.Meter) metric.Int64Histogram {
	h, _ := m.Int64Histogram(BatchSizeMetric,
		metric.WithDescription("Applications (events) committed per consumer transaction (group commit), by consumer."),
		metric.WithExplicitBucketBoundaries(1, 2, 4, 8, 16, 32, 64, 128))
	return h
}

// Once applies eventID's effect — item, through apply — at most once for the batcher's consumer,
// like the package function Once, in a transaction possibly shared with other callers. When ctx
// ends while the application waits, Once returns ctx's error; the application may still commit
// (its event is then deduplicated on redelivery).
func (b *GroupBatcher[T]) Once(ctx context.Context, eventID string, item T) error {
	if err := CheckClaim(b.consumer, eventID); err != nil {
		return err
	}
	r := &groupReq[T]{ctx: ctx, eventID: eventID, item: item, done: make(chan error, 1)}
	b.mu.Lock()
	b.waiting = append(b.waiting, r)
	lead := !b.leading
	b.leading = true
	b.mu.Unlock()
	if lead {
		// Events come in bursts (the bus fetches them in batches for many handlers): let the
		// handlers of this one that are ready to run join the group before it is taken, rather
		// than commit this application alone while they queue for the next transaction. Without
		// it, about half the event-stats groups under bench/invoke were of one event.
		runtime.Gosched()
		b.lead()
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Apply applies a group the caller already holds — a batch of deliveries from the bus — at
// once, with the group logic of Once: items[i] is the effect of event ids[i], all in one
// transaction claiming the ids together, or one by one with Once when that transaction fails.
// It returns one result per application, in order, and does not wait for other callers (nor
// join their groups): a group of up to Max applications is committed per transaction.
func (b *GroupBatcher[T]) Apply(ctx context.Context, ids []string, items []T) []error {
	out := make([]error, len(ids))
	reqs := make([]*groupReq[T], 0, len(ids))
	at := make([]int, 0, len(ids)) // reqs[j] is application at[j]
	for i, id := range ids {
		if out[i] = CheckClaim(b.consumer, id); out[i] != nil {
			continue
		}
		reqs = append(reqs, &groupReq[T]{ctx: ctx, eventID: id, item: items[i], done: make(chan error, 1)})
		at = append(at, i)
	}
	for start := 0; start < len(reqs); start += b.max {
		b.commit(reqs[start:min(start+b.max, len(reqs))])
	}
	for j, r := range reqs {
		out[at[j]] = <-r.done
	}
	return out
}

// Waiting returns how many applications wait for a commit (not counting a group in hand).
func (b *GroupBatcher[T]) Waiting() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.waiting)
}

// lead commits groups until nobody waits.
func (b *GroupBatcher[T]) lead() {
	for {
		b.mu.Lock()
		n := min(len(b.waiting), b.max)
		if n == 0 {
			b.leading = false
			b.mu.Unlock()
			return
		}
		group := b.waiting[:n:n]
		b.waiting = append([]*groupReq[T](nil), b.waiting[n:]...)
		b.mu.Unlock()
		b.commit(group)
	}
}

// commit applies group in one transaction, or one by one when that transaction fails.
func (b *GroupBatcher[T]) commit(group []*groupReq[T]) {
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
	if b.sizes != nil {
		b.sizes.Record(context.Background(), int64(len(live)), b.sizeAttr)
	}
	if len(live) > 1 {
		// The transaction runs on behalf of several callers: none of their cancellations may
		// cut it short halfway for the others.
		if err := b.tx.InTx(context.WithoutCancel(live[0].ctx), func(ctx context.Context) error { return b.applyGroup(ctx, live) }); err == nil {
			for _, r := range live {
				r.done <- nil
			}
			return
		}
	}
	for _, r := range live {
		_, err := Once(r.ctx, b.tx, b.inbox, b.consumer, r.eventID, func(ctx context.Context) error {
			return b.apply(ctx, []T{r.item})
		})
		r.done <- err
	}
}

// applyGroup claims the group's distinct event ids in one statement, in ascending order (so
// that two transactions claiming overlapping groups on PostgreSQL lock the rows in the same
// order and cannot deadlock on them), and applies the items of the events newly claimed: of an
// event the group holds several times, the first application's item.
func (b *GroupBatcher[T]) applyGroup(ctx context.Context, live []*groupReq[T]) error {
	ids := make([]string, 0, len(live))
	for _, r := range live {
		ids = append(ids, r.eventID)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	claimed, err := b.inbox.ClaimInboxBatch(ctx, b.consumer, ids, time.Now())
	if err != nil {
		return fmt.Errorf("consumer %s: claim %d events: %w", b.consumer, len(ids), err)
	}
	if len(claimed) == 0 {
		return nil
	}
	fresh := make(map[string]bool, len(claimed))
	for _, id := range claimed {
		fresh[id] = true
	}
	items := make([]T, 0, len(claimed))
	for _, r := range live {
		if fresh[r.eventID] {
			items = append(items, r.item)
			delete(fresh, r.eventID) // a duplicate later in the group is already applied
		}
	}
	return b.apply(ctx, items)
}

// Batcher is a GroupBatcher whose applications are effects of their own, run one after the
// other in the group's transaction: Once with group commit for a consumer whose effects cannot
// be written as one.
type Batcher struct {
	g *GroupBatcher[func(ctx context.Context) error]
}

// NewBatcher returns a Batcher committing at most max applications per transaction (max ≤ 0:
// DefaultBatch).
func NewBatcher(tx TxRunner, inbox InboxStore, consumer string, max int) *Batcher {
	return &Batcher{g: NewGroupBatcher(tx, inbox, consumer, runEach, BatcherOptions{Max: max})}
}

func runEach(ctx context.Context, applies []func(ctx context.Context) error) error {
	for _, apply := range applies {
		if err := apply(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Once applies eventID's effect at most once for the Batcher's consumer, like the package
// function Once, in a transaction possibly shared with other callers. When ctx ends while the
// application waits, Once returns ctx's error; the application may still commit (its event is
// then deduplicated on redelivery).
func (b *Batcher) Once(ctx context.Context, eventID string, apply func(ctx context.Context) error) error {
	return b.g.Once(ctx, eventID, apply)
}

// Waiting returns how many applications wait for a commit (not counting a group in hand).
func (b *Batcher) Waiting() int { return b.g.Waiting() }
