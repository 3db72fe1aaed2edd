// Package postgres is the storage adapter for running the kernel as N stateless replicas on one
// PostgreSQL database, through a pgx connection pool. It implements the domains' store interfaces
// (user.Store, token.KeyStore) and runs its embedded goose migrations. Only internal/kernel,
// cmd/nops and tests import it; domain packages see only their own interfaces.
//
// Every session runs with timezone UTC, so values of goose's own `timestamp` column and anything
// printed by the server are in UTC; timestamptz values are returned converted to UTC.
//
// Concurrency: a Store is safe for concurrent use; the pool hands each statement a connection.
// Migrations hold a PostgreSQL advisory lock (scoped to the database), so replicas starting
// together apply each migration exactly once.
package postgres

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/store"
	"github.com/nops-kernel/nops/internal/store/migrate"
	"github.com/nops-kernel/nops/internal/token"
	"github.com/nops-kernel/nops/internal/user"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// DefaultConnectTimeout is used when Config.ConnectTimeout is zero, so that Open never waits
// forever on a server that accepts TCP connections but does not answer.
const DefaultConnectTimeout = 5 * time.Second

// uniqueViolation is PostgreSQL's SQLSTATE for a unique or primary key constraint violation.
const uniqueViolation = "23505"

// Config configures the PostgreSQL store. Zero pool values keep pgxpool's defaults.
type Config struct {
	URL             string        // postgres:// or postgresql:// URL, possibly with credentials
	MaxConns        int32         // pool size
	MinConns        int32         // connections kept open when idle
	ConnectTimeout  time.Duration // bound on opening one connection, and on Open; zero means DefaultConnectTimeout
	MaxConnLifetime time.Duration // connections are recycled after this long
	MaxConnIdleTime time.Duration // idle connections are closed after this long
}

// Store is the PostgreSQL storage adapter.
type Store struct {
	pool     *pgxpool.Pool
	sqlDB    *sql.DB // database/sql view of pool, for goose
	migrator *migrate.Migrator
	url      string // redacted: safe to log and to put in errors
}

var (
	_ user.Store     = (*Store)(nil)
	_ token.KeyStore = (*Store)(nil)
)

// Open creates the connection pool and checks, within the connect timeout, that the server
// answers. It does not migrate: call MigrateUp. Errors name the URL with its password redacted. A
// nil logger discards logs.
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	redacted := redact(cfg.URL)
	if cfg.ConnectTimeout < 0 {
		return nil, fmt.Errorf("open postgres %s: connect timeout must not be negative, got %s", redacted, cfg.ConnectTimeout)
	}
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		// pgx redacts the password from its parse errors on a best-effort basis only, and the
		// URL is unparsable here, so its message is not repeated.
		return nil, fmt.Errorf("open postgres %s: invalid URL", redacted)
	}
	if cfg.MaxConns > 0 {
		pcfg.MaxConns = cfg.MaxConns
	}
	if cfg.MinConns > 0 {
		pcfg.MinConns = cfg.MinConns
	}
	if cfg.MaxConnLifetime > 0 {
		pcfg.MaxConnLifetime = cfg.MaxConnLifetime
	}
	if cfg.MaxConnIdleTime > 0 {
		pcfg.MaxConnIdleTime = cfg.MaxConnIdleTime
	}
	connectTimeout := cfg.ConnectTimeout
	if connectTimeout == 0 {
		connectTimeout = DefaultConnectTimeout
	}
	pcfg.ConnConfig.ConnectTimeout = connectTimeout
	pcfg.ConnConfig.RuntimeParams["timezone"] = "UTC"

	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres %s: %w", redacted, err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres %s: %w", redacted, err)
	}

	sqlDB := stdlib.OpenDBFromPool(pool)
	files, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		_ = sqlDB.Close()
		pool.Close()
		return nil, fmt.Errorf("postgres migrations: %w", err)
	}
	// Poll every second (rather than goose's default five) for a lock held by a replica that is
	// migrating, for up to five minutes.
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 300))
	if err != nil {
		_ = sqlDB.Close()
		pool.Close()
		return nil, fmt.Errorf("postgres migration lock: %w", err)
	}
	m, err := migrate.New(goose.DialectPostgres, sqlDB, files, logger, goose.WithSessionLocker(locker))
	if err != nil {
		_ = sqlDB.Close()
		pool.Close()
		return nil, err
	}
	logger.InfoContext(ctx, "postgres store opened", slog.String("url", redacted), slog.Int("max_conns", int(pcfg.MaxConns)))
	return &Store{pool: pool, sqlDB: sqlDB, migrator: m, url: redacted}, nil
}

