package control

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/pagecursor"
	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/user"
)

// Page sizes of the revocation list.
const (
	DefaultRevocationListLimit = 50
	MaxRevocationListLimit     = 500
)

// RevocationStore is what the revocation use cases need of the store: the revocations, and the
// CA's authorities to tell how long a revoked CA serial must be remembered. Both adapters
// implement it.
type RevocationStore interface {
	identity.RevocationStore
	CAAuthorities(ctx context.Context, trustDomain string) (seq int64, auths []identity.Authority, err error)
}

// SVIDRevocations is the audited revocation of X.509-SVIDs, by certificate serial or by SPIFFE ID
// (docs/mtls.md, "Revocation"). Build it with Control.SVIDRevocations; it is cheap (a few fields)
// and safe for concurrent use.
//
// Who may revoke what: a SUPER_ADMIN (a principal above tenants) any serial and any SPIFFE ID of
// the trust domain; a tenant's ADMIN the SPIFFE IDs of its own tenant
// (spiffe://<td>/tenant/<its tenant>[/…]) and no serial, since the kernel does not record which
// tenant an issued serial belongs to. Refusals are 403 and audited as denials of
// identity.AuditActionRevoke.
type SVIDRevocations struct {
	c       *Control
	store   RevocationStore
	td      spiffeid.TrustDomain
	svidTTL time.Duration
}

// SVIDRevocations returns the revocation use cases over store for the CA of td, whose SVIDs live
// at most svidTTL.
func (c *Control) SVIDRevocations(store RevocationStore, td spiffeid.TrustDomain, svidTTL time.Duration) *SVIDRevocations {
	return &SVIDRevocations{c: c, store: store, td: td, svidTTL: svidTTL}
}

// RevokeInput is a revocation request: exactly one of Serial and SPIFFEID, an optional Reason, and
// the tenant a SUPER_ADMIN names to act in (Tenant; optional for it, and a tenant principal naming
// another than its own gets 404).
type RevokeInput struct {
	Serial   string
	SPIFFEID string
	Reason   string
	Tenant   string
}

// revocationsResource names the revocation list in audit records; a revocation is
// revocationsResource + "/" + its ID.
const revocationsResource = "identity/revocations"

// Revoke records a revocation and its audit record in one transaction and returns it. The caller
// applies it to the replica's mTLS listener (mtls.Server.Revoke); the listeners of every replica
// also read it from the store within their refresh interval.
//
// Expiry: an ID revocation matches the SVIDs with NotBefore ≤ RevokedAt, which were issued by
// RevokedAt + identity.Backdate and live at most the SVID TTL: so it is kept until RevokedAt + TTL +
// Backdate. A serial of one of the CA's authorities is kept until that authority expires; any
// other serial as long as an ID (the kernel's leaves live at most the TTL).
func (r *SVIDRevocations) Revoke(ctx context.Context, in RevokeInput) (identity.RevocationRecord, error) {
	p, err := revocationCaller(ctx)
	if err != nil {
		return identity.RevocationRecord{}, err
	}
	scopeTenant, err := r.scopeTenant(ctx, p, in.Tenant)
	if err != nil {
		return identity.RevocationRecord{}, err
	}
	rec, target, err := r.parse(in)
	if err != nil {
		return identity.RevocationRecord{}, err
	}
	// The tree a refusal is recorded in: the caller's tenant, or the one a SUPER_ADMIN named.
	deny := func(reason string) error {
		if err := r.c.Deny(ctx, scopeTenant, identity.AuditActionRevoke, revocationsResource,
			truncateUTF8("denied: "+reason+"; "+target, maxActionReason)); err != nil {
			return err
		}
		return errs.New(errs.Forbidden, "%s", reason)
	}
	above := p.Tenant == "" && slices.Contains(p.Roles, user.RoleSuperAdmin)
	switch {
	case !above && (p.Tenant == "" || !slices.Contains(p.Roles, user.RoleAdmin) && !slices.Contains(p.Roles, user.RoleSuperAdmin)):
		return identity.RevocationRecord{}, deny("only an ADMIN of the tenant or a SUPER_ADMIN may revoke SVIDs")
	case rec.Serial != "" && !above:
		return identity.RevocationRecord{}, deny("revoking by serial is for a SUPER_ADMIN: a serial names no tenant; revoke the SPIFFE ID")
	case rec.SPIFFEID != "" && scopeTenant != "" && rec.TenantID != scopeTenant:
		return identity.RevocationRecord{}, deny(fmt.Sprintf("a tenant's revocations name SPIFFE IDs of that tenant only (spiffe://%s/tenant/%s/…)", r.td, scopeTenant))
	}

	now := r.c.opts.Now().UTC().Truncate(time.Microsecond)
	if rec.ID, err = identity.NewRevocationID(now); err != nil {
		return identity.RevocationRecord{}, err
	}
	rec.RevokedAt, rec.Actor = now, p.Subject
	rec.ExpiresAt = now.Add(r.svidTTL + identity.Backdate)
	if rec.Serial != "" {
		if notAfter, ok, err := r.authorityNotAfter(ctx, rec.Serial); err != nil {
			return identity.RevocationRecord{}, err
		} else if ok && notAfter.After(rec.ExpiresAt) {
			// Rounded up: the stores keep microseconds.
			rec.ExpiresAt = notAfter.UTC().Truncate(time.Microsecond).Add(time.Microsecond)
		}
	}
	reason := fmt.Sprintf("allowed: %s, expires %s", target, rec.ExpiresAt.Format(time.RFC3339))
	if rec.Reason != "" {
		reason += "; reason: " + rec.Reason
	}
	err = r.c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		if err := r.store.AddRevocation(ctx, rec); err != nil {
			return outcome{}, err
		}
		return outcome{tenant: rec.TenantID, action: identity.AuditActionRevoke,
			resource: revocationsResource + "/" + rec.ID, reason: truncateUTF8(reason, maxActionReason)}, nil
	})
	if err != nil {
		return identity.RevocationRecord{}, err
	}
	return rec, nil
}

