// Package reqsig signs and verifies requests to the kernel with HTTP Message Signatures (RFC
// 9421), algorithms hmac-sha256 and ed25519, with Content-Digest (RFC 9530) and anti-replay
// nonces; it also manages the request keys those signatures name. Client authors read
// docs/request-signing.md.
//
// It holds the domain types (Key, Material, Result), the Keys service, the Store and
// NonceStore interfaces the adapters implement (internal/store/sqlite, internal/store/postgres,
// internal/reqsig/redisnonce), FileNonces (the nonce journal of a single kernel on SQLite:
// filenonces.go, its format journal.go), the Verifier with its HTTP Middleware, and Sign for
// clients (tests, the Go SDK, the CLI). It imports errs and principal of the project. internal/control runs the
// audited key use cases; internal/httpapi installs the middleware; internal/kernel wires stores,
// the KEK (internal/sealbox) and the Verifier.
//
// # Library
//
// Parsing of Signature-Input, Signature and Content-Digest, the signature base, the
// Content-Digest check and the cryptographic check are github.com/remitly-oss/httpsig-go
// v1.2.0 (with github.com/dunglas/httpsfv, its structured-field parser). It has no replay
// protection, which is ours. Where the library departs from the RFC or could be made to panic,
// this package steps in before it, without building signature bases itself:
//
//   - it derives @target-uri without the path, @path decoded and @authority as sent; the
//     request handed to it is a view that makes its derivations the RFC's (view.go);
//   - its check that alg matches the key is dead code; Verify compares them;
//   - its accessors of created, expires, keyid, nonce, tag and alg assert types and panic on a
//     parameter of another type (created="x"); Verify checks every parameter's type first and
//     refuses unknown parameters;
//   - it ignores component parameters (sf, bs, key, req, tr) and derives @scheme and
//     @request-target as empty strings; Verify refuses those;
//   - its time checks use the wall clock and a fixed one-minute future skew; they are off and
//     Verify checks created and expires with its own clock;
//   - its Signer reads the clock and draws its own nonce; Sign builds Signature-Input with
//     httpsfv and asks the library's verifier (debug mode) for the signature base, so signing and
//     verifying use the same base builder.
//
// The library compares HMACs with hmac.Equal (constant time) and verifies Ed25519 with
// crypto/ed25519.
//
// # Verification rules, in order
//
//  1. Signature-Input and Signature are present (missing Signature-Input / missing Signature),
//     within Config.MaxHeaderLen, and parse as RFC 9651 dictionaries (malformed …).
//  2. The signature verified is the first whose tag is "nops-request", else the first one; other
//     signatures in the request are ignored. Its Signature-Input member is an inner list of
//     lower-case component names and its Signature member a byte sequence.
//  3. Parameters: only created, expires, keyid, nonce, tag and alg, each of its RFC type; then
//     tag = "nops-request" (first: a signature not meant for the kernel is refused for that);
//     keyid, created and nonce present; nonce at most MaxNonceLen bytes; alg, if present, an
//     algorithm RFC 9421 registers.
//  4. Components: covered fields are in the request; derived components are @method,
//     @target-uri, @authority, @path, @query and @query-param only, without parameters (but
//     @query-param's name). Required: @method; @target-uri or all of @authority, @path, @query;
//     content-digest (and a Content-Digest field) when the body is not empty; content-type when
//     the request has that field.
//  5. created is within ±MaxSkew (default 300 s) of the verifier's clock; expires, if present,
//     is in the future.
//  6. keyid names a key (unknown keyid) that is neither revoked nor expired; alg, if present, is
//     the key's algorithm.
//  7. The library checks Content-Digest against the body (sha-256 or sha-512, the first it finds)
//     and the signature against the current material, then, during a rotation's grace period,
//     the previous one.
//  8. The nonce is claimed for the key until created + MaxSkew + 1 s; a nonce already claimed is
//     refused (nonce already used). Claiming last means forged or stale requests never fill the
//     nonce store. Verify waits for the claim; Begin returns once rules 1–7 passed, with a
//     Pending whose Wait gives the claim's answer, so that the caller can go on meanwhile with
//     work the claim's refusal can undo (internal/httpapi runs the rest of the perimeter and,
//     for GET and HEAD, the handler, holding the response until Wait returns).
//
// A refusal is an errs.Unauthenticated error whose message names the failed check and never an
// expected signature or digest; its cause is a *Refusal with a stable Code (RefusalCode) for
// logs, metrics (nops.reqsig.verifications by outcome and reason) and audit records. A failing
// key lookup or nonce store is errs.Unavailable (fail closed, never accepted), an unreadable
// sealed secret errs.Internal.
//
// # Keys
//
// A request key ("rk_" + ULID; the signature's keyid) belongs to a tenant and optionally to one
// agent. An hmac-sha256 key's 32-byte secret is generated by the kernel, returned once (standard
// base64) by Create and Rotate, and stored sealed with AES-256-GCM under a key-encryption key
// (internal/sealbox; the key ID is the associated data, so a sealed secret moved to another row
// does not open). An ed25519 key stores the client's public key; the kernel never sees the
// private key. Rotate keeps the replaced secret or public key verifying for a grace period
// (default 24 h, at most 30 days); Revoke ends both at once. Management reads the principal from
// the context like internal/apikey: a tenant sees only its keys, SUPER_ADMIN names the tenant.
//
// Lookup may cache keys in memory for KeysOptions.CacheTTL (at most 5 s). Rotate, Revoke and
// Invalidate drop the entry at once in this process; another replica's change is seen within the
// TTL. A lookup that began before an invalidation never stores its (possibly old) result.
//
// # Concurrency
//
// Keys, Verifier, Pending, MemoryNonces, GroupCommitNonces and FileNonces are safe for concurrent
// use. FileNonces groups its appends the same way (one write, and one fsync under DurabilityFull,
// per group), keeps in memory only the nonces whose records are written, and locks its directory
// against a second process. A NonceStore that runs transactions (TxRunner: the SQL stores) is
// wrapped by NewVerifier in GroupCommitNonces, so the claims of concurrent requests share one
// commit (one fsync) instead of one each; a claim is accepted only once its transaction committed,
// with Config.NonceDurability (DurabilityFull: flushed to disk; DurabilityProcess: committed
// without waiting for the flush, through the store's NonceTxRunner). Begin claims on a goroutine
// of its own, which ends with the claim. Keys guards its cache with a mutex held only for map
// operations, never across I/O. Each NonceStore claims atomically (SQL upsert, Redis SET NX, the
// journal's leader checking its set), so of concurrent requests with one nonce exactly one is
// accepted, on one replica or several sharing the store.
//
// # Testing
//
// RFC 9421 Appendix B.2.5 and B.2.6 verify through Verify (policy relaxed, cryptography real) and
// are reproduced byte for byte by the signer's base builder. Refusals are tested one by one;
// replays across a restart (SQLite), two verifiers on one Redis namespace and one PostgreSQL
// database. internal/store/storetest.RunRequestKeys and RunNonces are the store suites. The
// journal's tests use real files: restarts under both durabilities, torn tails, corrupt records,
// rotation, concurrent claims, failed writes and syncs, a second process refused; FuzzNonceJournal
// fuzzes its replay. FuzzVerify fuzzes the header parsing and verification entry, FuzzSignVerify
// the base builder on both sides (whatever Sign makes and HTTP carries verifies, once),
// FuzzParsePublicKey the public key parser (seeds in testdata/fuzz). docs_test.go keeps the worked
// examples of docs/request-signing.md equal to what Sign makes. BenchmarkVerify measures
// hmac-sha256 and ed25519 with each nonce store against the bare library in the same run.
package reqsig
