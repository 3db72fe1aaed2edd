package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisRaw is the baseline on Redis Streams: go-redis, no layer of ours. A publish call sends
// one XADD per event (trimmed like the adapter's stream) in one pipeline; a consumer group reads
// with XREADGROUP and acknowledges each message with XACK (one pipeline per read).
type redisRaw struct {
	rdb       redis.UniversalClient
	key       string
	retention time.Duration
	payload   []byte
	rec       *recorder

	cancel context.CancelFunc
	wg     sync.WaitGroup
	errMu  sync.Mutex
	err    error // the consumer's first error
}

var _ publisher = (*redisRaw)(nil)

const (
	redisRawGroup    = "bench"
	redisRawConsumer = "bench-1"
	redisReadCount   = 256
	redisReadBlock   = 100 * time.Millisecond
)

// openRedisRaw creates the stream and its consumer group under prefix and starts consuming into
// rec. Closing stops the consumer; deleting the keys is the caller's (deleteRedisKeys).
func openRedisRaw(ctx context.Context, rdb redis.UniversalClient, prefix string, retention time.Duration, payload []byte, rec *recorder) (*redisRaw, error) {
	r := &redisRaw{rdb: rdb, key: prefix + ":raw:events", retention: retention, payload: payload, rec: rec}
	if err := rdb.XGroupCreateMkStream(ctx, r.key, redisRawGroup, "0").Err(); err != nil {
		return nil, fmt.Errorf("raw consumer group: %w", err)
	}
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel
	r.wg.Go(func() { r.consume(cctx) })
	return r, nil
}

func (r *redisRaw) publish(ctx context.Context, evs []event) error {
	minID := strconv.FormatInt(time.Now().Add(-r.retention).UnixMilli(), 10)
	pipe := r.rdb.Pipeline()
	for _, ev := range evs {
		pipe.XAdd(ctx, &redis.XAddArgs{
			Stream: r.key,
			MinID:  minID,
			Approx: true,
			Values: []any{"id", ev.id, "data", r.payload},
		})
	}
	_, err := pipe.Exec(ctx)
	return err
}

func (r *redisRaw) consume(ctx context.Context) {
	for ctx.Err() == nil {
		streams, err := r.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group:    redisRawGroup,
			Consumer: redisRawConsumer,
			Streams:  []string{r.key, ">"},
			Count:    redisReadCount,
			Block:    redisReadBlock,
		}).Result()
		if errors.Is(err, redis.Nil) || ctx.Err() != nil {
			continue
		}
		if err != nil {
			r.fail(fmt.Errorf("raw XREADGROUP: %w", err))
			return
		}
		pipe := r.rdb.Pipeline()
		for _, s := range streams {
			for _, m := range s.Messages {
				id, _ := m.Values["id"].(string)
				r.rec.consumedID(id)
				pipe.XAck(ctx, r.key, redisRawGroup, m.ID)
			}
		}
		if _, err := pipe.Exec(ctx); err != nil && ctx.Err() == nil {
			r.fail(fmt.Errorf("raw XACK: %w", err))
			return
		}
	}
}

func (r *redisRaw) fail(err error) {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	if r.err == nil {
		r.err = err
	}
}

// close stops the consumer and reports its first error.
func (r *redisRaw) close() error {
	r.cancel()
	r.wg.Wait()
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return r.err
}
