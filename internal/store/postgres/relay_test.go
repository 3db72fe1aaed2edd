package postgres

import (
	"testing"

	"github.com/nops-kernel/nops/internal/consumers"
	"github.com/nops-kernel/nops/internal/store/storetest"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// relayVersion is the migration that creates leases, inbox and event_stats.
const relayVersion = 9

// openRelay opens a migrated store on a fresh database with a connection for each racing
// goroutine of the suites, so that they really run side by side.
func openRelay(t *testing.T) *Store {
	t.Helper()
	s := openTest(t, Config{URL: services.Postgres(t), MaxConns: max(storetest.LeaseRacers, storetest.InboxClaimers) + 2})
	if err := s.MigrateUp(t.Context()); err != nil {
		t.Fatalf("MigrateUp: %v", err)
	}
	return s
}

func TestLeases(t *testing.T) {
	storetest.RunLeases(t, func(t *testing.T) storetest.LeaseTxStore { return openRelay(t) })
}

func TestInbox(t *testing.T) {
	storetest.RunInbox(t, func(t *testing.T) storetest.InboxTxStore { return openRelay(t) }, inboxBatch)
}

func TestEventStats(t *testing.T) {
	storetest.RunEventStats(t, func(t *testing.T) consumers.EventStatsStore { return openRelay(t) })
}

// TestRelayMigrationDown reverts the relay's migration and applies it again.
func TestRelayMigrationDown(t *testing.T) {
	s := openRelay(t)
	ctx := t.Context()
	if ok, err := s.ClaimInbox(ctx, "stats", "evt_1", storetest.OutboxBase); err != nil || !ok {
		t.Fatalf("ClaimInbox = %t, %v", ok, err)
	}
	for {
		status, err := s.MigrationStatus(ctx)
		if err != nil {
			t.Fatalf("MigrationStatus: %v", err)
		}
		applied := false
		for _, m := range status {
			if m.Version == relayVersion {
				applied = m.Applied
			}
		}
		if !applied {
			break
		}
		if err := s.MigrateDown(ctx); err != nil {
			t.Fatalf("MigrateDown: %v", err)
		}
	}
	var leftovers int
	if err := s.pool.QueryRow(ctx,
		`SELECT count(*) FROM pg_class WHERE relname IN ('leases', 'inbox', 'event_stats', 'inbox_applied')`).Scan(&leftovers); err != nil {
		t.Fatalf("read catalog: %v", err)
	}
	if leftovers != 0 {
		t.Errorf("%d relations left after the down migration", leftovers)
	}
	if err := s.MigrateUp(ctx); err != nil {
		t.Fatalf("MigrateUp: %v", err)
	}
	if ok, err := s.ClaimInbox(ctx, "stats", "evt_1", storetest.OutboxBase); err != nil || !ok {
		t.Fatalf("ClaimInbox on the recreated inbox = %t, %v; want true", ok, err)
	}
}
