package reqsig

import (
	"context"
	"crypto/ed25519"
	"time"
)

// Store persists request keys. Adapters (internal/store/sqlite, internal/store/postgres)
// implement it on the transaction bound to ctx, if any, so a key's change commits together with
// its audit record; no method opens a transaction of its own. Errors are *errs.Error with the
// codes named below, or wrapped store failures.
type Store interface {
	// CreateRequestKey inserts k. An existing ID is an errs.Conflict; a TenantID naming no
	// tenant, or an AgentID naming no agent of that tenant, an errs.NotFound.
	CreateRequestKey(ctx context.Context, k Key) error
	// RequestKey returns the key with id, of any tenant, or an errs.NotFound.
	RequestKey(ctx context.Context, id string) (Key, error)
	// ListRequestKeys returns at most limit keys of tenantID with an ID greater than after (""
	// for the first page), in ascending ID order.
	ListRequestKeys(ctx context.Context, tenantID, after string, limit int) ([]Key, error)
	// RotateRequestKey writes r over the key's material while its Generation is still
	// r.Generation-1: an errs.Conflict when it is not (a concurrent rotation won) or the key is
	// revoked, an errs.NotFound when there is no key with id.
	RotateRequestKey(ctx context.Context, id string, r Rotation) error
	// RevokeRequestKey sets RevokedAt to at on a key not yet revoked: an errs.Conflict when it
	// already is, an errs.NotFound when there is no key with id.
	RevokeRequestKey(ctx context.Context, id string, at time.Time) error
}

// Rotation is the new material of a key after a rotation. Exactly one of PublicKey and
// SealedSecret is set, as for the key's algorithm; the Prev fields hold what it replaces.
type Rotation struct {
	Generation       int64 // the key's generation after the rotation
	PublicKey        ed25519.PublicKey
	SealedSecret     []byte
	PrevPublicKey    ed25519.PublicKey
	PrevSealedSecret []byte
	PrevValidUntil   time.Time
}

// NonceStore remembers the nonces of accepted signatures, so that each is accepted once. The SQL
// adapters keep them in the database (they survive a restart; with PostgreSQL every replica sees
// them), internal/reqsig/redisnonce in Redis (shared by the replicas), FileNonces in a journal
// of files (one kernel process on SQLite), MemoryNonces in the process (tests and benchmarks).
type NonceStore interface {
	// ClaimNonce records nonce for keyID until expiresAt and reports true, in one atomic step,
	// unless a record of the same keyID and nonce is still live at now (its expiresAt is after
	// now), in which case it records nothing and reports false. Of concurrent claims of one
	// nonce, exactly one reports true.
	ClaimNonce(ctx context.Context, keyID, nonce string, expiresAt, now time.Time) (bool, error)
}

// DurableNonceStore is a NonceStore that says what its accepted claims survive (FileNonces);
// the Verifier reports it with its claim durations.
type DurableNonceStore interface {
	NonceStore
	Durability() Durability
}

// NoncePurger deletes dead nonce records. Stores whose records expire by themselves (Redis,
// MemoryNonces) need no purging.
type NoncePurger interface {
	// PurgeNonces deletes the records whose expiresAt is at or before before, in bounded
	// batches, and returns how many it deleted.
	PurgeNonces(ctx context.Context, before time.Time) (int64, error)
}
