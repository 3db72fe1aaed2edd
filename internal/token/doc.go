// Package token issues and verifies the kernel's access tokens: JWTs signed with EdDSA, ES256,
// RS256 or HS256, carrying sub, tenant, roles, scope, iss, aud, exp, iat, nbf and jti, and typed
// "at+jwt" (RFC 9068) so no other kind of JWT can be replayed as an access token.
//
// Who imports it: internal/auth (issues tokens after a login or an API-key exchange),
// internal/httpapi (verifies bearer tokens, serves GET /.well-known/jwks.json from JWKS) and
// internal/kernel (builds the Service from configuration with a KeyStore adapter). token imports
// only internal/errs and internal/principal of the project.
//
// # Keys
//
// Signing keys live in a KeyStore shared by every replica. The signing key for Config.Algorithm is
// chosen at each Issue from the loaded keys and the clock (signerAt): the oldest current key of
// that algorithm already active (ties broken by ID). New generates and stores one when there is
// none, then reloads, so replicas starting together converge on one key. Every stored key that is
// not retired, of any algorithm, stays usable for verification, so tokens signed before an
// algorithm change keep verifying until they expire. An HS256 secret given in Config is used as is
// and never stored; its kid is derived from it through HMAC so the kid reveals nothing about it.
// Symmetric keys are never published by JWKS.
//
// # Sealing at rest
//
// A stored key's material (PKCS #8 DER, or an HS256 secret) is sealed before it reaches the
// store (SigningKey.Sealed, Private left empty) with Config.Sealer: the kernel's key-encryption
// key (internal/sealbox, signing.kek_file), as for the CA's keys. The associated data is
// SealAAD(ID), so a sealed value copied onto another row, or another kind of sealed value, does
// not open. A database dump alone therefore mints no token (threat model I-07).
//
// New first seals in place the rows stored in clear by an older kernel (SigningKey.Private set,
// Sealed empty), through KeyStore.SealSigningKey, which writes only while the row still holds that
// clear value: replicas starting together seal each row once, the others find it sealed. At New,
// a key that is not retired and does not open (sealed under another key-encryption key, or for
// another row) is an error naming the key: the kernel does not start. Later reloads skip and log
// such a key, like a damaged one, and keep the keys already open. A promoted key-encryption key
// reaches the keys through a rewrap (internal/control, kind sealbox.KindSigningKey), which
// replaces only Sealed: the material, and so the parsed key reused across reloads, is unchanged.
//
// # Rotation
//
// Rotate stores a new key of the configured algorithm that activates PublishDelay later and
// supersedes the current ones in the same transaction (KeyStore.RotateSigningKey, serialised with
// other rotations). The new key is in the JWKS at once; every replica holds it before it signs,
// because Run reloads every ReloadInterval ≤ PublishDelay; at its activation every replica switches
// to it by its own clock. A superseded key signs until then, verifies until TTL + leeway after the
// activation, when every token it signed has expired, and then retires: out of the JWKS and
// refused from memory, without a reload. An HS256 secret from Config is not rotated here.
//
// # Verification
//
// Verify trusts nothing in the token before the signature is checked: the kid must be a short
// identifier and is looked up in memory only; the algorithm is pinned per key (the header's alg must
// equal the key's algorithm exactly); jku, x5u, jwk and x5c headers are never read; a crit header
// is refused because no extension is understood. Every failure gives the same client-facing
// errs.Unauthenticated error; the cause is kept only for logs. A kid missing from memory triggers a
// reload from the store at most once per 10 seconds, so made-up kids cannot hammer the database.
//
// # Concurrency
//
// A Service is safe for concurrent use. The keys are an immutable snapshot behind an atomic
// pointer, so Issue, Verify and JWKS never lock. Reloads are serialised among themselves; the
// rate-limit bookkeeping has its own mutex, never held during I/O, so a Verify whose unknown kid
// does not win the reload slot never waits on the store. No goroutine is started but Run's, which
// the caller (the kernel's "signing keys" job) runs.
//
// # Token identity
//
// Identify a token by its jti, never by its string: Verify refuses every other spelling of an
// EdDSA or HS256 token (strict base64url, nothing outside its alphabet), but an ES256 signature
// (r, s) has a twin (r, n-s) that also verifies, as with every ECDSA verifier.
package token
