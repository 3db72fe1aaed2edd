// Package bus defines the kernel's durable event bus as the rest of the kernel sees it: publishing
// serialized CloudEvents with broker-side dedup, durable consumer groups whose handlers ack, retry
// with a delay or fail terminally, a per-tenant dead-letter queue (DLQ) with redelivery to the one
// consumer that failed, replay of a time window, and the metrics every adapter reports the same way.
//
// Adapters live in subpackages — natsbus (NATS JetStream, embedded in the process or external,
// clustered with replicated streams) and redisbus (Redis Streams) — and all pass the one
// conformance suite in bustest. Domain packages import bus, never an adapter; only internal/kernel
// picks one.
//
// # Subjects and namespaces
//
// Every message has a subject made of the namespace, the tenant and the event type, so ACLs and
// consumers can filter per tenant:
//
//	<ns>.events.<tenant>.<type>               the event stream (type has dots: nops.agent.registered.v1)
//	<ns>.retry.<consumer>.<tenant>.<type>     redeliveries to one consumer (DLQ reprocessing, replay)
//	<ns>.dlq.<tenant>.<consumer>              dead letters
//
// The namespace (default "nops") lets several kernels, or tests, share one NATS account or Redis
// database without seeing each other's messages. The Redis adapter uses keys of the form
// {<ns>}:events, {<ns>}:retry:<consumer> and {<ns>}:dlq:<tenant> (the hash tag keeps a namespace
// on one Redis Cluster slot).
//
// # Delivery semantics
//
// Publish returns once the broker has stored every message under the configured durability
// (natsbus: fsync before the acknowledgement by default). A message id (the CloudEvents id) is the
// broker's dedup key within the dedup window; beyond it, and for redeliveries, consumers dedupe on
// the id themselves (events' inbox). Delivery is at least once. Retries, backoff and
// dead-lettering are decided for every adapter by Dispatch, so the retry semantics are the same
// whichever broker runs underneath:
//
//   - the handler returns nil: the message is acknowledged;
//   - it returns an error wrapped by Terminal: the message goes to the DLQ at once (one attempt);
//   - it returns any other error: the message is redelivered after RetryDelay (exponential, or the
//     delay of RetryAfter), until MaxDeliveries attempts have failed; then it goes to the DLQ;
//   - it neither returns nor acknowledges within AckWait (the process died): the broker redelivers,
//     and that counts as an attempt.
//
// A batch handler (BatchHandler, through BatchSubscriber) gets up to ConsumerConfig.Batch
// deliveries per call and returns one result per delivery; DispatchBatch settles each delivery by
// its own result with the rules above, and a panic fails every delivery of the batch. It lets a
// consumer that writes a batch at once (one transaction) run one goroutine per batch instead of
// one per message.
//
// # Concurrency
//
// A Bus is safe for concurrent use. Close stops every consumer (waiting for the handlers that run,
// so that each message is settled), flushes what publishers have in flight, and releases the
// connection; it may be called more than once.
package bus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
)

// DefaultNamespace is the subject and key prefix when none is configured.
const DefaultNamespace = "nops"

