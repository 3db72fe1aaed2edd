// Package invoke routes a tenant's call of a capability to one of the tenant's agents and relays
// the agent's answer: the engine behind POST /v1/invoke/{capability} and the async invocations.
//
// One call goes through these steps:
//
//  1. Candidates: the tenant's routable agents offering the capability (never a zombie, never a
//     suspended tenant's), cached for Config.CandidatesTTL, grouped into priority tiers with
//     static weights by the capability's routing table (internal/routing).
//  2. Selection: within the best tier that still has an eligible agent, the balancer
//     (internal/balancer) draws by score × static weight with power-of-two-choices on in-flight
//     calls, or by rendezvous hashing of the sticky key. Agents whose circuit breaker is open,
//     whose bulkhead is full, that are ejected, or that this call already tried are skipped.
//  3. Input: when the chosen agent declares an input schema for the capability, the body must be
//     JSON valid against it (schemas are compiled once per distinct document).
//  4. Egress: the request goes out through the safe transport of internal/egress (addresses are
//     checked at dial time; no redirects; hop-by-hop headers and the caller's credentials are
//     stripped). The remaining time budget travels in the Nops-Timeout-Ms header.
//  5. Resilience (failsafe-go): a per-attempt timeout until the response headers arrive; retries
//     with exponential backoff and full jitter when the call may be repeated (an Idempotency-Key,
//     or a routing table that declares the capability retryable) or when nothing reached the
//     agent (the dial failed); every retry and hedge draws from a retry budget so that extra
//     attempts stay within Config.RetryBudget.Ratio of first attempts (plus a small floor); a
//     circuit breaker and a bulkhead per agent; optional hedged attempts per capability.
//  6. Relay: once an attempt has the agent's response headers the call is committed to it; the
//     body streams to the caller without buffering (flushed as it arrives, so SSE and chunked
//     answers pass through).
//
// A call therefore ends in one of two ways before its deadline: the agent's response, or a
// definite RFC 9457 error (503 no agent, 502 agent failed or egress refused, 504 timeout).
//
// # Async invocations
//
// Async (async.go) runs calls for which the caller asked Prefer: respond-async: Submit stores the
// request with its nops.invocation.requested.v1 event; the "invocations" consumer (Handler) and
// Run's sweeper claim an invocation with a compare-and-set and a lease, run it through Do, and
// store the result with its nops.invocation.completed.v1 and nops.billing.usage.v1 events in one
// transaction, so each invocation has exactly one result whatever the redeliveries (the Async
// type's documentation has the argument). AsyncStore (asyncstore.go) is what it needs of the
// database.
//
// Only internal/kernel and internal/httpapi import invoke, and the storage adapters for
// AsyncStore's types.
package invoke
