package identity

import (
	"context"
	"fmt"
	"math/big"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/mtls"
	"github.com/nops-kernel/nops/internal/pagecursor"
)

// AuditActionRevoke is the audit action of an SVID revocation (and of its refusals). A stable
// string: auditors filter on it.
const AuditActionRevoke = "identity.svid.revoke"

// RevocationIDPrefix starts the ID of a stored revocation.
const RevocationIDPrefix = "rev_"

// Limits on what a revocation request carries.
const (
	// MaxSerialText bounds a serial as sent: RFC 5280 serials are at most 20 octets (40 hex
	// digits); a "0x" prefix and leading zeros are tolerated up to this length.
	MaxSerialText = 64
	// MaxRevocationReason bounds the free-text reason, in bytes.
	MaxRevocationReason = 512
	// MaxSPIFFEIDText bounds a SPIFFE ID as sent (the SPIFFE ID specification's limit).
	MaxSPIFFEIDText = 2048
)

// RevocationRecord is one stored revocation: what the mTLS listeners enforce (Revocation) plus who
// recorded it, why, and the tenant it belongs to. Exactly one of Serial and SPIFFEID is set.
type RevocationRecord struct {
	ID       string // RevocationIDPrefix + lower-case ULID
	Serial   string // lower-case hexadecimal without leading zeros (NormalizeSerial); "" for an ID
	SPIFFEID string // the revoked SPIFFE ID; "" for a serial
	// TenantID is the tenant whose workload the SPIFFE ID names (spiffe://<td>/tenant/<t>/…);
	// "" for the kernel's IDs, other IDs of the trust domain and serials.
	TenantID  string
	Reason    string // the operator's free text; "" when none was given
	RevokedAt time.Time
	// ExpiresAt is when the entry can no longer match a valid SVID: past it the entry is purged.
	ExpiresAt time.Time
	Actor     string // the principal that revoked
}

// Revocation returns the entry as the mTLS listener enforces it.
func (r RevocationRecord) Revocation() (mtls.Revocation, error) {
	rev := mtls.Revocation{Serial: r.Serial, RevokedAt: r.RevokedAt, Expires: r.ExpiresAt}
	if r.SPIFFEID != "" {
		id, err := spiffeid.FromString(r.SPIFFEID)
		if err != nil {
			return mtls.Revocation{}, fmt.Errorf("revocation %s: spiffe id: %w", r.ID, err)
		}
		rev.ID = id
	}
	return rev, nil
}

// Check reports a record a store must not keep: an ID of another shape, both or neither of
// Serial and SPIFFEID, a serial not in normal form, a malformed SPIFFE ID, or missing times.
func (r RevocationRecord) Check() error {
	switch {
	case !ValidRevocationID(r.ID):
		return fmt.Errorf("revocation id %q is malformed", r.ID)
	case (r.Serial == "") == (r.SPIFFEID == ""):
		return fmt.Errorf("revocation %s must name exactly one of a serial and a spiffe id", r.ID)
	case r.RevokedAt.IsZero() || r.ExpiresAt.IsZero():
		return fmt.Errorf("revocation %s needs revoked_at and expires_at", r.ID)
	case r.Serial != "":
		if s, err := NormalizeSerial(r.Serial); err != nil || s != r.Serial {
			return fmt.Errorf("revocation %s: serial %q is not in normal form", r.ID, r.Serial)
		}
	default:
		if _, err := spiffeid.FromString(r.SPIFFEID); err != nil {
			return fmt.Errorf("revocation %s: spiffe id: %w", r.ID, err)
		}
	}
	return nil
}

// RevocationFilter selects a page of stored revocations, in (RevokedAt, ID) order.
type RevocationFilter struct {
	// TenantID selects one tenant's entries; with AllTenants false, "" selects the entries that
	// belong to no tenant.
	TenantID   string
	AllTenants bool // every entry, TenantID ignored
	// ExpiresAfter, when set, keeps only the entries still in force then (ExpiresAt after it).
	ExpiresAfter time.Time
	// After is the last entry of the previous page (CreatedAt: its RevokedAt, ID: its ID); the
	// page starts strictly after it. The zero Cursor: from the start.
	After pagecursor.Cursor
	Limit int // > 0
}

