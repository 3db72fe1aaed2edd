package events

import (
	"regexp"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
)

// KernelTenant is the tenant attribute of events about global kernel objects (feature flags).
// It is no tenant id (those start "ten_"), so no tenant's filtered subscription receives them,
// while every replica's kernel-wide consumer does.
const KernelTenant = "kernel"

// The changes a nops.flag.changed.v1 event reports.
const (
	FlagCreated = "created"
	FlagUpdated = "updated"
	FlagDeleted = "deleted"
)

var flagKeyPattern = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,127}$`)

// FlagSubject returns the subject of a flag's events: "flags/<key>".
func FlagSubject(key string) string { return "flags/" + key }

// FlagChanged is the data of nops.flag.changed.v1: a feature flag was created, updated or
// deleted. It names the flag and its revision only: replicas reload the flag from the database,
// which stays the one source of truth, and rules (which may name tenants) stay off the bus.
type FlagChanged struct {
	Key       string    `json:"key"`
	Change    string    `json:"change"`   // FlagCreated, FlagUpdated or FlagDeleted
	Revision  int64     `json:"revision"` // after the change; the last one for a deletion
	ChangedAt time.Time `json:"changed_at"`
}

// EventType implements Payload.
func (FlagChanged) EventType() Type { return TypeFlagChanged }

// EventTenant implements Payload.
func (FlagChanged) EventTenant() string { return KernelTenant }

// EventSubject implements Payload.
func (p FlagChanged) EventSubject() string { return FlagSubject(p.Key) }

// Validate implements Payload.
func (p FlagChanged) Validate() error {
	switch {
	case !flagKeyPattern.MatchString(p.Key):
		return errs.Field("data.key", "must be a flag key")
	case p.Change != FlagCreated && p.Change != FlagUpdated && p.Change != FlagDeleted:
		return errs.Field("data.change", "must be created, updated or deleted")
	case p.Revision < 1:
		return errs.Field("data.revision", "must be at least 1")
	}
	return checkTime("data.changed_at", p.ChangedAt)
}
