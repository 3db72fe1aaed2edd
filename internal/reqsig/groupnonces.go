package reqsig

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// TxRunner runs fn in one database transaction, joined by the store's methods called with the
// context fn receives; the SQL stores' InTx (internal/store/sqlite, internal/store/postgres).
type TxRunner interface {
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
}

// NonceTxRunner runs fn in one database transaction committed with durability d, joined by the
// store's methods called with the context fn receives; the SQL stores (InNonceTx). With
// DurabilityFull it is InTx.
type NonceTxRunner interface {
	InNonceTx(ctx context.Context, d Durability, fn func(ctx context.Context) error) error
}

// Durability is what an accepted nonce claim survives, in a database nonce store
// (docs/request-signing.md, "Nonce durability").
type Durability string

const (
	// DurabilityFull: a claim is on stable storage before its request is answered (SQLite:
	// the commit's fsync under synchronous=FULL; PostgreSQL: synchronous_commit as the server
	// says, on by default). It survives a crash of the kernel process, of the operating system
	// and a power loss. The default.
	DurabilityFull Durability = "full"
	// DurabilityProcess: a claim is committed but not flushed to stable storage before its
	// request is answered (SQLite: the transaction commits with synchronous=NORMAL, its WAL
	// frames in the operating system's page cache; PostgreSQL: SET LOCAL synchronous_commit =
	// off). It survives a crash or restart of the kernel process; an operating-system crash or
	// a power loss (SQLite), or a crash of the PostgreSQL server, may lose the claims of the
	// last moments (until the next flush: the next fully durable commit or checkpoint of
	// SQLite; PostgreSQL's wal_writer_delay, three times at most), whose nonces could then be
	// replayed until their signatures leave the allowed skew. The database stays consistent.
	DurabilityProcess Durability = "process"
)

// Valid reports whether d is a known durability ("" is not: the caller picks the default).
func (d Durability) Valid() bool { return d == DurabilityFull || d == DurabilityProcess }

// MaxGroupCommit bounds the claims one transaction of GroupCommitNonces carries.
const MaxGroupCommit = 256

// GroupCommitNonces claims nonces in a NonceStore that is a database, committing the claims of
// concurrent requests together: one commit (one fsync with SQLite's synchronous=FULL) for every
// claim waiting when the previous commit ends, instead of one per claim. Alone, a claim is
// committed at once, as before; under load, throughput follows the rate of commits times the
// number of claims waiting, not the rate of commits alone.
//
// Semantics are the store's: a claim reports true only once the transaction holding it has
// committed (with the GroupCommitNonces' Durability: see DurabilityFull and DurabilityProcess),
// so an accepted nonce survives a restart as it did; two claims of one nonce in one
// transaction see each other (the second reports false); if the transaction fails, every claim
// in it fails with the error and none is accepted. NewVerifier wraps a NonceStore that also
// implements TxRunner in one.
//
// Concurrency: safe for concurrent use. No goroutine of its own: the first claim to arrive
// commits (it leads); the claims that arrive meanwhile wait, and when the commit ends the
// leader hands the lead to the first of them, which commits them all. A waiting claim does not
// give up when its context ends: its transaction is bounded by the store (busy timeout, statement
// timeouts), and the commit runs without the leader's cancellation so that one client going away
// does not fail the others' claims.
type GroupCommitNonces struct {
	store      NonceStore
	tx         TxRunner
	durable    NonceTxRunner // nil: tx, with DurabilityFull
	durability Durability

	mu      sync.Mutex // guards pending and leading
	pending []*nonceClaim
	leading bool
}

type nonceClaim struct {
	keyID, nonce   string
	expiresAt, now time.Time

	ok   bool
	err  error
	lead bool          // set before done is closed: the claim leads the next commit
	done chan struct{} // closed when ok/err are set, or lead
}

var _ NonceStore = (*GroupCommitNonces)(nil)

// NewGroupCommitNonces returns store's claims committed in groups through tx (usually store),
// with durability d ("": DurabilityFull). DurabilityProcess needs a tx that is a NonceTxRunner.
func NewGroupCommitNonces(store NonceStore, tx TxRunner, d Durability) (*GroupCommitNonces, error) {
	if d == "" {
		d = DurabilityFull
	}
	g := &GroupCommitNonces{store: store, tx: tx, durability: d}
	switch {
	case !d.Valid():
		return nil, fmt.Errorf("group-committed nonces: unknown durability %q", d)
	case d == DurabilityProcess:
		dr, ok := tx.(NonceTxRunner)
		if !ok {
			return nil, fmt.Errorf("group-committed nonces: durability %s needs a store that commits with a chosen durability; %T does not", d, tx)
		}
		g.durable = dr
	}
	return g, nil
}

// Durability returns what the claims' commits survive.
func (g *GroupCommitNonces) Durability() Durability { return g.durability }

// ClaimNonce claims like the store (see NonceStore), in a transaction shared with the claims
// that wait alongside it.
func (g *GroupCommitNonces) ClaimNonce(ctx context.Context, keyID, nonce string, expiresAt, now time.Time) (bool, error) {
	c := &nonceClaim{keyID: keyID, nonce: nonce, expiresAt: expiresAt, now: now, done: make(chan struct{})}
	g.mu.Lock()
	g.pending = append(g.pending, c)
	if g.leading {
		g.mu.Unlock()
		<-c.done
		if !c.lead {
			return c.ok, c.err
		}
	} else {
		g.leading = true
		g.mu.Unlock()
	}
	// c leads: commit what is pending (c among it), then pass the lead on.
	g.mu.Lock()
	n := min(len(g.pending), MaxGroupCommit)
	batch := g.pending[:n:n]
	g.pending = g.pending[n:]
	g.mu.Unlock()

	g.commit(context.WithoutCancel(ctx), batch)
	for _, b := range batch {
		if b != c {
			close(b.done)
		}
	}

	g.mu.Lock()
	if len(g.pending) > 0 {
		next := g.pending[0]
		next.lead = true
		close(next.done)
	} else {
		g.leading = false
		g.pending = nil
	}
	g.mu.Unlock()
	return c.ok, c.err
}

// commit claims every nonce of batch in one transaction (a lone claim under DurabilityFull needs
// none: its statement commits by itself) and records each result in its claim.
func (g *GroupCommitNonces) commit(ctx context.Context, batch []*nonceClaim) {
	if len(batch) == 1 && g.durable == nil {
		c := batch[0]
		c.ok, c.err = g.store.ClaimNonce(ctx, c.keyID, c.nonce, c.expiresAt, c.now)
		return
	}
	inTx := g.tx.InTx
	if g.durable != nil {
		inTx = func(ctx context.Context, fn func(context.Context) error) error {
			return g.durable.InNonceTx(ctx, g.durability, fn)
		}
	}
	err := inTx(ctx, func(ctx context.Context) error {
		for _, c := range batch {
			ok, err := g.store.ClaimNonce(ctx, c.keyID, c.nonce, c.expiresAt, c.now)
			if err != nil {
				return err
			}
			c.ok = ok
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("claim %d nonces in one transaction: %w", len(batch), err)
		for _, c := range batch {
			c.ok, c.err = false, err
		}
	}
}
