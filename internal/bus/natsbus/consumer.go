package natsbus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/errs"
)

// A bus consumer is one JetStream durable consumer named after it, with one filter subject per
// (tenant, type) pair of its filter plus its retry subject. Consumers with several filter
// subjects need NATS 2.10; on an older server (NATS 2.9 is still common) a bus consumer N is
// instead one single-filter JetStream consumer per subject, named N~<subject hash> ("~" cannot
// occur in a bus token, so the names of different bus consumers never collide), and
// ConsumerStats adds them up. The server's version is read when the bus connects. Consumers
// created on NATS 2.9 are not carried over when the server is upgraded: the bus consumer then
// starts afresh as a single consumer (from the start of the stream, or its end with
// DeliverNew), and the consumers' inbox dedupes what it had already handled.

// splitSep separates a bus consumer's name from its subject tag on NATS < 2.10.
const splitSep = "~"

// source is one JetStream consumer a subscription fetches from, and how to create it again.
type source struct {
	name   string
	ensure func(ctx context.Context) (jetstream.Consumer, error)
}

// supportsMultiFilter reports whether a NATS server of version v ("2.10.4") accepts consumers
// with several filter subjects.
func supportsMultiFilter(v string) bool { return serverAtLeast(v, 2, 10) }

// serverAtLeast reports whether the NATS server version v ("2.10.4", "v2.12.0-RC.1") is at least
// major.minor; an unreadable version is not.
func serverAtLeast(v string, major, minor int) bool {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) < 2 {
		return false
	}
	gotMajor, err1 := strconv.Atoi(parts[0])
	gotMinor, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return gotMajor > major || (gotMajor == major && gotMinor >= minor)
}

// consumerSubjects are the filter subjects of consumer cfg: one per (tenant or any) × (type or
// any) pair of its filter, and its retry subject.
func (b *Bus) consumerSubjects(cfg bus.ConsumerConfig) []string {
	subjects := b.eventSubjects(cfg.Filter)
	return append(subjects, b.retrySubject(cfg.Name))
}

func (b *Bus) retrySubject(consumer string) string {
	return b.cfg.Namespace + ".retry." + consumer + ".>"
}

// eventSubjects are the event stream subjects (not the retry ones) that f selects. Distinct
// pairs never overlap, as JetStream requires of a consumer's filters.
func (b *Bus) eventSubjects(f bus.Filter) []string {
	tenants, types := dedupe(f.Tenants), dedupe(f.Types)
	if len(tenants) == 0 {
		tenants = []string{"*"}
	}
	if len(types) == 0 {
		types = []string{">"}
	}
	var out []string
	for _, tenant := range tenants {
		for _, typ := range types {
			out = append(out, b.cfg.Namespace+".events."+tenant+"."+typ)
		}
	}
	return out
}

func dedupe(list []string) []string {
	out := slices.Clone(list)
	slices.Sort(out)
	return slices.Compact(out)
}

func sameSet(a, b []string) bool { return slices.Equal(dedupe(a), dedupe(b)) }

// consumerConfig is the configuration of a new JetStream consumer name of bus consumer cfg.
func consumerConfig(name string, cfg bus.ConsumerConfig, subjects []string, deliverNew bool) jetstream.ConsumerConfig {
	cc := jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "nops event bus consumer " + cfg.Name,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    -1, // bus.Dispatch decides when to give up
		MaxAckPending: max(minMaxAckPending, cfg.Handlers()),
	}
	if len(subjects) == 1 {
		cc.FilterSubject = subjects[0]
	} else {
		cc.FilterSubjects = subjects
	}
	if deliverNew {
		cc.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	return cc
}

// ensureConsumer creates the durable consumer cfg.Name (NATS ≥ 2.10), or brings an existing
// one's filters, ack wait and ack-pending bound to cfg. Its start position (DeliverNew) only
// matters when it is created.
func (b *Bus) ensureConsumer(ctx context.Context, cfg bus.ConsumerConfig) (*source, error) {
	subjects := b.consumerSubjects(cfg)
	ensure := func(ctx context.Context) (jetstream.Consumer, error) {
		return b.ensureOne(ctx, cfg.Name, cfg, subjects, cfg.DeliverNew)
	}
	if _, err := ensure(ctx); err != nil {
		return nil, err
	}
	return &source{name: cfg.Name, ensure: ensure}, nil
}

