package reqsig

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/principal"
)

// Algorithm is an RFC 9421 signature algorithm a request key may use.
type Algorithm string

// The algorithms of request keys (RFC 9421 §3.3.4 and §3.3.6).
const (
	AlgHMACSHA256 Algorithm = "hmac-sha256"
	AlgEd25519    Algorithm = "ed25519"
)

// Valid reports whether a is one of the supported algorithms.
func (a Algorithm) Valid() bool { return a == AlgHMACSHA256 || a == AlgEd25519 }

// Limits and defaults of request keys.
const (
	// IDPrefix starts every key ID ("rk_" + lower-case ULID), which is the signature's keyid.
	IDPrefix = "rk_"
	// SecretLen is the length of generated HMAC secrets, in bytes (256 bits, the HMAC-SHA256 block
	// size halved: RFC 2104 recommends at least the output length).
	SecretLen = 32
	// MaxNameLen bounds a key's name, in characters.
	MaxNameLen = 100
	// DefaultGrace is how long a rotated-out secret or public key keeps verifying when Rotate is
	// given 0; MaxGrace is the longest accepted.
	DefaultGrace = 24 * time.Hour
	MaxGrace     = 30 * 24 * time.Hour
	// DefaultListLimit and MaxListLimit bound a page of List.
	DefaultListLimit = 50
	MaxListLimit     = 100

	maxRefLen = 64 // tenant and agent IDs
)

// Statuses of a key at a given time (Key.Status).
const (
	StatusActive  = "active"
	StatusRevoked = "revoked"
	StatusExpired = "expired"
)

// Key is a request-signing key as stored. Zero times mean "none". The HMAC secret is stored
// sealed (SealedSecret, AES-256-GCM under the KEK, bound to the key ID): it is neither returned
// to clients nor logged; the plaintext exists only in Create's and Rotate's return value and, for
// verification, in Material.
type Key struct {
	ID        string // IDPrefix + lower-case ULID; the keyid of signatures
	TenantID  string
	AgentID   string // "" for a key of the tenant; else only that agent's requests are signed with it
	Name      string
	Alg       Algorithm
	CreatedBy string // subject of the principal that created the key

	PublicKey    ed25519.PublicKey // ed25519 keys: the current public key
	SealedSecret []byte            // hmac-sha256 keys: the current secret, sealed

	// What the last rotation replaced, accepted until PrevValidUntil.
	PrevPublicKey    ed25519.PublicKey
	PrevSealedSecret []byte
	PrevValidUntil   time.Time

	// Generation counts rotations (1 at creation); rotation is a compare-and-set on it.
	Generation int64

	CreatedAt time.Time
	ExpiresAt time.Time
	RevokedAt time.Time
}

// Revoked reports whether k is revoked at now.
func (k Key) Revoked(now time.Time) bool { return !k.RevokedAt.IsZero() && !now.Before(k.RevokedAt) }

// Expired reports whether k has expired at now.
func (k Key) Expired(now time.Time) bool { return !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt) }

// Status is StatusRevoked, StatusExpired or StatusActive at now, in that order of precedence.
func (k Key) Status(now time.Time) string {
	switch {
	case k.Revoked(now):
		return StatusRevoked
	case k.Expired(now):
		return StatusExpired
	}
	return StatusActive
}

// InGrace reports whether the previous secret or public key still verifies at now.
func (k Key) InGrace(now time.Time) bool {
	return (len(k.PrevPublicKey) > 0 || len(k.PrevSealedSecret) > 0) && now.Before(k.PrevValidUntil)
}

// LogValue logs what identifies the key, never key material.
func (k Key) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("id", k.ID), slog.String("tenant", k.TenantID)}
	if k.AgentID != "" {
		attrs = append(attrs, slog.String("agent", k.AgentID))
	}
	return slog.GroupValue(append(attrs, slog.String("alg", string(k.Alg)), slog.Int64("generation", k.Generation))...)
}

// CreateInput is what a client asks for. The tenant and the creator come from the principal in
// the context; TenantID is only for a principal above tenants, or else must be empty or the
// principal's own tenant.
type CreateInput struct {
	TenantID  string
	AgentID   string // optional: bind the key to one agent of the tenant
	Name      string // optional
	Alg       Algorithm
	PublicKey ed25519.PublicKey // required for ed25519 (see ParsePublicKey); must be empty for hmac-sha256
	ExpiresAt time.Time         // zero: never
}

// RotateInput asks for a rotation. Grace is how long the replaced material keeps verifying (0:
// the service's default; at most MaxGrace). PublicKey is the new public key of an ed25519 key
// (required, and different from the current one); an hmac-sha256 key gets a generated secret and
// must not be given one.
type RotateInput struct {
	Grace     time.Duration
	PublicKey ed25519.PublicKey
}

