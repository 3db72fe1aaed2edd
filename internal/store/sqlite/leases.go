// Leases (relay.LeaseStore), table leases of migration 00009.
//
// AcquireLease is one upsert whose DO UPDATE applies only when the lease is the caller's or has
// expired, and RETURNING yields a row only when the insert or the update happened. SQLite runs
// the statement under the database's write lock, so of several callers — connections of this
// process, which share the one writer connection, or other processes on the same file, which wait
// for the lock up to the busy timeout — exactly one finds the lease free and takes it; the others
// see its row and, the condition false, get no row back.

package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/nops-kernel/nops/internal/relay"
)

var _ relay.LeaseStore = (*Store)(nil)

// acquireLeaseQuery takes (name, holder, expires_at, now). Times are fixed-width UTC text, so <
// on the text is time order.
const acquireLeaseQuery = `INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)
	ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
	WHERE leases.holder = excluded.holder OR leases.expires_at < ?
	RETURNING holder`

// AcquireLease takes the lease name for holder until now+ttl when it is free, expired or already
// holder's (renewing it), and reports whether holder has it.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration, now time.Time) (bool, error) {
	if err := relay.CheckLease(name, holder, ttl); err != nil {
		return false, fmt.Errorf("acquire lease %s: %w", name, err)
	}
	var got string
	err := s.w(ctx).QueryRowContext(ctx, acquireLeaseQuery, name, holder, formatTime(now.Add(ttl)), formatTime(now)).Scan(&got)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("acquire lease %s: %w", name, err)
	}
	return got == holder, nil
}

// ReleaseLease deletes the lease name if holder has it.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	if _, err := s.w(ctx).ExecContext(ctx, `DELETE FROM leases WHERE name = ? AND holder = ?`, name, holder); err != nil {
		return fmt.Errorf("release lease %s: %w", name, err)
	}
	return nil
}
