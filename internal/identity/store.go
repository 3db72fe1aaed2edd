package identity

import (
	"context"
	"time"
)

// Kind tells a root authority from an intermediate one.
type Kind string

// The kinds of authority.
const (
	KindRoot         Kind = "root"
	KindIntermediate Kind = "intermediate"
)

// Authority is one CA certificate of a trust domain as stored: the certificate and its private
// key sealed under the key-encryption key (internal/sealbox), bound to the authority's ID so a
// sealed key copied onto another row does not open there.
type Authority struct {
	ID        string // "ca_" + lower-case ULID
	Kind      Kind
	ParentID  string // the root that signed an intermediate; "" for a root
	CertDER   []byte
	SealedKey []byte // sealbox.Seal(PKCS #8 DER, SealAAD(ID))
	NotAfter  time.Time
	CreatedAt time.Time
	// ActivatesAt is when an intermediate starts issuing; zero: at once. A root rotation stages the
	// new intermediate (Config.RootRotationDelay) so that everyone holds the new root first.
	ActivatesAt time.Time
	// RetiresAt is when a root leaves the trust bundle; zero: at its expiry. A root rotation sets it
	// on the roots it replaces, to when no SVID chaining to them can still be valid.
	RetiresAt time.Time
}

// activation is when an intermediate starts issuing: ActivatesAt, or CreatedAt when that is zero.
func (a Authority) activation() time.Time {
	if a.ActivatesAt.IsZero() {
		return a.CreatedAt
	}
	return a.ActivatesAt
}

// Store persists the authorities of the built-in CA. Adapters (internal/store/sqlite,
// internal/store/postgres) run each method on the transaction bound to ctx, if any, and open none
// of their own; the CA calls AddCAAuthorities inside InTx.
type Store interface {
	// CAAuthorities returns the CA of trustDomain: its sequence (0 when it has never been
	// created) and its authorities in the order they were added (by CreatedAt, then ID).
	CAAuthorities(ctx context.Context, trustDomain string) (seq int64, auths []Authority, err error)
	// AddCAAuthorities stores auths and moves the CA's sequence from prevSeq to prevSeq+1, both or
	// neither: prevSeq 0 creates the CA. When the sequence is no longer prevSeq — another replica
	// created or changed the CA first — it stores nothing and returns an errs.Conflict, and the
	// caller reloads.
	AddCAAuthorities(ctx context.Context, trustDomain string, prevSeq int64, auths []Authority) error
	// RetireCAAuthorities sets RetiresAt to at on the listed authorities of trustDomain whose
	// RetiresAt is zero. Called in the transaction of AddCAAuthorities, after it: the two are one
	// change of the sequence.
	RetireCAAuthorities(ctx context.Context, trustDomain string, ids []string, at time.Time) error
	// RemoveCAAuthorities deletes the listed authorities of trustDomain (intermediates before
	// roots) and moves the CA's sequence from prevSeq (≥ 1) to prevSeq+1, both or neither: an
	// errs.Conflict when the sequence is no longer prevSeq.
	RemoveCAAuthorities(ctx context.Context, trustDomain string, prevSeq int64, ids []string, at time.Time) error
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
}

// Sealer encrypts the authorities' private keys at rest; *sealbox.Box implements it. Open must
// fail for a value sealed with other associated data.
type Sealer interface {
	Seal(plaintext, aad []byte) ([]byte, error)
	Open(sealed, aad []byte) ([]byte, error)
}

// SealAAD is the associated data an authority's key is sealed with.
func SealAAD(authorityID string) []byte { return []byte("nops/identity/ca-key/" + authorityID) }

// AuditActionIssue is the audit action of an SVID issuance (and of its refusals). A stable
// string: auditors filter on it.
const AuditActionIssue = "identity.svid.issue"
