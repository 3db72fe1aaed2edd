// Package redisbus is the Redis Streams adapter of the kernel's event bus (bus.Bus): one stream
// holds every event, consumer groups are the durable consumers, a per-consumer retry stream takes
// redeliveries, a sorted set per consumer paces retries, and a stream per tenant is the
// dead-letter queue. Every change that must be atomic (claim + delivery counter, dead letter + its
// tenant) is one Lua script, so it is atomic in Redis and costs one round trip; a batch of
// publishes is one transaction (MULTI, an XADD per message, the script that removes the
// duplicates again, remembers the new ids and trims, EXEC), so the dedup check is atomic with the
// append without the payloads passing through Lua.
//
// Only internal/kernel (and tests) import redisbus; domain packages use bus.Bus.
//
// # Usage
//
// The kernel opens the Redis client with internal/redisconn and passes it in Config; the Bus
// never closes it:
//
//	rdb, err := redisconn.Open(ctx, redisconn.Config{URL: url})
//	b, err := redisbus.Open(ctx, redisbus.Config{Client: rdb, Namespace: "nops", Instruments: ins})
//	defer rdb.Close()
//	defer b.Close()
//
// What Redis persistence gives which guarantee is in OPERATIONS.md (docs/operations.md).
//
// # Keys
//
// Every key of a namespace ns starts with "{ns}:". The braces are a Redis Cluster hash tag: all
// keys of one namespace live in one hash slot, which the multi-key scripts require (a cluster
// would otherwise reject them with CROSSSLOT). On a single Redis they change nothing.
//
//	{ns}:events                 the event stream: fields meta ("\n<tenant>\n<type>\n<traceparent>\n<id>";
//	                            entries of earlier versions hold the server's time in µs on the
//	                            first line) and data (the payload)
//	{ns}:retry:<consumer>       redeliveries to one consumer (Redeliver), same fields
//	{ns}:delay:<consumer>       sorted set of deliveries waiting for a retry; score = due time (ms)
//	{ns}:consumer:<consumer>    hash of the consumer's filter (tenants, types), for ConsumerStats
//	{ns}:ids:<n>                set of the message ids published in the n-th DedupWindow of
//	                            server time (Unix ms ÷ DedupWindow ms): the publish dedup buckets
//	{ns}:rids:<consumer>:<n>    the same for the Redeliver dedup keys of one consumer
//	{ns}:dlq:<tenant>           dead letters of a tenant (a stream, never trimmed)
//	{ns}:dlqtenants             set of the tenants that have a DLQ stream
//	{ns}:dlqdedup:<id>@<source> AddDeadLetter dedup marker, expires after DedupWindow
//
// # Trimming
//
// Each publish transaction, after its XADDs, trims by age (XTRIM MINID ~ now−Retention, the
// retention the replay engine promises) and by length (XTRIM MAXLEN ~ MaxLen, the memory bound),
// so both limits hold after every publish without a maintenance job. Both trims are approximate ("~"): Redis
// removes whole internal nodes only, so the stream may briefly hold a node's worth more. Entries
// trimmed away are gone for every consumer group, delivered or not.
//
// # Delivery
//
// A subscription reads with XREADGROUP only as many entries as it has free handler slots
// (ConsumerConfig.Concurrency, times Batch for a batch subscription). Consumer groups cannot filter server-side: entries that do not
// match the consumer's Filter are acknowledged (XACK) at once without running the handler.
// Acknowledgements are asynchronous: Ack (and Term) queue XACK and the ZREM of the delay set in
// a per-subscription batcher and return, freeing the handler's slot; the batcher sends them in
// one pipeline at least every millisecond or as soon as 256 are queued. Stop and Close send the
// queued ones and wait for Redis's replies. An acknowledgement that fails is logged and its entry
// stays pending, redelivered after AckWait (consumers dedupe by event id). A
// failed delivery stays pending in the group and its due time goes into the consumer's delay set;
// when it is due, XCLAIM hands it out again (incrementing Redis's delivery counter, which is
// Delivery.Attempt). Deliveries nobody settled within AckWait (a crashed or hung process) are
// taken over with XAUTOCLAIM, skipping the ones waiting in the delay set.
//
// # Concurrency
//
// A Bus is safe for concurrent use. Close may be called more than once. Each subscription runs
// one reader goroutine (reads, claims, queues the acknowledgements of skipped entries), one
// acknowledgement flusher, and one goroutine per running handler (a batch handler: per batch), at
// most ConsumerConfig.Concurrency.
//
// # Testing
//
// The tests run the bustest conformance suite and this adapter's own cases against the Redis of
// NOPS_TEST_REDIS_URL, each on a namespace of its own whose keys are deleted afterwards; outages
// are simulated with internal/testutil/faultproxy, never by stopping the shared Redis.
package redisbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/semaphore"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/errs"
)