// ensureOne creates JetStream consumer name with subjects, or updates an existing one.
func (b *Bus) ensureOne(ctx context.Context, name string, cfg bus.ConsumerConfig, subjects []string, deliverNew bool) (jetstream.Consumer, error) {
	for range 3 {
		cons, err := b.events.Consumer(ctx, name)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			cons, err = b.events.CreateConsumer(ctx, consumerConfig(name, cfg, subjects, deliverNew))
			if errors.Is(err, jetstream.ErrConsumerExists) {
				continue // created meanwhile by another subscriber: update it if need be
			}
			if err != nil {
				return nil, fmt.Errorf("create consumer %s: %w", name, err)
			}
			return cons, nil
		}
		if err != nil {
			return nil, fmt.Errorf("look up consumer %s: %w", name, err)
		}
		cc := cons.CachedInfo().Config
		have := slices.Clone(cc.FilterSubjects)
		if cc.FilterSubject != "" {
			have = append(have, cc.FilterSubject)
		}
		if sameSet(have, subjects) && cc.AckWait == cfg.AckWait && cc.MaxAckPending >= cfg.Handlers() {
			return cons, nil
		}
		if len(subjects) == 1 {
			cc.FilterSubject, cc.FilterSubjects = subjects[0], nil
		} else {
			cc.FilterSubject, cc.FilterSubjects = "", subjects
		}
		cc.AckWait = cfg.AckWait
		cc.MaxAckPending = max(cc.MaxAckPending, cfg.Handlers())
		cons, err = b.events.UpdateConsumer(ctx, cc)
		if err != nil {
			return nil, fmt.Errorf("update consumer %s: %w", name, err)
		}
		return cons, nil
	}
	return nil, fmt.Errorf("create consumer %s: it keeps being created and deleted concurrently", name)
}

// splitName is the JetStream consumer of bus consumer name for one filter subject (NATS < 2.10).
func splitName(name, subject string) string {
	h := sha256.Sum256([]byte(subject))
	return name + splitSep + hex.EncodeToString(h[:6])
}

// splitConsumers returns the JetStream consumers making up bus consumer name on NATS < 2.10.
func (b *Bus) splitConsumers(ctx context.Context, name string) ([]*jetstream.ConsumerInfo, error) {
	var out []*jetstream.ConsumerInfo
	list := b.events.ListConsumers(ctx)
	for ci := range list.Info() {
		if strings.HasPrefix(ci.Name, name+splitSep) {
			out = append(out, ci)
		}
	}
	if err := list.Err(); err != nil {
		return nil, fmt.Errorf("list consumers of %s: %w", b.eventsName, err)
	}
	return out, nil
}

// ensureSplitConsumers sets bus consumer cfg.Name up on NATS < 2.10: one single-filter consumer
// per subject. Subjects added to an existing bus consumer start at the end of the stream, as a
// filter added to a consumer does on NATS 2.10; consumers of subjects no longer in the filter
// are deleted.
func (b *Bus) ensureSplitConsumers(ctx context.Context, cfg bus.ConsumerConfig) ([]*source, error) {
	existing, err := b.splitConsumers(ctx, cfg.Name)
	if err != nil {
		return nil, err
	}
	deliverNew := cfg.DeliverNew || len(existing) > 0
	want := map[string]bool{}
	var out []*source
	for _, subject := range b.consumerSubjects(cfg) {
		name := splitName(cfg.Name, subject)
		want[name] = true
		ensure := func(ctx context.Context) (jetstream.Consumer, error) {
			return b.ensureOne(ctx, name, cfg, []string{subject}, deliverNew)
		}
		if _, err := ensure(ctx); err != nil {
			return nil, err
		}
		out = append(out, &source{name: name, ensure: ensure})
	}
	for _, ci := range existing {
		if want[ci.Name] {
			continue
		}
		if err := b.events.DeleteConsumer(ctx, ci.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("delete consumer %s of a former filter: %w", ci.Name, err)
		}
	}
	return out, nil
}

// ConsumerStats implements bus.Bus from the consumer's info (on NATS < 2.10, the sum over its
// single-filter consumers).
func (b *Bus) ConsumerStats(ctx context.Context, consumer string) (bus.ConsumerStats, error) {
	if !bus.ValidToken(consumer) {
		return bus.ConsumerStats{}, errs.Field("consumer", "must be 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")
	}
	notFound := func(err error) error {
		return errs.Wrap(errs.NotFound, fmt.Errorf("consumer %s: %w", consumer, err), "no consumer %s", consumer)
	}
	if !b.multiFilter {
		infos, err := b.splitConsumers(ctx, consumer)
		if err != nil {
			return bus.ConsumerStats{}, unavailable(err, "consumer stats of %s", consumer)
		}
		if len(infos) == 0 {
			return bus.ConsumerStats{}, notFound(jetstream.ErrConsumerNotFound)
		}
		var st bus.ConsumerStats
		for _, ci := range infos {
			st.Pending += int64(ci.NumPending)
			st.AckPending += int64(ci.NumAckPending)
		}
		return st, nil
	}
	cons, err := b.events.Consumer(ctx, consumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return bus.ConsumerStats{}, notFound(err)
	}
	if err != nil {
		return bus.ConsumerStats{}, unavailable(err, "consumer stats of %s", consumer)
	}
	ci := cons.CachedInfo()
	return bus.ConsumerStats{Pending: int64(ci.NumPending), AckPending: int64(ci.NumAckPending)}, nil
}
