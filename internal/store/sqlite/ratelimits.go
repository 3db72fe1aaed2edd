// Rate-limit overrides (ratelimit.OverrideStore), table rate_limit_overrides of migration 00010.
//
// Every statement runs through s.w(ctx) or s.r(ctx), so it joins the caller's InTx transaction.
// Each method is one statement: the upsert and the delete return the row they wrote or removed.

package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/ratelimit"
)

var _ ratelimit.OverrideStore = (*Store)(nil)

const rateLimitColumns = `id, kind, target, rate_limit, period_ms, burst, created_at, updated_at`

// ListRateLimitOverrides returns every override, ordered by kind then target.
func (s *Store) ListRateLimitOverrides(ctx context.Context) ([]ratelimit.Override, error) {
	rows, err := s.r(ctx).QueryContext(ctx, `SELECT `+rateLimitColumns+` FROM rate_limit_overrides ORDER BY kind, target`)
	if err != nil {
		return nil, fmt.Errorf("list rate limit overrides: %w", err)
	}
	defer rows.Close()
	var out []ratelimit.Override
	for rows.Next() {
		o, err := scanRateLimitOverride(rows)
		if err != nil {
			return nil, fmt.Errorf("list rate limit overrides: %w", err)
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list rate limit overrides: %w", err)
	}
	return out, nil
}

// PutRateLimitOverride inserts o or updates the override of its kind and target, keeping that
// one's ID and created_at, and returns the stored row. An ID taken by another target is an
// errs.Conflict.
func (s *Store) PutRateLimitOverride(ctx context.Context, o ratelimit.Override) (ratelimit.Override, error) {
	got, err := scanRateLimitOverride(s.w(ctx).QueryRowContext(ctx,
		`INSERT INTO rate_limit_overrides (`+rateLimitColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		 ON CONFLICT (kind, target) DO UPDATE SET
		   rate_limit = excluded.rate_limit, period_ms = excluded.period_ms, burst = excluded.burst,
		   updated_at = excluded.updated_at
		 RETURNING `+rateLimitColumns,
		o.ID, string(o.Kind), o.Target, o.Limit, o.Period.Milliseconds(), o.Burst, formatTime(o.CreatedAt), formatTime(o.UpdatedAt)))
	if isUniqueViolation(err) {
		return ratelimit.Override{}, errs.Wrap(errs.Conflict, err, "rate limit override %s already exists", o.ID)
	}
	if err != nil {
		return ratelimit.Override{}, fmt.Errorf("put rate limit override %s: %w", o.ID, err)
	}
	return got, nil
}

// DeleteRateLimitOverride deletes the override and returns it, or an errs.NotFound.
func (s *Store) DeleteRateLimitOverride(ctx context.Context, id string) (ratelimit.Override, error) {
	o, err := scanRateLimitOverride(s.w(ctx).QueryRowContext(ctx,
		`DELETE FROM rate_limit_overrides WHERE id = ? RETURNING `+rateLimitColumns, id))
	if errors.Is(err, sql.ErrNoRows) {
		return ratelimit.Override{}, errs.New(errs.NotFound, "rate limit override %s not found", id)
	}
	if err != nil {
		return ratelimit.Override{}, fmt.Errorf("delete rate limit override %s: %w", id, err)
	}
	return o, nil
}

func scanRateLimitOverride(r rowScanner) (ratelimit.Override, error) {
	var (
		o                    ratelimit.Override
		kind                 string
		periodMS             int64
		createdAt, updatedAt string
	)
	if err := r.Scan(&o.ID, &kind, &o.Target, &o.Limit, &periodMS, &o.Burst, &createdAt, &updatedAt); err != nil {
		return ratelimit.Override{}, err
	}
	o.Kind, o.Period = ratelimit.OverrideKind(kind), time.Duration(periodMS)*time.Millisecond
	var err error
	if o.CreatedAt, err = parseTime(createdAt); err != nil {
		return ratelimit.Override{}, fmt.Errorf("rate limit override %s created_at: %w", o.ID, err)
	}
	if o.UpdatedAt, err = parseTime(updatedAt); err != nil {
		return ratelimit.Override{}, fmt.Errorf("rate limit override %s updated_at: %w", o.ID, err)
	}
	return o, nil
}
