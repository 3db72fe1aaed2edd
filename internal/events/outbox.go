package events

import (
	"context"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
)

// OutboxRecord is one event waiting in, or relayed from, the transactional outbox. Domains make
// it with Event.Outbox and write it with OutboxWriter.AddToOutbox in the transaction of the
// change it describes.
type OutboxRecord struct {
	// Seq is assigned by the store on insert (an auto-increment column) and orders the outbox:
	// changes to one resource are serialised by the database, so their records get increasing
	// Seq in commit order, which CreatedAt (the clock of whichever replica made the change) does
	// not guarantee. Zero in AddToOutbox's argument.
	Seq         int64
	ID          string     // the CloudEvents id: unique in the outbox, the dedup key downstream
	Tenant      string     // the tenant attribute, for per-tenant bus subjects
	Type        Type       // the type attribute, for bus subjects
	Subject     string     // the subject attribute: the resource, whose records keep their order
	Payload     []byte     // the whole serialized CloudEvent, stored and published byte for byte
	CreatedAt   time.Time  // the event's time, UTC
	PublishedAt *time.Time // when the relay first published it; nil until then
	Attempts    int        // failed publish attempts so far
}

// Validate checks what a store needs of a record before inserting it; adapters call it in
// AddToOutbox. It does not parse the payload: Event.Outbox produced it.
func (r OutboxRecord) Validate() error {
	switch {
	case r.ID == "" || len(r.ID) > MaxIDLength:
		return errs.Field("id", "must be 1 to 128 characters")
	case !idToken(r.Tenant):
		return errs.Field("tenant", "must be 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")
	case !r.Type.Valid():
		return errs.Field("type", "must be nops.<domain>.<event>.v<N>")
	case r.Subject == "" || len(r.Subject) > MaxSubjectLength:
		return errs.Field("subject", "must be 1 to 512 characters")
	case len(r.Payload) == 0 || len(r.Payload) > MaxEventSize:
		return errs.Field("payload", "must be a serialized event of at most 1016 KiB")
	case r.CreatedAt.IsZero():
		return errs.Field("created_at", "is required")
	case r.Seq != 0 || r.PublishedAt != nil || r.Attempts != 0:
		return errs.Field("seq", "seq, published_at and attempts are the store's to set")
	}
	return nil
}

// OutboxWriter is the write side of the outbox, which each domain's store needs. The adapter
// runs AddToOutbox on the transaction bound to ctx (see the store adapters' InTx), so the
// record commits or rolls back with the change it describes: an event exists exactly when its
// change committed.
type OutboxWriter interface {
	// AddToOutbox inserts r (after r.Validate) with the next Seq, PublishedAt nil and Attempts
	// 0. An existing ID is an errs.Conflict; an invalid record an errs.Invalid. The payload is
	// stored byte for byte (bytes or text, not a JSON type that reorders members).
	AddToOutbox(ctx context.Context, r OutboxRecord) error
}

// Backlog summarises the unpublished part of the outbox, for the relay's metrics.
type Backlog struct {
	Pending int64     // unpublished records
	Oldest  time.Time // the smallest CreatedAt among them, UTC; zero when Pending is 0
}

// OutboxRelayStore is what the bus relay needs of the outbox. Delivery is at least once: the
// relay publishes the records PendingOutbox returns, in Seq order, each with its ID as the
// broker's dedup key (JetStream's Nats-Msg-Id header), then calls MarkPublished. A crash between
// the two publishes the records again; the broker drops repeats within its dedup window and
// consumers dedupe on the CloudEvents id for the rest. Records of one Subject stay in order only
// while one relay publishes at a time: with several replicas the relay holds a lease (a
// PostgreSQL advisory lock, a lease row), because FOR UPDATE SKIP LOCKED alone lets two relays
// publish two records of one subject concurrently, in either order.
// Like every store method, these run on the transaction bound to ctx, if any.
type OutboxRelayStore interface {
	// PendingOutbox returns up to limit unpublished records, lowest Seq first. limit < 1 is an
	// errs.Invalid.
	PendingOutbox(ctx context.Context, limit int) ([]OutboxRecord, error)
	// MarkPublished sets PublishedAt to at (UTC) on the records with these ids that are still
	// unpublished. Ids already published keep their first time and unknown ids are ignored, so
	// a repeated call is harmless.
	MarkPublished(ctx context.Context, ids []string, at time.Time) error
	// RecordOutboxFailure adds one to Attempts of the unpublished records with these ids, after
	// a failed publish; the relay backs off by it and alerts on records that keep failing.
	RecordOutboxFailure(ctx context.Context, ids []string) error
	// OutboxBacklog counts the unpublished records and finds the oldest one's CreatedAt.
	OutboxBacklog(ctx context.Context) (Backlog, error)
	// PurgePublishedOutbox deletes the records published before before and returns how many it
	// deleted. Unpublished records are never deleted, however old.
	PurgePublishedOutbox(ctx context.Context, before time.Time) (int64, error)
}

// OutboxStore is the whole outbox, as a storage adapter implements it.
type OutboxStore interface {
	OutboxWriter
	OutboxRelayStore
}
