// Feature flags (flags.Store), table feature_flags of migration 00019.
//
// variants and rules are JSON arrays. A create is an insert ON CONFLICT DO NOTHING, so a flag
// that exists is a lost race the caller may retry inside its transaction; other writes are
// compare-and-set on revision.

package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/flags"
)

var _ flags.Store = (*Store)(nil)

const flagColumns = `key, type, description, variants, default_variant, enabled, rules, created_at, updated_at, revision`

// Flag returns the flag of key, or an errs.NotFound.
func (s *Store) Flag(ctx context.Context, key string) (flags.Flag, error) {
	f, err := scanFlag(s.r(ctx).QueryRowContext(ctx, `SELECT `+flagColumns+` FROM feature_flags WHERE key = ?`, key))
	if errors.Is(err, sql.ErrNoRows) {
		return flags.Flag{}, errs.New(errs.NotFound, "flag %s not found", key)
	}
	if err != nil {
		return flags.Flag{}, fmt.Errorf("get flag %s: %w", key, err)
	}
	return f, nil
}

// ListFlags returns at most limit flags with a key greater than after, in byte order of key.
func (s *Store) ListFlags(ctx context.Context, after string, limit int) ([]flags.Flag, error) {
	rows, err := s.r(ctx).QueryContext(ctx, `SELECT `+flagColumns+` FROM feature_flags WHERE key > ? ORDER BY key LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("list flags: %w", err)
	}
	defer rows.Close()
	var out []flags.Flag
	for rows.Next() {
		f, err := scanFlag(rows)
		if err != nil {
			return nil, fmt.Errorf("list flags: %w", err)
		}
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list flags: %w", err)
	}
	return out, nil
}

// CreateFlag inserts f: an errs.Conflict wrapping flags.ErrRevisionConflict when it exists.
func (s *Store) CreateFlag(ctx context.Context, f flags.Flag) error {
	variants, rules, err := flagJSON(f)
	if err != nil {
		return fmt.Errorf("create flag %s: %w", f.Key, err)
	}
	res, err := s.w(ctx).ExecContext(ctx,
		`INSERT INTO feature_flags (`+flagColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING`,
		f.Key, string(f.Type), f.Description, variants, f.DefaultVariant, f.Enabled, rules,
		formatTime(f.CreatedAt), formatTime(f.UpdatedAt), f.Revision)
	if err != nil {
		return fmt.Errorf("create flag %s: %w", f.Key, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("create flag %s: %w", f.Key, err)
	}
	if n == 0 {
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
	res, err := s.w(ctx).ExecContext(ctx,
		`UPDATE feature_flags SET type = ?, description = ?, variants = ?, default_variant = ?, enabled = ?, rules = ?,
		 updated_at = ?, revision = ? WHERE key = ? AND revision = ?`,
		string(f.Type), f.Description, variants, f.DefaultVariant, f.Enabled, rules, formatTime(f.UpdatedAt), f.Revision,
		f.Key, prevRevision)
	if err != nil {
		return fmt.Errorf("update flag %s: %w", f.Key, err)
	}
	return s.flagWritten(ctx, res, f.Key, prevRevision)
}

// DeleteFlag deletes the flag where the stored revision is revision.
func (s *Store) DeleteFlag(ctx context.Context, key string, revision int64) error {
	res, err := s.w(ctx).ExecContext(ctx, `DELETE FROM feature_flags WHERE key = ? AND revision = ?`, key, revision)
	if err != nil {
		return fmt.Errorf("delete flag %s: %w", key, err)
	}
	return s.flagWritten(ctx, res, key, revision)
}

func (s *Store) flagWritten(ctx context.Context, res sql.Result, key string, revision int64) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("write flag %s: %w", key, err)
	}
	if n == 1 {
		return nil
	}
	exists, err := s.rowExists(ctx, `SELECT 1 FROM feature_flags WHERE key = ?`, key)
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

func scanFlag(row rowScanner) (flags.Flag, error) {
	var (
		f                    flags.Flag
		typ                  string
		variants, rules      string
		createdAt, updatedAt string
	)
	if err := row.Scan(&f.Key, &typ, &f.Description, &variants, &f.DefaultVariant, &f.Enabled, &rules, &createdAt, &updatedAt, &f.Revision); err != nil {
		return flags.Flag{}, err
	}
	f.Type = flags.Type(typ)
	if err := json.Unmarshal([]byte(variants), &f.Variants); err != nil {
		return flags.Flag{}, fmt.Errorf("flag %s variants: %w", f.Key, err)
	}
	if err := json.Unmarshal([]byte(rules), &f.Rules); err != nil {
		return flags.Flag{}, fmt.Errorf("flag %s rules: %w", f.Key, err)
	}
	if len(f.Rules) == 0 {
		f.Rules = nil
	}
	var err error
	if f.CreatedAt, err = parseTime(createdAt); err != nil {
		return flags.Flag{}, fmt.Errorf("flag %s created_at: %w", f.Key, err)
	}
	if f.UpdatedAt, err = parseTime(updatedAt); err != nil {
		return flags.Flag{}, fmt.Errorf("flag %s updated_at: %w", f.Key, err)
	}
	return f, nil
}
