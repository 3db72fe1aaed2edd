// Root rotation of the built-in CA (identity.Store): the activates_at and retires_at columns of
// identity_authorities (migration 00018), and the removal of retired authorities.

package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
)

// RetireCAAuthorities sets retires_at on the listed authorities that have none.
func (s *Store) RetireCAAuthorities(ctx context.Context, trustDomain string, ids []string, at time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	if _, err := s.q(ctx).Exec(ctx,
		`UPDATE identity_authorities SET retires_at = $1 WHERE trust_domain = $2 AND retires_at IS NULL AND id = ANY($3)`,
		at, trustDomain, ids); err != nil {
		return fmt.Errorf("retire authorities of identity ca %s: %w", trustDomain, err)
	}
	return nil
}

// RemoveCAAuthorities moves the sequence from prevSeq to prevSeq+1 and deletes the listed
// authorities, intermediates first (they reference their root): an errs.Conflict when the
// sequence moved. The caller's transaction makes it one change.
func (s *Store) RemoveCAAuthorities(ctx context.Context, trustDomain string, prevSeq int64, ids []string, at time.Time) error {
	what := fmt.Sprintf("remove authorities of identity ca %s", trustDomain)
	tag, err := s.q(ctx).Exec(ctx,
		`UPDATE identity_cas SET sequence = sequence + 1, updated_at = $1 WHERE trust_domain = $2 AND sequence = $3`,
		at, trustDomain, prevSeq)
	switch {
	case err != nil:
		return fmt.Errorf("%s: %w", what, err)
	case tag.RowsAffected() == 0:
		return errs.New(errs.Conflict, "identity ca %s changed since sequence %d", trustDomain, prevSeq)
	}
	for _, kind := range []string{"intermediate", "root"} {
		if _, err := s.q(ctx).Exec(ctx,
			`DELETE FROM identity_authorities WHERE kind = $1 AND trust_domain = $2 AND id = ANY($3)`, kind, trustDomain, ids); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	return nil
}
