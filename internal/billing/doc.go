// Package billing meters served calls: a Recorder takes one Usage per accepted Zero Agent
// Gateway call (issue 5) or completed invocation (issue 6) on the request path, without
// blocking, and writes each as one nops.billing.usage.v1 event to the transactional outbox, in
// batches, from where the outbox relay publishes them for add-on billing and scorecard services.
// RecordOutbox takes other metering events the caller built as outbox records
// (events.NewRecord) — the nops.invocation.completed.v1 and nops.billing.usage.v1 of each
// synchronous invocation — and RecordEvents events built with events.New (a breaker's state
// change), into the same queue and batches; everything below holds for them too, and the metrics
// count them with the usage records.
//
// Only the composition root (internal/kernel) constructs a Recorder; the HTTP layer and the
// invoke path receive it (or an interface with its Record method) and call Record. billing
// imports events and errs only, never another domain or an adapter; the storage adapters satisfy
// Store.
//
// # Usage
//
//	rec, err := billing.NewRecorder(store, billing.Options{Meter: meter, Logger: log, Enqueued: relay.Notify})
//	go rec.Run(ctx)  // until ctx ends; then it writes what is queued and returns
//	…
//	rec.Record(billing.Usage{Tenant: t, Source: billing.SourceGateway, Route: "POST /v1/…", …})
//	rec.RecordOutbox(completedRecord, usageRecord)  // events.NewRecord's records, queued in order
//	rec.RecordEvents(breakerEvent)                  // events.Event values, queued in order
//
// # What Record does
//
// Record validates the usage, builds its event's outbox record (events.NewRecord: a fresh "evt_"
// id, the event's time being the end of the call, StartedAt + Duration), and puts the record on
// a bounded queue (Options.Queue). It never waits: when the queue is full, or the usage is
// invalid, or Run has stopped, it returns false and counts the record in
// nops_billing_usage_dropped_total (attribute reason: queue_full, invalid, stopped). A full
// queue means the database cannot keep up; shedding metering is preferred to slowing every call.
//
// # Batches
//
// Run takes records off the queue and writes them in batches: one store transaction (InTx) per
// batch, adding each record with AddToOutbox, once Batch records are waiting or Interval after
// the first record of the batch arrived, whichever comes first. After each committed batch it
// calls Options.Enqueued (the relay's Notify), so the relay publishes at once. Batching is what
// keeps the cost per call small: one transaction, and on SQLite one writer-lock acquisition,
// per batch rather than per call.
//
// A batch whose transaction fails is retried, as it is (the same records with the same event
// ids), with exponential backoff and jitter from BackoffInitial to BackoffMax, for as long as
// the process lives; nops_billing_usage_batch_failures_total counts the failed attempts. While
// it is retried, new records wait in the queue, and Record sheds them once it is full. Because
// the ids do not change, an attempt whose commit succeeded but was reported as failed (a
// connection lost during COMMIT) is not written twice: the retry's first AddToOutbox finds the
// id taken (errs.Conflict), which means the earlier transaction committed the whole batch, and
// the batch counts as written.
//
// # Shutdown and crashes
//
// When Run's context ends, Record stops accepting (it returns false with reason "stopped"), and
// Run writes the batch in hand and everything queued, retrying failures, within FlushTimeout;
// records it cannot write in that time are counted with reason "shutdown", logged and lost, and
// Run returns an error saying how many. The kernel stops its HTTP servers (draining in-flight
// requests) before it ends Run's context, so requests finishing during the drain are metered.
//
// A crash (kill -9, power loss) loses the records queued and not yet committed: at most one
// Interval's worth plus the batch in flight, or, while the database is failing, everything
// queued (at most Queue records). Committed records are durable like any outbox record and are
// published at least once; billing consumers dedupe by event id (the CloudEvents id).
//
// # Metrics
//
//	nops_billing_usage_recorded_total        counter: usage records committed to the outbox
//	nops_billing_usage_dropped_total         counter: usage records not written, by reason
//	                                         (queue_full, invalid, stopped, shutdown)
//	nops_billing_usage_batch_failures_total  counter: failed batch transactions (attempts)
//
// # Concurrency
//
// Record is safe for concurrent use by any number of goroutines and may be called before Run
// starts (records wait in the queue). Run runs at most once per Recorder; a second concurrent
// call is an error. Records are written in batches by Run's goroutine alone, so records of one
// Recorder reach the outbox in queue order.
package billing