// DeregisterAgent deregisters agent id of tenantID (Control.DeregisterAgent) and, in the same
// transaction, revokes its SPIFFE ID, so that the SVIDs it holds stop authenticating on every
// replica within the revocation refresh interval rather than at their expiry (threat model S-09).
// Deregistration is the authority: no further right is needed to revoke the deregistered agent's
// own ID. The audit record of the deregistration names the revocation; the caller applies the
// returned revocation on its replica's mTLS listener.
func (r *SVIDRevocations) DeregisterAgent(ctx context.Context, tenantID, id string) (identity.RevocationRecord, error) {
	p, err := revocationCaller(ctx)
	if err != nil {
		return identity.RevocationRecord{}, err
	}
	now := r.c.opts.Now().UTC().Truncate(time.Microsecond)
	rec := identity.RevocationRecord{TenantID: tenantID, Reason: "agent deregistered", RevokedAt: now, Actor: p.Subject,
		ExpiresAt: now.Add(r.svidTTL + identity.Backdate)}
	if rec.ID, err = identity.NewRevocationID(now); err != nil {
		return identity.RevocationRecord{}, err
	}
	err = r.c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		a, err := r.c.Agents.Delete(ctx, tenantID, id, "")
		if err != nil {
			return outcome{}, err
		}
		sid, err := identity.AgentID(r.td, tenantID, a.ID)
		if err != nil {
			return outcome{}, err
		}
		rec.SPIFFEID = sid.String()
		if err := r.store.AddRevocation(ctx, rec); err != nil {
			return outcome{}, err
		}
		return outcome{tenant: tenantID, action: ActionAgentDeregister, resource: "agents/" + id,
			reason: "allowed; svid revoked: " + revocationsResource + "/" + rec.ID, event: events.AgentDeregistered{Agent: agentSnapshot(a)}}, nil
	})
	if err != nil {
		return identity.RevocationRecord{}, err
	}
	return rec, nil
}

// parse validates in into a record without ID, times and actor, and names its target for audit
// records ("serial …" or "spiffe id …").
func (r *SVIDRevocations) parse(in RevokeInput) (identity.RevocationRecord, string, error) {
	var rec identity.RevocationRecord
	if (in.Serial == "") == (in.SPIFFEID == "") {
		reason := "give exactly one of serial and spiffe_id"
		return rec, "", &errs.Error{Code: errs.Invalid, Message: "invalid input", Fields: []errs.FieldError{
			{Name: "body.serial", Reason: reason}, {Name: "body.spiffe_id", Reason: reason}}}
	}
	if err := identity.CheckRevocationReason(in.Reason); err != nil {
		return rec, "", err
	}
	rec.Reason = in.Reason
	if in.Serial != "" {
		s, err := identity.NormalizeSerial(in.Serial)
		if err != nil {
			return rec, "", err
		}
		rec.Serial = s
		return rec, "serial " + s, nil
	}
	id, tenantID, err := identity.ParseRevokedID(r.td, in.SPIFFEID)
	if err != nil {
		return rec, "", err
	}
	rec.SPIFFEID, rec.TenantID = id.String(), tenantID
	return rec, "spiffe id " + rec.SPIFFEID, nil
}

