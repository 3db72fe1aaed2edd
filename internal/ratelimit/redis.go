package ratelimit

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisPrefix is where the limiter's keys live in Redis when Config.RedisPrefix is "".
const DefaultRedisPrefix = "nops:rl:"

// takeScript is TakeAll in one round trip. KEYS are the counters; ARGV holds two numbers per key,
// its emission interval T and delay tolerance τ in µs. The clock is the Redis server's (TIME), so
// replicas whose clocks disagree still share one timeline. Each counter is a string holding its
// TAT in µs since the Unix epoch, expiring when the TAT passes (a full bucket needs no key).
// All or nothing: when one key refuses, nothing is written. The reply is three integers per key:
// 1 when it conforms (0 not), the µs until its quota is whole (after the take, when taken), and
// the µs until a request passes (0 when it conforms).
//
// Numbers are Lua doubles, exact for integers below 2^53: µs since 1970 stay below that until
// the year 2255. %.0f writes the TAT as an integer, without the exponent tostring would use.
var takeScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local tats = {}
local all = true
for i = 1, n do
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  tats[i] = tat
  if tat - now > tonumber(ARGV[2*i]) then all = false end
end
local out = {}
for i = 1, n do
  local interval = tonumber(ARGV[2*i-1])
  local tau = tonumber(ARGV[2*i])
  local diff = tats[i] - now
  if diff > tau then
    out[3*i-2] = 0; out[3*i-1] = diff; out[3*i] = diff - tau
  elseif all then
    local new = tats[i] + interval
    redis.call('SET', KEYS[i], string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000))
    out[3*i-2] = 1; out[3*i-1] = new - now; out[3*i] = 0
  else
    out[3*i-2] = 1; out[3*i-1] = diff; out[3*i] = 0
  end
end
return out
`)

// RedisStore is the Store shared by replicas through Redis: every TakeAll is one EVALSHA of
// takeScript (EVAL once per connection when the script is not cached yet).
//
// Keys: prefix + the cell key, e.g. "nops:rl:ip:203.0.113.7". A TakeAll touches several keys in
// one script; on Redis Cluster they must share a slot, so give a prefix with a hash tag there
// ("{nops-rl}:"). Times: the now argument is ignored; the Redis server's clock decides.
//
// Concurrency: safe for concurrent use, as the go-redis client is.
type RedisStore struct {
	client redis.Scripter
	prefix string
}

var _ Store = (*RedisStore)(nil)

// NewRedisStore returns a store keeping its counters under prefix ("" for DefaultRedisPrefix) on
// client, which the caller opens (internal/redisconn) and closes.
func NewRedisStore(client redis.Scripter, prefix string) *RedisStore {
	if prefix == "" {
		prefix = DefaultRedisPrefix
	}
	return &RedisStore{client: client, prefix: prefix}
}

// Take takes one request from key (see Store).
func (s *RedisStore) Take(ctx context.Context, key string, rule Rule, now time.Time) (Decision, error) {
	ds, err := s.TakeAll(ctx, []Cell{{Key: key, Rule: rule}}, now)
	if err != nil {
		return Decision{}, err
	}
	return ds[0], nil
}

// TakeAll takes one request from every cell, all or nothing, in one round trip (see Store).
func (s *RedisStore) TakeAll(ctx context.Context, cells []Cell, _ time.Time) ([]Decision, error) {
	if err := checkCells(cells); err != nil {
		return nil, err
	}
	out := make([]Decision, len(cells))
	keys := make([]string, 0, len(cells))
	args := make([]any, 0, 2*len(cells))
	live := make([]int, 0, len(cells)) // indices of the enabled cells, in keys order
	for i, c := range cells {
		if !c.Rule.Enabled() {
			out[i] = Decision{Allowed: true, Rule: c.Rule.Name, Key: c.Key}
			continue
		}
		keys = append(keys, s.prefix+c.Key)
		args = append(args, strconv.FormatInt(c.Rule.interval(), 10), strconv.FormatInt(c.Rule.tolerance(), 10))
		live = append(live, i)
	}
	if len(live) == 0 {
		return out, nil
	}
	reply, err := takeScript.Run(ctx, s.client, keys, args...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("rate limit take in redis: %w", err)
	}
	if len(reply) != 3*len(live) {
		return nil, fmt.Errorf("rate limit take in redis: %d numbers in the reply, want %d", len(reply), 3*len(live))
	}
	for j, i := range live {
		out[i] = decision(cells[i], reply[3*j] == 1, reply[3*j+1], reply[3*j+2])
	}
	return out, nil
}

// Key returns the Redis key of a cell key.
func (s *RedisStore) Key(key string) string { return s.prefix + key }
