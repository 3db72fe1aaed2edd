package redisbus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/errs"
)

// maxDedupKey bounds a Redeliver dedup key (it becomes part of a Redis key).
const maxDedupKey = 512

// Publish stores msgs on the event stream in slice order: one transaction per publishBatch
// messages (their XADDs, then the publish script's dedup check and trim), one round trip each.
// See bus.Publisher for the contract.
func (b *Bus) Publish(ctx context.Context, msgs ...bus.Message) error {
	start := time.Now()
	err := b.publish(ctx, msgs)
	b.ins.Published(ctx, len(msgs), time.Since(start), err)
	return err
}

func (b *Bus) publish(ctx context.Context, msgs []bus.Message) error {
	if b.closed.Load() {
		return errs.New(errs.Unavailable, "event bus closed")
	}
	for i, m := range msgs {
		if err := m.Validate(); err != nil {
			return fmt.Errorf("publish message %d of %d: %w", i+1, len(msgs), err)
		}
	}
	items := make([]item, len(msgs))
	for i, m := range msgs {
		items[i] = item{dedupKey: m.ID, msg: m}
	}
	for start := 0; start < len(items); start += b.cfg.MaxPending {
		if err := b.store(ctx, b.keys.events(), b.keys.dedup(), items[start:min(start+b.cfg.MaxPending, len(items))]); err != nil {
			return err
		}
	}
	return nil
}

// Redeliver stores m on consumer's retry stream, deduplicated on dedupKey within the dedup
// window (per consumer: the same key sent to two consumers is two redeliveries).
func (b *Bus) Redeliver(ctx context.Context, consumer string, m bus.Message, dedupKey string) error {
	switch {
	case b.closed.Load():
		return errs.New(errs.Unavailable, "event bus closed")
	case !bus.ValidToken(consumer):
		return errs.Field("consumer", "must be 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")
	case dedupKey == "" || len(dedupKey) > maxDedupKey:
		return errs.Field("dedup_key", fmt.Sprintf("must be 1 to %d characters", maxDedupKey))
	}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("redeliver to %s: %w", consumer, err)
	}
	return b.store(ctx, b.keys.retry(consumer), b.keys.redeliverDedup(consumer), []item{{dedupKey: dedupKey, msg: m}})
}

// item is one message to store and its dedup key.
type item struct {
	dedupKey string
	msg      bus.Message
}

// store publishes at most MaxPending items to stream, deduplicated in the dedup buckets whose
// keys start with buckets, once it has room for them in the publish window: one transaction per
// publishBatch items, in order (see publishScript), then WAIT when MinReplicas asks for it.
func (b *Bus) store(ctx context.Context, stream, buckets string, items []item) error {
	n := int64(len(items))
	if err := b.acquire(ctx, n); err != nil {
		return err
	}
	defer b.window.Release(n)

	width := bucketWidth(b.cfg.DedupWindow)
	for start := 0; start < len(items); start += publishBatch {
		batch := items[start:min(start+publishBatch, len(items))]
		if _, err := b.storeBatch(ctx, stream, buckets, width, batch); err != nil {
			// The messages before this batch are stored; the caller retries all of them and the
			// dedup buckets keep the stored ones from being stored twice.
			return unavailable(fmt.Sprintf("publish messages %d to %d of %d (first id %s)", start+1, start+len(batch), len(items), batch[0].msg.ID), err)
		}
	}
	if b.cfg.MinReplicas > 0 {
		acked, err := b.rdb.Do(ctx, "WAIT", b.cfg.MinReplicas, b.cfg.ReplicaTimeout.Milliseconds()).Int64()
		if err != nil {
			return unavailable(fmt.Sprintf("publish %d messages: wait for replicas", len(items)), err)
		}
		if acked < int64(b.cfg.MinReplicas) {
			return errs.Wrap(errs.Unavailable,
				fmt.Errorf("publish %d messages: %d of %d replicas confirmed within %s", len(items), acked, b.cfg.MinReplicas, b.cfg.ReplicaTimeout),
				"event bus unavailable")
		}
	}
	return nil
}

// storeBatch stores up to publishBatch items in one transaction: an XADD each, then
// publishScript, which removes the duplicates again (dedup buckets of width ms whose keys start
// with buckets) and trims. It returns, per item, 1 when stored and 0 for a duplicate.
func (b *Bus) storeBatch(ctx context.Context, stream, buckets string, width int64, batch []item) ([]int64, error) {
	args := make([]any, 0, 5+len(batch))
	args = append(args, buckets, width, b.cfg.Retention.Milliseconds(), b.cfg.MaxLen, batch[len(batch)-1].msg.ID)
	for _, it := range batch {
		args = append(args, it.dedupKey)
	}
	var res *redis.Cmd
	_, err := b.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, it := range batch {
			// Do rather than XAdd: fewer allocations per message (no XAddArgs, no values slice).
			p.Do(ctx, "XADD", stream, "*", "meta", metaField(it.msg), "data", it.msg.Payload)
		}
		// EVAL rather than EVALSHA: in a transaction a NOSCRIPT would come after the XADDs.
		// Redis finds the script in its cache by the SHA1 of the text, once per batch.
		res = publishScript.Eval(ctx, p, []string{stream}, args...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res.Int64Slice()
}

// bucketWidth is the width of a dedup bucket for a dedup window: the window, rounded up to the
// millisecond, so that a key is remembered for at least the window and less than twice it (see
// publishScript).
func bucketWidth(window time.Duration) int64 {
	return max((window + time.Millisecond - 1).Milliseconds(), 1)
}

// acquire takes n places in the publish window, waiting up to PublishTimeout (or ctx's
// deadline) for them; then it reports backpressure.
func (b *Bus) acquire(ctx context.Context, n int64) error {
	if b.window.TryAcquire(n) {
		return nil
	}
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, b.cfg.PublishTimeout)
	defer cancel()
	if err := b.window.Acquire(wctx, n); err != nil {
		if cerr := ctx.Err(); cerr != nil && !errors.Is(cerr, context.DeadlineExceeded) {
			return fmt.Errorf("publish: waiting for room: %w", cerr)
		}
		return bus.Backpressure(time.Since(start), retryAfterHint)
	}
	return nil
}

// pipeline runs the commands build adds in one round trip. Scripts run by EVALSHA; when Redis
// lost its script cache (a restart, a failover, SCRIPT FLUSH) the scripts are loaded again and
// the pipeline is run once more: the scripts are idempotent (dedup buckets, claims), so what ran
// before the failure is not done twice.
func (b *Bus) pipeline(ctx context.Context, build func(redis.Pipeliner)) ([]redis.Cmder, error) {
	for attempt := 0; ; attempt++ {
		cmds, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			build(p)
			return nil
		})
		if err == nil || attempt > 0 || !anyNoScript(cmds) {
			return cmds, err
		}
		if lerr := b.loadScripts(ctx); lerr != nil {
			return cmds, lerr
		}
	}
}

// runScript runs one script, loading it again if Redis lost it.
func (b *Bus) runScript(ctx context.Context, s *redis.Script, keys []string, args ...any) *redis.Cmd {
	return s.Run(ctx, b.rdb, keys, args...)
}

func (b *Bus) loadScripts(ctx context.Context) error {
	for _, s := range allScripts {
		if err := s.Load(ctx, b.rdb).Err(); err != nil {
			return fmt.Errorf("load scripts: %w", err)
		}
	}
	return nil
}

func anyNoScript(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			return true
		}
	}
	return false
}
