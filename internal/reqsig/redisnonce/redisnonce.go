// Package redisnonce keeps the nonces of accepted request signatures in Redis
// (reqsig.NonceStore), so that every replica sharing the Redis refuses a nonce any of them
// accepted. Only internal/kernel and tests import it.
//
// # Layout
//
// One string per accepted nonce, at Prefix + keyid + ":" + nonce, with the value "1" and a Redis
// expiry at the record's expiresAt. A key ID never contains ":" (reqsig IDs are "rk_" and a
// ULID), so the first ":" after the prefix separates the two parts and no pair of key and nonce
// names another pair's record.
//
// # Atomicity and expiry
//
// A claim is one SET … NX PX: Redis sets the key only if it does not exist, atomically, so of
// concurrent claims of one nonce (from any replica) exactly one gets OK. Redis deletes a record
// at its expiry by itself; PurgeNonces is not needed and the store does not implement it. The
// expiry is computed from the caller's now (PX, milliseconds, rounded up), not from a time the
// Redis clock would have to agree with.
//
// What a record survives is what the Redis server's persistence gives (see docs/operations.md):
// a nonce lost with an unsaved Redis write may be replayed until its signature's created time
// leaves the allowed skew.
//
// Concurrency: a Store is safe for concurrent use, as the go-redis client is.
package redisnonce

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nops-kernel/nops/internal/reqsig"
)

// Store is the Redis nonce store.
type Store struct {
	client redis.Cmdable
	prefix string
}

var _ reqsig.NonceStore = (*Store)(nil)

// New returns a store keeping its records under prefix (e.g. "nops:nonce:") on client, which
// the caller opens (internal/redisconn) and closes.
func New(client redis.Cmdable, prefix string) *Store {
	return &Store{client: client, prefix: prefix}
}

// Key returns the Redis key of the record of keyID and nonce.
func (s *Store) Key(keyID, nonce string) string { return s.prefix + keyID + ":" + nonce }

// ClaimNonce records nonce for keyID until expiresAt unless a live record exists (see
// reqsig.NonceStore). A record already dead at now is still written, with the shortest expiry
// Redis accepts, so the answer is the same as the SQL stores'.
func (s *Store) ClaimNonce(ctx context.Context, keyID, nonce string, expiresAt, now time.Time) (bool, error) {
	ttl := expiresAt.Sub(now)
	ttl = (ttl + time.Millisecond - 1).Truncate(time.Millisecond) // round up: never expire early
	ttl = max(ttl, time.Millisecond)
	ok, err := s.client.SetNX(ctx, s.Key(keyID, nonce), "1", ttl).Result()
	if err != nil {
		return false, fmt.Errorf("claim nonce of request key %s: %w", keyID, err)
	}
	return ok, nil
}
