// Package tenant is the tenant domain of the kernel: the Tenant type, its validation rules, the
// suspend/resume/delete rules, the opaque list cursor, and the small Store interface the rules
// need. Service applies the rules and returns to its caller everything the caller must write next
// to the change (the before/after tenant for the audit record and the outbox event).
//
// Who imports it: internal/httpapi (the /v1/tenants handlers and the perimeter's suspended-tenant
// check), internal/registry (a tenant's status decides whether its agents are routable), the
// storage adapters under internal/store (they implement Store) and internal/kernel (wiring).
// tenant imports only internal/errs of the project.
//
// # Rules
//
//   - A tenant's Name is a DNS label (lowercase letters, digits and '-', 1..63 characters,
//     starting and ending with a letter or digit), unique among tenants, and never changes.
//   - Suspend and Resume are idempotent: suspending a suspended tenant (or resuming an active one)
//     succeeds, changes nothing, bumps no version and reports Transition.Changed == false, so the
//     caller emits no event. A retried request is therefore harmless.
//   - Delete is refused with errs.Conflict while the tenant has agents, unless cascade is asked
//     for; then the tenant's agents are deleted first and their IDs returned, so the caller can
//     emit one agent.deregistered event per agent.
//
// # Transactions
//
// Store methods operate on whatever transaction the adapter bound to ctx; none opens its own or
// keeps state between calls, so the kernel can run a Service call, its audit record and its
// outbox event in one database transaction. Writes are guarded by the tenant's Version
// (compare-and-set), so two concurrent status changes never lose one another.
//
// # Concurrency
//
// A Service is safe for concurrent use. It starts no goroutine. Its only mutable state is the
// cache behind Cached (the perimeter's per-request status check): tenants kept for
// Config.CacheTTL (DefaultCacheTTL, 1 s; at most MaxCacheTTL, 2 s; negative: off), guarded by a
// mutex held only for map operations. Suspend, Resume and Delete of this Service drop the tenant
// and keep it out of the cache for a TTL; a change made by another replica is seen within the
// TTL. Get never uses the cache.
package tenant
