// Package registry is the agent-registry domain of the kernel: the Agent type and its validation
// rules, liveness status derived from heartbeat age, the routing rule, label selectors, opaque
// list cursors, entity tags for optimistic concurrency, and the small Store interface the rules
// need. Service applies the rules and returns to its caller everything the caller must write next
// to a change (before/after agents and status changes, for audit records and outbox events).
//
// Who imports it: internal/httpapi (the /v1/agents handlers), the routing/invoke domain (Service
// Routable and CompileSchema), the storage adapters under internal/store (they implement Store)
// and internal/kernel (wiring, the periodic Sweep). registry imports internal/errs and
// internal/tenant of the project.
//
// # Tenant isolation
//
// Every Service method takes the tenant from its caller (the authenticated principal) and every
// Store method that touches one agent is keyed by (tenant, id): another tenant's agent is
// errs.NotFound, indistinguishable from one that does not exist. Results are re-checked against
// the tenant asked for, so an adapter bug cannot leak a row across tenants.
//
// # Client-owned and server-owned fields
//
// AgentInput holds exactly what a client may set; ID, tenant, status, heartbeat, load, timestamps
// and revision are set here or by the store, never taken from a request. Validation returns one
// errs.Invalid naming every offending field with JSON-pointer-like names
// ("body.capabilities[1].input_schema", "body.labels[\"tier\"]").
//
// # Versions, revisions and entity tags
//
// Agent.Version is the agent's semantic version, stored canonically without a "v" prefix and
// without build metadata ("v1.2.3+b7" is stored as "1.2.3"). Agent.Revision counts changes to the
// registration (the fields Update replaces) and is what the entity tag is derived from.
// Heartbeats and status changes do not bump it: an agent heartbeating every second must not make
// every operator's If-Match stale. The entity tag is therefore a validator of the registration,
// not of the live status fields. Update requires If-Match (a missing one is ErrPreconditionRequired,
// an errs.Invalid naming "header.If-Match"; the HTTP layer may answer 428 or 400); Delete honours
// it when given. A stale If-Match is an errs.Conflict wrapping ErrPreconditionFailed, which the
// HTTP layer maps to 412 Precondition Failed.
//
// # Status
//
// Status derives from heartbeat age with two TTLs: healthy while age < Stale, stale while
// age < Zombie, zombie after. Registration counts as the first heartbeat (HeartbeatAt =
// CreatedAt), so an agent that never heartbeats becomes stale and then unroutable exactly as one
// that died right after a heartbeat would: registering widens no exposure beyond the TTLs. A zero
// HeartbeatAt (no liveness evidence at all) derives zombie. Agents returned by Service carry the
// status derived at read time. The stored status is the last one announced by an event: a
// heartbeat stores healthy and reports the previous stored status; the kernel runs Service.Sweep
// periodically to store and report the changes age causes (agent.status_changed), so events lag
// reads by at most one sweep interval. Routable agents are healthy or stale, never zombie, and
// never a suspended tenant's.
//
// # Transactions
//
// Store methods operate on whatever transaction the adapter bound to ctx; none opens its own or
// keeps state between calls, so the kernel can commit a change with its audit record and outbox
// event atomically. Writes are compare-and-set (on Revision, or on status and heartbeat for
// sweeps), so no interleaving loses an update or announces a status that a concurrent heartbeat
// has already superseded.
//
// # Untrusted input
//
// Capability schemas are compiled with github.com/santhosh-tekuri/jsonschema/v6 (draft 2020-12
// unless $schema names another) with a loader that refuses every URL: no network fetch and no
// file read ever happens, whatever a $ref or $schema names; only the standard meta-schemas, which
// the library embeds, resolve. Every input is size-bounded (see the Max* constants). Label
// selectors, cursors and If-Match headers have fuzz targets.
//
// # Concurrency
//
// A Service holds no mutable state and is safe for concurrent use. It starts no goroutine.
package registry
