package sqlite

// The audit log's storage (audit.Store), in the tables of migration 00006_audit.sql:
// audit_trees(tree, size) is each tree's head; audit_records(tree, seq, canonical, time, action,
// principal, allowed) its records, canonical being the record and the other columns copies kept
// only for AuditRecords' filters; audit_hashes(tree, idx, hash) the tlog stored hashes;
// audit_checkpoints(tree, size, hash, note, created_at) the signed tree heads.
//
// Concurrency and lock order: audit.Append reads the tree size and the frontier hashes, then
// writes the record at that size, so appends to one tree must be serialised. Run it inside InTx:
// the transaction (BEGIN IMMEDIATE on the one writer connection) holds SQLite's write lock from
// its start to its commit, which serialises every write transaction, appends included, and the
// reads it makes see its own writes. The lock is held for the whole transaction whatever the
// order of its statements; still, make the append the last write of the transaction, as the
// PostgreSQL adapter needs (there the tree's head row stays locked from the append to the commit),
// so that callers are written once for both. Outside a transaction, TreeSize reads from the
// reader pool and two appends may choose the same seq: the second fails with errs.Conflict, and
// the tree stays intact because AppendRecord writes the record, its hashes and the head in one
// transaction.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/store"
)

var _ audit.Store = (*Store)(nil)

// TreeSize returns the size kept in tree's head, 0 for a tree never written.
func (s *Store) TreeSize(ctx context.Context, tree string) (int64, error) {
	var size int64
	err := s.r(ctx).QueryRowContext(ctx, `SELECT size FROM audit_trees WHERE tree = ?`, tree).Scan(&size)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read audit tree head %s: %w", tree, err)
	}
	return size, nil
}

// readAuditHashesQuery reads the hashes of a tree (first parameter) at the indexes listed in a JSON
// array (second parameter).
const readAuditHashesQuery = `SELECT idx, hash FROM audit_hashes WHERE tree = ? AND idx IN (SELECT value FROM json_each(?))`

