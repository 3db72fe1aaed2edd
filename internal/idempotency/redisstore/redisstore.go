// Package redisstore keeps the API's Idempotency-Key records in Redis (idempotency.Store), for
// kernels configured with idempotency.store redis (or auto with redis.url set). Only
// internal/kernel and tests import it.
//
// # Layout
//
// One string per record, at Prefix + tenant + ":" + hex(SHA-256(principal NUL key)): the tenant
// stays readable for operators, and the hash keeps any principal and key (quotes, colons,
// spaces) from ever forming another record's name. The value is a fixed-width head followed by
// the stored response as JSON:
//
//	offset  width  field
//	0       1      state: 'i' in flight, 'c' completed
//	1       64     fingerprint, hex
//	65      32     token
//	97      16     locked_until, Unix microseconds, zero-padded
//	113     16     created_at, Unix microseconds, zero-padded
//	129     16     expires_at, Unix microseconds, zero-padded
//	145     …      {"status":…,"header":{…},"body":"<base64>"} when completed
//
// Zero-padded decimal numbers of one width compare as strings in the order of their values, so
// the Lua scripts compare times without converting them to numbers (Lua's doubles would lose
// precision past 2^53 µs, in the year 2255, but strings never do).
//
// # Atomicity and expiry
//
// Each method that reads and writes a record is one Lua script, which Redis runs atomically: a
// reservation reads the record, decides whether it is dead at the caller's now (expired, or in
// flight past its lock with the same fingerprint) and writes its own, with nothing in between;
// Complete and Release act only if the token in the head is theirs. Every record carries a Redis
// expiry at its expires_at (PXAT), so Redis deletes dead records by itself and
// PurgeIdempotencyKeys has nothing to do.
//
// What a record survives is what the Redis server's persistence gives (see docs/operations.md):
// a record lost with an unsaved Redis write lets a retry run the request again.
//
// Concurrency: a Store is safe for concurrent use, as the go-redis client is.
package redisstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/idempotency"
)

// Offsets and widths of the value's head (see the package doc).
const (
	offFingerprint = 1
	offToken       = offFingerprint + 2*len(idempotency.Fingerprint{})
	offLocked      = offToken + idempotency.TokenLength
	offCreated     = offLocked + timeWidth
	offExpires     = offCreated + timeWidth
	headLength     = offExpires + timeWidth
	timeWidth      = 16
)

const (
	stateInFlight  = 'i'
	stateCompleted = 'c'
)

// reserveScript: KEYS[1] the record; ARGV[1] the new value, ARGV[2] its expiry (Unix ms, for
// PXAT), ARGV[3] now (padded µs), ARGV[4] the new fingerprint (hex). Returns the live value that
// refused the reservation, or false (nil) when the new value was stored.
var reserveScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then
  local state = string.sub(v, 1, 1)
  local fp = string.sub(v, 2, 65)
  local locked = string.sub(v, 98, 113)
  local expires = string.sub(v, 130, 145)
  local dead = expires <= ARGV[3] or (state == 'i' and locked <= ARGV[3] and fp == ARGV[4])
  if not dead then
    return v
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
return false
`)

// completeScript: KEYS[1] the record; ARGV[1] the token, ARGV[2] the new expires_at (padded µs),
// ARGV[3] the response (JSON), ARGV[4] the new expiry (Unix ms, for PXAT). The completed value
// keeps the fingerprint, token, lock and creation time of the in-flight one. Returns 1 when the
// in-flight record held by the token was completed, else 0.
var completeScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v or string.sub(v, 1, 1) ~= 'i' or string.sub(v, 66, 97) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], 'c' .. string.sub(v, 2, 129) .. ARGV[2] .. ARGV[3], 'PXAT', ARGV[4])
return 1
`)

