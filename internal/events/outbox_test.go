package events_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/events/eventstest"
)

// memOutbox is an in-memory events.OutboxStore, written the way the SQL adapters behave: an
// auto-increment Seq, times stored in UTC at microsecond precision, copies in and out. It lets
// the conformance suite itself be tested, and shows the contract in a few lines.
type memOutbox struct {
	mu      sync.Mutex
	nextSeq int64
	recs    []events.OutboxRecord // in Seq order
}

var _ events.OutboxStore = (*memOutbox)(nil)

func micro(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func (m *memOutbox) AddToOutbox(_ context.Context, r events.OutboxRecord) error {
	if err := r.Validate(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, x := range m.recs {
		if x.ID == r.ID {
			return errs.New(errs.Conflict, "event %s is already in the outbox", r.ID)
		}
	}
	m.nextSeq++
	r.Seq, r.CreatedAt, r.Payload = m.nextSeq, micro(r.CreatedAt), slices.Clone(r.Payload)
	m.recs = append(m.recs, r)
	return nil
}

func (m *memOutbox) PendingOutbox(_ context.Context, limit int) ([]events.OutboxRecord, error) {
	if limit < 1 {
		return nil, errs.Field("limit", "must be at least 1")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []events.OutboxRecord
	for _, r := range m.recs {
		if r.PublishedAt == nil && len(out) < limit {
			r.Payload = slices.Clone(r.Payload)
			out = append(out, r)
		}
	}
	return out, nil
}

// update applies f to the unpublished records with these ids.
func (m *memOutbox) update(ids []string, f func(*events.OutboxRecord)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range m.recs {
		if m.recs[i].PublishedAt == nil && slices.Contains(ids, m.recs[i].ID) {
			f(&m.recs[i])
		}
	}
}

func (m *memOutbox) MarkPublished(_ context.Context, ids []string, at time.Time) error {
	at = micro(at)
	m.update(ids, func(r *events.OutboxRecord) { r.PublishedAt = &at })
	return nil
}

func (m *memOutbox) RecordOutboxFailure(_ context.Context, ids []string) error {
	m.update(ids, func(r *events.OutboxRecord) { r.Attempts++ })
	return nil
}

func (m *memOutbox) OutboxBacklog(context.Context) (events.Backlog, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b events.Backlog
	for _, r := range m.recs {
		if r.PublishedAt == nil {
			b.Pending++
			if b.Oldest.IsZero() || r.CreatedAt.Before(b.Oldest) {
				b.Oldest = r.CreatedAt
			}
		}
	}
	return b, nil
}

func (m *memOutbox) PurgePublishedOutbox(_ context.Context, before time.Time) (int64, error) {
	before = micro(before)
	m.mu.Lock()
	defer m.mu.Unlock()
	n := len(m.recs)
	m.recs = slices.DeleteFunc(m.recs, func(r events.OutboxRecord) bool {
		return r.PublishedAt != nil && r.PublishedAt.Before(before)
	})
	return int64(n - len(m.recs)), nil
}

func TestOutboxConformance(t *testing.T) {
	eventstest.RunOutbox(t, func(*testing.T) events.OutboxStore { return &memOutbox{} })
}
