// Package routing holds the routing tables of the invoke path: per tenant and capability, which
// agents (by ID) or agent versions (exact, or a major / major.minor prefix) receive calls, with
// static weights, fallback tiers and per-capability call settings (sticky routing header,
// timeout, retryability, hedging). Tables are managed through /v1/routes (Service, called by
// internal/control inside the transaction of the audit record and the outbox event) and read on
// every invocation through Cache.
//
// Who imports it: internal/control (audited Put and Delete), internal/httpapi (the /v1/routes
// handlers), the invoke path (Cache.Get, Resolve), internal/kernel (wiring) and the storage
// adapters (they implement Store). routing imports errs, registry and tenant of the project.
//
// # Semantics
//
// A route has 1..MaxTargets targets. A target names exactly one of an agent ID or a version: an
// exact semantic version ("1.2.3", "v1.2.3" accepted and stored without "v", like the registry
// does) or a prefix at a dot boundary ("1" matches 1.x.y, "1.2" matches 1.2.y, pre-releases
// included). Resolve gives each routable agent the FIRST target it matches; agents matching no
// target receive nothing. A target's Weight (0..MaxWeight) is the share of its tier's traffic the
// target gets, split evenly among the agents that took it: a canary at weight 10 next to the
// stable version at 90 gets 10 % of the calls however many instances each version runs. Weight 0
// drains a target. Priority 0 is the primary tier; 1, 2, … are fallback tiers, used in order only
// when no agent of a better tier is available. A capability without a route is served by every
// routable agent with weight 1 (Resolve with a nil route).
//
// # Concurrency and replicas
//
// Service holds no mutable state. Writes are compare-and-set on Revision; PUT is create-or-
// replace with optional If-Match / If-None-Match preconditions. Cache serves reads for DefaultCacheTTL
// (500 ms), negative results included, so every replica sees a change within a second; it
// coalesces concurrent misses of one key and this replica's control invalidates a key right after
// its own commit. Cache is safe for concurrent use.
//
// # Testing
//
// The storage adapters pass the conformance suite in internal/store/storetest (routes.go);
// Resolve, validation, Service and Cache are tested here against an in-memory store.
package routing
