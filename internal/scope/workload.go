package scope

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/tenant"
)

// Kind is what a workload identity names.
type Kind string

// The kinds of workload.
const (
	KindAgent  Kind = "agent"  // spiffe://<td>/tenant/<tenant>/agent/<agent>
	KindKernel Kind = "kernel" // spiffe://<td>/kernel/<node>
)

// Workload is a SPIFFE ID of the kernel's trust domain and what it names.
type Workload struct {
	ID     spiffeid.ID
	Kind   Kind
	Tenant string // agents only
	Agent  string // agents only
	Node   string // kernels only
}

// ParseWorkload reads id, which must belong to td and have one of the paths of the package doc.
// The segments are checked against the kernel's ID prefixes so that an entry registered by hand
// in SPIRE with a stray path cannot pose as a tenant.
func ParseWorkload(id spiffeid.ID, td spiffeid.TrustDomain) (Workload, error) {
	if id.IsZero() {
		return Workload{}, errors.New("workload: empty SPIFFE ID")
	}
	if !id.MemberOf(td) {
		return Workload{}, fmt.Errorf("workload %s: not in trust domain %s", id, td)
	}
	segs := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	switch {
	case len(segs) == 4 && segs[0] == "tenant" && segs[2] == "agent":
		t, a := segs[1], segs[3]
		if !idSegment(t, tenant.IDPrefix) || !idSegment(a, registry.IDPrefix) {
			return Workload{}, fmt.Errorf("workload %s: tenant or agent ID malformed", id)
		}
		return Workload{ID: id, Kind: KindAgent, Tenant: t, Agent: a}, nil
	case len(segs) == 2 && segs[0] == "kernel":
		if ValidSegment(segs[1]) != nil || segs[1] == Wildcard {
			return Workload{}, fmt.Errorf("workload %s: node name malformed", id)
		}
		return Workload{ID: id, Kind: KindKernel, Node: segs[1]}, nil
	}
	return Workload{}, fmt.Errorf("workload %s: path names neither an agent nor a kernel", id)
}

// idSegment reports whether s is prefix followed by at least one character and usable as a scope
// segment (a tenant ID becomes the tenant segment of the workload's scopes).
func idSegment(s, prefix string) bool {
	return len(s) > len(prefix) && strings.HasPrefix(s, prefix) && ValidSegment(s) == nil
}

// Subject is the principal subject of w: the agent ID for agents (as for an agent's API key), the
// SPIFFE ID for kernels.
func (w Workload) Subject() string {
	if w.Kind == KindAgent {
		return w.Agent
	}
	return w.ID.String()
}

// Principal is the principal of a request authenticated by w's SVID. tokenID identifies the
// credential in the audit trail (the SVID's serial, "svid:<hex>"); expires is its NotAfter.
// Scopes holds the hierarchical scopes rendered as strings; Roles stays empty: a workload is
// authorised by Routes.Check, not by the RBAC matrix.
func (w Workload) Principal(scopes []Scope, tokenID string, expires time.Time) principal.Principal {
	return principal.Principal{
		Subject:   w.Subject(),
		Tenant:    w.Tenant,
		Scopes:    Strings(scopes),
		TokenID:   tokenID,
		ExpiresAt: expires.UTC(),
	}
}

// TenantPlaceholder in a Table template is replaced by the workload's tenant.
const TenantPlaceholder = "{tenant}"

// Table is the scopes granted to each kind of workload, as templates ("registry:read:{tenant}").
// A kind missing from the table is granted nothing.
type Table map[Kind][]string

// DefaultTable is the default grant, documented with its reasons in docs/mtls.md. Agents act
// within their own tenant; kernels are tenant-less and so need tenant wildcards.
func DefaultTable() Table {
	return Table{
		KindAgent: {
			"registry:heartbeat:{tenant}", // its own heartbeat (Routes also pins the agent)
			"registry:read:{tenant}",      // discover the tenant's agents
			"identity:renew:{tenant}",     // renew its SVID with the current one
			"identity:read:{tenant}",      // whoami
			"invoke:*:{tenant}",           // call the tenant's capabilities (agent-to-agent)
			"invocations:read:{tenant}",   // poll results of its asynchronous calls
		},
		KindKernel: {
			"registry:read:*",    // a replica resolving agents for another
			"invoke:*:*",         // a replica forwarding an invocation
			"invocations:read:*", // and reading its result
		},
	}
}

// Validate checks every template: a valid scope once "{tenant}" is replaced, and no "{tenant}"
// for kernels, which have no tenant.
func (t Table) Validate() error {
	for kind, templates := range t {
		if kind != KindAgent && kind != KindKernel {
			return fmt.Errorf("scope table: unknown workload kind %q", kind)
		}
		for _, tpl := range templates {
			if kind == KindKernel && strings.Contains(tpl, TenantPlaceholder) {
				return fmt.Errorf("scope table: %s: kernels have no tenant to put in %q", kind, tpl)
			}
			if _, err := expand(tpl, tenant.IDPrefix+"x"); err != nil {
				return fmt.Errorf("scope table: %s: %w", kind, err)
			}
		}
	}
	return nil
}

// For returns the scopes granted to w, without duplicates, in table order.
func (t Table) For(w Workload) ([]Scope, error) {
	templates := t[w.Kind]
	out := make([]Scope, 0, len(templates))
	for _, tpl := range templates {
		s, err := expand(tpl, w.Tenant)
		if err != nil {
			return nil, fmt.Errorf("scopes of %s: %w", w.ID, err)
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out, nil
}

// expand replaces the placeholder, only as the whole tenant segment, and parses the result. A
// workload's tenant always is a valid non-wildcard segment (ParseWorkload), so substitution
// cannot widen a grant.
func expand(tpl, tenantID string) (Scope, error) {
	if i := strings.Index(tpl, TenantPlaceholder); i >= 0 {
		if !strings.HasSuffix(tpl, ":"+TenantPlaceholder) || strings.Count(tpl, TenantPlaceholder) != 1 {
			return Scope{}, fmt.Errorf("template %q: %s may only be the whole tenant segment", tpl, TenantPlaceholder)
		}
		if tenantID == "" || tenantID == Wildcard {
			return Scope{}, fmt.Errorf("template %q: no tenant to substitute", tpl)
		}
		tpl = strings.TrimSuffix(tpl, TenantPlaceholder) + tenantID
	}
	return Parse(tpl)
}