// authorityNotAfter returns the expiry of the CA authority with serial, if it is one.
func (r *SVIDRevocations) authorityNotAfter(ctx context.Context, serial string) (time.Time, bool, error) {
	_, auths, err := r.store.CAAuthorities(ctx, r.td.Name())
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read the ca's authorities: %w", err)
	}
	for _, a := range auths {
		cert, err := x509.ParseCertificate(a.CertDER)
		if err != nil {
			continue // the CA refuses to load such a row; nothing to match here
		}
		if identity.SerialString(cert.SerialNumber) == serial {
			return cert.NotAfter, true, nil
		}
	}
	return time.Time{}, false, nil
}

// scopeTenant resolves the tenant the caller acts in: a tenant principal's own (naming another is
// 404, as for any resource of another tenant), or the one a principal above tenants names, which
// must exist; "" for a principal above tenants naming none.
func (r *SVIDRevocations) scopeTenant(ctx context.Context, p principal.Principal, named string) (string, error) {
	switch {
	case p.Tenant != "" && named != "" && named != p.Tenant:
		return "", errs.New(errs.NotFound, "tenant not found")
	case p.Tenant != "":
		return p.Tenant, nil
	case named == "":
		return "", nil
	}
	if _, err := r.c.Tenants.Get(ctx, named); err != nil {
		return "", err
	}
	return named, nil
}

func revocationCaller(ctx context.Context) (principal.Principal, error) {
	p, ok := principal.FromContext(ctx)
	if !ok || p.Subject == "" {
		return principal.Principal{}, errs.New(errs.Unauthenticated, "authentication required")
	}
	return p, nil
}

// RevocationListInput selects a page of revocations: Tenant as in RevokeInput, Cursor the
// NextCursor of the previous page ("" for the first), Limit 1..MaxRevocationListLimit (0:
// DefaultRevocationListLimit).
type RevocationListInput struct {
	Tenant string
	Cursor string
	Limit  int
}

// RevocationPage is one page of revocations in force, oldest first. NextCursor is "" on the last.
type RevocationPage struct {
	Revocations []identity.RevocationRecord
	NextCursor  string
}

// List returns the revocations still in force (not yet expired) that the caller may see: a
// tenant principal its tenant's; a principal above tenants every entry, or the named tenant's.
// Reading is not audited, as for the other lists.
func (r *SVIDRevocations) List(ctx context.Context, in RevocationListInput) (RevocationPage, error) {
	p, err := revocationCaller(ctx)
	if err != nil {
		return RevocationPage{}, err
	}
	tenantID, err := r.scopeTenant(ctx, p, in.Tenant)
	if err != nil {
		return RevocationPage{}, err
	}
	limit, err := pagecursor.Limit(in.Limit, DefaultRevocationListLimit, MaxRevocationListLimit)
	if err != nil {
		return RevocationPage{}, err
	}
	f := identity.RevocationFilter{TenantID: tenantID, AllTenants: tenantID == "", Limit: limit + 1,
		ExpiresAfter: r.c.opts.Now().UTC()}
	if in.Cursor != "" {
		if f.After, err = pagecursor.Decode(in.Cursor, identity.ValidRevocationID); err != nil {
			return RevocationPage{}, err
		}
	}
	recs, err := r.store.ListRevocations(ctx, f)
	if err != nil {
		return RevocationPage{}, err
	}
	var page RevocationPage
	for _, rec := range recs {
		if tenantID == "" || rec.TenantID == tenantID { // an adapter bug must not leak another tenant's
			page.Revocations = append(page.Revocations, rec)
		}
	}
	page.Revocations, page.NextCursor = pagecursor.Trim(page.Revocations, limit, func(rec identity.RevocationRecord) string {
		return pagecursor.Encode(pagecursor.Cursor{CreatedAt: rec.RevokedAt, ID: rec.ID})
	})
	return page, nil
}
