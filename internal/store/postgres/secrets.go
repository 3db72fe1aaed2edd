// Rotation of the kernel's secrets (internal/apikey re-digests and pepper counts, internal/sealbox
// rewraps): queries over api_keys (00005), request_keys (00011), identity_authorities (00016) and
// signing_keys (00020, sealed_key).
//
// Sealed values are listed per table through its primary key, so a rewrap pages through each
// table by index. SealedUse reads only the header of each value (what names its KEK) and lets
// sealbox.Version decode it, so this file knows nothing of the sealed format. A rewrap replaces
// identity_authorities.sealed_key in place: the only change ever made to an authority's row, and
// one that leaves its certificate and its plaintext key as they were. Re-digests of one batch
// run in one transaction in ascending key ID order, the order TouchAPIKeys locks in, so
// concurrent batches of several replicas wait on one another instead of deadlocking.

package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/sealbox"
)

var (
	_ apikey.RedigestStore  = (*Store)(nil)
	_ apikey.PepperUseStore = (*Store)(nil)
	_ sealbox.Store         = (*Store)(nil)
)

// apiKeyPepperUseQuery counts digests per pepper version at $1. A key is live while not revoked
// (revoked_at > now) and not expired (expires_at > now); its previous secret verifies while the
// key is live and prev_valid_until > now.
const apiKeyPepperUseQuery = `WITH k AS (
		SELECT pepper_version, prev_pepper_version, prev_hash IS NOT NULL AS has_prev,
		       coalesce(prev_valid_until > $1, false) AS in_grace,
		       (revoked_at IS NULL OR revoked_at > $1) AND (expires_at IS NULL OR expires_at > $1) AS live
		FROM api_keys
	), d AS (
		SELECT pepper_version AS version, live::int AS keys, 0 AS prev, (NOT live)::int AS inactive FROM k
		UNION ALL
		SELECT prev_pepper_version, 0, (live AND in_grace)::int, (NOT (live AND in_grace))::int FROM k WHERE has_prev
	)
	SELECT version, sum(keys)::bigint, sum(prev)::bigint, sum(inactive)::bigint FROM d GROUP BY version`

// APIKeyPepperUse counts the stored digests per pepper version at now.
func (s *Store) APIKeyPepperUse(ctx context.Context, now time.Time) ([]apikey.PepperUse, error) {
	rows, err := s.q(ctx).Query(ctx, apiKeyPepperUseQuery, now)
	if err != nil {
		return nil, fmt.Errorf("count api keys by pepper: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (apikey.PepperUse, error) {
		var u apikey.PepperUse
		err := row.Scan(&u.Version, &u.Keys, &u.PreviousSecrets, &u.Inactive)
		return u, err
	})
	if err != nil {
		return nil, fmt.Errorf("count api keys by pepper: %w", err)
	}
	return out, nil
}

