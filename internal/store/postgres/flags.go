// Feature flags (flags.Store), table feature_flags of migration 00019.
//
// variants and rules are jsonb arrays. A create is an insert ON CONFLICT DO NOTHING: a unique
// violation would abort the caller's transaction, while a flag that exists is a lost race the
// caller may retry inside it. Other writes are compare-and-set on revision.

package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/flags"
)

var _ flags.Store = (*Store)(nil)

const flagColumns = `key, type, description, variants, default_variant, enabled, rules, created_at, updated_at, revision`

// Flag returns the flag of key, or an errs.NotFound.
func (s *Store) Flag(ctx context.Context, key string) (flags.Flag, error) {
	f, err := scanFlag(s.q(ctx).QueryRow(ctx, `SELECT `+flagColumns+` FROM feature_flags WHERE key = $1`, key))
	if errors.Is(err, pgx.ErrNoRows) {
		return flags.Flag{}, errs.New(errs.NotFound, "flag %s not found", key)
	}
	if err != nil {
		return flags.Flag{}, fmt.Errorf("get flag %s: %w", key, err)
	}
	return f, nil
}

// ListFlags returns at most limit flags with a key greater than after, in byte order of key.
func (s *Store) ListFlags(ctx context.Context, after string, limit int) ([]flags.Flag, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT `+flagColumns+` FROM feature_flags WHERE key > $1 ORDER BY key LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("list flags: %w", err)
	}
	fs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (flags.Flag, error) { return scanFlag(row) })
	if err != nil {
		return nil, fmt.Errorf("list flags: %w", err)
	}
	if len(fs) == 0 {
		return nil, nil
	}
	return fs, nil
}

// CreateFlag inserts f: an errs.Conflict wrapping flags.ErrRevisionConflict when it exists.
func (s *Store) CreateFlag(ctx context.Context, f flags.Flag) error {
	variants, rules, err := flagJSON(f)
	if err != nil {
		return fmt.Errorf("create flag %s: %w", f.Key, err)
	}
	tag, err := s.q(ctx).Exec(ctx,
		`INSERT INTO feature_flags (`+flagColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (key) DO NOTHING`,
		f.Key, string(f.Type), f.Description, variants, f.DefaultVariant, f.Enabled, rules, f.CreatedAt, f.UpdatedAt, f.Revision)
	switch {
	case err != nil:
		return fmt.Errorf("create flag %s: %w", f.Key, err)
	case tag.RowsAffected() == 0:
		return errs.Wrap(errs.Conflict, flags.ErrRevisionConflict, "flag %s already exists", f.Key)
	}
	return nil
}

// UpdateFlag writes f's mutable fields where the stored revision is prevRevision.
func (s *Store) UpdateFlag(ctx context.Context, f flags.Flag, prevRevision int64) error {
	variants, rules, err := flagJSON(f)
	if err != nil {
		return fmt.Errorf("update flag %s: %w", f.Key, err)
	}
	tag, err := s.q(ctx).Exec(ctx,
		`UPDATE feature_flags SET type = $1, description = $2, variants = $3, default_variant = $4, enabled = $5, rules = $6,
		 updated_at = $7, revision = $8 WHERE key = $9 AND revision = $10`,
		string(f.Type), f.Description, variants, f.DefaultVariant, f.Enabled, rules, f.UpdatedAt, f.Revision, f.Key, prevRevision)
	if err != nil {
		return fmt.Errorf("update flag %s: %w", f.Key, err)
	}
	return s.flagWritten(ctx, tag, f.Key, prevRevision)
}

// DeleteFlag deletes the flag where the stored revision is revision.
func (s *Store) DeleteFlag(ctx context.Context, key string, revision int64) error {
	tag, err := s.q(ctx).Exec(ctx, `DELETE FROM feature_flags WHERE key = $1 AND revision = $2`, key, revision)
	if err != nil {
		return fmt.Errorf("delete flag %s: %w", key, err)
	}
	return s.flagWritten(ctx, tag, key, revision)
}

func (s *Store) flagWritten(ctx context.Context, tag pgconn.CommandTag, key string, revision int64) error {
	if tag.RowsAffected() == 1 {
		return nil
	}
	exists, err := s.rowExists(ctx, `SELECT 1 FROM feature_flags WHERE key = $1`, key)
	if err != nil {
		return fmt.Errorf("write flag %s: %w", key, err)
	}
	if !exists {
		return errs.New(errs.NotFound, "flag %s not found", key)
	}
	return errs.Wrap(errs.Conflict, flags.ErrRevisionConflict, "flag %s changed since revision %d", key, revision)
}

// flagJSON encodes f's variants and rules; never null, so the CHECK on arrays holds.
func flagJSON(f flags.Flag) (variants, rules string, err error) {
	vs, rs := f.Variants, f.Rules
	if vs == nil {
		vs = []string{}
	}
	if rs == nil {
		rs = []flags.Rule{}
	}
	v, err := json.Marshal(vs)
	if err != nil {
		return "", "", fmt.Errorf("encode variants: %w", err)
	}
	r, err := json.Marshal(rs)
	if err != nil {
		return "", "", fmt.Errorf("encode rules: %w", err)
	}
	return string(v), string(r), nil
}

func scanFlag(row pgx.Row) (flags.Flag, error) {
	var (
		f               flags.Flag
		typ             string
		variants, rules []byte
	)
	if err := row.Scan(&f.Key, &typ, &f.Description, &variants, &f.DefaultVariant, &f.Enabled, &rules, &f.CreatedAt, &f.UpdatedAt, &f.Revision); err != nil {
		return flags.Flag{}, err
	}
	f.Type = flags.Type(typ)
	if err := json.Unmarshal(variants, &f.Variants); err != nil {
		return flags.Flag{}, fmt.Errorf("flag %s variants: %w", f.Key, err)
	}
	if err := json.Unmarshal(rules, &f.Rules); err != nil {
		return flags.Flag{}, fmt.Errorf("flag %s rules: %w", f.Key, err)
	}
	if len(f.Rules) == 0 {
		f.Rules = nil
	}
	f.CreatedAt, f.UpdatedAt = f.CreatedAt.UTC(), f.UpdatedAt.UTC()
	return f, nil
}
