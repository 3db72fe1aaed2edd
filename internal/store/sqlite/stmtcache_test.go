package sqlite

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/nops-kernel/nops/internal/user"
)

// stmtTable creates a table t (k INTEGER PRIMARY KEY, v TEXT) holding rows 1..n.
func stmtTable(t *testing.T, s *Store, n int) {
	t.Helper()
	ctx := t.Context()
	if _, err := s.writer.ExecContext(ctx, `CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		if _, err := s.writer.ExecContext(ctx, `INSERT INTO t (k, v) VALUES (?, ?)`, i, fmt.Sprint("v", i)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStatementsArePreparedOncePerText(t *testing.T) {
	s := openTest(t, Config{})
	stmtTable(t, s, 3)
	ctx := t.Context()
	const q = `SELECT v FROM t WHERE k = ?`
	for i := 1; i <= 3; i++ {
		var v string
		if err := s.r(ctx).QueryRowContext(ctx, q, i).Scan(&v); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprint("v", i); v != want {
			t.Fatalf("row %d: got %q, want %q (a reused statement kept an old binding?)", i, v, want)
		}
	}
	first := s.readStmts.cached(q)
	if first == nil {
		t.Fatal("a read did not keep its prepared statement")
	}
	var v string
	if err := s.r(ctx).QueryRowContext(ctx, q, 2).Scan(&v); err != nil {
		t.Fatal(err)
	}
	if s.readStmts.cached(q) != first {
		t.Fatal("the text was prepared again")
	}
	if got := s.readStmts.n.Load(); got != 1 {
		t.Fatalf("%d statements cached, want 1", got)
	}

	const w = `UPDATE t SET v = ? WHERE k = ?`
	if _, err := s.w(ctx).ExecContext(ctx, w, "x", 1); err != nil {
		t.Fatal(err)
	}
	if s.writeStmts.cached(w) == nil {
		t.Fatal("a write did not keep its prepared statement")
	}
}

// A statement run inside InTx while the writer connection is taken cannot be prepared then; it
// is prepared once the transaction has ended, and later transactions run it prepared.
func TestTransactionStatementsPreparedAfterwards(t *testing.T) {
	s := openTest(t, Config{})
	stmtTable(t, s, 1)
	ctx := t.Context()
	const w = `UPDATE t SET v = ? WHERE k = ?`
	for _, fail := range []bool{false, true} {
		err := s.InTx(ctx, func(ctx context.Context) error {
			if _, err := s.w(ctx).ExecContext(ctx, w, "in tx", 1); err != nil {
				return err
			}
			if fail {
				return errors.New("roll back")
			}
			return nil
		})
		if fail != (err != nil) {
			t.Fatalf("InTx: %v", err)
		}
	}
	if s.writeStmts.cached(w) == nil {
		t.Fatal("the transaction's statement was not prepared after it")
	}
	if err := s.InTx(ctx, func(ctx context.Context) error {
		_, err := s.w(ctx).ExecContext(ctx, w, "prepared", 1)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var v string
	if err := s.r(ctx).QueryRowContext(ctx, `SELECT v FROM t WHERE k = 1`).Scan(&v); err != nil || v != "prepared" {
		t.Fatalf("got %q, %v; want the prepared statement's write", v, err)
	}
}

// Inside a transaction (one connection) a query may run again while the rows of its first run
// are still open; the second run must not reset the first one's statement.
func TestTransactionQueryNestedInItsOwnRows(t *testing.T) {
	s := openTest(t, Config{})
	stmtTable(t, s, 3)
	ctx := t.Context()
	const q = `SELECT k FROM t WHERE k >= ? ORDER BY k`
	// Prepared on the writer outside the transaction, so a cache used inside it would find it.
	if rows, err := s.w(ctx).QueryContext(ctx, q, 1); err != nil {
		t.Fatal(err)
	} else {
		_ = rows.Close()
	}
	if s.writeStmts.cached(q) == nil {
		t.Fatal("the query was not prepared on the writer")
	}
	var outer, inner []int
	err := s.InTx(ctx, func(ctx context.Context) error {
		rows, err := s.r(ctx).QueryContext(ctx, q, 1)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var k int
			if err := rows.Scan(&k); err != nil {
				return err
			}
			outer = append(outer, k)
			var n int
			if err := s.r(ctx).QueryRowContext(ctx, `SELECT count(*) FROM t WHERE k >= ?`, k).Scan(&n); err != nil {
				return err
			}
			var first int
			if err := s.r(ctx).QueryRowContext(ctx, q, k).Scan(&first); err != nil {
				return err
			}
			inner = append(inner, first)
		}
		return rows.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(outer) != "[1 2 3]" || fmt.Sprint(inner) != "[1 2 3]" {
		t.Fatalf("outer rows %v, inner first rows %v; want [1 2 3] both", outer, inner)
	}
}

func TestStatementCacheConcurrentReads(t *testing.T) {
	s := openTest(t, Config{})
	stmtTable(t, s, 50)
	ctx := t.Context()
	const q = `SELECT v FROM t WHERE k = ?`
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			for i := range 100 {
				k := (g*100+i)%50 + 1
				var v string
				if err := s.r(ctx).QueryRowContext(ctx, q, k).Scan(&v); err != nil {
					errc <- err
					return
				}
				if want := fmt.Sprint("v", k); v != want {
					errc <- fmt.Errorf("row %d: got %q, want %q", k, v, want)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
}

func TestStatementCacheBoundAndBadText(t *testing.T) {
	s := openTest(t, Config{})
	stmtTable(t, s, 1)
	ctx := t.Context()
	if _, err := s.r(ctx).QueryContext(ctx, `SELECT nope FROM t`); err == nil {
		t.Fatal("a text that does not compile ran")
	}
	if s.readStmts.cached(`SELECT nope FROM t`) != nil || s.readStmts.n.Load() != 0 {
		t.Fatal("a text that does not compile was cached")
	}
	s.readStmts.limit = 2
	for i := range 4 {
		var n int
		if err := s.r(ctx).QueryRowContext(ctx, fmt.Sprintf(`SELECT %d + count(*) FROM t`, i)).Scan(&n); err != nil || n != i+1 {
			t.Fatalf("query %d past the bound: %d, %v", i, n, err)
		}
	}
	if got := s.readStmts.n.Load(); got != 2 {
		t.Fatalf("%d statements cached, want the bound 2", got)
	}
}

// Prepared statements follow the schema: after a migration down and up, the cached statements
// of the dropped and recreated tables still answer.
func TestStatementsSurviveSchemaChanges(t *testing.T) {
	s := openMigrated(t, Config{})
	ctx := t.Context()
	u := user.User{ID: "usr_1", Username: "ada", PasswordHash: []byte("h"), Roles: []string{"ADMIN"}}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UserByUsername(ctx, "ada"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.MigrateDown(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.MigrateUp(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UserByUsername(ctx, "ada"); err != nil {
		t.Fatalf("cached read after a schema change: %v", err)
	}
}
