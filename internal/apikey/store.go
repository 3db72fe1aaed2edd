package apikey

import (
	"context"
	"time"
)

// Store persists API keys. Adapters implement it on the transaction bound to ctx, if any, so a
// key's change commits together with its audit record and outbox event; no method opens a
// transaction of its own or keeps state between calls. Errors are *errs.Error with the codes
// named below, or wrapped store failures.
type Store interface {
	UsageStore
	// CreateAPIKey inserts k. An existing ID is an errs.Conflict; a TenantID naming no tenant, or
	// an AgentID naming no agent of that tenant, is an errs.NotFound.
	CreateAPIKey(ctx context.Context, k Key) error
	// APIKey returns the key with id, of any tenant, or an errs.NotFound.
	APIKey(ctx context.Context, id string) (Key, error)
	// ListAPIKeys returns at most limit keys of tenantID with an ID greater than after ("" for
	// the first page), in ascending ID order.
	ListAPIKeys(ctx context.Context, tenantID, after string, limit int) ([]Key, error)
	// RotateAPIKey writes r over the key's hash fields, but only while its Hash still equals
	// expectHash: an errs.Conflict when it does not (a concurrent rotation won), an errs.NotFound
	// when there is no key with id.
	RotateAPIKey(ctx context.Context, id string, expectHash []byte, r Rotation) error
	// RevokeAPIKey sets RevokedAt to at, but only on a key not yet revoked: an errs.Conflict
	// when it already is, an errs.NotFound when there is no key with id.
	RevokeAPIKey(ctx context.Context, id string, at time.Time) error
	// RequireAPIKeyRotation sets RotateBy to by, unless the key already has an earlier RotateBy
	// (the earliest deadline wins; nil either way). A revoked key is an errs.Conflict, no key with
	// id an errs.NotFound. RotateAPIKey clears RotateBy.
	RequireAPIKeyRotation(ctx context.Context, id string, by time.Time) error
	// ListAPIKeysDue returns at most limit keys of tenantID ("" for every tenant), not revoked,
	// whose ExpiresAt or RotateBy is before before, with an ID greater than after ("" for the
	// first page), in ascending ID order.
	ListAPIKeysDue(ctx context.Context, tenantID string, before time.Time, after string, limit int) ([]Key, error)
}

// UsageStore records when keys were last used.
type UsageStore interface {
	// TouchAPIKeys sets LastUsedAt of each key to its At when that is later than the stored
	// value (replicas flush independently, so an older time must never overwrite a newer one).
	// IDs with no key (deleted since) are ignored. uses holds distinct IDs in ascending order,
	// so concurrent batches lock rows in the same order.
	TouchAPIKeys(ctx context.Context, uses []Use) error
}

// Rotation is the new state of a key's hash fields after a rotation.
type Rotation struct {
	Hash              []byte
	PepperVersion     string
	PrevHash          []byte
	PrevPepperVersion string
	PrevValidUntil    time.Time
}

// Use is the latest use of one key.
type Use struct {
	ID string
	At time.Time
}
