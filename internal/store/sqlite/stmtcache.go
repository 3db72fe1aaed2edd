package sqlite

import (
	"context"
	"database/sql"
	"slices"
	"sync"
	"sync/atomic"
)

// maxCachedStmts bounds the query texts a stmtCache prepares. The package's statements are
// constants (about a hundred), but a few are built per call (an IN list per batch size, the
// audit filters' combinations), so the number of distinct texts is bounded only by those
// builders: past the bound a text runs unprepared, as every text did before the cache. Nothing is
// evicted, because closing a statement another goroutine has just loaded would fail its call.
const maxCachedStmts = 512

// stmtCache keeps one *sql.Stmt per query text of one pool (the writer or the readers),
// prepared on the first use of the text. The driver (modernc.org/sqlite) keeps the compiled
// SQLite statement of a prepared single-statement text and only resets it between runs, and
// database/sql prepares a *sql.Stmt on each connection of the pool the first time it runs there:
// so SQLite parses and plans each text once per connection instead of on every call, which was
// 10 to 15 % of the CPU of a primary-key read.
//
// Concurrency: safe for concurrent use. database/sql hands a connection, and so the compiled
// statement prepared on it, to one caller at a time until its rows are closed: two calls never
// step one SQLite statement together. Two first uses of a text may both prepare it; one
// statement is kept and the other closed.
type stmtCache struct {
	db    *sql.DB
	m     sync.Map // query text → *sql.Stmt
	n     atomic.Int32
	limit int32
}

func newStmtCache(db *sql.DB) *stmtCache { return &stmtCache{db: db, limit: maxCachedStmts} }

// cached returns the prepared statement of query, or nil when it has none.
func (c *stmtCache) cached(query string) *sql.Stmt {
	if st, ok := c.m.Load(query); ok {
		return st.(*sql.Stmt)
	}
	return nil
}

// get returns the prepared statement of query, preparing it on a connection of the pool, or nil
// when it cannot be prepared (the cache is full, or the text does not compile: the caller then
// runs it unprepared, which reports the error as before). It waits for a free connection: never
// call it while holding the pool's last one (inside InTx, for the writer).
func (c *stmtCache) get(ctx context.Context, query string) *sql.Stmt {
	if st := c.cached(query); st != nil {
		return st
	}
	if c.n.Load() >= c.limit {
		return nil
	}
	st, err := c.db.PrepareContext(ctx, query)
	if err != nil {
		return nil
	}
	if prev, loaded := c.m.LoadOrStore(query, st); loaded {
		_ = st.Close()
		return prev.(*sql.Stmt)
	}
	c.n.Add(1)
	return st
}

// close closes every cached statement; the cache is not used afterwards.
func (c *stmtCache) close() {
	c.m.Range(func(k, v any) bool {
		_ = v.(*sql.Stmt).Close()
		c.m.Delete(k)
		return true
	})
}

// pool runs the statements of a Store's methods called outside a transaction on db, through
// the prepared statements of its cache.
type pool struct {
	db    *sql.DB
	stmts *stmtCache
}

func (p *pool) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := p.stmts.get(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return p.db.ExecContext(ctx, query, args...)
}

func (p *pool) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := p.stmts.get(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return p.db.QueryContext(ctx, query, args...)
}

func (p *pool) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := p.stmts.get(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return p.db.QueryRowContext(ctx, query, args...)
}

// txConn runs the statements of a Store's methods called inside InTx's transaction. Exec goes
// through the writer's prepared statements (Tx.StmtContext reuses the one compiled on the
// writer connection). Queries do not: a transaction is one connection on which a caller may
// still be reading the rows of a query while it runs the same query again (a walk that recurses),
// and the second run would reset the one compiled statement under the first one's rows; an Exec
// finishes its statement before it returns, so it cannot overlap itself.
//
// A text not yet prepared runs unprepared: preparing it on the writer pool would wait for the
// pool's one connection, which the transaction holds. InTx prepares such texts once the
// transaction has ended (prepareLater), for the next transactions.
type txConn struct {
	tx    *sql.Tx
	stmts *stmtCache

	mu    sync.Mutex // guards later
	later []string   // texts to prepare once the transaction has ended, a few at most
}

func (t *txConn) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := t.stmts.cached(query); st != nil {
		return t.tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	}
	t.mu.Lock()
	if len(t.later) < 8 && !slices.Contains(t.later, query) {
		t.later = append(t.later, query)
	}
	t.mu.Unlock()
	return t.tx.ExecContext(ctx, query, args...)
}

// prepareLater prepares, on the writer pool, the texts the ended transaction ran unprepared.
func (t *txConn) prepareLater(ctx context.Context) {
	t.mu.Lock()
	later := t.later
	t.later = nil
	t.mu.Unlock()
	for _, q := range later {
		t.stmts.get(ctx, q)
	}
}

func (t *txConn) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, query, args...)
}

func (t *txConn) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(ctx, query, args...)
}