// Defaults of Config.
const (
	DefaultRetention      = 7 * 24 * time.Hour
	DefaultMaxLen         = 1_000_000
	DefaultDedupWindow    = 2 * time.Minute
	DefaultPublishTimeout = 5 * time.Second
	DefaultMaxPending     = 4096
	DefaultClaimInterval  = time.Second
	DefaultReplicaTimeout = time.Second
)

// retryAfterHint is the Retry-After given to callers that met backpressure.
const retryAfterHint = time.Second

// Config configures a Bus.
type Config struct {
	// Client is the Redis connection (required). The kernel opens it with internal/redisconn; the
	// Bus never closes it. A cluster client works too: all keys of a namespace share a hash slot.
	Client redis.UniversalClient
	// Namespace prefixes every key, so several kernels or tests can share one Redis database.
	// Default bus.DefaultNamespace.
	Namespace string
	// Retention is how long events stay in the stream (XTRIM MINID ~ now−Retention after each publish): the replay
	// window. Default 7 days.
	Retention time.Duration
	// MaxLen bounds the stream's length (XTRIM MAXLEN ~ after each XADD): the memory bound.
	// Default 1,000,000 entries.
	MaxLen int64
	// DedupWindow is how long a message id (and a redelivery's or dead letter's dedup key) is
	// remembered: publishing it again within the window stores nothing. Message ids and
	// redelivery keys are kept in sets per window-long bucket of server time, so they are
	// remembered for at least the window and less than twice it (Redis memory: about 90 bytes per
	// id, for up to two windows of publishes). Default 2 minutes.
	DedupWindow time.Duration
	// PublishTimeout bounds the wait for room when MaxPending messages are in flight; then
	// Publish fails with bus.ErrBackpressure. Default 5 s. The round trip to Redis itself is
	// bounded by the caller's ctx and the client's timeouts and retries (internal/redisconn).
	PublishTimeout time.Duration
	// MaxPending bounds the messages being published at once, across all callers. Default 4096.
	MaxPending int
	// ClaimInterval is how often a subscription looks for deliveries that are due for a retry
	// or were left unsettled beyond AckWait. A retry asked by this process is also picked up at
	// its due time. Default 1 s.
	ClaimInterval time.Duration
	// MinReplicas, when positive, makes Publish wait (WAIT) until that many replicas have the
	// messages, and fail with errs.Unavailable when fewer confirm within ReplicaTimeout (the
	// messages are stored all the same; publishing them again is deduplicated). Zero (default):
	// Publish returns once the primary has them. Only with a single-node or sentinel client.
	MinReplicas int
	// ReplicaTimeout bounds the WAIT of MinReplicas. Default 1 s; keep it below the client's
	// read timeout.
	ReplicaTimeout time.Duration
	// Instruments records publish and delivery metrics and traces; nil records nothing.
	Instruments *bus.Instruments
	// Logger receives the bus's logs; nil discards them.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Namespace == "" {
		c.Namespace = bus.DefaultNamespace
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.MaxLen == 0 {
		c.MaxLen = DefaultMaxLen
	}
	if c.DedupWindow == 0 {
		c.DedupWindow = DefaultDedupWindow
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.MaxPending == 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.ClaimInterval == 0 {
		c.ClaimInterval = DefaultClaimInterval
	}
	if c.ReplicaTimeout == 0 {
		c.ReplicaTimeout = DefaultReplicaTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Client == nil:
		return errors.New("open redis bus: no redis client")
	case !bus.ValidToken(c.Namespace):
		return fmt.Errorf("open redis bus: namespace %q must be 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'", c.Namespace)
	case c.Retention < time.Millisecond:
		return errors.New("open redis bus: retention must be at least 1ms")
	case c.MaxLen < 1:
		return errors.New("open redis bus: max length must be positive")
	case c.DedupWindow < time.Millisecond:
		return errors.New("open redis bus: dedup window must be at least 1ms")
	case c.PublishTimeout <= 0:
		return errors.New("open redis bus: publish timeout must be positive")
	case c.MaxPending < 1:
		return errors.New("open redis bus: max pending must be positive")
	case c.ClaimInterval < time.Millisecond:
		return errors.New("open redis bus: claim interval must be at least 1ms")
	case c.MinReplicas < 0:
		return errors.New("open redis bus: min replicas must not be negative")
	case c.ReplicaTimeout < time.Millisecond:
		return errors.New("open redis bus: replica timeout must be at least 1ms")
	}
	if _, ok := c.Client.(*redis.Client); !ok && c.MinReplicas > 0 {
		// WAIT has no key: a cluster or ring client would send it to an arbitrary shard.
		return errors.New("open redis bus: min replicas (WAIT) needs a single-node or sentinel client")
	}
	return nil
}

// Bus is the event bus on Redis Streams.
type Bus struct {
	rdb    redis.UniversalClient
	cfg    Config
	keys   keys
	ins    *bus.Instruments
	logger *slog.Logger
	// lagReported: the server reports consumer-group lag (Redis ≥ 7).
	lagReported bool

	window *semaphore.Weighted // MaxPending messages in flight
	closed atomic.Bool

	mu   sync.Mutex
	subs map[*subscription]struct{}

	closeOnce sync.Once
	closeErr  error
}

var (
	_ bus.Bus              = (*Bus)(nil)
	_ bus.DeadLetterWriter = (*Bus)(nil)
)

// Open checks that Redis answers and supports what the bus needs (Redis ≥ 6.2: XAUTOCLAIM,
// MINID trimming, exclusive ranges), loads the scripts and returns the bus. Nothing is created in
// Redis until the first publish or subscription.
func Open(ctx context.Context, cfg Config) (*Bus, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	b := &Bus{
		rdb:    cfg.Client,
		cfg:    cfg,
		keys:   keys{prefix: "{" + cfg.Namespace + "}:"},
		ins:    cfg.Instruments,
		logger: cfg.Logger.With("component", "redisbus", "namespace", cfg.Namespace),
		window: semaphore.NewWeighted(int64(cfg.MaxPending)),
		subs:   map[*subscription]struct{}{},
	}
	if err := b.rdb.Ping(ctx).Err(); err != nil {
		return nil, unavailable("open redis bus: ping redis", err)
	}
	if err := b.checkServer(ctx); err != nil {
		return nil, err
	}
	for _, s := range allScripts {
		if err := s.Load(ctx, b.rdb).Err(); err != nil {
			return nil, unavailable("open redis bus: load scripts", err)
		}
	}
	return b, nil
}

// checkServer probes XAUTOCLAIM on a key that does not exist: a server that knows the command
// answers NOGROUP, an older one "unknown command". The probe works on Redis-compatible servers
// whose INFO reports another product's version. INFO then only tells whether XINFO GROUPS
// reports lag (Redis ≥ 7).
func (b *Bus) checkServer(ctx context.Context) error {
	err := b.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
		Stream: b.keys.prefix + "probe", Group: "probe", Consumer: "probe", Start: "0-0", Count: 1,
	}).Err()
	switch {
	case err == nil, redis.HasErrorPrefix(err, "NOGROUP"):
	case isRedisError(err):
		return fmt.Errorf("open redis bus: the server does not support XAUTOCLAIM (Redis 6.2 or later is required): %w", err)
	default:
		return unavailable("open redis bus: probe XAUTOCLAIM", err)
	}
	info, err := b.rdb.Info(ctx, "server").Result()
	if err != nil {
		b.logger.Warn("INFO is not available; consumer lag is computed by the bus", "error", err.Error())
		return nil
	}
	version := infoField(info, "redis_version")
	major, _, _ := strings.Cut(version, ".")
	if n, err := strconv.Atoi(major); err == nil && n >= 7 {
		b.lagReported = true
	}
	b.logger.Debug("redis bus ready", "redis_version", version)
	return nil
}

