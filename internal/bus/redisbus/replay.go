package redisbus

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/errs"
)

// replayPage is how many entries one XRANGE of a replay reads.
const replayPage = 500

// Replay reads the event stream with XRANGE over the entry ids of [from, to) and calls fn for
// the entries stored in that window (to the microsecond) that f matches. The retry streams are
// not replayed: what they hold is already on the event stream.
func (b *Bus) Replay(ctx context.Context, from, to time.Time, f bus.Filter, fn func(bus.Stored) error) (bus.ReplayResult, error) {
	var res bus.ReplayResult
	if err := f.Validate(); err != nil {
		return res, err
	}
	if !to.After(from) {
		return res, errs.Field("to", "must be after from")
	}
	key := b.keys.events()
	first, err := b.rdb.XRangeN(ctx, key, "-", "+", 1).Result()
	if err != nil {
		return res, unavailable("read the oldest event", err)
	}
	if len(first) > 0 {
		res.Oldest = entryTime(first[0].ID)
		if _, storedAt, err := decodeMessage(first[0].ID, first[0].Values); err == nil {
			res.Oldest = storedAt
		}
	}
	// Entry ids carry milliseconds; the ts field microseconds. Read whole milliseconds and
	// compare the exact times.
	start := strconv.FormatInt(max(from.UnixMilli(), 0), 10)
	end := strconv.FormatInt(max(to.UnixMilli(), 0), 10)
	for {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("replay: %w", err)
		}
		page, err := b.rdb.XRangeN(ctx, key, start, end, replayPage).Result()
		if err != nil {
			return res, unavailable("replay events", err)
		}
		for _, e := range page {
			start = "(" + e.ID
			m, storedAt, err := decodeMessage(e.ID, e.Values)
			if err != nil || storedAt.Before(from) || !storedAt.Before(to) || !f.Match(m.Tenant, m.Type) {
				continue
			}
			res.Matched++
			if err := fn(bus.Stored{Message: m, Position: kindEvents + "/" + e.ID, StoredAt: storedAt}); err != nil {
				return res, err
			}
		}
		if len(page) < replayPage {
			return res, nil
		}
	}
}

// ConsumerStats reports the consumer group's lag and pending entries on the event stream plus
// its retry stream. A consumer group cannot filter, so the lag of a consumer with a Filter (saved
// at Subscribe) is counted by scanning the entries the group has not read yet, up to
// lagScanCap entries; beyond that it is extrapolated from the share of matching entries.
func (b *Bus) ConsumerStats(ctx context.Context, consumer string) (bus.ConsumerStats, error) {
	var st bus.ConsumerStats
	if !bus.ValidToken(consumer) {
		return st, errs.Field("consumer", "is not a consumer name")
	}
	filter, err := b.loadFilter(ctx, consumer)
	if err != nil {
		return st, err
	}
	found := false
	for _, key := range []string{b.keys.events(), b.keys.retry(consumer)} {
		g, ok, err := b.group(ctx, key, consumer)
		if err != nil {
			return st, err
		}
		if !ok {
			continue
		}
		found = true
		f := filter
		if key != b.keys.events() {
			f = bus.Filter{} // everything on the retry stream is for the consumer
		}
		lag := g.Lag
		if !b.lagReported {
			lag = -1
		}
		if lag != 0 && (lag < 0 || len(f.Tenants) > 0 || len(f.Types) > 0) {
			if lag, err = b.countLag(ctx, key, g.LastDeliveredID, f, lag); err != nil {
				return st, err
			}
		}
		st.Pending += lag
		st.AckPending += g.Pending
	}
	if !found {
		return st, errs.New(errs.NotFound, "consumer %s not found", consumer)
	}
	return st, nil
}

// group returns the consumer group name of the stream key, if both exist.
func (b *Bus) group(ctx context.Context, key, name string) (redis.XInfoGroup, bool, error) {
	groups, err := b.rdb.XInfoGroups(ctx, key).Result()
	if err != nil {
		if isRedisError(err) {
			return redis.XInfoGroup{}, false, nil // no such key
		}
		return redis.XInfoGroup{}, false, unavailable("consumer groups of "+key, err)
	}
	for _, g := range groups {
		if g.Name == name {
			return g, true, nil
		}
	}
	return redis.XInfoGroup{}, false, nil
}

const (
	// lagScanChunk is how many entries one lagScript call scans; lagScanCap how many one
	// ConsumerStats scans at most.
	lagScanChunk = 1000
	lagScanCap   = 100_000
)

// countLag counts the entries after lastID that f matches. serverLag (< 0: unknown) is the
// group's lag as Redis reports it, used to extrapolate beyond lagScanCap.
func (b *Bus) countLag(ctx context.Context, key, lastID string, f bus.Filter, serverLag int64) (int64, error) {
	if !validEntryID(lastID) {
		lastID = "0-0"
	}
	tenants, types := strings.Join(f.Tenants, ","), strings.Join(f.Types, ",")
	var scanned, matched int64
	for scanned < lagScanCap {
		res, err := b.runScript(ctx, lagScript, []string{key}, lastID, lagScanChunk, tenants, types).Slice()
		if err != nil {
			return 0, unavailable("count consumer lag", err)
		}
		if len(res) != 3 {
			return 0, fmt.Errorf("count consumer lag: unexpected reply of %d elements", len(res))
		}
		n, _ := res[0].(int64)
		m, _ := res[1].(int64)
		last, _ := res[2].(string)
		scanned += n
		matched += m
		if n < lagScanChunk || !validEntryID(last) {
			return matched, nil
		}
		lastID = last
	}
	if serverLag > scanned {
		return matched * serverLag / scanned, nil
	}
	return matched, nil
}

// saveFilter records a consumer's filter for ConsumerStats (a later Subscribe replaces it).
func (b *Bus) saveFilter(ctx context.Context, consumer string, f bus.Filter) error {
	err := b.rdb.HSet(ctx, b.keys.consumer(consumer),
		"tenants", strings.Join(f.Tenants, ","), "types", strings.Join(f.Types, ",")).Err()
	if err != nil {
		return unavailable("save the filter of consumer "+consumer, err)
	}
	return nil
}

func (b *Bus) loadFilter(ctx context.Context, consumer string) (bus.Filter, error) {
	h, err := b.rdb.HGetAll(ctx, b.keys.consumer(consumer)).Result()
	if err != nil {
		return bus.Filter{}, unavailable("load the filter of consumer "+consumer, err)
	}
	split := func(s string) []string {
		if s == "" {
			return nil
		}
		return strings.Split(s, ",")
	}
	return bus.Filter{Tenants: split(h["tenants"]), Types: split(h["types"])}, nil
}
