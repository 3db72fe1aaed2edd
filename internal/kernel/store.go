package kernel

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/consumers"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/flags"
	"github.com/nops-kernel/nops/internal/idempotency"
	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/invoke"
	"github.com/nops-kernel/nops/internal/mtls"
	"github.com/nops-kernel/nops/internal/perimeter"
	"github.com/nops-kernel/nops/internal/policy"
	"github.com/nops-kernel/nops/internal/ratelimit"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/relay"
	"github.com/nops-kernel/nops/internal/reqsig"
	"github.com/nops-kernel/nops/internal/routing"
	"github.com/nops-kernel/nops/internal/store"
	"github.com/nops-kernel/nops/internal/store/postgres"
	"github.com/nops-kernel/nops/internal/store/sqlite"
	"github.com/nops-kernel/nops/internal/tenant"
	"github.com/nops-kernel/nops/internal/token"
	"github.com/nops-kernel/nops/internal/toolpin"
	"github.com/nops-kernel/nops/internal/user"
)

// Store is the state store as the kernel wires it: every domain store interface plus lifecycle
// and migrations. Both adapters implement it.
type Store interface {
	user.Store
	token.KeyStore
	tenant.Store
	registry.Store
	apikey.Store
	audit.Store
	events.OutboxStore
	relay.LeaseStore
	consumers.Store
	consumers.InboxStore
	idempotency.Store
	ratelimit.OverrideStore
	policy.Store
	reqsig.Store
	reqsig.NonceStore
	reqsig.NoncePurger
	perimeter.Store
	routing.Store
	flags.Store
	invoke.AsyncStore
	identity.Store
	apikey.RedigestStore // API keys moved to the current pepper (secrets.go)
	control.SecretsStore // digests and sealed values counted by version, rewraps (secrets.go)
	mtls.RevocationStore // the mTLS listener's revocation list
	identity.RevocationStore
	toolpin.Store // MCP tool approvals (internal/mcpserver)
	AuditRecords(ctx context.Context, tree string, f store.AuditFilter) ([]audit.Entry, error)
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
	Ping(ctx context.Context) error
	Close() error
	MigrateUp(ctx context.Context) error
	MigrateDown(ctx context.Context) error
	MigrationStatus(ctx context.Context) ([]store.MigrationStatus, error)
}

var (
	_ Store = (*sqlite.Store)(nil)
	_ Store = (*postgres.Store)(nil)
)

// SQLiteFile is the name of the embedded database under the data directory.
const SQLiteFile = "nops.db"

// OpenStore opens the store cfg selects — PostgreSQL when database.url is set, SQLite under
// data_dir otherwise — without migrating it. `nops migrate` uses it directly.
func OpenStore(ctx context.Context, cfg config.Config, logger *slog.Logger) (Store, error) {
	if cfg.Database.URL != "" {
		st, err := postgres.Open(ctx, postgres.Config{
			URL:             cfg.Database.URL,
			MaxConns:        cfg.Database.MaxConns,
			MinConns:        cfg.Database.MinConns,
			ConnectTimeout:  cfg.Database.ConnectTimeout.D(),
			MaxConnLifetime: cfg.Database.MaxConnLifetime.D(),
			MaxConnIdleTime: cfg.Database.MaxConnIdleTime.D(),
		}, logger)
		if err != nil {
			return nil, fmt.Errorf("open postgres: %w", err)
		}
		return st, nil
	}
	st, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(cfg.DataDir, SQLiteFile), BusyTimeout: cfg.Database.BusyTimeout.D()}, logger)
	if err != nil {
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	return st, nil
}
