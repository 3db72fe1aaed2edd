// Package migrate runs a store adapter's embedded SQL migrations with goose's Provider API, so the
// SQLite and PostgreSQL adapters share one implementation of up, down and status and report them
// in the same types. Only the adapters under internal/store import it; callers use the adapters'
// MigrateUp, MigrateDown and MigrationStatus methods.
//
// Concurrency: a Migrator is safe for concurrent use. goose serialises operations within one
// process; across processes the adapter passes a session locker (PostgreSQL advisory lock) so that
// replicas starting together apply each migration once.
package migrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"

	"github.com/pressly/goose/v3"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/store"
)

// Migrator applies and reverts the migrations of one database.
type Migrator struct {
	provider *goose.Provider
	logger   *slog.Logger
}

// New returns a Migrator for db, reading *.sql migrations from the root of fsys. It does not touch
// the database. opts are extra goose options, such as a session locker.
func New(dialect goose.Dialect, db *sql.DB, fsys fs.FS, logger *slog.Logger, opts ...goose.ProviderOption) (*Migrator, error) {
	// The global registry holds Go migrations registered by init functions anywhere in the binary;
	// our migrations are the embedded files only, so nothing outside this store can slip in.
	opts = append([]goose.ProviderOption{goose.WithDisableGlobalRegistry(true)}, opts...)
	p, err := goose.NewProvider(dialect, db, fsys, opts...)
	if err != nil {
		return nil, fmt.Errorf("new %s migration provider: %w", dialect, err)
	}
	return &Migrator{provider: p, logger: logger}, nil
}

// Up applies every pending migration, oldest first. Up on an up-to-date database does nothing.
func (m *Migrator) Up(ctx context.Context) error {
	results, err := m.provider.Up(ctx)
	for _, r := range results {
		m.log(ctx, r)
	}
	if err != nil {
		m.logPartial(ctx, err)
		return fmt.Errorf("migrate up: %w", err)
	}
	return nil
}

// Down reverts the most recently applied migration. With no migration applied it returns an
// errs.Conflict: there is nothing to revert.
func (m *Migrator) Down(ctx context.Context) error {
	r, err := m.provider.Down(ctx)
	if errors.Is(err, goose.ErrNoNextVersion) {
		return errs.Wrap(errs.Conflict, err, "no applied migration to revert")
	}
	if err != nil {
		m.logPartial(ctx, err)
		return fmt.Errorf("migrate down: %w", err)
	}
	m.log(ctx, r)
	return nil
}

// Status lists every embedded migration, lowest version first, with whether it is applied.
func (m *Migrator) Status(ctx context.Context) ([]store.MigrationStatus, error) {
	list, err := m.provider.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("migration status: %w", err)
	}
	out := make([]store.MigrationStatus, 0, len(list))
	for _, s := range list {
		st := store.MigrationStatus{
			Version: s.Source.Version,
			Name:    path.Base(s.Source.Path),
			Applied: s.State == goose.StateApplied,
		}
		if st.Applied {
			st.AppliedAt = s.AppliedAt.UTC()
		}
		out = append(out, st)
	}
	return out, nil
}

// logPartial logs what a failed run did before and at its failure: goose returns no results then.
func (m *Migrator) logPartial(ctx context.Context, err error) {
	var partial *goose.PartialError
	if !errors.As(err, &partial) {
		return
	}
	for _, r := range partial.Applied {
		m.log(ctx, r)
	}
	m.log(ctx, partial.Failed)
}

func (m *Migrator) log(ctx context.Context, r *goose.MigrationResult) {
	if r == nil || r.Source == nil {
		return
	}
	attrs := []any{
		slog.String("direction", r.Direction),
		slog.Int64("version", r.Source.Version),
		slog.String("name", path.Base(r.Source.Path)),
		slog.Float64("duration_ms", float64(r.Duration.Microseconds())/1000),
	}
	if r.Error != nil {
		m.logger.ErrorContext(ctx, "migration failed", append(attrs, slog.Any("error", r.Error))...)
		return
	}
	m.logger.InfoContext(ctx, "migration applied", attrs...)
}
