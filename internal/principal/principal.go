// Package principal is the authenticated caller as the rest of the kernel sees it, carried in a
// context.Context. The HTTP perimeter puts it there after verifying credentials; handlers and
// domains read it with FromContext. principal imports nothing of the project.
package principal

import (
	"context"
	"slices"
	"time"
)

// Principal is who made a request and what the credential allows.
type Principal struct {
	Subject   string    // user or agent ID ("usr_…", "agt_…")
	Tenant    string    // "" for principals above tenants (SUPER_ADMIN)
	Roles     []string  // RBAC roles
	Scopes    []string  // granted scopes; an operation needing a scope absent here is forbidden
	TokenID   string    // jti of the token, for audit
	ExpiresAt time.Time // UTC
}

// HasScopes reports whether p was granted every scope in required.
func (p Principal) HasScopes(required ...string) bool {
	for _, s := range required {
		if !slices.Contains(p.Scopes, s) {
			return false
		}
	}
	return true
}

type ctxKey struct{}

// NewContext returns ctx carrying p.
func NewContext(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the principal in ctx and whether there is one.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(ctxKey{}).(Principal)
	return p, ok
}
