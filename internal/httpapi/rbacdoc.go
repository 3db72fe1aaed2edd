package httpapi

import (
	"fmt"
	"slices"
	"strings"

	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/rbac"
)

// RBACDoc renders docs/rbac.md: every operation of the spec against every role, decided by the
// same rbac.Authorize the perimeter calls, for a token carrying all of the role's scopes.
func RBACDoc() (string, error) {
	doc, err := Spec()
	if err != nil {
		return "", err
	}
	ops, err := operations(doc)
	if err != nil {
		return "", err
	}
	patterns := make([]string, 0, len(ops))
	for p := range ops {
		patterns = append(patterns, p)
	}
	slices.SortFunc(patterns, func(a, b string) int {
		_, pa, _ := strings.Cut(a, " ")
		_, pb, _ := strings.Cut(b, " ")
		return strings.Compare(pa+" "+a, pb+" "+b)
	})
	var b strings.Builder
	b.WriteString("# Permission matrix\n\n")
	b.WriteString("Generated from `internal/rbac` and `api/kernel.yaml` by `go test ./internal/httpapi -run RBACDoc -update`; a test fails when it is stale.\n\n")
	b.WriteString("Each role grants a set of scopes; each operation needs the scopes the spec lists under its `bearerAuth` security requirement. A call is allowed when the token carries those scopes and the caller's roles grant them now (`rbac.Authorize`). Tokens may be narrowed to fewer scopes at login.\n\n")
	b.WriteString("## Scopes granted by each role\n\n| role | scopes |\n|---|---|\n")
	for _, role := range rbac.Roles {
		scopes := rbac.ScopesFor([]string{role})
		s := "(none)"
		if len(scopes) > 0 {
			s = "`" + strings.Join(scopes, "`, `") + "`"
		}
		fmt.Fprintf(&b, "| %s | %s |\n", role, s)
	}
	b.WriteString("\n## Operations\n\n`public`: no credential needed. ✓ allowed, ✗ 403.\n\n| operation | method and path | scopes |")
	for _, role := range rbac.Roles {
		b.WriteString(" " + role + " |")
	}
	b.WriteString("\n|---|---|---|" + strings.Repeat("---|", len(rbac.Roles)) + "\n")
	for _, p := range patterns {
		op := ops[p]
		scopes := "—"
		if len(op.scopes) > 0 {
			scopes = "`" + strings.Join(op.scopes, "`, `") + "`"
		}
		fmt.Fprintf(&b, "| `%s` | `%s` | %s |", op.route.Operation.OperationID, p, scopes)
		for _, role := range rbac.Roles {
			cell := "public"
			if op.secured {
				pr := principal.Principal{Roles: []string{role}, Scopes: rbac.ScopesFor([]string{role})}
				cell = "✗"
				if rbac.Authorize(pr, op.scopes).Allowed {
					cell = "✓"
				}
			}
			b.WriteString(" " + cell + " |")
		}
		b.WriteString("\n")
	}
	return b.String(), nil
}
