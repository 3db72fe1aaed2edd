// Package degrade is the kernel's degraded-mode machinery (MISSION S10-P9): the criticality
// matrix (matrix.go: every route, agent class and event consumer as critical, essential or
// best_effort; docs/criticality.md is generated from it) and the Monitor, which enters and
// leaves the degraded modes:
//
//   - read_only: the database refuses writes (the write probe fails). Reads keep being served;
//     operations the matrix marks as writes answer 503 with Retry-After.
//   - bus_down: the event bus is unreachable (the "bus" readiness check is down). Changes keep
//     being accepted: their events wait in the transactional outbox and the relay publishes
//     them when the bus is back.
//   - shed_best_effort: the kernel is overloaded (the perimeter's in-flight gate reached its
//     best-effort threshold, or refused best-effort requests, since the last round). Best-effort
//     operations answer 503 with Retry-After; critical and essential ones are served.
//
// Each mode is entered automatically from its signal or manually through the boolean feature
// flag kernel.degrade.<mode>, and left automatically once its signal has been healthy for
// RecoverRounds rounds in a row (and the flag is off). Each change is recorded — an audit record
// and a nops.degradation.changed.v1 event through the outbox, in one transaction, traced — and
// shown by /healthz and GET /v1/status.
//
// Only internal/kernel and internal/httpapi import degrade.
//
// Concurrency: a Monitor is safe for concurrent use; Run is called once. The state is swapped
// atomically each round, so the request path (Admit) never takes a lock.
package degrade
