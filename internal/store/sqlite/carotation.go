// Root rotation of the built-in CA (identity.Store): the activates_at and retires_at columns of
// identity_authorities (migration 00018), and the removal of retired authorities.

package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
)

// rotationTimes reads the nullable activates_at and retires_at of an authority.
func rotationTimes(activates, retires sql.NullString) (activatesAt, retiresAt time.Time, err error) {
	if activates.Valid {
		if activatesAt, err = parseTime(activates.String); err != nil {
			return time.Time{}, time.Time{}, fmt.Errorf("activates_at: %w", err)
		}
	}
	if retires.Valid {
		if retiresAt, err = parseTime(retires.String); err != nil {
			return time.Time{}, time.Time{}, fmt.Errorf("retires_at: %w", err)
		}
	}
	return activatesAt, retiresAt, nil
}

// placeholders returns "?, ?, …" for n arguments.
func placeholders(n int) string { return strings.TrimSuffix(strings.Repeat("?, ", n), ", ") }

// RetireCAAuthorities sets retires_at on the listed authorities that have none.
func (s *Store) RetireCAAuthorities(ctx context.Context, trustDomain string, ids []string, at time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	args := []any{formatTime(at), trustDomain}
	for _, id := range ids {
		args = append(args, id)
	}
	if _, err := s.w(ctx).ExecContext(ctx,
		`UPDATE identity_authorities SET retires_at = ? WHERE trust_domain = ? AND retires_at IS NULL AND id IN (`+placeholders(len(ids))+`)`,
		args...); err != nil {
		return fmt.Errorf("retire authorities of identity ca %s: %w", trustDomain, err)
	}
	return nil
}

// RemoveCAAuthorities moves the sequence from prevSeq to prevSeq+1 and deletes the listed
// authorities, intermediates first (they reference their root): an errs.Conflict when the
// sequence moved. The caller's transaction makes it one change.
func (s *Store) RemoveCAAuthorities(ctx context.Context, trustDomain string, prevSeq int64, ids []string, at time.Time) error {
	what := fmt.Sprintf("remove authorities of identity ca %s", trustDomain)
	res, err := s.w(ctx).ExecContext(ctx,
		`UPDATE identity_cas SET sequence = sequence + 1, updated_at = ? WHERE trust_domain = ? AND sequence = ?`,
		formatTime(at), trustDomain, prevSeq)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	} else if n == 0 {
		return errs.New(errs.Conflict, "identity ca %s changed since sequence %d", trustDomain, prevSeq)
	}
	if len(ids) == 0 {
		return nil
	}
	args := []any{trustDomain}
	for _, id := range ids {
		args = append(args, id)
	}
	for _, kind := range []string{"intermediate", "root"} {
		if _, err := s.w(ctx).ExecContext(ctx,
			`DELETE FROM identity_authorities WHERE kind = '`+kind+`' AND trust_domain = ? AND id IN (`+placeholders(len(ids))+`)`,
			args...); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	return nil
}