// infoField returns the value of name in an INFO reply.
func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// Ping checks that Redis answers and that the event stream's key is usable (a stream, or not
// created yet). Errors carry errs.Unavailable.
func (b *Bus) Ping(ctx context.Context) error {
	if b.closed.Load() {
		return errs.New(errs.Unavailable, "event bus closed")
	}
	if err := b.rdb.Ping(ctx).Err(); err != nil {
		return unavailable("ping redis", err)
	}
	t, err := b.rdb.Type(ctx, b.keys.events()).Result()
	if err != nil {
		return unavailable("check the event stream", err)
	}
	if t != "stream" && t != "none" {
		return errs.Wrap(errs.Unavailable, fmt.Errorf("key %s holds a %s, not a stream", b.keys.events(), t), "event bus unavailable")
	}
	return nil
}

// closeWaitSlack is added to a subscription's AckWait when Close waits for its handlers.
const closeWaitSlack = 10 * time.Second

// Close stops every subscription (waiting for running handlers, each bounded by its AckWait, to
// settle their messages, and for Redis's replies to the queued acknowledgements), then waits for publishes in flight. It does not close the Redis
// client, which the kernel owns. Later calls return the first call's result.
func (b *Bus) Close() error {
	b.closeOnce.Do(func() {
		b.closed.Store(true)
		b.mu.Lock()
		subs := make([]*subscription, 0, len(b.subs))
		for s := range b.subs {
			subs = append(subs, s)
		}
		b.mu.Unlock()
		var errList []error
		for _, s := range subs {
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.AckWait+closeWaitSlack)
			if err := s.Stop(ctx); err != nil {
				errList = append(errList, err)
			}
			cancel()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*b.cfg.PublishTimeout)
		defer cancel()
		if err := b.window.Acquire(ctx, int64(b.cfg.MaxPending)); err != nil {
			errList = append(errList, errors.New("close redis bus: publishes still in flight"))
		}
		b.closeErr = errors.Join(errList...)
	})
	return b.closeErr
}

