// Package sqlite is the embedded storage adapter: one database file under the kernel's data
// directory, opened with the pure-Go modernc.org/sqlite driver (no cgo). It implements the domains'
// store interfaces (user.Store, token.KeyStore) and runs its embedded goose migrations. Only
// internal/kernel, cmd/nops and tests import it; domain packages see only their own interfaces.
//
// Every connection runs in WAL mode with synchronous=FULL (a committed write survives power
// loss), foreign keys on and a busy timeout. The file and its parent directory are created private
// to the process's user because the database holds token signing keys.
//
// Concurrency: a Store is safe for concurrent use. SQLite allows one writer at a time, and
// several connections competing for the write lock fail with SQLITE_BUSY once the busy timeout is
// spent. So every statement that writes, every transaction and every migration goes through a
// writer pool of exactly one connection, where database/sql queues callers in process instead;
// reads go through a separate pool of query_only connections, which WAL lets run alongside the
// writer and see every committed write. Each pool prepares a query text once per connection and
// keeps it (stmtcache.go), so SQLite does not parse and plan it again on every call.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/store"
	"github.com/nops-kernel/nops/internal/store/migrate"
	"github.com/nops-kernel/nops/internal/token"
	"github.com/nops-kernel/nops/internal/user"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// DefaultBusyTimeout is used when Config.BusyTimeout is zero.
const DefaultBusyTimeout = 5 * time.Second

// timeFormat is RFC 3339 with a fixed nine-digit fraction: unlike time.RFC3339Nano, which drops
// trailing zeros, it keeps every value the same width, so ORDER BY on the text is time order.
const timeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// Config configures the SQLite store. The zero BusyTimeout means DefaultBusyTimeout.
type Config struct {
	Path        string        // database file; its parent directory is created (0700) if missing
	BusyTimeout time.Duration // how long a statement waits for a lock held by another process
}

// Store is the SQLite storage adapter.
type Store struct {
	writer   *sql.DB // exactly one connection: every write, transaction and migration
	reader   *sql.DB // query_only connections for reads
	migrator *migrate.Migrator
	path     string

	// The statements of the methods, prepared once per text and connection (stmtcache.go).
	writeStmts, readStmts *stmtCache
	writePool, readPool   *pool
}

var (
	_ user.Store     = (*Store)(nil)
	_ token.KeyStore = (*Store)(nil)
)

// Open opens (creating if needed) the database at cfg.Path and checks that it answers. It does not
// migrate: call MigrateUp. A nil logger discards logs.
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := validate(cfg); err != nil {
		return nil, err
	}
	busy := cfg.BusyTimeout
	if busy == 0 {
		busy = DefaultBusyTimeout
	}
	if err := createFile(cfg.Path); err != nil {
		return nil, err
	}

	writer, err := sql.Open("sqlite", dsn(cfg.Path, busy, false))
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", cfg.Path, err)
	}
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)
	// The writer is opened and pinged before any reader so that it, not a query_only connection,
	// switches a new file to WAL (a persistent change that needs write access).
	if err := writer.PingContext(ctx); err != nil {
		_ = writer.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", cfg.Path, err)
	}

	reader, err := sql.Open("sqlite", dsn(cfg.Path, busy, true))
	if err != nil {
		_ = writer.Close()
		return nil, fmt.Errorf("open sqlite %s readers: %w", cfg.Path, err)
	}
	readers := max(4, runtime.NumCPU())
	reader.SetMaxOpenConns(readers)
	reader.SetMaxIdleConns(readers)
	if err := reader.PingContext(ctx); err != nil {
		_ = errors.Join(reader.Close(), writer.Close())
		return nil, fmt.Errorf("open sqlite %s readers: %w", cfg.Path, err)
	}

	files, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		_ = errors.Join(reader.Close(), writer.Close())
		return nil, fmt.Errorf("sqlite migrations: %w", err)
	}
	m, err := migrate.New(goose.DialectSQLite3, writer, files, logger)
	if err != nil {
		_ = errors.Join(reader.Close(), writer.Close())
		return nil, err
	}
	logger.InfoContext(ctx, "sqlite store opened", slog.String("path", cfg.Path), slog.String("busy_timeout", busy.String()))
	s := &Store{writer: writer, reader: reader, migrator: m, path: cfg.Path,
		writeStmts: newStmtCache(writer), readStmts: newStmtCache(reader)}
	s.writePool = &pool{db: writer, stmts: s.writeStmts}
	s.readPool = &pool{db: reader, stmts: s.readStmts}
	return s, nil
}

