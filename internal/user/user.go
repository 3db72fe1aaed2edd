// Package user holds the kernel's human principals (operators who log in with a password) and the
// small store interface they need. Adapters under internal/store implement Store; internal/auth
// uses it for logins and the bootstrap administrator. user imports only errs.
package user

import (
	"context"
	"time"
)

// Roles. Issue-level RBAC builds on these names; they are stable strings stored in the database.
const (
	RoleSuperAdmin = "SUPER_ADMIN"
	RoleAdmin      = "ADMIN"
	RoleOperator   = "OPERATOR"
	RoleViewer     = "VIEWER"
)

// BootstrapAdmin is the username of the SUPER_ADMIN created at first start.
const BootstrapAdmin = "admin"

// User is a human principal. PasswordHash is a bcrypt hash; the password itself is never stored.
// TenantID is empty for principals above tenants (SUPER_ADMIN).
type User struct {
	ID           string // "usr_" + ULID
	Username     string
	PasswordHash []byte
	Roles        []string
	TenantID     string
	CreatedAt    time.Time // UTC
	UpdatedAt    time.Time // UTC
}

// Store persists users.
type Store interface {
	// CreateUser inserts u; an existing username is an errs.Conflict.
	CreateUser(ctx context.Context, u User) error
	// UserByUsername returns the user, or an errs.NotFound.
	UserByUsername(ctx context.Context, username string) (User, error)
}
