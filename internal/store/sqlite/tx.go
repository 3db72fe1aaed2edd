package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// querier is what *sql.DB and *sql.Tx share: every method of Store runs its statements through
// one, so it takes part in the caller's transaction when there is one.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// txKey carries the open transaction in a context, keyed by store so that two stores never
// share one by mistake.
type txKey struct{ s *Store }

// InTx runs fn in one transaction (BEGIN IMMEDIATE on the writer connection). Every Store method
// called with the ctx fn receives joins it, so a change, its audit record and its outbox event
// commit or roll back together. fn's error rolls back and is returned; a nested InTx joins the
// outer transaction.
//
// Concurrency: the writer pool has one connection, held by the transaction until it ends; calls
// made inside fn with a context other than the one it received would wait for it forever.
func (s *Store) InTx(ctx context.Context, fn func(ctx context.Context) error) (err error) {
	if _, ok := ctx.Value(txKey{s}).(*txConn); ok {
		return fn(ctx)
	}
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin sqlite transaction: %w", err)
	}
	defer func() {
		if p := recover(); p != nil {
			_ = tx.Rollback()
			panic(p)
		}
	}()
	tc := &txConn{tx: tx, stmts: s.writeStmts}
	if err := fn(context.WithValue(ctx, txKey{s}, tc)); err != nil {
		if rerr := tx.Rollback(); rerr != nil && !errors.Is(rerr, sql.ErrTxDone) {
			return errors.Join(err, fmt.Errorf("roll back sqlite transaction: %w", rerr))
		}
		tc.prepareLater(ctx)
		return err
	}
	err = tx.Commit()
	// Only now that the transaction has released the writer connection: the texts it ran
	// unprepared (never in a deferred call, which a panic would run before the rollback above).
	tc.prepareLater(ctx)
	if err != nil {
		return fmt.Errorf("commit sqlite transaction: %w", err)
	}
	return nil
}

// w returns where a write runs: the caller's transaction, or the writer connection (through the
// prepared statements of stmtcache.go).
func (s *Store) w(ctx context.Context) querier {
	if tx, ok := ctx.Value(txKey{s}).(*txConn); ok {
		return tx
	}
	return s.writePool
}

// r returns where a read runs: the caller's transaction (which must see its own writes), or the
// read-only pool (through the prepared statements of stmtcache.go).
func (s *Store) r(ctx context.Context) querier {
	if tx, ok := ctx.Value(txKey{s}).(*txConn); ok {
		return tx
	}
	return s.readPool
}
