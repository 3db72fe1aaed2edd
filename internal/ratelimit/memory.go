package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
	"time"
)

// Store keeps the GCRA state (one theoretical arrival time per key).
type Store interface {
	// Take takes one request from key under rule at now.
	Take(ctx context.Context, key string, rule Rule, now time.Time) (Decision, error)
	// TakeAll takes one request from every cell, all or nothing: when any cell refuses, none is
	// charged, so a client refused by one rule does not drain the others (a blocked address
	// hammering the API leaves the global ceiling to everybody else). Decisions come back in the
	// order of cells. Keys must be distinct; a cell whose rule is not enabled always allows.
	TakeAll(ctx context.Context, cells []Cell, now time.Time) ([]Decision, error)
}

// DefaultMaxKeys bounds a MemoryStore when NewMemoryStore is given 0.
const DefaultMaxKeys = 1 << 18

const shardCount = 64

// MemoryStore is the in-process Store: a map from key to TAT split over 64 shards, each behind a
// mutex of its own, so concurrent requests for different keys rarely wait on one another.
//
// Memory: an entry whose TAT is not after now is a full bucket, the same as no entry, and may go.
// When a shard reaches its share of maxKeys, inserting sweeps the shard's full buckets; if that
// leaves the shard above 7/8 of its share, arbitrary live entries are evicted down to it (those
// keys start over with a full bucket — size maxKeys above the number of keys active within one
// period to make this rare).
//
// Concurrency: safe for concurrent use. TakeAll locks the shards of its keys in ascending shard
// order, so two TakeAlls never deadlock and each is atomic over its cells.
type MemoryStore struct {
	seed     maphash.Seed
	perShard int
	shards   [shardCount]memShard
}

type memShard struct {
	mu sync.Mutex
	m  map[string]int64 // key → TAT, µs since the Unix epoch
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns an empty store holding at most about maxKeys keys (0: DefaultMaxKeys).
func NewMemoryStore(maxKeys int) *MemoryStore {
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	s := &MemoryStore{seed: maphash.MakeSeed(), perShard: max(maxKeys/shardCount, 1)}
	for i := range s.shards {
		s.shards[i].m = make(map[string]int64)
	}
	return s
}

// Len returns the number of keys held, full buckets not yet swept included.
func (s *MemoryStore) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// Take takes one request from key (see Store).
func (s *MemoryStore) Take(ctx context.Context, key string, rule Rule, now time.Time) (Decision, error) {
	ds, err := s.TakeAll(ctx, []Cell{{Key: key, Rule: rule}}, now)
	if err != nil {
		return Decision{}, err
	}
	return ds[0], nil
}

// TakeAll takes one request from every cell, all or nothing (see Store).
func (s *MemoryStore) TakeAll(_ context.Context, cells []Cell, now time.Time) ([]Decision, error) {
	if err := checkCells(cells); err != nil {
		return nil, err
	}
	nowUS := now.UnixMicro()
	// A check has at most five cells: scratch space on the stack for that many.
	var idxBuf [8]int
	idx := idxBuf[:0]
	if len(cells) > len(idxBuf) {
		idx = make([]int, 0, len(cells))
	}
	idx = idx[:len(cells)]
	var locked [shardCount]bool
	for i, c := range cells {
		idx[i] = int(maphash.String(s.seed, c.Key) % shardCount)
		locked[idx[i]] = true
	}
	for i := range locked {
		if locked[i] {
			s.shards[i].mu.Lock()
		}
	}
	defer func() {
		for i := range locked {
			if locked[i] {
				s.shards[i].mu.Unlock()
			}
		}
	}()

	type result struct {
		ok             bool
		tat, u, retry  int64
		conformingTAT0 int64
	}
	var resBuf [8]result
	res := resBuf[:0]
	if len(cells) > len(resBuf) {
		res = make([]result, 0, len(cells))
	}
	res = res[:len(cells)]
	all := true
	for i, c := range cells {
		if !c.Rule.Enabled() {
			res[i].ok = true
			continue
		}
		tat := s.shards[idx[i]].m[c.Key]
		ok, newTAT, u, retry := gcra(c.Rule, tat, nowUS)
		res[i] = result{ok: ok, tat: newTAT, u: u, retry: retry, conformingTAT0: max(tat, nowUS) - nowUS}
		all = all && ok
	}
	out := make([]Decision, len(cells))
	for i, c := range cells {
		r := res[i]
		switch {
		case !c.Rule.Enabled():
			out[i] = Decision{Allowed: true, Rule: c.Rule.Name, Key: c.Key}
		case all:
			s.shards[idx[i]].put(c.Key, r.tat, nowUS, s.perShard)
			out[i] = decision(c, true, r.u, 0)
		case r.ok: // conforming, but another cell refused: nothing taken
			out[i] = decision(c, true, r.conformingTAT0, 0)
		default:
			out[i] = decision(c, false, r.u, r.retry)
		}
	}
	return out, nil
}

// put stores key's TAT, making room first when the shard is full. The shard's lock is held.
func (sh *memShard) put(key string, tat, now int64, limit int) {
	if _, ok := sh.m[key]; !ok && len(sh.m) >= limit {
		for k, t := range sh.m {
			if t <= now {
				delete(sh.m, k)
			}
		}
		// Map order is random: arbitrary victims. Going down to 7/8 of the limit leaves room for
		// limit/8 new keys before the next sweep, so sweeps cost O(1) per insert amortised.
		for k := range sh.m {
			if len(sh.m) < limit-limit/8 {
				break
			}
			delete(sh.m, k)
		}
	}
	sh.m[key] = tat
}

// checkCells refuses what no caller of a Store should pass: duplicate keys (TakeAll charges a
// key once) and an enabled rule without a valid period.
func checkCells(cells []Cell) error {
	if len(cells) == 0 {
		return errors.New("take: no cells")
	}
	for i, c := range cells {
		if c.Rule.Enabled() && (c.Rule.Period <= 0 || c.Rule.Burst < 0) {
			return fmt.Errorf("take %s: rule %s has no valid period or burst", c.Key, c.Rule.Name)
		}
		if slices.ContainsFunc(cells[:i], func(o Cell) bool { return o.Key == c.Key }) {
			return fmt.Errorf("take: key %s given twice", c.Key)
		}
	}
	return nil
}