// redact returns raw with any password masked, or a placeholder when raw is not a URL.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	q := u.Query()
	for _, k := range []string{"password", "sslpassword"} {
		if q.Has(k) {
			q.Set(k, "xxxxx")
			u.RawQuery = q.Encode()
		}
	}
	return u.Redacted()
}

// Ping checks that the server answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping postgres %s: %w", s.url, err)
	}
	return nil
}

// Close releases the connections. It waits for connections in use to be returned.
func (s *Store) Close() error {
	err := s.sqlDB.Close()
	s.pool.Close()
	if err != nil {
		return fmt.Errorf("close postgres %s: %w", s.url, err)
	}
	return nil
}

// MigrateUp applies every pending migration.
func (s *Store) MigrateUp(ctx context.Context) error { return s.migrator.Up(ctx) }

// MigrateDown reverts the latest applied migration; with none applied it returns errs.Conflict.
func (s *Store) MigrateDown(ctx context.Context) error { return s.migrator.Down(ctx) }

// MigrationStatus lists every embedded migration and whether it is applied.
func (s *Store) MigrationStatus(ctx context.Context) ([]store.MigrationStatus, error) {
	return s.migrator.Status(ctx)
}

// CreateUser inserts u; an existing ID or username is an errs.Conflict.
func (s *Store) CreateUser(ctx context.Context, u user.User) error {
	roles := u.Roles
	if roles == nil {
		roles = []string{} // the column holds a JSON array, never null
	}
	_, err := s.q(ctx).Exec(ctx,
		`INSERT INTO users (id, username, password_hash, roles, tenant_id, created_at, updated_at)
		 VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		u.ID, u.Username, u.PasswordHash, roles, nullString(u.TenantID), u.CreatedAt, u.UpdatedAt)
	if isUniqueViolation(err) {
		return errs.Wrap(errs.Conflict, err, "user %q already exists", u.Username)
	}
	if err != nil {
		return fmt.Errorf("create user %s: %w", u.ID, err)
	}
	return nil
}

// UserByUsername returns the user named username, or an errs.NotFound.
func (s *Store) UserByUsername(ctx context.Context, username string) (user.User, error) {
	var (
		u      user.User
		tenant *string
	)
	err := s.q(ctx).QueryRow(ctx,
		`SELECT id, username, password_hash, roles, tenant_id, created_at, updated_at
		 FROM users WHERE username = $1`, username).
		Scan(&u.ID, &u.Username, &u.PasswordHash, &u.Roles, &tenant, &u.CreatedAt, &u.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return user.User{}, errs.New(errs.NotFound, "user %q not found", username)
	}
	if err != nil {
		return user.User{}, fmt.Errorf("get user %q: %w", username, err)
	}
	if tenant != nil {
		u.TenantID = *tenant
	}
	if len(u.Roles) == 0 {
		u.Roles = nil // one empty value for callers, as in the SQLite adapter
	}
	u.CreatedAt, u.UpdatedAt = u.CreatedAt.UTC(), u.UpdatedAt.UTC()
	return u, nil
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func isUniqueViolation(err error) bool {
	var e *pgconn.PgError
	return errors.As(err, &e) && e.Code == uniqueViolation
}
