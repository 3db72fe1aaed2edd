package postgres

// The audit log's storage (audit.Store), in the tables of migration 00006_audit.sql:
// audit_trees(tree, size) is each tree's head; audit_records(tree, seq, canonical, time, action,
// principal, allowed) its records, canonical being the record and the other columns copies kept
// only for AuditRecords' filters; audit_hashes(tree, idx, hash) the tlog stored hashes;
// audit_checkpoints(tree, size, hash, note, created_at) the signed tree heads.
//
// Concurrency and lock order: audit.Append reads the tree size and the frontier hashes, then
// writes the record at that size, so appends to one tree must be serialised, across replicas too.
// Run it inside InTx: there TreeSize locks the tree's head row (SELECT … FOR UPDATE, creating the
// row first for a new tree), and the lock is held until the transaction commits or rolls back, so
// a concurrent append to the same tree waits in TreeSize and then reads the size the first one
// wrote. Appends to different trees never wait on each other. Because the lock lasts until the
// commit, the append must be the LAST write of the audited transaction: its domain rows first,
// then the audit head. That keeps the time a tenant's audited writes queue behind each other
// short, and gives every transaction the same lock order (domain rows, then audit head), so two
// audited transactions can never deadlock over them. Outside a transaction TreeSize takes no lock
// (it serves Verify, SignCheckpoint and proofs, which need none) and two appends may choose the
// same seq: the second fails with errs.Conflict, and the tree stays intact because AppendRecord
// writes the record, its hashes and the head in one transaction.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/store"
)

var _ audit.Store = (*Store)(nil)

// TreeSize returns the size kept in tree's head, 0 for a tree never written. Inside a transaction
// it also locks the head until the transaction ends, creating it at size 0 for a new tree: that is
// what serialises audit.Append (see the file comment).
func (s *Store) TreeSize(ctx context.Context, tree string) (int64, error) {
	q := s.q(ctx)
	if _, inTx := ctx.Value(txKey{s}).(pgx.Tx); !inTx {
		var size int64
		err := q.QueryRow(ctx, `SELECT size FROM audit_trees WHERE tree = $1`, tree).Scan(&size)
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, nil
		}
		if err != nil {
			return 0, fmt.Errorf("read audit tree head %s: %w", tree, err)
		}
		return size, nil
	}
	const lockHead = `SELECT size FROM audit_trees WHERE tree = $1 FOR UPDATE`
	var size int64
	err := q.QueryRow(ctx, lockHead, tree).Scan(&size)
	if err == nil {
		return size, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("lock audit tree head %s: %w", tree, err)
	}
	// A new tree has no row to lock: create it. A concurrent first append inserting the same row
	// waits here for this transaction to end, then does nothing, and its SELECT … FOR UPDATE (a new
	// snapshot under READ COMMITTED) queues on the committed row.
	if _, err := q.Exec(ctx, `INSERT INTO audit_trees (tree, size) VALUES ($1, 0) ON CONFLICT (tree) DO NOTHING`, tree); err != nil {
		return 0, fmt.Errorf("create audit tree head %s: %w", tree, err)
	}
	if err := q.QueryRow(ctx, lockHead, tree).Scan(&size); err != nil {
		return 0, fmt.Errorf("lock audit tree head %s: %w", tree, err)
	}
	return size, nil
}