// Bus is the event bus an adapter implements.
type Bus interface {
	Publisher
	// Subscribe creates the durable consumer cfg.Name if it does not exist (or updates its
	// filters) and runs h on its messages until ctx ends or the subscription is stopped. Several
	// subscriptions with one name, in one or several processes, share the messages: each message
	// goes to one of them (a consumer group). cfg is validated first (errs.Invalid).
	Subscribe(ctx context.Context, cfg ConsumerConfig, h Handler) (Subscription, error)
	DeadLetters
	// Redeliver publishes m again to the consumer named consumer only (its retry subject), with
	// dedupKey as the broker's dedup key instead of m.ID, so one redelivery request repeated
	// within the dedup window is delivered once. The consumer sees a new message: Attempt starts
	// at 1 again.
	Redeliver(ctx context.Context, consumer string, m Message, dedupKey string) error
	// Replay calls fn, in stream order, for every message of the event stream stored between
	// from (inclusive) and to (exclusive) whose subject matches f; it stops at the first error of
	// fn. Messages older than the stream's retention are gone: Replay reports the time of the
	// oldest one it still holds in ReplayResult.
	Replay(ctx context.Context, from, to time.Time, f Filter, fn func(Stored) error) (ReplayResult, error)
	// ConsumerStats reports a consumer's backlog (lag) and its delivered-but-unacknowledged
	// messages. An unknown consumer is an errs.NotFound.
	ConsumerStats(ctx context.Context, consumer string) (ConsumerStats, error)
	// Ping checks that the broker answers and its streams are usable; errors carry
	// errs.Unavailable.
	Ping(ctx context.Context) error
	// Close drains and releases the bus (see the package documentation).
	Close() error
}

// Publisher publishes messages to the event stream.
type Publisher interface {
	// Publish stores msgs on the event stream and returns once the broker acknowledged all of
	// them, or the first error. Messages are stored in slice order, so the relay keeps the order
	// of one subject's events by publishing them in order. A message whose ID the broker has seen
	// within its dedup window is acknowledged without being stored again.
	//
	// Backpressure: an adapter has a bounded number of publishes in flight. When the bound is
	// reached Publish waits for room up to the adapter's publish timeout (or ctx's deadline,
	// whichever is first) and then fails with an error wrapping ErrBackpressure, which carries
	// errs.Unavailable and a retry-after hint (HTTP callers answer 503 with Retry-After). An
	// invalid message is an errs.Invalid and nothing is published.
	Publish(ctx context.Context, msgs ...Message) error
}

// Message is one event on the bus: a serialized CloudEvent and the attributes brokers route by.
type Message struct {
	ID          string // the CloudEvents id: the broker's dedup key and the consumers' inbox key
	Tenant      string // the tenant extension attribute, [A-Za-z0-9_-]{1,64}
	Type        string // the CloudEvents type, "nops.<domain>.<event>.v<N>"
	TraceParent string // W3C traceparent of the change, or ""; carried as a header so consumers' spans join the trace
	Payload     []byte // the whole serialized CloudEvent (application/cloudevents+json)
}

// MaxPayload bounds Message.Payload: the default NATS max_payload (1 MiB) counts the headers
// too, so 8 KiB are left for the ones adapters add.
const MaxPayload = 1<<20 - 8<<10