// validate checks in against the creator p at now and returns it normalised.
func (in CreateInput) validate(p principal.Principal, now time.Time) (CreateInput, error) {
	tenantID, err := resolveTenant(p, in.TenantID, "body.tenant")
	if err != nil {
		return in, err
	}
	in.TenantID = tenantID
	if in.AgentID != "" && !validRef(in.AgentID) {
		return in, errs.Field("body.agent_id", fmt.Sprintf("must be 1..%d characters of [A-Za-z0-9_-]", maxRefLen))
	}
	if err := validName(in.Name); err != nil {
		return in, err
	}
	switch in.Alg {
	case AlgEd25519:
		if err := validPublicKey(in.PublicKey, "body.public_key"); err != nil {
			return in, err
		}
	case AlgHMACSHA256:
		if len(in.PublicKey) != 0 {
			return in, errs.Field("body.public_key", "must be absent for hmac-sha256: the kernel generates the secret")
		}
	default:
		return in, errs.Field("body.alg", fmt.Sprintf("must be %s or %s", AlgHMACSHA256, AlgEd25519))
	}
	if !in.ExpiresAt.IsZero() {
		in.ExpiresAt = in.ExpiresAt.UTC().Truncate(time.Microsecond)
		if !in.ExpiresAt.After(now) {
			return in, errs.Field("body.expires_at", "must be in the future")
		}
	}
	return in, nil
}

// resolveTenant returns the tenant a principal acts on: its own, or the one a principal above
// tenants names. Another tenant's name is answered like a tenant that does not exist.
func resolveTenant(p principal.Principal, named, field string) (string, error) {
	switch {
	case p.Tenant == "" && named == "":
		return "", errs.Field(field, "required when the caller is above tenants")
	case p.Tenant != "" && named != "" && named != p.Tenant:
		return "", errs.New(errs.NotFound, "tenant not found")
	case p.Tenant != "":
		named = p.Tenant
	}
	if !validRef(named) {
		return "", errs.Field(field, fmt.Sprintf("must be 1..%d characters of [A-Za-z0-9_-]", maxRefLen))
	}
	return named, nil
}

func validName(name string) error {
	switch {
	case name == "":
		return nil
	case !utf8.ValidString(name):
		return errs.Field("body.name", "must be valid UTF-8")
	case strings.TrimSpace(name) == "":
		return errs.Field("body.name", "must not be blank")
	case utf8.RuneCountInString(name) > MaxNameLen:
		return errs.Field("body.name", fmt.Sprintf("must be at most %d characters", MaxNameLen))
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return errs.Field("body.name", "must not contain control characters")
	}
	return nil
}

func validPublicKey(pub ed25519.PublicKey, field string) error {
	switch {
	case len(pub) == 0:
		return errs.Field(field, "required for ed25519")
	case len(pub) != ed25519.PublicKeySize:
		return errs.Field(field, fmt.Sprintf("must be %d bytes", ed25519.PublicKeySize))
	case bytes.Equal(pub, make([]byte, ed25519.PublicKeySize)):
		return errs.Field(field, "must not be all zeros")
	}
	return nil
}

// validRef reports whether s looks like an ID of another domain: compared and stored, never
// parsed, so only its shape is checked.
func validRef(s string) bool {
	if len(s) == 0 || len(s) > maxRefLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// NewID returns a new key ID for a key created at now.
func NewID(now time.Time) (string, error) {
	u, err := ulid.New(ulid.Timestamp(now), ulid.DefaultEntropy())
	if err != nil {
		return "", fmt.Errorf("generate request key id: %w", err)
	}
	return IDPrefix + strings.ToLower(u.String()), nil
}

// ValidID reports whether id has the shape of a key ID.
func ValidID(id string) bool {
	rest, ok := strings.CutPrefix(id, IDPrefix)
	if !ok || len(rest) != ulid.EncodedSize || strings.ToLower(rest) != rest {
		return false
	}
	_, err := ulid.ParseStrict(strings.ToUpper(rest))
	return err == nil
}

// maxPublicKeyText bounds the text ParsePublicKey reads.
const maxPublicKeyText = 1024

// ParsePublicKey reads an Ed25519 public key as clients send it: a PEM "PUBLIC KEY" block
// (SubjectPublicKeyInfo, what `openssl pkey -pubout` writes), or the raw 32 bytes in base64
// (standard or URL alphabet, padded or not). Anything else is an errs.Invalid naming field; the
// message never quotes the input.
func ParsePublicKey(text, field string) (ed25519.PublicKey, error) {
	text = strings.TrimSpace(text)
	if len(text) > maxPublicKeyText {
		return nil, errs.Field(field, fmt.Sprintf("must be at most %d characters", maxPublicKeyText))
	}
	if strings.HasPrefix(text, "-----BEGIN") {
		block, rest := pem.Decode([]byte(text))
		if block == nil || block.Type != "PUBLIC KEY" || len(bytes.TrimSpace(rest)) != 0 {
			return nil, errs.Field(field, "must be one PEM PUBLIC KEY block")
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, errs.Field(field, "is not a valid SubjectPublicKeyInfo")
		}
		ed, ok := pub.(ed25519.PublicKey)
		if !ok {
			return nil, errs.Field(field, "is not an Ed25519 public key")
		}
		return ed, validPublicKey(ed, field)
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if raw, err := enc.Strict().DecodeString(text); err == nil && len(raw) == ed25519.PublicKeySize {
			pub := ed25519.PublicKey(raw)
			return pub, validPublicKey(pub, field)
		}
	}
	return nil, errs.Field(field, fmt.Sprintf("must be a PEM PUBLIC KEY block or the base64 of %d bytes", ed25519.PublicKeySize))
}
