// Package apikey is the API key domain: the key format, the peppered BLAKE2b storage of secrets,
// creation with validated input, constant-time verification, rotation with a grace period,
// revocation, and recording of last use without a database write per request. Storage adapters
// (internal/store/...) implement Store; internal/httpapi and internal/auth call Service (X-API-Key
// and the api_key exchange of POST /v1/auth/token); internal/kernel wires it. apikey imports
// errs, principal and user of the project.
//
// # Format
//
// A raw key is "nops_<keyid>_<secret>", always 77 bytes:
//
//   - keyid is "ak" followed by a lower-case ULID (26 Crockford base32 characters): 28 characters
//     of [0-9a-z], never "_". It is the key's resource ID (/v1/api-keys/{id}). The "ak" prefix and
//     lower case keep it apart from signing-key IDs ("key_" + upper-case ULID); the prefix carries
//     no "_" because "_" separates the parts of the raw key, so splitting is unambiguous. ULIDs
//     sort by creation time, which gives a stable cursor order for listings.
//   - secret is 43 characters drawn uniformly from [0-9A-Za-z] with crypto/rand (rejection
//     sampling, so no character is favoured): 43·log2(62) ≈ 256.03 bits of entropy.
//
// Parse accepts exactly that shape and nothing else, so a raw key has one spelling.
//
// # Storage
//
// Only a digest is stored: keyed BLAKE2b-256, the key being a server pepper, over
// "<keyid>_<secret>". Binding the ID into the digest means a digest copied onto another key's row
// does not verify there. A database dump alone (without the pepper) does not allow an offline
// guess of secrets, and 256-bit secrets need no slow hash. Each stored digest names the version of
// the pepper it was made with, so a new pepper can become current while keys hashed under older
// ones keep verifying; a pepper can be retired once no key uses it any more (rotate those keys).
//
// Peppers come from configuration (PepperFromConfig; required when several replicas share a
// database, since each must hash alike) or from a file in the data directory that
// LoadOrCreatePepper generates on first start (mode 0600; a file readable or writable by group or
// others is refused). The file is JSON:
//
//	{
//	  "current": "v2",
//	  "peppers": [
//	    {"version": "v1", "key": "<standard base64 of 32..64 bytes>", "created_at": "2026-01-02T03:04:05Z"},
//	    {"version": "v2", "key": "...", "created_at": "..."}
//	  ]
//	}
//
// RotatePepperFile adds a generated pepper to the file and makes it current. With several
// replicas the rotation is staged instead (pepperfile_stage.go; docs/operations.md, "Rotating
// keys"): AddPepper adds a pending pepper (verifies, hashes nothing), PromotePepper makes it
// current, RetirePepper removes an older one once CheckRetirePepper finds no live key using it.
// The list's order is the order of introduction: a pepper after the current one is pending.
// A PepperFile re-reads the file (every interval, on SIGHUP) and hands a changed set to
// Service.SetPeppers; a broken file keeps the set in use. PeppersFromConfig reads the pepper of
// the configuration with api_keys.previous_peppers.
//
// # Re-digest
//
// A key that verifies with a digest made under an older pepper (neither current nor pending) is
// handed, with a digest under the current pepper made while the secret is at hand, to
// Options.Redigest; a Redigester writes such digests in batches off the request path,
// compare-and-set on the old digest (redigest.go). PepperStatusOf counts the digests per version
// (status.go).
//
// # Verification
//
// Verify returns one and the same errs.Unauthenticated error, message "invalid or expired api
// key", for every refusal: malformed key, unknown ID, wrong secret, revoked, expired, previous
// secret past its grace period, pepper version no longer configured. The cause wrapped in it
// (for logs) names the reason but never the secret. Digests are compared with
// subtle.ConstantTimeCompare, and every well-formed key costs two digests whatever happens — the
// current and previous secret of a known key, or two digests against a dummy for an unknown ID —
// so the CPU time does not reveal whether the ID exists or has a pending rotation. What timing can
// still reveal is the database lookup itself (a found row is read and decoded, a missing one is
// not) and the branches after the comparison; a key ID is not a secret, so this leaks nothing an
// attacker could use to guess a secret. Malformed input is refused before any digest: the format
// is public. A store failure other than "not found" is returned as it is (unavailable, not 401).
//
// # Verified-key cache
//
// Verify keeps the keys it verified in memory for Options.CacheTTL (DefaultCacheTTL, 1 s; at most
// MaxCacheTTL, 2 s; negative: off), per key ID with a SHA-256 of the raw key that verified (never
// the key). The same raw key within the TTL is accepted without a store read or digest, after
// checking revocation time, expiry and the rotation's grace against the clock; any other raw key
// takes the full path above, so refusals cost what they did. Revoke and Rotate through this
// Service drop the entry and keep the ID out of the cache for a TTL (a read that raced the change,
// or ran before its transaction committed, is never served). A revocation or rotation made by
// another replica, or in the database, takes effect within CacheTTL. A hit is faster than a miss:
// that tells only that this very raw key verified in the last second, which its holder knows.
//
// # Principals and roles
//
// A key carries an explicit role (ADMIN, OPERATOR or VIEWER) as well as scopes: the kernel's
// authorization (internal/rbac) grants an operation when the credential carries the scope AND one
// of its roles grants it, so a key without a role could do nothing, and a role keeps API keys in
// the same permission matrix as users. Creation never lets a caller mint more than it holds: the
// key's role may not outrank the creator's, and its scopes must all be in the creator's scopes.
// The principal of a verified key has Subject and TokenID = key ID. A key bound to an agent
// (AgentID) still authenticates as its key ID; the agent is read from the Key.
//
// # Last use
//
// Verify hands each success to a UsageSink; UsageRecorder keeps the latest use per key in memory
// and writes them in batches (every Interval, or as soon as BatchSize keys are pending, and on
// shutdown), so a key used a thousand times a second costs one write per interval. Only verified
// keys are recorded, so the pending set is bounded by the number of live keys.
//
// # Tenancy
//
// Create, Get, List, Rotate and Revoke read the caller from the context (principal.FromContext).
// A tenant principal only ever sees its own tenant's keys: another tenant's key is "not found".
// A principal above tenants (SUPER_ADMIN, Tenant "") names the tenant it acts on.
//
// # Concurrency
//
// Service is safe for concurrent use; its mutable state is the verified-key cache, guarded by a
// mutex held only for map operations, never across I/O, and the set of peppers, replaced whole
// by an atomic swap (SetPeppers). Rotation is optimistic: the
// store replaces the digest only if it is still the one read, so two concurrent rotations of one
// key yield one winner and one errs.Conflict. UsageRecorder's Record never waits on I/O: it takes
// a mutex held only to update a map; flushes are serialised among themselves by a second mutex.
package apikey