func (b *Bus) addSub(s *subscription) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return false
	}
	b.subs[s] = struct{}{}
	return true
}

func (b *Bus) removeSub(s *subscription) {
	b.mu.Lock()
	delete(b.subs, s)
	b.mu.Unlock()
}

// keys names the Redis keys of one namespace; see the package documentation.
type keys struct{ prefix string }

func (k keys) events() string                 { return k.prefix + "events" }
func (k keys) retry(consumer string) string   { return k.prefix + "retry:" + consumer }
func (k keys) delay(consumer string) string   { return k.prefix + "delay:" + consumer }
func (k keys) consumer(name string) string    { return k.prefix + "consumer:" + name }
func (k keys) dedup() string                  { return k.prefix + "ids:" }
func (k keys) dlq(tenant string) string       { return k.prefix + "dlq:" + tenant }
func (k keys) dlqTenants() string             { return k.prefix + "dlqtenants" }
func (k keys) dlqDedup(id, src string) string { return k.prefix + "dlqdedup:" + id + "@" + src }
func (k keys) redeliverDedup(consumer string) string {
	return k.prefix + "rids:" + consumer + ":"
}

// Stream kinds, the first part of a delivery's Position ("events/<entry id>").
const (
	kindEvents = "events"
	kindRetry  = "retry"
)

// unavailable wraps a Redis failure for callers.
func unavailable(what string, err error) error {
	return errs.Wrap(errs.Unavailable, fmt.Errorf("%s: %w", what, err), "event bus unavailable")
}

// isRedisError reports whether err is an error reply of the server (as opposed to a network
// failure or a timeout).
func isRedisError(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !errors.Is(err, redis.Nil)
}

// validEntryID reports whether s is a stream entry id "<ms>-<seq>".
func validEntryID(s string) bool {
	ms, seq, ok := strings.Cut(s, "-")
	if !ok {
		return false
	}
	_, err1 := strconv.ParseUint(ms, 10, 64)
	_, err2 := strconv.ParseUint(seq, 10, 64)
	return err1 == nil && err2 == nil
}

// entryTime is the time in an entry id, UTC.
func entryTime(id string) time.Time {
	ms, _, _ := strings.Cut(id, "-")
	n, _ := strconv.ParseInt(ms, 10, 64)
	return time.UnixMilli(n).UTC()
}
