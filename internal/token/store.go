package token

import (
	"context"
	"time"
)

// SigningKey is one token signing key as stored. Private holds the PKCS#8 DER private key of an
// asymmetric key, or the raw secret of an HS256 key; it is never logged or served.
type SigningKey struct {
	ID        string // the JWT "kid": "key_" + ULID
	Algorithm string // EdDSA, ES256, RS256 or HS256
	Private   []byte
	CreatedAt time.Time // UTC
	// ActivatesAt is when the key starts signing; it is published in the JWKS from its creation.
	// Zero means CreatedAt (a key created at first start, or stored before rotation existed).
	ActivatesAt time.Time
	// RetiresAt is zero while the key is current. A rotation sets it on the keys the new one
	// supersedes: from then on the key leaves the JWKS and no token it signed verifies.
	RetiresAt time.Time
}

// activation is when k starts signing: ActivatesAt, or CreatedAt when that is zero.
func (k SigningKey) activation() time.Time {
	if k.ActivatesAt.IsZero() {
		return k.CreatedAt
	}
	return k.ActivatesAt
}

// KeyStore persists signing keys. Keys are shared by every replica through the database.
type KeyStore interface {
	// CreateSigningKey inserts k; an existing ID is an errs.Conflict.
	CreateSigningKey(ctx context.Context, k SigningKey) error
	// SigningKeys returns every stored key, oldest first.
	SigningKeys(ctx context.Context) ([]SigningKey, error)
	// RotateSigningKey stores k as the new current key of its algorithm and supersedes the other
	// current ones (RetiresAt zero) of that algorithm, all in one transaction (the caller's, or
	// its own) serialised with every other rotation, across replicas too:
	//   - k.ActivatesAt is moved to 1µs after the latest activation (ActivatesAt, else CreatedAt)
	//     of those current keys when it is not already later, so the keys of one algorithm
	//     activate in the order they were rotated in;
	//   - each of them gets RetiresAt = k.ActivatesAt + overlap.
	// It returns k as stored and the IDs of the keys it superseded. An existing ID is an
	// errs.Conflict and changes nothing.
	RotateSigningKey(ctx context.Context, k SigningKey, overlap time.Duration) (stored SigningKey, superseded []string, err error)
}
