package token

import (
	"context"
	"time"
)

// SigningKey is one token signing key as stored. Its material is the PKCS#8 DER private key of
// an asymmetric key, or the raw secret of an HS256 key; it is never logged or served, and is
// stored sealed: Sealed is sealbox's Seal of the material under the key-encryption key, bound to
// SealAAD(ID), and Private is empty. Private holds the material in clear only on a row stored
// before sealing existed, until the service seals it in place (KeyStore.SealSigningKey).
type SigningKey struct {
	ID        string    // the JWT "kid": "key_" + ULID
	Algorithm string    // EdDSA, ES256, RS256 or HS256
	Private   []byte    // the material in clear: only on a row not sealed yet; else empty
	Sealed    []byte    // the sealed material; empty on a row not sealed yet
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

// Sealer seals the keys' material at rest; *sealbox.Keyring implements it. Open must fail for a
// value sealed with other associated data.
type Sealer interface {
	Seal(plaintext, aad []byte) ([]byte, error)
	Open(sealed, aad []byte) ([]byte, error)
}

// SealAAD is the associated data a signing key's material is sealed with: the key's ID, under a
// label of its own, so a sealed value moved onto another row, or another kind of sealed value,
// does not open.
func SealAAD(keyID string) []byte { return []byte("nops/token/signing-key/" + keyID) }

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
	// SealSigningKey stores sealed as the sealed material of key id and clears its Private, but
	// only while the row is still in clear with exactly clear as its material: false (and no
	// write) when it is sealed already, holds other material, or is gone. Replicas starting
	// together therefore seal each row once.
	SealSigningKey(ctx context.Context, id string, clear, sealed []byte) (bool, error)
}