// APIKeysUsingPepper returns the IDs of live keys with a digest of version that verifies at now.
func (s *Store) APIKeysUsingPepper(ctx context.Context, version string, now time.Time, limit int) ([]string, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT id FROM api_keys
		WHERE (revoked_at IS NULL OR revoked_at > $1) AND (expires_at IS NULL OR expires_at > $1)
		  AND (pepper_version = $2 OR (prev_hash IS NOT NULL AND prev_pepper_version = $2 AND prev_valid_until > $1))
		ORDER BY id LIMIT $3`, now, version, limit)
	if err != nil {
		return nil, fmt.Errorf("list api keys of pepper %s: %w", version, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list api keys of pepper %s: %w", version, err)
	}
	return ids, nil
}

// RedigestAPIKeys replaces each digest that still equals its Expect, in one transaction (the
// caller's, or its own).
func (s *Store) RedigestAPIKeys(ctx context.Context, rs []apikey.Redigest) (int, error) {
	n := 0
	err := s.InTx(ctx, func(ctx context.Context) error {
		n = 0
		for _, r := range rs {
			q := `UPDATE api_keys SET hash = $1, pepper_version = $2 WHERE id = $3 AND hash = $4`
			if r.Previous {
				q = `UPDATE api_keys SET prev_hash = $1, prev_pepper_version = $2 WHERE id = $3 AND prev_hash = $4`
			}
			tag, err := s.q(ctx).Exec(ctx, q, r.Hash, r.PepperVersion, r.ID, r.Expect)
			if err != nil {
				return fmt.Errorf("re-digest api key %s: %w", r.ID, err)
			}
			n += int(tag.RowsAffected())
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// sealedTables are the tables holding sealed values, in Ref order (by kind).
var sealedTables = []struct {
	kind                     string
	table, current, previous string // previous "" when the table keeps no previous value
}{
	{sealbox.KindCAKey, "identity_authorities", "sealed_key", ""},
	{sealbox.KindRequestKey, "request_keys", "sealed_secret", "prev_sealed_secret"},
	{sealbox.KindSigningKey, "signing_keys", "sealed_key", ""},
}

// SealedValues returns at most limit sealed values after after, in Ref order, reading each table
// by primary key (byte order: the IDs collate "C") from after's ID on.
func (s *Store) SealedValues(ctx context.Context, after sealbox.Ref, limit int) ([]sealbox.Sealed, error) {
	var out []sealbox.Sealed
	for _, t := range sealedTables {
		if len(out) >= limit {
			break
		}
		if t.kind < after.Kind {
			continue
		}
		from := ""
		if t.kind == after.Kind {
			from = after.ID
		}
		prev := "NULL::bytea"
		if t.previous != "" {
			prev = t.previous
		}
		rows, err := s.q(ctx).Query(ctx, `SELECT id, `+t.current+`, `+prev+` FROM `+t.table+`
			WHERE id >= $1 AND (`+t.current+` IS NOT NULL OR `+prev+` IS NOT NULL) ORDER BY id LIMIT $2`, from, limit+1)
		if err != nil {
			return nil, fmt.Errorf("list sealed values of %s: %w", t.table, err)
		}
		type row struct {
			id        string
			cur, prev []byte
		}
		got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
			var x row
			err := r.Scan(&x.id, &x.cur, &x.prev)
			return x, err
		})
		if err != nil {
			return nil, fmt.Errorf("list sealed values of %s: %w", t.table, err)
		}
		for _, x := range got {
			for _, v := range []sealbox.Sealed{
				{Ref: sealbox.Ref{Kind: t.kind, ID: x.id, Slot: sealbox.SlotCurrent}, Value: x.cur},
				{Ref: sealbox.Ref{Kind: t.kind, ID: x.id, Slot: sealbox.SlotPrevious}, Value: x.prev},
			} {
				if v.Value != nil && v.Compare(after) > 0 && len(out) < limit {
					out = append(out, v)
				}
			}
		}
	}
	return out, nil
}

// ReplaceSealed writes value over the value s names while it still holds s.Value.
func (s *Store) ReplaceSealed(ctx context.Context, v sealbox.Sealed, value []byte) (bool, error) {
	var col, table string
	for _, t := range sealedTables {
		if t.kind != v.Kind {
			continue
		}
		table = t.table
		switch v.Slot {
		case sealbox.SlotCurrent:
			col = t.current
		case sealbox.SlotPrevious:
			col = t.previous
		}
	}
	if col == "" {
		return false, fmt.Errorf("replace sealed value %s: no such kind and slot", v.Ref)
	}
	tag, err := s.q(ctx).Exec(ctx, `UPDATE `+table+` SET `+col+` = $1 WHERE id = $2 AND `+col+` = $3`, value, v.ID, v.Value)
	if err != nil {
		return false, fmt.Errorf("replace sealed value %s: %w", v.Ref, err)
	}
	return tag.RowsAffected() == 1, nil
}

// sealedHeaderLen covers the header of any sealed value: format, length and a version of at
// most sealbox.MaxVersionLen bytes.
const sealedHeaderLen = 2 + sealbox.MaxVersionLen

// SealedUse counts the sealed values by kind and the KEK version their header names.
func (s *Store) SealedUse(ctx context.Context) ([]sealbox.Use, error) {
	counts := map[[2]string]int64{}
	for _, t := range sealedTables {
		cols := []string{t.current}
		if t.previous != "" {
			cols = append(cols, t.previous)
		}
		for _, col := range cols {
			rows, err := s.q(ctx).Query(ctx, `SELECT substring(`+col+` from 1 for $1) FROM `+t.table+` WHERE `+col+` IS NOT NULL`, sealedHeaderLen)
			if err != nil {
				return nil, fmt.Errorf("count sealed values of %s: %w", t.table, err)
			}
			var head []byte
			_, err = pgx.ForEachRow(rows, []any{&head}, func() error {
				version, _ := sealbox.Version(head)
				counts[[2]string{t.kind, version}]++
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("count sealed values of %s: %w", t.table, err)
			}
		}
	}
	out := make([]sealbox.Use, 0, len(counts))
	for k, n := range counts {
		out = append(out, sealbox.Use{Kind: k[0], Version: k[1], Count: n})
	}
	return out, nil
}
