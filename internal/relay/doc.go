// Package relay is the transactional outbox relay: it moves the events domains commit to the
// outbox table (events.OutboxRelayStore) onto the event bus (bus.Publisher), in order, at least
// once, with one replica publishing at a time. Only internal/kernel (and tests) import relay; the
// storage adapters implement its LeaseStore.
//
// # Usage
//
//	r, err := relay.New(store, store, bus, relay.Options{Holder: instanceID, Meter: meter})
//	go r.Run(ctx)          // until ctx ends; releases the lease on the way out
//	… commit a change with its outbox record …
//	r.Notify()             // publish now rather than at the next poll
//
// # What one round does
//
// While the relay holds the lease it reads the oldest pending records (PendingOutbox, Batch of
// them, lowest seq first), turns each into a bus.Message (ID, Tenant, Type, Payload byte for
// byte, and TraceParent read from the payload's "traceparent" member), publishes them with one
// Publish call in seq order, and marks them published (MarkPublished). A full batch starts the
// next round at once; otherwise the relay waits for PollInterval or for Notify, which the kernel
// calls after each commit that added outbox records, so an event's latency does not depend on
// PollInterval. A failed publish adds one to the records' attempts (RecordOutboxFailure) and backs
// off — exponentially from BackoffInitial to BackoffMax, with jitter, reset by the next success —
// and the records are tried again: a record is never dropped. Store errors back off the same way.
//
// Progress is the published_at column, never a position: every round reads from the start of the
// pending records, so a record that commits late with a lower seq than records already published
// (concurrent transactions on PostgreSQL, see internal/store/postgres/outbox.go) is published by
// the next round.
//
// # Ordering guarantees
//
// Records of one subject (one resource) are published in seq order, which is the order of their
// commits because the domain writes the record after locking the resource's row. This holds
// because (1) one round publishes one batch, in seq order, with one Publish call, which stores
// messages in slice order and returns only when all are acknowledged; (2) a failed batch is
// published again from its first record before anything after it; (3) only one relay publishes
// at a time (the lease). A record published twice (a crash or failure between Publish and
// MarkPublished) is dropped by the broker's dedup on its id within the dedup window; consumers
// dedupe beyond it (internal/consumers). Records of different subjects may be published in an
// order other than their seq.
//
// A record the bus rejects as invalid (bus.Message.Validate; the outbox validates records with
// the same rules on insert, so this is a defect, not an expected case) is held back with every
// later record of its subject, its attempts counted and an error logged, while other subjects go
// on; held-back records stay pending (the backlog metrics show them) until fixed by hand.
//
// # Lease
//
// Several replicas may run a relay on one database; a lease row (LeaseStore, named LeaseName)
// picks the one that publishes. A relay takes the lease when it is free, expired or its own,
// holds it for LeaseTTL from the instant before the acquiring statement, and renews it once half
// of LeaseTTL has passed (before a batch, and by waking from any wait in time). It publishes only
// while it holds the lease with a safety margin of LeaseTTL/4 to spare: it checks the local
// deadline before each batch, and bounds the Publish call's context by it, so a slow broker cannot
// stretch a publish past the lease. A standby replica tries to take the lease every PollInterval;
// on a clean shutdown the holder releases the lease, so a standby takes over at its next try, and
// after a crash a standby takes over once LeaseTTL has run out.
//
// Residual risks, which the broker's dedup and the consumers' inbox absorb (they can only
// duplicate or, across two subjects' records, reorder; never lose): the lease compares the
// replicas' wall clocks, so clocks skewed by more than the margin can let a standby take a lease
// its holder still believes it has; and a process paused (a GC stop, SIGSTOP, a VM freeze) after
// its deadline check, or a message still in flight on the network when the publish context ends,
// can reach the broker after the lease expired while the new holder publishes. In those windows
// two relays may publish records of one subject concurrently, in either order. Holder must be
// unique per running process: two processes with one Holder both believe they hold the lease.
//
// # Purge
//
// The lease holder, every PurgeInterval, deletes published outbox records older than Retention
// (PurgePublishedOutbox) and, when Options.Inbox is set, consumer inbox claims older than
// InboxRetention (PurgeInbox). InboxRetention must exceed the longest time after which an event
// can be delivered again (the bus retention, DLQ reprocessing), or a late redelivery is applied
// twice.
//
// # Metrics
//
//	nops_outbox_backlog                  gauge: unpublished records
//	nops_outbox_oldest_age_seconds       gauge: age of the oldest unpublished record, 0 when none
//	nops_outbox_published_total          counter: records published
//	nops_outbox_publish_failures_total   counter: records whose publish failed (per attempt)
//	nops_outbox_relay_leader             gauge: 1 while this replica holds the lease
//
// The two backlog gauges are read from the database (OutboxBacklog) by an observable callback
// at most once a second; every running replica reports them, with the same values, so aggregate
// them with max(), not sum(). They are registered while Run runs.
//
// # Concurrency
//
// Notify is safe for concurrent use and never blocks. Run must not be called again while it
// runs.
package relay