// ReadHashes returns the hashes of tree stored at indexes, in the order asked; a missing one is an
// errs.NotFound.
func (s *Store) ReadHashes(ctx context.Context, tree string, indexes []int64) ([]tlog.Hash, error) {
	if len(indexes) == 0 {
		return []tlog.Hash{}, nil
	}
	// The indexes travel as one JSON array, so the statement is the same whatever their number
	// (Verify asks for about two thousand at a time); SQLite looks each one up in the primary key
	// (TestAuditQueryPlans).
	list := make([]byte, 0, 2+len(indexes)*8)
	list = append(list, '[')
	for i, idx := range indexes {
		if i > 0 {
			list = append(list, ',')
		}
		list = strconv.AppendInt(list, idx, 10)
	}
	list = append(list, ']')
	rows, err := s.r(ctx).QueryContext(ctx, readAuditHashesQuery, tree, string(list))
	if err != nil {
		return nil, fmt.Errorf("read audit hashes of %s: %w", tree, err)
	}
	defer rows.Close()
	found := make(map[int64]tlog.Hash, len(indexes))
	for rows.Next() {
		var (
			idx int64
			b   []byte
		)
		if err := rows.Scan(&idx, &b); err != nil {
			return nil, fmt.Errorf("read audit hashes of %s: %w", tree, err)
		}
		if len(b) != tlog.HashSize {
			return nil, fmt.Errorf("read audit hashes of %s: hash %d has %d bytes", tree, idx, len(b))
		}
		found[idx] = tlog.Hash(b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read audit hashes of %s: %w", tree, err)
	}
	return store.OrderAuditHashes(tree, indexes, found)
}

// AppendRecord stores rec, its hashes and the new tree size rec.Seq+1 in one transaction (the
// caller's, or its own). A record or hash already stored is an errs.Conflict and writes nothing.
func (s *Store) AppendRecord(ctx context.Context, rec audit.Record, canonical []byte, hashes []tlog.Hash) error {
	if err := store.CheckAuditAppend(rec, canonical, hashes); err != nil {
		return err
	}
	return s.InTx(ctx, func(ctx context.Context) error {
		w := s.w(ctx)
		_, err := w.ExecContext(ctx,
			`INSERT INTO audit_records (tree, seq, canonical, time, action, principal, allowed)
			 VALUES (?, ?, ?, ?, ?, ?, ?)`,
			rec.Tree, rec.Seq, canonical, formatTime(rec.Time), rec.Action, rec.Actor.Principal, rec.Decision.Allowed)
		if isUniqueViolation(err) {
			return errs.Wrap(errs.Conflict, err, "audit record %s/%d already exists", rec.Tree, rec.Seq)
		}
		if err != nil {
			return fmt.Errorf("insert audit record %s/%d: %w", rec.Tree, rec.Seq, err)
		}
		var q strings.Builder
		q.WriteString(`INSERT INTO audit_hashes (tree, idx, hash) VALUES `)
		args := make([]any, 0, 3*len(hashes))
		base := tlog.StoredHashIndex(0, rec.Seq)
		for i, h := range hashes {
			if i > 0 {
				q.WriteString(", ")
			}
			q.WriteString("(?, ?, ?)")
			args = append(args, rec.Tree, base+int64(i), h[:])
		}
		_, err = w.ExecContext(ctx, q.String(), args...)
		if isUniqueViolation(err) {
			return errs.Wrap(errs.Conflict, err, "audit hashes of record %s/%d already exist", rec.Tree, rec.Seq)
		}
		if err != nil {
			return fmt.Errorf("insert audit hashes of %s/%d: %w", rec.Tree, rec.Seq, err)
		}
		_, err = w.ExecContext(ctx,
			`INSERT INTO audit_trees (tree, size) VALUES (?, ?)
			 ON CONFLICT (tree) DO UPDATE SET size = excluded.size`,
			rec.Tree, rec.Seq+1)
		if err != nil {
			return fmt.Errorf("update audit tree head %s: %w", rec.Tree, err)
		}
		return nil
	})
}

// Records returns the rows of tree with from <= seq < to, by seq, at most limit of them.
func (s *Store) Records(ctx context.Context, tree string, from, to int64, limit int) ([]audit.Entry, error) {
	if limit < 1 {
		return nil, errs.New(errs.Internal, "audit records of %s: limit %d is below 1", tree, limit)
	}
	rows, err := s.r(ctx).QueryContext(ctx,
		`SELECT seq, canonical FROM audit_records WHERE tree = ? AND seq >= ? AND seq < ? ORDER BY seq LIMIT ?`,
		tree, from, to, limit)
	if err != nil {
		return nil, fmt.Errorf("read audit records of %s: %w", tree, err)
	}
	return scanAuditEntries(rows, tree)
}

// AuditRecords lists the records of tree that f selects (see store.AuditFilter).
func (s *Store) AuditRecords(ctx context.Context, tree string, f store.AuditFilter) ([]audit.Entry, error) {
	if err := checkAuditFilter(f); err != nil {
		return nil, err
	}
	query, args := auditListQuery(tree, f)
	rows, err := s.r(ctx).QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit records of %s: %w", tree, err)
	}
	return scanAuditEntries(rows, tree)
}

// auditListQuery builds the statement of AuditRecords. Each equality filter has an index
// (tree, column, seq) that serves it in seq order (TestAuditQueryPlans).
func auditListQuery(tree string, f store.AuditFilter) (string, []any) {
	var q strings.Builder
	q.WriteString(`SELECT seq, canonical FROM audit_records WHERE tree = ? AND seq > ?`)
	args := []any{tree, f.AfterSeq}
	if f.Action != "" {
		q.WriteString(` AND action = ?`)
		args = append(args, f.Action)
	}
	if f.Principal != "" {
		q.WriteString(` AND principal = ?`)
		args = append(args, f.Principal)
	}
	// A literal rather than a parameter, as in the PostgreSQL adapter: the statement's own text
	// then matches the partial index of denials, whatever plan is made of it.
	if f.Allowed != nil && *f.Allowed {
		q.WriteString(` AND allowed = 1`)
	} else if f.Allowed != nil {
		q.WriteString(` AND allowed = 0`)
	}
	if !f.Since.IsZero() {
		q.WriteString(` AND time >= ?`)
		args = append(args, formatTime(f.Since))
	}
	if !f.Until.IsZero() {
		q.WriteString(` AND time < ?`)
		args = append(args, formatTime(f.Until))
	}
	q.WriteString(` ORDER BY seq LIMIT ?`)
	args = append(args, f.Limit)
	return q.String(), args
}

