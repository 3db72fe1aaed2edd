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
}

// KeyStore persists signing keys. Keys are shared by every replica through the database.
type KeyStore interface {
	// CreateSigningKey inserts k; an existing ID is an errs.Conflict.
	CreateSigningKey(ctx context.Context, k SigningKey) error
	// SigningKeys returns every stored key, oldest first.
	SigningKeys(ctx context.Context) ([]SigningKey, error)
}
