package rbac

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/user"
)

// TestMatrixCells checks every role × scope cell against the documented expectation.
func TestMatrixCells(t *testing.T) {
	all := []string{ScopeSystemRead, ScopeSystemWrite, ScopeTenantsRead, ScopeTenantsWrite, ScopeAgentsRead,
		ScopeAgentsWrite, ScopeAgentsHeartbeat, ScopeAgentsInvoke, ScopeAPIKeysRead, ScopeAPIKeysWrite, ScopeAuditRead,
		ScopeEventsRead, ScopeEventsWrite, ScopePoliciesRead, ScopePoliciesWrite, ScopePerimeterRead, ScopePerimeterWrite,
		ScopeFlagsRead, ScopeFlagsWrite, ScopeFlagsEvaluate}
	// The documented matrix, cell by cell: what each role is granted; every other cell is denied.
	granted := map[string][]string{
		user.RoleSuperAdmin: all,
		user.RoleAdmin: {ScopeAgentsRead, ScopeAgentsWrite, ScopeAgentsHeartbeat, ScopeAgentsInvoke, ScopeAPIKeysRead, ScopeAPIKeysWrite, ScopeAuditRead,
			ScopeEventsRead, ScopeEventsWrite, ScopePoliciesRead, ScopePoliciesWrite, ScopePerimeterRead, ScopePerimeterWrite, ScopeFlagsEvaluate},
		user.RoleOperator: {ScopeAgentsRead, ScopeAgentsWrite, ScopeAgentsHeartbeat, ScopeAgentsInvoke, ScopeAPIKeysRead, ScopeEventsRead, ScopePoliciesRead, ScopeFlagsEvaluate},
		user.RoleViewer:   {ScopeAgentsRead, ScopeFlagsEvaluate},
	}
	want := map[string]map[string]bool{}
	for _, role := range Roles {
		want[role] = map[string]bool{}
		for _, scope := range all {
			want[role][scope] = slices.Contains(granted[role], scope)
		}
	}
	for _, role := range Roles {
		for scope, allowed := range want[role] {
			if got := Grants(role, scope); got != allowed {
				t.Errorf("Grants(%s, %s) = %v, want %v", role, scope, got, allowed)
			}
		}
	}
	if Grants("ROOT", ScopeSystemRead) {
		t.Error("an unknown role grants a scope")
	}
}

func TestScopesFor(t *testing.T) {
	if diff := cmp.Diff([]string{ScopeAgentsHeartbeat, ScopeAgentsInvoke, ScopeAgentsRead, ScopeAgentsWrite, ScopeAPIKeysRead, ScopeEventsRead, ScopeFlagsEvaluate, ScopePoliciesRead}, ScopesFor([]string{user.RoleViewer, user.RoleOperator, user.RoleOperator})); diff != "" {
		t.Fatal(diff)
	}
	if got := ScopesFor(nil); got != nil {
		t.Fatalf("ScopesFor(nil) = %v", got)
	}
}

func TestAuthorize(t *testing.T) {
	admin := principal.Principal{Roles: []string{user.RoleSuperAdmin}, Scopes: []string{ScopeSystemRead}}
	tests := []struct {
		name     string
		p        principal.Principal
		required []string
		allowed  bool
	}{
		{"no scope needed", principal.Principal{}, nil, true},
		{"scope in token and role", admin, []string{ScopeSystemRead}, true},
		{"scope granted by role but narrowed out of the token", admin, []string{ScopeSystemWrite}, false},
		{"scope in token but no longer granted by the role", principal.Principal{Roles: []string{user.RoleViewer}, Scopes: []string{ScopeSystemRead}}, []string{ScopeSystemRead}, false},
		{"no roles", principal.Principal{Scopes: []string{ScopeSystemRead}}, []string{ScopeSystemRead}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Authorize(tt.p, tt.required)
			if d.Allowed != tt.allowed || d.Reason == "" {
				t.Fatalf("Authorize = %+v, want allowed=%v with a reason", d, tt.allowed)
			}
		})
	}
}