// ReadHashes returns the hashes of tree stored at indexes, in the order asked; a missing one is an
// errs.NotFound.
func (s *Store) ReadHashes(ctx context.Context, tree string, indexes []int64) ([]tlog.Hash, error) {
	if len(indexes) == 0 {
		return []tlog.Hash{}, nil
	}
	rows, err := s.q(ctx).Query(ctx, `SELECT idx, hash FROM audit_hashes WHERE tree = $1 AND idx = ANY($2)`, tree, indexes)
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
		q := s.q(ctx)
		_, err := q.Exec(ctx,
			`INSERT INTO audit_records (tree, seq, canonical, time, action, principal, allowed)
			 VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			rec.Tree, rec.Seq, canonical, rec.Time, rec.Action, rec.Actor.Principal, rec.Decision.Allowed)
		if isUniqueViolation(err) {
			return errs.Wrap(errs.Conflict, err, "audit record %s/%d already exists", rec.Tree, rec.Seq)
		}
		if err != nil {
			return fmt.Errorf("insert audit record %s/%d: %w", rec.Tree, rec.Seq, err)
		}
		hs := make([][]byte, len(hashes))
		for i := range hashes {
			hs[i] = hashes[i][:]
		}
		_, err = q.Exec(ctx,
			`INSERT INTO audit_hashes (tree, idx, hash)
			 SELECT $1, $2 + h.ord - 1, h.hash FROM unnest($3::bytea[]) WITH ORDINALITY AS h(hash, ord)`,
			rec.Tree, tlog.StoredHashIndex(0, rec.Seq), hs)
		if isUniqueViolation(err) {
			return errs.Wrap(errs.Conflict, err, "audit hashes of record %s/%d already exist", rec.Tree, rec.Seq)
		}
		if err != nil {
			return fmt.Errorf("insert audit hashes of %s/%d: %w", rec.Tree, rec.Seq, err)
		}
		_, err = q.Exec(ctx,
			`INSERT INTO audit_trees (tree, size) VALUES ($1, $2)
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
	rows, err := s.q(ctx).Query(ctx,
		`SELECT seq, canonical FROM audit_records WHERE tree = $1 AND seq >= $2 AND seq < $3 ORDER BY seq LIMIT $4`,
		tree, from, to, limit)
	if err != nil {
		return nil, fmt.Errorf("read audit records of %s: %w", tree, err)
	}
	return collectAuditEntries(rows, tree)
}

// AuditRecords lists the records of tree that f selects (see store.AuditFilter).
func (s *Store) AuditRecords(ctx context.Context, tree string, f store.AuditFilter) ([]audit.Entry, error) {
	if err := checkAuditFilter(f); err != nil {
		return nil, err
	}
	var q strings.Builder
	q.WriteString(`SELECT seq, canonical FROM audit_records WHERE tree = $1 AND seq > $2`)
	args := []any{tree, f.AfterSeq}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.Action != "" {
		q.WriteString(` AND action = ` + arg(f.Action))
	}
	if f.Principal != "" {
		q.WriteString(` AND principal = ` + arg(f.Principal))
	}
	// A literal rather than a parameter, so that the partial index of denials matches under a
	// generic plan too.
	if f.Allowed != nil && *f.Allowed {
		q.WriteString(` AND allowed`)
	} else if f.Allowed != nil {
		q.WriteString(` AND NOT allowed`)
	}
	if !f.Since.IsZero() {
		q.WriteString(` AND time >= ` + arg(f.Since))
	}
	if !f.Until.IsZero() {
		q.WriteString(` AND time < ` + arg(f.Until))
	}
	q.WriteString(` ORDER BY seq LIMIT ` + arg(f.Limit))
	rows, err := s.q(ctx).Query(ctx, q.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("list audit records of %s: %w", tree, err)
	}
	return collectAuditEntries(rows, tree)
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

// collectAuditEntries reads (seq, canonical) rows; no rows is a nil slice.
func collectAuditEntries(rows pgx.Rows, tree string) ([]audit.Entry, error) {
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (audit.Entry, error) {
		var e audit.Entry
		err := row.Scan(&e.Seq, &e.Canonical)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("read audit records of %s: %w", tree, err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// Trees returns every tree with a head, a record or a checkpoint, in byte order (the columns
// collate as "C").
func (s *Store) Trees(ctx context.Context) ([]string, error) {
	// The trees of audit_records and audit_checkpoints are found by hopping along their primary
	// keys, one seek per tree, instead of reading every row's key: records and checkpoints
	// outnumber trees by far. A tree with records or checkpoints but no head exists only if rows
	// were removed, and Verify must still see it.
	rows, err := s.q(ctx).Query(ctx,
		`WITH RECURSIVE
		     r(tree) AS (
		         (SELECT tree FROM audit_records ORDER BY tree LIMIT 1)
		         UNION ALL
		         SELECT (SELECT a.tree FROM audit_records AS a WHERE a.tree > r.tree ORDER BY a.tree LIMIT 1)
		         FROM r WHERE r.tree IS NOT NULL
		     ),
		     c(tree) AS (
		         (SELECT tree FROM audit_checkpoints ORDER BY tree LIMIT 1)
		         UNION ALL
		         SELECT (SELECT a.tree FROM audit_checkpoints AS a WHERE a.tree > c.tree ORDER BY a.tree LIMIT 1)
		         FROM c WHERE c.tree IS NOT NULL
		     )
		 SELECT tree FROM r WHERE tree IS NOT NULL
		 UNION SELECT tree FROM c WHERE tree IS NOT NULL
		 UNION SELECT tree FROM audit_trees
		 ORDER BY tree`)
	if err != nil {
		return nil, fmt.Errorf("list audit trees: %w", err)
	}
	trees, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list audit trees: %w", err)
	}
	if len(trees) == 0 {
		return nil, nil
	}
	return trees, nil
}

// SaveCheckpoint stores cp; one already stored at the same tree and size is kept as it is.
func (s *Store) SaveCheckpoint(ctx context.Context, cp audit.Checkpoint) error {
	_, err := s.q(ctx).Exec(ctx,
		`INSERT INTO audit_checkpoints (tree, size, hash, note, created_at) VALUES ($1, $2, $3, $4, $5)
		 ON CONFLICT (tree, size) DO NOTHING`,
		cp.Tree, cp.Size, cp.Hash[:], cp.Note, time.Now())
	if err != nil {
		return fmt.Errorf("save audit checkpoint %s/%d: %w", cp.Tree, cp.Size, err)
	}
	return nil
}

// LatestCheckpoint returns the checkpoint of tree with the largest size; false when there is none.
func (s *Store) LatestCheckpoint(ctx context.Context, tree string) (audit.Checkpoint, bool, error) {
	cp := audit.Checkpoint{Tree: tree}
	var hash []byte
	err := s.q(ctx).QueryRow(ctx,
		`SELECT size, hash, note FROM audit_checkpoints WHERE tree = $1 ORDER BY size DESC LIMIT 1`, tree).
		Scan(&cp.Size, &hash, &cp.Note)
	if errors.Is(err, pgx.ErrNoRows) {
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