func checkAuditFilter(f store.AuditFilter) error {
	if f.AfterSeq < -1 {
		return errs.New(errs.Invalid, "audit listing: after seq %d is below -1", f.AfterSeq)
	}
	if f.Limit < 1 {
		return errs.New(errs.Invalid, "audit listing: limit %d is below 1", f.Limit)
	}
	return nil
}

// scanAuditEntries reads (seq, canonical) rows and closes them; no rows is a nil slice.
func scanAuditEntries(rows *sql.Rows, tree string) ([]audit.Entry, error) {
	defer rows.Close()
	var out []audit.Entry
	for rows.Next() {
		var e audit.Entry
		if err := rows.Scan(&e.Seq, &e.Canonical); err != nil {
			return nil, fmt.Errorf("read audit records of %s: %w", tree, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read audit records of %s: %w", tree, err)
	}
	return out, nil
}

// auditTreesQuery lists the trees of Trees. Those of audit_records and audit_checkpoints are found
// by hopping along their primary keys, one seek per tree, instead of reading every row's key:
// records and checkpoints outnumber trees by far (TestAuditQueryPlans). A tree with records or
// checkpoints but no head exists only if rows were removed, and Verify must still see it.
const auditTreesQuery = `WITH RECURSIVE
    r(tree) AS (
        SELECT min(tree) FROM audit_records
        UNION ALL
        SELECT (SELECT min(a.tree) FROM audit_records AS a WHERE a.tree > r.tree) FROM r WHERE r.tree IS NOT NULL
    ),
    c(tree) AS (
        SELECT min(tree) FROM audit_checkpoints
        UNION ALL
        SELECT (SELECT min(a.tree) FROM audit_checkpoints AS a WHERE a.tree > c.tree) FROM c WHERE c.tree IS NOT NULL
    )
SELECT tree FROM r WHERE tree IS NOT NULL
UNION SELECT tree FROM c WHERE tree IS NOT NULL
UNION SELECT tree FROM audit_trees
ORDER BY tree`

// Trees returns every tree with a head, a record or a checkpoint, in byte order.
func (s *Store) Trees(ctx context.Context) ([]string, error) {
	rows, err := s.r(ctx).QueryContext(ctx, auditTreesQuery)
	if err != nil {
		return nil, fmt.Errorf("list audit trees: %w", err)
	}
	defer rows.Close()
	var trees []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, fmt.Errorf("list audit trees: %w", err)
		}
		trees = append(trees, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit trees: %w", err)
	}
	return trees, nil
}

// SaveCheckpoint stores cp; one already stored at the same tree and size is kept as it is.
func (s *Store) SaveCheckpoint(ctx context.Context, cp audit.Checkpoint) error {
	_, err := s.w(ctx).ExecContext(ctx,
		`INSERT INTO audit_checkpoints (tree, size, hash, note, created_at) VALUES (?, ?, ?, ?, ?)
		 ON CONFLICT (tree, size) DO NOTHING`,
		cp.Tree, cp.Size, cp.Hash[:], cp.Note, formatTime(time.Now()))
	if err != nil {
		return fmt.Errorf("save audit checkpoint %s/%d: %w", cp.Tree, cp.Size, err)
	}
	return nil
}

// LatestCheckpoint returns the checkpoint of tree with the largest size; false when there is none.
func (s *Store) LatestCheckpoint(ctx context.Context, tree string) (audit.Checkpoint, bool, error) {
	cp := audit.Checkpoint{Tree: tree}
	var hash []byte
	err := s.r(ctx).QueryRowContext(ctx,
		`SELECT size, hash, note FROM audit_checkpoints WHERE tree = ? ORDER BY size DESC LIMIT 1`, tree).
		Scan(&cp.Size, &hash, &cp.Note)
	if errors.Is(err, sql.ErrNoRows) {
		return audit.Checkpoint{}, false, nil
	}
	if err != nil {
		return audit.Checkpoint{}, false, fmt.Errorf("read latest audit checkpoint of %s: %w", tree, err)
	}
	if len(hash) != tlog.HashSize {
		return audit.Checkpoint{}, false, fmt.Errorf("read latest audit checkpoint of %s: hash has %d bytes", tree, len(hash))
	}
	cp.Hash = tlog.Hash(hash)
	return cp, true, nil
}