// ValidToken reports whether s can be one token of a subject or key: a tenant, a consumer name,
// a namespace.
// It is written out rather than a regular expression: it runs on every publish and delivery.
func ValidToken(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isLower(c) && !(c >= 'A' && c <= 'Z') && !isDigit(c) && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// ValidType reports whether s is an event type of the kernel's form, "nops.<domain>.<event>.v<N>".
// Three dot-separated words of [a-z][a-z0-9_]*, then "v" and a number without leading zeros.
func ValidType(s string) bool {
	for range 3 {
		n := wordLen(s)
		if n == 0 || n >= len(s) || s[n] != '.' {
			return false
		}
		s = s[n+1:]
	}
	if len(s) < 2 || s[0] != 'v' || s[1] < '1' || s[1] > '9' {
		return false
	}
	for i := 2; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// wordLen is the length of the [a-z][a-z0-9_]* word s starts with, 0 when there is none.
func wordLen(s string) int {
	if len(s) == 0 || !isLower(s[0]) {
		return 0
	}
	i := 1
	for i < len(s) && (isLower(s[i]) || isDigit(s[i]) || s[i] == '_') {
		i++
	}
	return i
}

func isLower(c byte) bool { return c >= 'a' && c <= 'z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// Validate checks m before it is published.
func (m Message) Validate() error {
	switch {
	case m.ID == "" || len(m.ID) > 128:
		return errs.Field("id", "must be 1 to 128 characters")
	case !ValidToken(m.Tenant):
		return errs.Field("tenant", "must be 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")
	case len(m.Type) > 255 || !ValidType(m.Type):
		return errs.Field("type", "must be <ns>.<domain>.<event>.v<N> in lower case")
	case len(m.Payload) == 0 || len(m.Payload) > MaxPayload:
		return errs.Field("payload", "must be 1 byte to 1016 KiB")
	case len(m.TraceParent) > 512 || strings.ContainsAny(m.TraceParent, "\r\n"):
		return errs.Field("traceparent", "must be one line")
	}
	return nil
}

// Subjects builds the subjects of one namespace.
type Subjects struct{ NS string }

// Event is the event stream subject of a message of tenant and type t.
func (s Subjects) Event(tenant, t string) string { return s.NS + ".events." + tenant + "." + t }

// Retry is the subject on which consumer alone receives redeliveries.
func (s Subjects) Retry(consumer, tenant, t string) string {
	return s.NS + ".retry." + consumer + "." + tenant + "." + t
}

// DeadLetter is the subject of a dead letter of consumer in tenant.
func (s Subjects) DeadLetter(tenant, consumer string) string {
	return s.NS + ".dlq." + tenant + "." + consumer
}

// Filter selects messages by tenant and type. The zero value matches everything.
type Filter struct {
	Tenants []string // empty: every tenant
	Types   []string // empty: every type
}

// Match reports whether a message of tenant and type t passes f.
func (f Filter) Match(tenant, t string) bool {
	return (len(f.Tenants) == 0 || contains(f.Tenants, tenant)) && (len(f.Types) == 0 || contains(f.Types, t))
}

// Validate checks the filter's tenants and types.
func (f Filter) Validate() error {
	for _, t := range f.Tenants {
		if !ValidToken(t) {
			return errs.Field("tenants", fmt.Sprintf("%q is not a tenant id", t))
		}
	}
	for _, t := range f.Types {
		if !ValidType(t) {
			return errs.Field("types", fmt.Sprintf("%q is not an event type", t))
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Stored is a message as the event stream holds it.
type Stored struct {
	Message
	Position string    // the adapter's position: JetStream sequence, Redis entry id
	StoredAt time.Time // when the broker stored it, UTC
}

// ReplayResult summarises a Replay.
type ReplayResult struct {
	Matched int       // messages passed to fn
	Oldest  time.Time // the oldest message the stream still holds (zero when empty)
}

// ConsumerConfig configures a durable consumer.
type ConsumerConfig struct {
	// Name of the consumer group, ValidToken; also the DLQ's consumer name.
	Name string
	// Filter selects the tenants and types delivered. The consumer also receives everything
	// redelivered to it by name (Redeliver), whatever the filter.
	Filter Filter
	// MaxDeliveries is how many attempts a message gets before it is dead-lettered: 1 + the
	// number of retries. Default 5.
	MaxDeliveries int
	// Backoff paces retries; the zero value is DefaultBackoff.
	Backoff Backoff
	// AckWait is how long a delivered message may stay unsettled before the broker delivers it
	// again (a crashed or hung handler). Default 30 s. Handlers get a context that ends then.
	AckWait time.Duration
	// Concurrency is how many handlers run at once in this subscription. Default 1.
	Concurrency int
	// Prefetch is how many messages the subscription fetches ahead of its handlers into its
	// bounded in-process queue (see Queue), so that fetching is not one round trip per free
	// handler. Messages are fetched only for free places, so a slow handler slows delivery
	// instead of growing memory; queued messages are kept in progress at the broker while they
	// wait. When the subscription stops, the queued messages no handler started are given back
	// for redelivery, which counts as a delivery attempt. 0 is DefaultPrefetch; NoPrefetch
	// fetches only for free handlers.
	Prefetch int
	// Batch is how many deliveries a batch handler (BatchSubscriber) gets at most per call: each
	// of the Concurrency workers takes one queued delivery, waiting for it, and then those
	// already queued, up to Batch. A subscription then holds up to Concurrency·Batch deliveries
	// in its handlers. Default 1; Subscribe (one delivery per call) requires 1.
	Batch int
	// DeliverNew starts a consumer created now at the end of the stream; by default a new consumer
	// receives everything the stream still holds.
	DeliverNew bool
	// OnDeadLetter, when set, is called after a message of this consumer was stored in the DLQ
	// (the kernel audits it). It must not block for long.
	OnDeadLetter func(ctx context.Context, dl DeadLetter)
}

// Defaults of ConsumerConfig.
const (
	DefaultMaxDeliveries = 5
	DefaultAckWait       = 30 * time.Second
	// DefaultPrefetch is the Prefetch of a zero ConsumerConfig.Prefetch.
	DefaultPrefetch = 128
	// NoPrefetch as ConsumerConfig.Prefetch fetches messages only for free handlers.
	NoPrefetch = -1
	// MaxBatch bounds ConsumerConfig.Batch.
	MaxBatch = 1024
)

// DefaultBackoff is the retry pacing of a zero Backoff.
var DefaultBackoff = Backoff{Initial: 200 * time.Millisecond, Max: 30 * time.Second}

// Backoff is an exponential backoff: Initial before the second attempt, doubling up to Max.
type Backoff struct {
	Initial time.Duration
	Max     time.Duration
}

// Delay returns the wait after failed attempt n (1-based): Initial·2^(n-1), at most Max.
func (b Backoff) Delay(attempt int) time.Duration {
	if b.Initial <= 0 {
		b = DefaultBackoff
	}
	if b.Max < b.Initial {
		b.Max = b.Initial
	}
	d := b.Initial
	for i := 1; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// WithDefaults returns cfg with its zero fields set to the defaults.
func (c ConsumerConfig) WithDefaults() ConsumerConfig {
	if c.MaxDeliveries == 0 {
		c.MaxDeliveries = DefaultMaxDeliveries
	}
	if c.Backoff.Initial <= 0 {
		c.Backoff = DefaultBackoff
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.Concurrency == 0 {
		c.Concurrency = 1
	}
	if c.Prefetch == 0 {
		c.Prefetch = DefaultPrefetch
	}
	if c.Batch == 0 {
		c.Batch = 1
	}
	return c
}

// Handlers is how many deliveries a subscription with cfg (after WithDefaults) runs at once:
// Concurrency handlers of up to Batch deliveries each.
func (c ConsumerConfig) Handlers() int {
	return c.Concurrency * c.Batch
}

// QueueCapacity is how many messages a subscription with cfg (after WithDefaults) holds at once:
// running in handlers or waiting in its queue.
func (c ConsumerConfig) QueueCapacity() int {
	return c.Handlers() + max(c.Prefetch, 0)
}

// HoldEvery is how often a subscription tells the broker that its queued messages are in
// progress: a third of AckWait, so that two reminders may be lost before one expires.
func (c ConsumerConfig) HoldEvery() time.Duration {
	return max(c.AckWait/3, 10*time.Millisecond)
}

// Validate checks cfg after WithDefaults.
func (c ConsumerConfig) Validate() error {
	switch {
	case !ValidToken(c.Name):
		return errs.Field("name", "must be 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")
	case c.MaxDeliveries < 1:
		return errs.Field("max_deliveries", "must be at least 1")
	case c.AckWait < 100*time.Millisecond:
		return errs.Field("ack_wait", "must be at least 100ms")
	case c.Concurrency < 1:
		return errs.Field("concurrency", "must be at least 1")
	case c.Prefetch < NoPrefetch:
		return errs.Field("prefetch", "must be 0 (the default), -1 (none) or positive")
	case c.Batch < 1 || c.Batch > MaxBatch:
		return errs.Field("batch", "must be between 1 and 1024")
	}
	return c.Filter.Validate()
}

// Subscription is a running consumer.
type Subscription interface {
	// Stop stops fetching, waits (up to ctx) for the running handlers and settles their messages,
	// and returns. Messages fetched but not started are released for redelivery. Later calls
	// return at once.
	Stop(ctx context.Context) error
}

// Delivery is one message handed to a handler.
type Delivery struct {
	Message
	Consumer string    // the consumer group
	Attempt  int       // 1 for the first delivery of this message to this consumer
	StoredAt time.Time // when the broker stored it, UTC
	Position string    // the adapter's position of the message
}

// Handler processes one delivery; see the package documentation for what its result means.
type Handler func(ctx context.Context, d Delivery) error

// BatchHandler processes several deliveries in one call and returns one result per delivery,
// in order, each meaning what a Handler's result means (nil: done). A panic, or a result of
// the wrong length, fails every delivery of the batch (one failed attempt each). The deliveries
// are distinct messages; the slice must not be kept after the call returns.
type BatchHandler func(ctx context.Context, ds []Delivery) []error

// BatchSubscriber is implemented by the buses that run batch handlers (natsbus, redisbus).
type BatchSubscriber interface {
	// SubscribeBatch is Subscribe with a handler of up to cfg.Batch deliveries per call, each
	// settled on its own by DispatchBatch.
	SubscribeBatch(ctx context.Context, cfg ConsumerConfig, h BatchHandler) (Subscription, error)
}

// SubscribeBatch subscribes h on b, which must implement BatchSubscriber (errs.Invalid
// otherwise).
func SubscribeBatch(ctx context.Context, b Bus, cfg ConsumerConfig, h BatchHandler) (Subscription, error) {
	bs, ok := b.(BatchSubscriber)
	if !ok {
		return nil, errs.New(errs.Invalid, "subscribe %s: this event bus has no batch consumers", cfg.Name)
	}
	return bs.SubscribeBatch(ctx, cfg, h)
}

type terminalError struct{ err error }

func (e terminalError) Error() string { return e.err.Error() }
func (e terminalError) Unwrap() error { return e.err }

// Terminal marks err as one that no retry can fix: the message is dead-lettered at once.
func Terminal(err error) error {
	if err == nil {
		err = errors.New("terminal failure")
	}
	return terminalError{err}
}

// IsTerminal reports whether err was marked by Terminal.
func IsTerminal(err error) bool {
	var t terminalError
	return errors.As(err, &t)
}

type retryAfterError struct {
	err   error
	delay time.Duration
}

func (e retryAfterError) Error() string { return e.err.Error() }
func (e retryAfterError) Unwrap() error { return e.err }

// RetryAfter asks for the message to be redelivered after d instead of the backoff's delay. It
// still counts as a failed attempt.
func RetryAfter(err error, d time.Duration) error {
	if err == nil {
		err = errors.New("retry requested")
	}
	return retryAfterError{err, d}
}

// RetryDelay is the wait before the next attempt after attempt failed with err.
func RetryDelay(err error, attempt int, b Backoff) time.Duration {
	var r retryAfterError
	if errors.As(err, &r) && r.delay > 0 {
		return r.delay
	}
	return b.Delay(attempt)
}

// ErrBackpressure is wrapped by the errors of a Publish that found the publish window full for
// longer than the publish timeout.
var ErrBackpressure = errors.New("event bus publish queue is full")

// Backpressure returns the error a publish reports when it gave up waiting for room; retryAfter
// is the hint given to HTTP callers.
func Backpressure(waited, retryAfter time.Duration) error {
	e := errs.Wrap(errs.Unavailable, fmt.Errorf("%w: no room after %s", ErrBackpressure, waited), "the event bus is saturated; retry later")
	e.RetryAfter = retryAfter
	return e
}

// DeadLetter is a message a consumer gave up on, kept per tenant until it is reprocessed or
// removed.
type DeadLetter struct {
	ID       string    // DeadLetterID(Consumer, Message.ID)
	Message  Message   // the message as delivered
	Consumer string    // the consumer that failed
	Reason   string    // the handler's last error, for operators (never shown to other tenants)
	Attempts int       // attempts made, including the last
	StoredAt time.Time // when the broker first stored the message, UTC
	FailedAt time.Time // when it was dead-lettered, UTC
	// Source is the position of the failed message in the stream it was delivered from (a
	// redelivered message has a new one). The broker dedups AddDeadLetter on ID+Source: the same
	// failed delivery written twice is one entry, while the same event failing again after a
	// reprocessing is a new entry, never dropped as a repeat.
	Source string
	// Position is the adapter's position of this dead letter (a DLQ stream sequence or entry
	// id), set by ListDeadLetters; RemoveDeadLetters and the redelivery dedup key use it. A dead
	// letter added again after a new failure has a new Position.
	Position string
}

// DeadLetterID is the id of the dead letter of message id in consumer: deterministic, so a dead
// letter written twice (a crash between writing it and settling the message) is one entry.
func DeadLetterID(consumer, messageID string) string {
	h := sha256.Sum256([]byte(consumer + "\x00" + messageID))
	return "dlq_" + hex.EncodeToString(h[:16])
}

// DLQFilter selects dead letters. The zero value selects all of them (operators only: the HTTP
// layer always sets Tenant for a tenant's principal).
type DLQFilter struct {
	Tenant   string    // "" all tenants
	Consumer string    // "" all consumers
	Type     string    // "" all types
	IDs      []string  // empty: any id
	Since    time.Time // FailedAt ≥ Since, when not zero
	Until    time.Time // FailedAt < Until, when not zero
}

// Match reports whether dl passes f.
func (f DLQFilter) Match(dl DeadLetter) bool {
	return (f.Tenant == "" || dl.Message.Tenant == f.Tenant) &&
		(f.Consumer == "" || dl.Consumer == f.Consumer) &&
		(f.Type == "" || dl.Message.Type == f.Type) &&
		(len(f.IDs) == 0 || contains(f.IDs, dl.ID)) &&
		(f.Since.IsZero() || !dl.FailedAt.Before(f.Since)) &&
		(f.Until.IsZero() || dl.FailedAt.Before(f.Until))
}

// DeadLetters is the DLQ, kept by the broker next to the stream (natsbus: a stream; redisbus: a
// stream per tenant), so it is as durable and as shared between replicas as the events.
type DeadLetters interface {
	// AddDeadLetter stores dl (ID, Message, Consumer, Reason, Attempts, StoredAt, FailedAt and
	// Source set; Position is the adapter's). Adding the same ID and Source again within the dedup
	// window stores it once.
	AddDeadLetter(ctx context.Context, dl DeadLetter) error
	// ListDeadLetters returns up to limit dead letters matching f, oldest first, after the
	// cursor after ("" from the start), and the cursor of the next page ("" at the end). The
	// cursor is opaque to callers. limit < 1 is an errs.Invalid; so is a malformed cursor.
	ListDeadLetters(ctx context.Context, f DLQFilter, after string, limit int) ([]DeadLetter, string, error)
	// RemoveDeadLetters deletes these dead letters (by Position); unknown ones are ignored.
	RemoveDeadLetters(ctx context.Context, dls []DeadLetter) error
	// CountDeadLetters counts the dead letters of tenant ("" all tenants).
	CountDeadLetters(ctx context.Context, tenant string) (int64, error)
}

// ConsumerStats is a consumer's position in the stream.
type ConsumerStats struct {
	Pending    int64 // messages matching the consumer not yet delivered (lag)
	AckPending int64 // delivered, not yet settled
}