func validate(cfg Config) error {
	switch {
	case cfg.Path == "":
		return errors.New("open sqlite: path is required")
	case strings.HasPrefix(cfg.Path, ":") || strings.HasPrefix(cfg.Path, "file:") || strings.ContainsAny(cfg.Path, "?#"):
		// The writer and the readers must reach the same file: an in-memory name or a URI would
		// give each connection its own database, or be cut at '?' by the driver.
		return fmt.Errorf("open sqlite: path %q must be a plain file path", cfg.Path)
	case cfg.BusyTimeout < 0:
		return fmt.Errorf("open sqlite: busy timeout must not be negative, got %s", cfg.BusyTimeout)
	}
	return nil
}

// createFile creates the database's directory (0700) and an empty file (0600) when missing, so
// that SQLite, which copies the main file's mode to its -wal and -shm files, never makes the
// signing keys readable by other users.
func createFile(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create sqlite directory for %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("create sqlite %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("create sqlite %s: %w", path, err)
	}
	return nil
}

// dsn builds the driver's data source name. The driver runs every _pragma on each new connection,
// so pool churn can never yield a connection without them.
func dsn(path string, busy time.Duration, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busy.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(1)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	} else {
		// Take the write lock at BEGIN rather than at the first write, so that a transaction can
		// never fail half-way on a lock upgrade when another process holds the file.
		q.Set("_txlock", "immediate")
	}
	return path + "?" + q.Encode()
}

// Ping checks that both the writer and a reader answer.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.writer.PingContext(ctx); err != nil {
		return fmt.Errorf("ping sqlite %s writer: %w", s.path, err)
	}
	if err := s.reader.PingContext(ctx); err != nil {
		return fmt.Errorf("ping sqlite %s reader: %w", s.path, err)
	}
	return nil
}

// Close closes every connection. The last one to close checkpoints the WAL into the file.
func (s *Store) Close() error {
	s.readStmts.close()
	s.writeStmts.close()
	if err := errors.Join(s.reader.Close(), s.writer.Close()); err != nil {
		return fmt.Errorf("close sqlite %s: %w", s.path, err)
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
	roles, err := encodeRoles(u.Roles)
	if err != nil {
		return fmt.Errorf("create user %s: %w", u.ID, err)
	}
	_, err = s.w(ctx).ExecContext(ctx,
		`INSERT INTO users (id, username, password_hash, roles, tenant_id, created_at, updated_at)
		 VALUES (?, ?, ?, ?, ?, ?, ?)`,
		u.ID, u.Username, u.PasswordHash, roles, nullString(u.TenantID), formatTime(u.CreatedAt), formatTime(u.UpdatedAt))
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
		u                    user.User
		roles                string
		tenant               sql.NullString
		createdAt, updatedAt string
	)
	err := s.r(ctx).QueryRowContext(ctx,
		`SELECT id, username, password_hash, roles, tenant_id, created_at, updated_at
		 FROM users WHERE username = ?`, username).
		Scan(&u.ID, &u.Username, &u.PasswordHash, &roles, &tenant, &createdAt, &updatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return user.User{}, errs.New(errs.NotFound, "user %q not found", username)
	}
	if err != nil {
		return user.User{}, fmt.Errorf("get user %q: %w", username, err)
	}
	u.TenantID = tenant.String
	if u.Roles, err = decodeRoles(roles); err != nil {
		return user.User{}, fmt.Errorf("get user %q: %w", username, err)
	}
	if u.CreatedAt, err = parseTime(createdAt); err != nil {
		return user.User{}, fmt.Errorf("get user %q: created_at: %w", username, err)
	}
	if u.UpdatedAt, err = parseTime(updatedAt); err != nil {
		return user.User{}, fmt.Errorf("get user %q: updated_at: %w", username, err)
	}
	return u, nil
}

// formatTime keeps microseconds, PostgreSQL's precision, so that both adapters return the same
// value for the same input.
func formatTime(t time.Time) string {
	return t.UTC().Truncate(time.Microsecond).Format(timeFormat)
}

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, err
	}
	return t.UTC(), nil
}

// encodeRoles stores no roles as [] so the column always holds a JSON array.
func encodeRoles(roles []string) (string, error) {
	if len(roles) == 0 {
		return "[]", nil
	}
	b, err := json.Marshal(roles)
	if err != nil {
		return "", fmt.Errorf("encode roles: %w", err)
	}
	return string(b), nil
}

// decodeRoles returns nil for no roles, whatever was stored, so callers see one empty value.
func decodeRoles(s string) ([]string, error) {
	var roles []string
	if err := json.Unmarshal([]byte(s), &roles); err != nil {
		return nil, fmt.Errorf("decode roles: %w", err)
	}
	if len(roles) == 0 {
		return nil, nil
	}
	return roles, nil
}

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

func isUniqueViolation(err error) bool {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || e.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}
