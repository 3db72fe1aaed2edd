// Leases (relay.LeaseStore), table leases of migration 00009.
//
// AcquireLease is one INSERT … ON CONFLICT DO UPDATE whose update applies only when the lease is
// the caller's or has expired; RETURNING yields a row only when the insert or the update
// happened. PostgreSQL makes the upsert atomic: of two callers racing for a free lease one
// inserts, the other waits on its uncommitted row and then evaluates the condition against the
// committed row (another holder, not expired), so it gets no row back. Expiry compares the
// callers' own clocks (now), so replicas' clocks must agree to well within the relay's safety
// margin (see internal/relay).

package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nops-kernel/nops/internal/relay"
)

var _ relay.LeaseStore = (*Store)(nil)

// acquireLeaseQuery takes (name, holder, expires_at, now).
const acquireLeaseQuery = `INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
	ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
	WHERE leases.holder = excluded.holder OR leases.expires_at < $4
	RETURNING holder`

// AcquireLease takes the lease name for holder until now+ttl when it is free, expired or already
// holder's (renewing it), and reports whether holder has it.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration, now time.Time) (bool, error) {
	if err := relay.CheckLease(name, holder, ttl); err != nil {
		return false, fmt.Errorf("acquire lease %s: %w", name, err)
	}
	var got string
	err := s.q(ctx).QueryRow(ctx, acquireLeaseQuery, name, holder, now.Add(ttl), now).Scan(&got)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("acquire lease %s: %w", name, err)
	}
	return got == holder, nil
}

// ReleaseLease deletes the lease name if holder has it.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	if _, err := s.q(ctx).Exec(ctx, `DELETE FROM leases WHERE name = $1 AND holder = $2`, name, holder); err != nil {
		return fmt.Errorf("release lease %s: %w", name, err)
	}
	return nil
}
