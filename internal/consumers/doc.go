// Package consumers holds the kernel's own event consumers and the inbox that makes their
// effects exactly once: Once, the event-stats projection (the reference consumer), and Kernel,
// the list internal/kernel subscribes to the bus. Handlers are bus.Handlers or bus.BatchHandlers
// (Spec.Subscribe picks Subscribe or bus.SubscribeBatch); they see the bus
// through bus types only and the database through the small store interfaces declared here,
// which the storage adapters (internal/store/sqlite, internal/store/postgres) implement. Only
// internal/kernel wires them, and the storage adapters import this package for EventStat.
//
// # Exactly once in effect
//
// The bus delivers at least once: a message is redelivered after a failed attempt, after AckWait
// when a handler hung or its process died, after a broker failover, and again on DLQ reprocessing
// or replay; the outbox relay may publish a record twice when it crashes between publishing and
// marking it (the broker's dedup window drops most of those, not all). So a handler may see one
// event any number of times, possibly concurrently on two replicas.
//
// Once turns that into one effect. In a single database transaction it claims the pair
// (consumer, event id) in the inbox table — an INSERT that does nothing when the pair is already
// there — and, only when the claim is new, runs the effect. The argument:
//
//   - The claim and the effect commit or roll back together, so "claimed" and "applied" are the
//     same fact: there is no state where the effect happened and the claim did not, or the
//     reverse. An effect that fails rolls its claim back, so a redelivery applies it.
//   - The claim is a primary key (consumer, event_id), so two transactions cannot both insert it:
//     on PostgreSQL the second waits on the first's uncommitted row and then finds it (does
//     nothing) or, if the first rolled back, inserts it; on SQLite transactions are serialised.
//     Concurrent deliveries of one event therefore apply it once.
//   - A commit whose outcome is unknown to the caller (the connection dropped during COMMIT) is
//     reported as an error, the bus redelivers, and the redelivery finds the claim if the commit
//     did happen: the effect is still applied once.
//
// Group commit (Batcher, GroupBatcher) keeps the argument: a group of applications shares one
// transaction, which claims all the group's event ids with one statement (ClaimInboxBatch: a
// multi-row INSERT … ON CONFLICT DO NOTHING RETURNING event_id) and applies the effects of the
// ids that statement returns — the claims new in this transaction — and of no other:
//
//   - Each returned id was inserted by this transaction, so "claimed" and "applied" are still
//     one fact committed or rolled back together, now for the whole group. A group whose
//     transaction fails claims nothing and applies nothing; its applications are then retried
//     one by one, each with Once, so the one that fails fails alone.
//   - An id the group holds twice is inserted once (the ids are deduplicated, and a repeat
//     within one statement conflicts with the row that statement inserted), and only the first
//     of its applications is applied: within a group, an event counts once.
//   - Across groups and replicas the primary key decides as for Once: a row committed before is
//     a conflict (not returned), a row another transaction holds uncommitted makes the statement
//     wait on PostgreSQL and then skip it or insert it, and SQLite runs one transaction at a
//     time. The group's ids are claimed in ascending order, so two PostgreSQL transactions
//     claiming overlapping groups take the row locks in one order and do not deadlock on them
//     (if they deadlocked anyway, the victim's group would roll back and be retried one by one).
//
// The argument covers effects that are writes to the same database in the transaction Once
// hands to apply (the ctx it passes). An effect outside it — an HTTP call, a message to another
// system — can happen more than once; such effects need their own idempotency key (the event id).
//
// Claims are kept for the inbox retention (the relay purges older ones with PurgeInbox). An event
// delivered again after its claim was purged is applied again, so the retention must exceed the
// longest redelivery horizon: the bus retention (the replay window) and any DLQ reprocessing.
//
// # Consumers
//
// event-stats (EventStatsConsumer) counts events per tenant and type, with the time of the
// latest one, in table event_stats; GET /v1/events/stats reads it through EventStatsReader. Its
// handler parses each delivery's attributes strictly (events.ParseAttributes: every attribute as
// events.Parse checks it, the data only as one JSON object, since the count reads no payload): a
// malformed payload is a bus.Terminal error, dead-lettered at once, since no retry can fix it.
// Kernel runs it as a batch consumer (EventStatsBatchHandler): EventStatsConcurrency goroutines,
// each handed up to EventStatsBatch deliveries the bus has fetched, so that a batch shares one
// commit (GroupBatcher.Apply): it is counted with two statements whatever its size, one claiming
// its events and one adding the new ones to their (tenant, type) rows, summed (AddEventStats).
// A batch whose transaction fails is counted one event at a time (each with Once): the event the
// store refuses fails alone and is retried by the bus, the others are counted and acknowledged,
// each exactly once by the argument above. A few goroutines with a batch each, rather than one
// handler per event sharing commits through GroupBatcher.Once, because at 1000 req/s the dozens
// of handlers woken by each commit queued for a CPU in front of the kernel's requests
// (docs/benchmarks.md). The size of every group is recorded in BatchSizeMetric
// (nops_consumer_batch_size) when Options.Meter is set. EventStatsHandler, one delivery per
// call, is the same count through GroupBatcher.Once, for a bus without batch consumers.
//
// # Concurrency
//
// Once and the handlers are safe for concurrent use; their safety against concurrent deliveries
// of one event is the argument above.
package consumers
