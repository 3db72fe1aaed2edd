// Package ratelimit is the kernel's rate limiter: per client IP, per tenant, per principal and
// per route class, under a global ceiling, with overrides by CIDR, tenant and route from the
// configuration and from the admin API. Counters live in memory, or in Redis when the kernel has
// one, so that all replicas share them. It also renders the IETF RateLimit headers and audits
// blocks in aggregate.
//
// Who may import it: internal/httpapi (the middleware that calls the Limiter and the admin
// handlers), internal/control (the audited override use cases), the storage adapters (they
// implement OverrideStore) and internal/kernel (wiring). It imports errs and tenant of the
// project.
//
// # Algorithm
//
// Every rule is a GCRA (generic cell rate algorithm) over one theoretical arrival time (TAT) per
// key: Limit requests per Period, and Burst more at once. From a full bucket Limit+Burst requests
// pass back to back (limit 5, burst 0: five pass, the sixth is refused); after that one more
// passes every Period/Limit. A refusal says how long until one request passes (RetryAfter). The
// state is one integer per key, which expires when the TAT passes (a full bucket needs none).
// Rule.Limit 0 means the rule is off.
//
// # Rules and keys
//
// A check applies, in this order, and the first refusal is the answer:
//
//	rule           key                          applies when            replaced by
//	global         "global"                     always
//	per IP         "ip:<address>"               always                  a CIDR override
//	per tenant     "tenant:<id>"                Tenant != ""            a tenant override
//	per principal  "principal:<subject>"        Principal != ""
//	route class    "class:<class>:<caller>"     RouteClass has a rule   a route override,
//	                                                                    "route:<pattern>:<caller>"
//
// An IPv6 address counts by its /64 prefix ("ip:2001:db8::/64"; Config.IPv6Prefix). <caller>
// is "principal:<subject>" for an authenticated request and "ip:<address>" otherwise: a class
// rule limits each caller on that class of routes ("auth": login attempts per address; "write":
// writes per principal). A request without a principal therefore meets the global, per-IP and
// class rules only; SUPER_ADMIN (a principal without a tenant) meets no tenant rule. An allowed
// request reports the rule with the least quota left.
//
// All rules of one check are taken together, all or nothing (Store.TakeAll): when one refuses,
// none is charged, so a client blocked on its address does not drain the global ceiling for
// everybody else, and a blocked principal does not drain its tenant.
//
// # Two entry points
//
// Check applies everything in one round trip. The kernel uses the two halves instead:
// CheckIP (global and per-IP) before authentication, so credential guessing on any route is
// limited, and CheckPrincipal (tenant, principal, class or route) after it, when the principal is
// known. Each half is one round trip and atomic; a request refused by the second half has been
// charged by the first, which is right, since it reached authentication.
//
// # Overrides
//
// An override replaces one rule for one target: a CIDR prefix (per-IP rule; the longest prefix
// containing the client wins), a tenant ID (per-tenant rule), or a route pattern ("GET
// /v1/agents", the ServeMux pattern: it replaces the class rule on that route, counted per caller
// like class rules). Limit 0 in an override means unlimited: the target is exempt from that rule
// (e.g. a monitoring network); to shut a client out, use a firewall, not the limiter.
//
// Overrides come from the configuration (Config.Overrides) and from the admin API (Overrides,
// stored in the database). For the same kind and target the admin API's wins; for CIDRs the
// longer prefix wins first, the admin API's on a tie. The Limiter reads the admin API's table
// through an atomic pointer to an immutable snapshot, with no lock on the request path; Overrides
// refreshes it after each local change and every DefaultRefreshInterval (2 s) in Run, so replicas
// converge within that interval.
//
// # Redis
//
// With Options.Redis, each check is one EVALSHA of a Lua script that reads and updates all its
// keys atomically, using the Redis server's clock (TIME) so replicas with skewed clocks agree.
// Keys are Config.RedisPrefix + key; each expires (PEXPIRE) when its TAT passes.
//
// If Redis fails (error or Config.RedisTimeout), the request is decided by this replica's
// memory store and Decision.Degraded is set; nops_ratelimit_degraded_total counts such requests
// and nops_ratelimit_redis_up drops to 0. The limiter neither lets everything through nor fails
// the request. For Config.RedisRetry after a failure, requests go straight to the memory store;
// then one request tries Redis again. While degraded each replica enforces the limits alone, so
// N replicas let up to N times the limit through.
//
// # Headers
//
// Headers renders the RateLimit and RateLimit-Policy fields of draft-ietf-httpapi-ratelimit-
// headers; Decision.Refusal gives the errs.RateLimited error (429 with Retry-After).
//
// # Audit of blocks
//
// A flood of refused requests must not flood the audit log. The BlockAuditor writes at most one
// record per key and window, where window = floor(now / rule period): the first block of a key
// in a window queues a "ratelimit.block" record, later ones only increment a counter, which the
// next window's record reports ("…; 523 blocked in the previous window"). With Redis, a SET NX
// on "<prefix>audit:<key>@<window>/<period>" makes that one record across all replicas. So the
// audit volume is bounded by the number of distinct blocked keys per window — never by the
// number of requests — and those keys are bounded in turn: one "global", one per blocked address
// (IPv6 counted per /64), tenant, principal and caller×class. The hard bound is the auditor's
// memory: it remembers at most Config.AuditMaxKeys keys (default 100,000), each forgotten no
// sooner than two windows after its last block, and a key it cannot remember is not recorded; so
// one replica writes at most about AuditMaxKeys records per rule period, whatever the attack.
// Records beyond that, and those arriving while the queue (Config.AuditQueue, default 1024) is
// full, are dropped and counted in nops_ratelimit_audit_dropped_total rather than slowing
// requests down: the request path never waits on the audit write.
//
// # Metrics
//
// nops_ratelimit_requests_total{decision,rule}, nops_ratelimit_blocked_total{tenant,rule}
// (tenant "" for unauthenticated requests), nops_ratelimit_degraded_total,
// nops_ratelimit_redis_up (only with Redis), nops_ratelimit_audit_dropped_total{reason}.
//
// # Concurrency
//
// Limiter, MemoryStore, RedisStore and Overrides are safe for concurrent use. MemoryStore shards
// its map over 64 mutexes and locks the shards of one TakeAll in ascending order. The Limiter's
// only goroutine is the block auditor's writer, which the caller runs (Run) and stops (Close).
package ratelimit
