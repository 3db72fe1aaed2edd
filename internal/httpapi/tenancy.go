package httpapi

import (
	"context"

	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/store"
)

// AuditLog is what the audit endpoints read; both storage adapters implement it.
type AuditLog interface {
	audit.Store
	AuditRecords(ctx context.Context, tree string, f store.AuditFilter) ([]audit.Entry, error)
}

// tenantFor resolves the tenant an operation acts in (convention: the tenant comes from the
// credential). A tenant-bound caller acts in its own tenant; naming another one answers 404, as
// for any resource of another tenant. A principal above tenants (SUPER_ADMIN) must name one,
// which must exist.
func (h *handlers) tenantFor(ctx context.Context, named *string) (string, error) {
	p, ok := principal.FromContext(ctx)
	if !ok {
		return "", errs.New(errs.Internal, "no principal on an authenticated route")
	}
	if p.Tenant != "" {
		if named != nil && *named != p.Tenant {
			return "", errs.New(errs.NotFound, "tenant not found")
		}
		return p.Tenant, nil
	}
	if named == nil || *named == "" {
		return "", errs.Field("query.tenant", "required: a principal above tenants must name the tenant to act in")
	}
	if _, err := h.deps.Control.Tenants.Get(ctx, *named); err != nil {
		return "", err
	}
	return *named, nil
}

// treeFor resolves the audit tree a caller reads: its tenant's, or for a principal above tenants
// the named tenant's or else the global tree.
func (h *handlers) treeFor(ctx context.Context, named *string) (string, error) {
	p, ok := principal.FromContext(ctx)
	if !ok {
		return "", errs.New(errs.Internal, "no principal on an authenticated route")
	}
	if p.Tenant == "" && (named == nil || *named == "") {
		return audit.GlobalTree, nil
	}
	t, err := h.tenantFor(ctx, named)
	if err != nil {
		return "", err
	}
	return audit.TreeFor(t), nil
}
