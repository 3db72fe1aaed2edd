package relay

import (
	"context"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
)

// DefaultLeaseName is the name of the relay's lease row.
const DefaultLeaseName = "outbox-relay"

// LeaseStore keeps named, expiring leases in the database all replicas share; the storage
// adapters implement it (table leases).
type LeaseStore interface {
	// AcquireLease takes the lease name for holder until now+ttl, and reports whether holder
	// now has it. It succeeds when the lease is free, expired (its expiry before now) or
	// already holder's, which renews it; it fails (false, nil) while another holder's lease
	// runs. It is one atomic statement: of several holders racing for a free lease exactly one
	// wins. Invalid arguments (CheckLease) are an errs.Invalid.
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration, now time.Time) (bool, error)
	// ReleaseLease frees the lease if holder has it, so another holder can take it at once;
	// otherwise it does nothing.
	ReleaseLease(ctx context.Context, name, holder string) error
}

// Bounds of lease names and holders.
const (
	MaxLeaseName   = 128
	MaxLeaseHolder = 256
)

// CheckLease validates AcquireLease's arguments; adapters call it.
func CheckLease(name, holder string, ttl time.Duration) error {
	switch {
	case name == "" || len(name) > MaxLeaseName:
		return errs.Field("name", "must be 1 to 128 bytes")
	case holder == "" || len(holder) > MaxLeaseHolder:
		return errs.Field("holder", "must be 1 to 256 bytes")
	case ttl <= 0:
		return errs.Field("ttl", "must be positive")
	}
	return nil
}
