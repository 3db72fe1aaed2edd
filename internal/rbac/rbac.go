// Package rbac is the kernel's permission matrix and its one authorization function. The matrix
// is data: each role grants a set of scopes, each API operation declares the scopes it needs (in
// api/kernel.yaml), and a principal may call an operation when its credential carries those
// scopes AND its roles grant them today. docs/rbac.md is generated from this table and the spec
// (see internal/httpapi's TestRBACDoc). Imported by internal/auth, internal/httpapi and tests.
package rbac

import (
	"slices"
	"strings"

	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/user"
)

// Scopes known to the kernel. An operation in api/kernel.yaml lists the ones it needs.
const (
	ScopeSystemRead      = "system:read"
	ScopeSystemWrite     = "system:write"
	ScopeTenantsRead     = "tenants:read"
	ScopeTenantsWrite    = "tenants:write"
	ScopeAgentsRead      = "agents:read"
	ScopeAgentsWrite     = "agents:write"
	ScopeAgentsHeartbeat = "agents:heartbeat"
	ScopeAgentsInvoke    = "agents:invoke" // call agents' capabilities through the kernel
	ScopeAPIKeysRead     = "apikeys:read"
	ScopeAPIKeysWrite    = "apikeys:write"
	ScopeAuditRead       = "audit:read"
	ScopeEventsRead      = "events:read"     // the event bus: dead letters, statistics
	ScopeEventsWrite     = "events:write"    // the event bus: DLQ reprocessing, replay
	ScopePoliciesRead    = "policies:read"   // ABAC policies
	ScopePoliciesWrite   = "policies:write"  // ABAC policies
	ScopePerimeterRead   = "perimeter:read"  // a tenant's perimeter settings (its own, for a tenant's principal)
	ScopePerimeterWrite  = "perimeter:write" // a tenant's perimeter settings (its own, for a tenant's principal)
	ScopeFlagsRead       = "flags:read"      // feature flags: global kernel objects, rules included
	ScopeFlagsWrite      = "flags:write"     // feature flags
	ScopeFlagsEvaluate   = "flags:evaluate"  // evaluate a flag for one's own tenant
)

// Roles lists the roles in order of decreasing power, as documented.
var Roles = []string{user.RoleSuperAdmin, user.RoleAdmin, user.RoleOperator, user.RoleViewer}

// matrix is what each role grants. Later domains add their scopes here; docs/rbac.md follows.
var matrix = map[string][]string{
	user.RoleSuperAdmin: {ScopeSystemRead, ScopeSystemWrite, ScopeTenantsRead, ScopeTenantsWrite,
		ScopeAgentsRead, ScopeAgentsWrite, ScopeAgentsHeartbeat, ScopeAgentsInvoke, ScopeAPIKeysRead, ScopeAPIKeysWrite, ScopeAuditRead,
		ScopeEventsRead, ScopeEventsWrite, ScopePoliciesRead, ScopePoliciesWrite, ScopePerimeterRead, ScopePerimeterWrite,
		ScopeFlagsRead, ScopeFlagsWrite, ScopeFlagsEvaluate},
	user.RoleAdmin: {ScopeAgentsRead, ScopeAgentsWrite, ScopeAgentsHeartbeat, ScopeAgentsInvoke, ScopeAPIKeysRead, ScopeAPIKeysWrite, ScopeAuditRead,
		ScopeEventsRead, ScopeEventsWrite, ScopePoliciesRead, ScopePoliciesWrite, ScopePerimeterRead, ScopePerimeterWrite, ScopeFlagsEvaluate},
	user.RoleOperator: {ScopeAgentsRead, ScopeAgentsWrite, ScopeAgentsHeartbeat, ScopeAgentsInvoke, ScopeAPIKeysRead, ScopeEventsRead,
		ScopePoliciesRead, ScopeFlagsEvaluate},
	user.RoleViewer: {ScopeAgentsRead, ScopeFlagsEvaluate},
}

// Grants reports whether role grants scope.
func Grants(role, scope string) bool { return slices.Contains(matrix[role], scope) }

// ScopesFor returns the sorted union of the scopes granted by roles.
func ScopesFor(roles []string) []string {
	var out []string
	for _, r := range roles {
		for _, s := range matrix[r] {
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	slices.Sort(out)
	return out
}

// Decision is the outcome of Authorize, with the reason the audit trail records.
type Decision struct {
	Allowed bool
	Reason  string
}

// Authorize decides whether p may perform an operation that needs required. A scope must be
// both in the credential (tokens can be narrowed at issue time) and granted by one of p's roles
// now (a role changed after the token was issued takes effect at once).
func Authorize(p principal.Principal, required []string) Decision {
	var missing []string
	for _, s := range required {
		if !p.HasScopes(s) || !slices.ContainsFunc(p.Roles, func(r string) bool { return Grants(r, s) }) {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		return Decision{Reason: "missing scope " + strings.Join(missing, " ")}
	}
	return Decision{Allowed: true, Reason: "granted"}
}