// RevocationStore records the revocations of SVIDs so that every replica's mTLS listener sees
// them; both storage adapters implement it, and mtls.RevocationStore (Revocations) with it.
// Methods run on the transaction bound to ctx, if any.
type RevocationStore interface {
	mtls.RevocationStore
	// AddRevocation stores rec (checked with Check first) and, in the same statement sequence,
	// purges the entries that expired before rec.RevokedAt: the table holds what can still match
	// a valid SVID, plus at most the entries that expired since the last revocation.
	AddRevocation(ctx context.Context, rec RevocationRecord) error
	// ListRevocations returns at most f.Limit entries matching f in (RevokedAt, ID) order, or nil.
	ListRevocations(ctx context.Context, f RevocationFilter) ([]RevocationRecord, error)
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
}

// NewRevocationID returns a new revocation ID for an entry recorded at now.
func NewRevocationID(now time.Time) (string, error) {
	u, err := ulid.New(ulid.Timestamp(now), ulid.DefaultEntropy())
	if err != nil {
		return "", fmt.Errorf("generate revocation id: %w", err)
	}
	return RevocationIDPrefix + strings.ToLower(u.String()), nil
}

// ValidRevocationID reports whether id has the shape of a revocation ID.
func ValidRevocationID(id string) bool {
	rest, ok := strings.CutPrefix(id, RevocationIDPrefix)
	if !ok || len(rest) != ulid.EncodedSize || strings.ToLower(rest) != rest {
		return false
	}
	_, err := ulid.ParseStrict(strings.ToUpper(rest))
	return err == nil
}

// NormalizeSerial returns a certificate serial in the form the kernel writes and the mTLS
// listener matches (mtls.Revocation): lower-case hexadecimal without leading zeros. It accepts any
// case and an optional "0x" prefix, nothing else (no separators, signs or spaces): anything else is
// an errs.Field("body.serial").
func NormalizeSerial(s string) (string, error) {
	bad := func(reason string) (string, error) { return "", errs.Field("body.serial", reason) }
	if s == "" {
		return bad("must not be empty")
	}
	if len(s) > MaxSerialText {
		return bad(fmt.Sprintf("must be at most %d characters", MaxSerialText))
	}
	h := strings.TrimPrefix(strings.ToLower(s), "0x")
	if h == "" || strings.Trim(h, "0123456789abcdef") != "" {
		return bad("must be a hexadecimal certificate serial number (an optional 0x, no separators)")
	}
	n, ok := new(big.Int).SetString(h, 16)
	if !ok || n.Sign() <= 0 {
		return bad("must be a positive certificate serial number")
	}
	if n.BitLen() > 160 {
		return bad("must fit in 20 octets (RFC 5280)")
	}
	return n.Text(16), nil
}

// ParseRevokedID parses the SPIFFE ID of a revocation request: a SPIFFE ID (go-spiffe) of td with
// a path, since only workloads hold SVIDs. It returns the ID and the tenant its path names
// (spiffe://<td>/tenant/<tenant>[/…]; "" for any other path, the kernel's included). Anything
// else is an errs.Field("body.spiffe_id").
func ParseRevokedID(td spiffeid.TrustDomain, s string) (spiffeid.ID, string, error) {
	const field = "body.spiffe_id"
	if len(s) > MaxSPIFFEIDText {
		return spiffeid.ID{}, "", errs.Field(field, fmt.Sprintf("must be at most %d characters", MaxSPIFFEIDText))
	}
	id, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, "", errs.Field(field, "must be a SPIFFE ID (spiffe://<trust-domain>/<path>): "+err.Error())
	}
	if !id.MemberOf(td) {
		return spiffeid.ID{}, "", errs.Field(field, "must be of this kernel's trust domain "+td.String())
	}
	if id.Path() == "" {
		return spiffeid.ID{}, "", errs.Field(field, "must name a workload: the trust domain's own ID holds no SVID")
	}
	return id, IDTenant(id), nil
}

// IDTenant returns the tenant a SPIFFE ID's path names (/tenant/<tenant>[/…]), "" for any other.
func IDTenant(id spiffeid.ID) string {
	seg := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(seg) >= 2 && seg[0] == segTenant {
		return seg[1]
	}
	return ""
}

// CheckRevocationReason validates the free-text reason of a revocation: at most
// MaxRevocationReason bytes of UTF-8 without control characters (it is shown in lists and audit
// records), else an errs.Field("body.reason").
func CheckRevocationReason(s string) error {
	switch {
	case len(s) > MaxRevocationReason:
		return errs.Field("body.reason", fmt.Sprintf("must be at most %d bytes", MaxRevocationReason))
	case !utf8.ValidString(s):
		return errs.Field("body.reason", "must be UTF-8")
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return errs.Field("body.reason", "must not contain control characters")
	}
	return nil
}
