package postgres

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nops-kernel/nops/internal/audit"

	"github.com/nops-kernel/nops/internal/store/storetest"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

func openAudit(t *testing.T) *Store {
	t.Helper()
	// More connections than the other suites: the concurrent appends must really overlap.
	s := openTest(t, Config{URL: services.Postgres(t), MaxConns: 8})
	if err := s.MigrateUp(t.Context()); err != nil {
		t.Fatalf("MigrateUp: %v", err)
	}
	return s
}

func TestAudit(t *testing.T) {
	storetest.RunAudit(t, func(t *testing.T) storetest.AuditStore { return openAudit(t) })
}

// rawPool runs SQL on the database directly, as anyone with its credentials could.
type rawPool struct{ pool *pgxpool.Pool }

func (r rawPool) ExecRaw(ctx context.Context, query string, args ...any) error {
	_, err := r.pool.Exec(ctx, query, args...)
	return err
}

func TestAuditTamper(t *testing.T) {
	storetest.RunAuditTamper(t, func(t *testing.T) (storetest.AuditStore, storetest.Tamperer) {
		s := openAudit(t)
		return s, rawPool{s.pool}
	})
}

// lockNotAvailable is PostgreSQL's SQLSTATE for a lock wait ended by lock_timeout.
const lockNotAvailable = "55P03"

// TestAuditHeadLock checks the lock that serialises appends: while one transaction that has
// appended to a tree is open, another transaction cannot read that tree's size (it would append at
// the same seq), for a new tree as for an existing one; a read outside any transaction does not
// wait; and once the first commits, the next transaction reads the size it left.
func TestAuditHeadLock(t *testing.T) {
	for _, existing := range []int{0, 3} {
		t.Run(fmt.Sprintf("tree of %d records", existing), func(t *testing.T) {
			s := openAudit(t)
			ctx := t.Context()
			const tree = "ten_locked"
			rec := func(i int) audit.Record {
				return audit.Record{Tree: tree, Time: time.Now(), Action: "agent.create", Resource: fmt.Sprintf("agents/agt_%d", i)}
			}
			for i := range existing {
				if err := s.InTx(ctx, func(ctx context.Context) error { _, err := audit.Append(ctx, s, rec(i)); return err }); err != nil {
					t.Fatal(err)
				}
			}

			appended, release, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
			go func() {
				done <- s.InTx(ctx, func(ctx context.Context) error {
					if _, err := audit.Append(ctx, s, rec(existing)); err != nil {
						return err
					}
					close(appended)
					<-release
					return nil
				})
			}()
			select {
			case <-appended:
			case err := <-done:
				t.Fatalf("holding transaction: %v", err)
			}

			sizeInTx := func(timeout string) (int64, error) {
				var size int64
				err := s.InTx(ctx, func(ctx context.Context) error {
					if _, err := s.q(ctx).Exec(ctx, "SET LOCAL lock_timeout = '"+timeout+"'"); err != nil {
						return err
					}
					var err error
					size, err = s.TreeSize(ctx, tree)
					return err
				})
				return size, err
			}
			_, err := sizeInTx("200ms")
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != lockNotAvailable {
				close(release)
				<-done
				t.Fatalf("TreeSize in a second transaction = %v, want it to wait for the head lock (SQLSTATE %s)", err, lockNotAvailable)
			}
			if size, err := s.TreeSize(ctx, tree); err != nil || size != int64(existing) {
				t.Errorf("TreeSize outside a transaction = %d, %v; want the committed %d without waiting", size, err, existing)
			}

			close(release)
			if err := <-done; err != nil {
				t.Fatalf("holding transaction: %v", err)
			}
			if size, err := sizeInTx("10s"); err != nil || size != int64(existing)+1 {
				t.Fatalf("TreeSize after the commit = %d, %v; want %d", size, err, existing+1)
			}
		})
	}
}
