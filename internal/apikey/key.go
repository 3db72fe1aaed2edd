package apikey

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/user"
)

// Limits on create input.
const (
	MaxNameLen  = 100 // characters
	MaxScopes   = 32
	MaxScopeLen = 128 // bytes
	maxRefLen   = 64  // tenant and agent IDs
)

// Key is an API key as stored. Zero times mean "none": no expiry, not revoked, never used, no
// previous secret. Hash and PrevHash are digests, never the secret; they are not for clients.
type Key struct {
	ID        string // "ak" + lower-case ULID; the keyid of the raw key
	TenantID  string
	AgentID   string // "" for a tenant key
	Name      string
	Role      string   // user.RoleAdmin, user.RoleOperator or user.RoleViewer
	Scopes    []string // sorted, distinct RFC 6749 scope-tokens
	CreatedBy string   // subject of the principal that created the key

	Hash          []byte // keyed BLAKE2b-256 of the current secret
	PepperVersion string // the pepper Hash was made with

	// The secret replaced by the last rotation, accepted until PrevValidUntil.
	PrevHash          []byte
	PrevPepperVersion string
	PrevValidUntil    time.Time

	CreatedAt  time.Time
	ExpiresAt  time.Time
	RevokedAt  time.Time
	LastUsedAt time.Time

	// RotateBy is the deadline an administrator set for rotating the key (Service.RequireRotation):
	// the current secret is refused from then on. A rotation clears it.
	RotateBy time.Time
}

// Revoked reports whether k is revoked at now.
func (k Key) Revoked(now time.Time) bool { return !k.RevokedAt.IsZero() && !now.Before(k.RevokedAt) }

// Expired reports whether k has expired at now.
func (k Key) Expired(now time.Time) bool { return !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt) }

// RotationOverdue reports whether k had to be rotated by now and was not.
func (k Key) RotationOverdue(now time.Time) bool {
	return !k.RotateBy.IsZero() && !now.Before(k.RotateBy)
}

// Principal is the caller a verified key authenticates: Subject and TokenID are the key ID, with
// the key's tenant, its one role and its scopes. ExpiresAt is the key's expiry (zero: none).
func (k Key) Principal() principal.Principal {
	return principal.Principal{
		Subject:   k.ID,
		Tenant:    k.TenantID,
		Roles:     []string{k.Role},
		Scopes:    slices.Clone(k.Scopes),
		TokenID:   k.ID,
		ExpiresAt: k.ExpiresAt,
	}
}

// LogValue logs what identifies the key, never its digests.
func (k Key) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("id", k.ID), slog.String("tenant", k.TenantID)}
	if k.AgentID != "" {
		attrs = append(attrs, slog.String("agent", k.AgentID))
	}
	return slog.GroupValue(append(attrs, slog.String("role", k.Role), slog.String("pepper", k.PepperVersion))...)
}

// CreateInput is what a client asks for when creating a key. The tenant and the creator come
// from the principal in the context; TenantID is only for a principal above tenants, or else
// must be empty or the principal's own tenant.
type CreateInput struct {
	TenantID  string
	AgentID   string // optional: bind the key to an agent of the tenant
	Name      string
	Role      string
	Scopes    []string
	ExpiresAt time.Time // zero: never
}

// roleRank orders the roles by power. A key may carry any of them but SUPER_ADMIN: a key is bound
// to a tenant, and SUPER_ADMIN is above tenants.
var roleRank = map[string]int{
	user.RoleSuperAdmin: 4,
	user.RoleAdmin:      3,
	user.RoleOperator:   2,
	user.RoleViewer:     1,
}

// validate checks in against the creator p at now and returns the normalised input: tenant
// resolved, scopes sorted, expiry in UTC.
func (in CreateInput) validate(p principal.Principal, now time.Time) (CreateInput, error) {
	switch {
	case p.Tenant == "" && in.TenantID == "":
		return in, errs.Field("body.tenant", "required when the caller is above tenants")
	case p.Tenant != "" && in.TenantID != "" && in.TenantID != p.Tenant:
		// Answered like a tenant that does not exist, so a tenant cannot probe another.
		return in, errs.New(errs.NotFound, "tenant not found")
	case p.Tenant != "":
		in.TenantID = p.Tenant
	}
	if !validRef(in.TenantID) {
		return in, errs.Field("body.tenant", fmt.Sprintf("must be 1..%d characters of [A-Za-z0-9_-]", maxRefLen))
	}
	if in.AgentID != "" && !validRef(in.AgentID) {
		return in, errs.Field("body.agent_id", fmt.Sprintf("must be 1..%d characters of [A-Za-z0-9_-]", maxRefLen))
	}
	if err := validName(in.Name); err != nil {
		return in, err
	}
	rank, ok := roleRank[in.Role]
	if !ok || in.Role == user.RoleSuperAdmin {
		return in, errs.Field("body.role", fmt.Sprintf("must be one of %s, %s, %s", user.RoleAdmin, user.RoleOperator, user.RoleViewer))
	}
	if rank > maxRank(p.Roles) {
		return in, errs.Field("body.role", "outranks the caller's own role")
	}
	scopes, err := validScopes(in.Scopes, p)
	if err != nil {
		return in, err
	}
	in.Scopes = scopes
	if !in.ExpiresAt.IsZero() {
		in.ExpiresAt = in.ExpiresAt.UTC().Truncate(time.Microsecond)
		if !in.ExpiresAt.After(now) {
			return in, errs.Field("body.expires_at", "must be in the future")
		}
	}
	return in, nil
}

func maxRank(roles []string) int {
	best := 0
	for _, r := range roles {
		best = max(best, roleRank[r])
	}
	return best
}

func validName(name string) error {
	switch {
	case strings.TrimSpace(name) == "":
		return errs.Field("body.name", "must not be empty")
	case !utf8.ValidString(name):
		return errs.Field("body.name", "must be valid UTF-8")
	case utf8.RuneCountInString(name) > MaxNameLen:
		return errs.Field("body.name", fmt.Sprintf("must be at most %d characters", MaxNameLen))
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return errs.Field("body.name", "must not contain control characters")
	}
	return nil
}

// validScopes checks each scope is an RFC 6749 scope-token the creator holds, without
// duplicates, and returns them sorted.
func validScopes(scopes []string, p principal.Principal) ([]string, error) {
	if len(scopes) > MaxScopes {
		return nil, errs.Field("body.scopes", fmt.Sprintf("must have at most %d scopes", MaxScopes))
	}
	for i, sc := range scopes {
		field := fmt.Sprintf("body.scopes[%d]", i)
		switch {
		case !validScope(sc):
			return nil, errs.Field(field, fmt.Sprintf("must be 1..%d bytes of printable ASCII other than space, '\"' and '\\'", MaxScopeLen))
		case slices.Contains(scopes[:i], sc):
			return nil, errs.Field(field, "duplicate scope")
		case !p.HasScopes(sc):
			return nil, errs.Field(field, "not held by the caller")
		}
	}
	out := slices.Clone(scopes)
	slices.Sort(out)
	return out, nil
}

// validScope reports whether s is a scope-token of RFC 6749 §3.3 (%x21 / %x23-5B / %x5D-7E) of
// bounded length.
func validScope(s string) bool {
	if len(s) == 0 || len(s) > MaxScopeLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// validRef reports whether s looks like an ID of another domain: it is compared and stored,
// never parsed, so only its shape is checked.
func validRef(s string) bool {
	if len(s) == 0 || len(s) > maxRefLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isBase62(c) && c != '_' && c != '-' {
			return false
		}
	}
	return true
}
