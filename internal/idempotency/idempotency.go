package idempotency

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/principal"
)

// The header fields of the draft, and the replay marker.
const (
	// HeaderKey is the request header carrying the key.
	HeaderKey = "Idempotency-Key"
	// HeaderReplayed marks a replayed response ("true"); its body is the stored one, byte for
	// byte.
	HeaderReplayed = "Idempotent-Replayed"
)

// Limits of the values a Record holds.
const (
	// MaxKeyLength is the longest key accepted, in bytes (all printable ASCII).
	MaxKeyLength = 255
	// MaxScopeLength bounds Scope.Tenant and Scope.Principal.
	MaxScopeLength = 128
	// TokenLength is the length of a lock token: 32 lowercase hex digits.
	TokenLength = 32
)

// GlobalTenant is the scope tenant of a principal above tenants (SUPER_ADMIN without a tenant).
// Tenant IDs carry the ten_ prefix, so it can never be a tenant's.
const GlobalTenant = "global"

// Scope is the namespace of a key: the caller's tenant and the caller. Two requests share a key
// only if they share the scope too.
type Scope struct {
	Tenant    string // the principal's tenant, or GlobalTenant
	Principal string // the principal's subject: a user ID or an API key ID
}

// ScopeOf returns the scope of p's requests, and false when p has no subject (no principal
// should lack one; such a request cannot be scoped safely).
func ScopeOf(p principal.Principal) (Scope, bool) {
	if p.Subject == "" {
		return Scope{}, false
	}
	t := p.Tenant
	if t == "" {
		t = GlobalTenant
	}
	return Scope{Tenant: t, Principal: p.Subject}, true
}

// Validate checks that both parts are 1 to MaxScopeLength bytes.
func (s Scope) Validate() error {
	switch {
	case s.Tenant == "" || len(s.Tenant) > MaxScopeLength:
		return errs.Field("scope.tenant", "must be 1 to 128 characters")
	case s.Principal == "" || len(s.Principal) > MaxScopeLength:
		return errs.Field("scope.principal", "must be 1 to 128 characters")
	}
	return nil
}

// State is where a record is in its life.
type State string

// The states.
const (
	InFlight  State = "in_flight" // an attempt is running; others get 409
	Completed State = "completed" // the response is stored; retries get it
)

// Response is what the first attempt answered, as it is replayed.
type Response struct {
	Status int         // HTTP status, 100 to 599
	Header http.Header // the headers the handler set (see the package doc); nil for none
	Body   []byte      // byte for byte; nil for none
}

// Validate checks the status.
func (r Response) Validate() error {
	if r.Status < 100 || r.Status > 599 {
		return errs.Field("response.status", "must be an HTTP status (100 to 599)")
	}
	return nil
}

// Record is one key's state in a Store.
type Record struct {
	Scope       Scope
	Key         string
	Fingerprint Fingerprint
	// Token names the attempt holding an in-flight record: Complete and Release act only for
	// the holder, so an attempt whose record was taken over cannot touch its successor's.
	Token       string
	State       State
	CreatedAt   time.Time // when the attempt holding it began, UTC
	LockedUntil time.Time // until when an in-flight record blocks other attempts
	ExpiresAt   time.Time // when the record dies: TTL after completion (after creation while in flight)
	Response    *Response // the stored response; set exactly when State is Completed
}

// ValidateReservation checks a record about to be reserved: a valid scope and key, a token of
// TokenLength lowercase hex digits, state InFlight with no response, CreatedAt set and
// LockedUntil and ExpiresAt after it. Adapters call it in ReserveIdempotencyKey.
func (r Record) ValidateReservation() error {
	if err := r.Scope.Validate(); err != nil {
		return err
	}
	if err := ValidateKey(r.Key); err != nil {
		return err
	}
	if err := ValidateToken(r.Token); err != nil {
		return err
	}
	switch {
	case r.State != InFlight || r.Response != nil:
		return errs.Field("state", "a reservation is in flight, without a response")
	case r.CreatedAt.IsZero():
		return errs.Field("created_at", "is required")
	case !r.LockedUntil.After(r.CreatedAt):
		return errs.Field("locked_until", "must be after created_at")
	case !r.ExpiresAt.After(r.CreatedAt):
		return errs.Field("expires_at", "must be after created_at")
	}
	return nil
}

// ValidateKey checks a key as stored: 1 to MaxKeyLength bytes of printable ASCII (what a
// Structured Field String may hold once unescaped).
func ValidateKey(key string) error {
	if key == "" || len(key) > MaxKeyLength {
		return errs.Field("header."+HeaderKey, "must be 1 to 255 characters")
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			return errs.Field("header."+HeaderKey, "must be printable ASCII")
		}
	}
	return nil
}

// ValidateToken checks a lock token: TokenLength lowercase hex digits.
func ValidateToken(token string) error {
	if len(token) != TokenLength {
		return errs.Field("token", "must be 32 lowercase hex digits")
	}
	for i := 0; i < len(token); i++ {
		c := token[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return errs.Field("token", "must be 32 lowercase hex digits")
		}
	}
	return nil
}

// NewToken returns a fresh random lock token.
func NewToken() string {
	b := make([]byte, TokenLength/2)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it panics instead)
	return hex.EncodeToString(b)
}

// Store keeps the records. Adapters: SQLite and PostgreSQL (table idempotency_keys, migration
// 00008) and Redis (redisstore). Times are kept at microsecond precision and returned in UTC.
// The store compares times with the now its callers pass, never with a clock of its own, except
// that a Redis record also vanishes by itself at its ExpiresAt.
type Store interface {
	// ReserveIdempotencyKey claims r's scope and key for an attempt about to run; r must pass
	// ValidateReservation, else an errs.Invalid. With no record of that scope and key, or with
	// one that is dead at now — expired (ExpiresAt <= now), or in flight past its lock
	// (LockedUntil <= now) with r's fingerprint, an attempt abandoned by a crashed process — it
	// stores r (replacing the dead one) and returns r and true. Otherwise it returns the live
	// record unchanged, response included, and false. Check and write are one atomic step: of
	// concurrent calls for one scope and key, one alone gets true.
	ReserveIdempotencyKey(ctx context.Context, r Record, now time.Time) (Record, bool, error)
	// CompleteIdempotencyKey stores resp on the in-flight record of s and key that token holds,
	// marks it Completed and sets its ExpiresAt. If no such record exists (taken over, released
	// or purged) it changes nothing and returns an errs.Conflict; an invalid resp or token is an
	// errs.Invalid.
	CompleteIdempotencyKey(ctx context.Context, s Scope, key, token string, resp Response, expiresAt time.Time) error
	// ReleaseIdempotencyKey deletes the in-flight record of s and key that token holds, so the
	// request may be retried. A record that token does not hold, or none, is left alone without
	// an error.
	ReleaseIdempotencyKey(ctx context.Context, s Scope, key, token string) error
	// PurgeIdempotencyKeys deletes the records with ExpiresAt <= now and returns how many. A
	// store whose records expire by themselves (Redis) may delete none and return 0.
	PurgeIdempotencyKeys(ctx context.Context, now time.Time) (int64, error)
}
