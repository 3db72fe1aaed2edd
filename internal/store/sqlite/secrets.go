// Rotation of the kernel's secrets (internal/apikey re-digests and pepper counts, internal/sealbox
// rewraps): queries over api_keys (00005), request_keys (00011), identity_authorities (00016) and
// signing_keys (00020, sealed_key).
//
// Sealed values are listed per table through its primary key, so a rewrap pages through each
// table by index. SealedUse reads only the header of each value (what names its KEK) and lets
// sealbox.Version decode it, so this file knows nothing of the sealed format. A rewrap replaces
// identity_authorities.sealed_key in place: the only change ever made to an authority's row, and
// one that leaves its certificate and its plaintext key as they were.

package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/sealbox"
)

var (
	_ apikey.RedigestStore  = (*Store)(nil)
	_ apikey.PepperUseStore = (*Store)(nil)
	_ sealbox.Store         = (*Store)(nil)
)

// apiKeyPepperUseQuery counts digests per pepper version; its parameters are now four times.
// A key is live while not revoked (revoked_at > now) and not expired (expires_at > now); its
// previous secret verifies while the key is live and prev_valid_until > now. Times are text of
// one fixed width, so text order is time order.
const apiKeyPepperUseQuery = `WITH k AS (
		SELECT pepper_version, prev_pepper_version, prev_hash IS NOT NULL AS has_prev, prev_valid_until,
		       (revoked_at IS NULL OR revoked_at > ?1) AND (expires_at IS NULL OR expires_at > ?1) AS live
		FROM api_keys
	), d AS (
		SELECT pepper_version AS version, live AS keys, 0 AS prev, NOT live AS inactive FROM k
		UNION ALL
		SELECT prev_pepper_version, 0, live AND coalesce(prev_valid_until > ?1, 0), NOT (live AND coalesce(prev_valid_until > ?1, 0))
		FROM k WHERE has_prev
	)
	SELECT version, sum(keys), sum(prev), sum(inactive) FROM d GROUP BY version`

// APIKeyPepperUse counts the stored digests per pepper version at now.
func (s *Store) APIKeyPepperUse(ctx context.Context, now time.Time) ([]apikey.PepperUse, error) {
	rows, err := s.r(ctx).QueryContext(ctx, apiKeyPepperUseQuery, formatTime(now))
	if err != nil {
		return nil, fmt.Errorf("count api keys by pepper: %w", err)
	}
	defer rows.Close()
	var out []apikey.PepperUse
	for rows.Next() {
		var u apikey.PepperUse
		if err := rows.Scan(&u.Version, &u.Keys, &u.PreviousSecrets, &u.Inactive); err != nil {
			return nil, fmt.Errorf("count api keys by pepper: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count api keys by pepper: %w", err)
	}
	return out, nil
}

// APIKeysUsingPepper returns the IDs of live keys with a digest of version that verifies at now.
func (s *Store) APIKeysUsingPepper(ctx context.Context, version string, now time.Time, limit int) ([]string, error) {
	rows, err := s.r(ctx).QueryContext(ctx, `SELECT id FROM api_keys
		WHERE (revoked_at IS NULL OR revoked_at > ?1) AND (expires_at IS NULL OR expires_at > ?1)
		  AND (pepper_version = ?2 OR (prev_hash IS NOT NULL AND prev_pepper_version = ?2 AND prev_valid_until > ?1))
		ORDER BY id LIMIT ?3`, formatTime(now), version, limit)
	if err != nil {
		return nil, fmt.Errorf("list api keys of pepper %s: %w", version, err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("list api keys of pepper %s: %w", version, err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list api keys of pepper %s: %w", version, err)
	}
	return ids, nil
}

// RedigestAPIKeys replaces each digest that still equals its Expect, in one transaction (the
// caller's, or its own: one commit for the batch).
func (s *Store) RedigestAPIKeys(ctx context.Context, rs []apikey.Redigest) (int, error) {
	n := 0
	err := s.InTx(ctx, func(ctx context.Context) error {
		n = 0
		for _, r := range rs {
			q := `UPDATE api_keys SET hash = ?, pepper_version = ? WHERE id = ? AND hash = ?`
			if r.Previous {
				q = `UPDATE api_keys SET prev_hash = ?, prev_pepper_version = ? WHERE id = ? AND prev_hash = ?`
			}
			res, err := s.w(ctx).ExecContext(ctx, q, r.Hash, r.PepperVersion, r.ID, r.Expect)
			if err != nil {
				return fmt.Errorf("re-digest api key %s: %w", r.ID, err)
			}
			m, err := res.RowsAffected()
			if err != nil {
				return fmt.Errorf("re-digest api key %s: %w", r.ID, err)
			}
			n += int(m)
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
// by primary key from after's ID on.
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
		prev := "NULL"
		if t.previous != "" {
			prev = t.previous
		}
		rows, err := s.r(ctx).QueryContext(ctx, `SELECT id, `+t.current+`, `+prev+` FROM `+t.table+`
			WHERE id >= ? AND (`+t.current+` IS NOT NULL OR `+prev+` IS NOT NULL) ORDER BY id LIMIT ?`, from, limit+1)
		if err != nil {
			return nil, fmt.Errorf("list sealed values of %s: %w", t.table, err)
		}
		for rows.Next() && len(out) < limit {
			var (
				id        string
				cur, prev []byte
			)
			if err := rows.Scan(&id, &cur, &prev); err != nil {
				rows.Close()
				return nil, fmt.Errorf("list sealed values of %s: %w", t.table, err)
			}
			for _, v := range []sealbox.Sealed{
				{Ref: sealbox.Ref{Kind: t.kind, ID: id, Slot: sealbox.SlotCurrent}, Value: cur},
				{Ref: sealbox.Ref{Kind: t.kind, ID: id, Slot: sealbox.SlotPrevious}, Value: prev},
			} {
				if v.Value != nil && v.Compare(after) > 0 && len(out) < limit {
					out = append(out, v)
				}
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("list sealed values of %s: %w", t.table, err)
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
	res, err := s.w(ctx).ExecContext(ctx, `UPDATE `+table+` SET `+col+` = ? WHERE id = ? AND `+col+` = ?`, value, v.ID, v.Value)
	if err != nil {
		return false, fmt.Errorf("replace sealed value %s: %w", v.Ref, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("replace sealed value %s: %w", v.Ref, err)
	}
	return n == 1, nil
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
			rows, err := s.r(ctx).QueryContext(ctx, `SELECT substr(`+col+`, 1, ?) FROM `+t.table+` WHERE `+col+` IS NOT NULL`, sealedHeaderLen)
			if err != nil {
				return nil, fmt.Errorf("count sealed values of %s: %w", t.table, err)
			}
			for rows.Next() {
				var head []byte
				if err := rows.Scan(&head); err != nil {
					rows.Close()
					return nil, fmt.Errorf("count sealed values of %s: %w", t.table, err)
				}
				version, _ := sealbox.Version(head)
				counts[[2]string{t.kind, version}]++
			}
			err = rows.Err()
			rows.Close()
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