// releaseScript: KEYS[1] the record; ARGV[1] the token. Deletes the in-flight record the token
// holds.
var releaseScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 1) == 'i' and string.sub(v, 66, 97) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0
`)

// Store is the Redis idempotency store.
type Store struct {
	client redis.Scripter
	prefix string
}

var _ idempotency.Store = (*Store)(nil)

// New returns a store keeping its records under prefix (e.g. "nops:idem:") on client, which the
// caller opens (internal/redisconn) and closes.
func New(client redis.Scripter, prefix string) *Store {
	return &Store{client: client, prefix: prefix}
}

// Key returns the Redis key of the record of scope and key.
func (s *Store) Key(scope idempotency.Scope, key string) string {
	h := sha256.New()
	h.Write([]byte(scope.Principal))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return s.prefix + scope.Tenant + ":" + hex.EncodeToString(h.Sum(nil))
}

// stored is the JSON tail of a completed record.
type stored struct {
	Status int         `json:"status"`
	Header http.Header `json:"header,omitempty"`
	Body   []byte      `json:"body,omitempty"`
}

// ReserveIdempotencyKey stores r unless a live record of its scope and key exists, which it then
// returns (see idempotency.Store).
func (s *Store) ReserveIdempotencyKey(ctx context.Context, r idempotency.Record, now time.Time) (idempotency.Record, bool, error) {
	if err := r.ValidateReservation(); err != nil {
		return idempotency.Record{}, false, fmt.Errorf("reserve idempotency key: %w", err)
	}
	value := head(stateInFlight, r.Fingerprint, r.Token, r.LockedUntil, r.CreatedAt, r.ExpiresAt)
	res, err := reserveScript.Run(ctx, s.client, []string{s.Key(r.Scope, r.Key)},
		value, pxat(r.ExpiresAt), micros(now), hex.EncodeToString(r.Fingerprint[:])).Result()
	if errors.Is(err, redis.Nil) {
		out := r
		out.CreatedAt, out.LockedUntil, out.ExpiresAt = roundTime(r.CreatedAt), roundTime(r.LockedUntil), roundTime(r.ExpiresAt)
		return out, true, nil
	}
	if err != nil {
		return idempotency.Record{}, false, fmt.Errorf("reserve idempotency key: %w", err)
	}
	v, ok := res.(string)
	if !ok {
		return idempotency.Record{}, false, fmt.Errorf("reserve idempotency key: unexpected reply %T", res)
	}
	existing, err := decode(r.Scope, r.Key, v)
	if err != nil {
		return idempotency.Record{}, false, fmt.Errorf("reserve idempotency key: %w", err)
	}
	return existing, false, nil
}

// CompleteIdempotencyKey stores resp on the in-flight record token holds; with none, an
// errs.Conflict.
func (s *Store) CompleteIdempotencyKey(ctx context.Context, scope idempotency.Scope, key, token string, resp idempotency.Response, expiresAt time.Time) error {
	if err := errors.Join(resp.Validate(), idempotency.ValidateToken(token)); err != nil {
		return fmt.Errorf("complete idempotency key: %w", err)
	}
	tail, err := json.Marshal(stored{Status: resp.Status, Header: resp.Header, Body: resp.Body})
	if err != nil {
		return fmt.Errorf("complete idempotency key: encode response: %w", err)
	}
	n, err := completeScript.Run(ctx, s.client, []string{s.Key(scope, key)},
		token, micros(expiresAt), tail, pxat(expiresAt)).Int()
	if err != nil {
		return fmt.Errorf("complete idempotency key: %w", err)
	}
	if n == 0 {
		return errs.New(errs.Conflict, "the idempotency key is no longer held by this request")
	}
	return nil
}

// ReleaseIdempotencyKey deletes the in-flight record token holds, if any.
func (s *Store) ReleaseIdempotencyKey(ctx context.Context, scope idempotency.Scope, key, token string) error {
	if err := idempotency.ValidateToken(token); err != nil {
		return fmt.Errorf("release idempotency key: %w", err)
	}
	if err := releaseScript.Run(ctx, s.client, []string{s.Key(scope, key)}, token).Err(); err != nil {
		return fmt.Errorf("release idempotency key: %w", err)
	}
	return nil
}

// PurgeIdempotencyKeys does nothing: Redis deletes every record at its expires_at by itself.
func (s *Store) PurgeIdempotencyKeys(context.Context, time.Time) (int64, error) { return 0, nil }

// head formats the fixed-width head of a value.
func head(state byte, fp idempotency.Fingerprint, token string, locked, created, expires time.Time) string {
	b := make([]byte, 0, headLength)
	b = append(b, state)
	b = hex.AppendEncode(b, fp[:])
	b = append(b, token...)
	for _, t := range []time.Time{locked, created, expires} {
		b = append(b, micros(t)...)
	}
	return string(b)
}

// micros formats t as zero-padded Unix microseconds of timeWidth digits.
func micros(t time.Time) string {
	return fmt.Sprintf("%0*d", timeWidth, max(t.UnixMicro(), 0))
}

// pxat is t as Unix milliseconds, rounded up so a record never expires before its expires_at.
func pxat(t time.Time) string {
	ms := (t.UnixMicro() + 999) / 1000
	return strconv.FormatInt(max(ms, 1), 10)
}

func roundTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// decode parses a stored value.
func decode(scope idempotency.Scope, key, v string) (idempotency.Record, error) {
	if len(v) < headLength {
		return idempotency.Record{}, fmt.Errorf("stored value of %d bytes, shorter than its head", len(v))
	}
	r := idempotency.Record{Scope: scope, Key: key, Token: v[offToken:offLocked]}
	if _, err := hex.Decode(r.Fingerprint[:], []byte(v[offFingerprint:offToken])); err != nil {
		return idempotency.Record{}, fmt.Errorf("stored fingerprint: %w", err)
	}
	for _, f := range []struct {
		dst *time.Time
		src string
	}{{&r.LockedUntil, v[offLocked:offCreated]}, {&r.CreatedAt, v[offCreated:offExpires]}, {&r.ExpiresAt, v[offExpires:headLength]}} {
		us, err := strconv.ParseInt(f.src, 10, 64)
		if err != nil {
			return idempotency.Record{}, fmt.Errorf("stored time: %w", err)
		}
		*f.dst = time.UnixMicro(us).UTC()
	}
	switch v[0] {
	case stateInFlight:
		r.State = idempotency.InFlight
	case stateCompleted:
		r.State = idempotency.Completed
		var st stored
		if err := json.Unmarshal([]byte(v[headLength:]), &st); err != nil {
			return idempotency.Record{}, fmt.Errorf("stored response: %w", err)
		}
		resp := idempotency.Response{Status: st.Status, Header: st.Header, Body: st.Body}
		if len(resp.Header) == 0 {
			resp.Header = nil
		}
		if len(resp.Body) == 0 {
			resp.Body = nil
		}
		r.Response = &resp
	default:
		return idempotency.Record{}, fmt.Errorf("stored state %q", v[0])
	}
	return r, nil
}
