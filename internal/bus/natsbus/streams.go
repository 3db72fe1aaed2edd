package natsbus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nops-kernel/nops/internal/errs"
)

// Message headers. The subject carries tenant and type too and wins when they disagree.
const (
	hdrID          = "Nops-Id" // the event id when it differs from the dedup key Nats-Msg-Id (redeliveries)
	hdrTenant      = "Nops-Tenant"
	hdrType        = "Nops-Type"
	hdrTraceParent = "traceparent"
	hdrContentType = "Content-Type"

	contentTypeEvent      = "application/cloudevents+json"
	contentTypeDeadLetter = "application/json"
)

// ensureStreams creates the namespace's streams or updates their configuration. A cluster that
// is electing leaders, or has too few servers up for the replicas yet, answers with temporary
// errors: those are retried until ctx ends.
func (b *Bus) ensureStreams(ctx context.Context) error {
	configs := []jetstream.StreamConfig{
		{
			Name:        b.eventsName,
			Description: "nops event bus: events and per-consumer redeliveries of namespace " + b.cfg.Namespace,
			Subjects:    []string{b.cfg.Namespace + ".events.>", b.cfg.Namespace + ".retry.>"},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      b.cfg.Retention,
			Duplicates:  b.cfg.DedupWindow,
			Replicas:    b.cfg.Replicas,
			// Only asked of a server that knows it: older ones would ignore the field.
			AllowAtomicPublish: b.allowAtomic,
		},
		{
			Name:        b.dlqName,
			Description: "nops event bus: dead letters of namespace " + b.cfg.Namespace,
			Subjects:    []string{b.cfg.Namespace + ".dlq.>"},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			Duplicates:  b.cfg.DedupWindow,
			Replicas:    b.cfg.Replicas,
		},
	}
	streams := make([]jetstream.Stream, len(configs))
	for i, sc := range configs {
		wait := 50 * time.Millisecond
		for attempt := 1; ; attempt++ {
			s, err := b.js.CreateOrUpdateStream(ctx, sc)
			if err == nil {
				streams[i] = s
				break
			}
			if !transient(err) || ctx.Err() != nil {
				return fmt.Errorf("create stream %s (after %d attempts): %w", sc.Name, attempt, err)
			}
			b.logger.Debug("stream not created yet; retrying", "stream", sc.Name, "error", err.Error())
			timer := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				timer.Stop()
				return fmt.Errorf("create stream %s (after %d attempts): %w", sc.Name, attempt, err)
			case <-timer.C:
			}
			wait = min(2*wait, time.Second)
		}
	}
	b.events, b.dlq = streams[0], streams[1]
	// The stream's answer, not the request, says whether the server applies atomic batches.
	b.atomicOn.Store(b.allowAtomic && b.events.CachedInfo().Config.AllowAtomicPublish)
	if b.allowAtomic {
		b.logger.Debug("atomic batch publish", "enabled", b.atomicOn.Load(), "min_messages", b.cfg.AtomicBatchMin)
	}
	return nil
}

// transient reports errors of the broker that a retry can cure: timeouts, no responders, and
// the JetStream API's 5xx answers (leader elections, too few servers for the replicas).
func transient(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code >= 500
	}
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse)
}

// unavailable wraps an error of the broker for callers: errs.Unavailable, with what was being
// done.
func unavailable(err error, format string, args ...any) error {
	if errs.As(err) != nil {
		return err
	}
	return errs.Wrap(errs.Unavailable, fmt.Errorf(format+": %w", append(args, err)...), "event bus unavailable")
}

// parseSubject returns the tenant and type of an events or retry subject of this namespace.
func (b *Bus) parseSubject(subject string) (tenant, typ string, ok bool) {
	rest, found := strings.CutPrefix(subject, b.cfg.Namespace+".")
	if !found {
		return "", "", false
	}
	kind, rest, _ := strings.Cut(rest, ".")
	switch kind {
	case "events":
	case "retry":
		if _, rest, found = strings.Cut(rest, "."); !found { // the consumer
			return "", "", false
		}
	default:
		return "", "", false
	}
	tenant, typ, found = strings.Cut(rest, ".")
	if !found || tenant == "" || typ == "" {
		return "", "", false
	}
	return tenant, typ, true
}
