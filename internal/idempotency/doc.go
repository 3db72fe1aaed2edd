// Package idempotency makes POST and PATCH requests of the API safe to retry, as the IETF httpapi
// draft "The Idempotency-Key HTTP Header Field" describes: a client sends the same
// Idempotency-Key with each attempt at one request, the first attempt runs, and every later
// attempt gets the first attempt's response instead of running again.
//
// It holds the domain types (Record, Response, Scope, Fingerprint), the Store interface the
// storage adapters implement (internal/store/sqlite, internal/store/postgres and
// internal/idempotency/redisstore), the parser of the header (ParseKey), the HTTP middleware
// (Middleware) and the purge loop (RunPurger). It imports internal/errs and internal/principal
// of the project; internal/httpapi installs the middleware and internal/kernel picks the store.
//
// # Usage
//
//	mw, err := idempotency.Middleware(store, idempotency.Options{TTL: 24 * time.Hour, LockTTL: 35 * time.Second, WriteError: errw})
//	handler = mw(handler) // inside authentication: the scope comes from the principal
//
// # Behaviour
//
//   - Only POST and PATCH requests of an authenticated principal that carry the header take part;
//     any other request passes through untouched.
//   - The header's value is a Structured Field String ("…", RFC 9651) of 1 to 255 characters, as
//     the draft specifies; a bare token of [A-Za-z0-9._~:-]{1,255} is accepted too, for clients
//     that do not quote it, and names the same key as its quoted form. Anything else, or the
//     header sent twice, is a 400 naming the field header.Idempotency-Key.
//   - Scope: a key belongs to the caller's own tenant (GlobalTenant for a principal above tenants)
//     and to the caller itself (the principal's subject: a user or an API key). The same key value
//     sent by another principal, of the same tenant or another, is another key: it runs afresh and
//     never sees a response made for someone else (a created API key's secret, say).
//   - Fingerprint: SHA-256 over the method, the path, the query and the body bytes. The tenant a
//     SUPER_ADMIN names in the query is part of the request and so of the fingerprint.
//   - First attempt: a record {scope, key, fingerprint, in flight, lock expiry} is created
//     atomically, the handler runs on a context that the client's disconnection does not cancel,
//     its response (status, headers it set, body) is buffered, stored (completed, kept for TTL),
//     and only then written. Storing first means a client that gave up, or lost the response,
//     gets it on its retry. A response with status >= 500 is not stored: the record is deleted
//     so the client may retry. 4xx responses are stored: the first response is the response.
//   - Retry with the same key and the same fingerprint after completion: the stored response is
//     replayed with the same status, the same stored headers and a byte-identical body, plus
//     the header "Idempotent-Replayed: true". That marker is the only difference; headers of the
//     perimeter that belong to the new request (X-Request-ID, security headers, trace context)
//     are the new request's, even one the first attempt's handler removed. A stored problem body
//     keeps the request_id of the first attempt.
//   - Same key, different fingerprint (another body, path, query or method): 422 problem, code
//     unprocessable, while the record lives.
//   - Same key while the first attempt is in flight: 409 problem, code conflict, Retry-After: 1.
//   - Crash mid-request: an in-flight record whose lock expired (LockTTL: the HTTP write timeout
//     plus a margin, so no live handler still holds it) may be taken over by a retry carrying the
//     same fingerprint, which then runs the request again; the draft allows re-processing once a
//     key's first attempt has been abandoned. A request with another fingerprint still gets 422.
//     Should the first handler complete after all, its Complete fails (it no longer holds the
//     record): its client still gets its response, and the record keeps the new attempt's.
//   - Expiry: a record is dead once ExpiresAt (TTL after completion, or after creation while in
//     flight) has passed; dead records are ignored, replaced by a new first attempt, and deleted
//     by RunPurger.
//
// Headers stored: every header the handler set or changed, except hop-by-hop headers
// (Connection, Keep-Alive, Proxy-*, TE, Trailer, Transfer-Encoding, Upgrade) and Set-Cookie, which
// is sent to the first attempt only.
//
// # Concurrency
//
// Middleware values are safe for concurrent use. Exactly one of several concurrent requests with
// one scope and key runs the handler: Store.ReserveIdempotencyKey is one atomic step in every
// adapter (an INSERT … ON CONFLICT upsert in SQL, a Lua script in Redis). The record's token names
// the attempt holding it, so a slow attempt whose record was taken over can neither complete nor
// release the new one.
//
// # Testing
//
// internal/store/storetest.RunIdempotency is the one conformance suite of Store, run against
// SQLite, PostgreSQL and Redis. The middleware's tests run real handlers over the SQLite store;
// FuzzParseKey fuzzes the header parser (seeds in testdata/fuzz).
package idempotency
