// Package store holds the storage types shared by the adapters (internal/store/sqlite,
// internal/store/postgres) and by their callers: internal/kernel, which opens a store and applies
// migrations at start, and cmd/nops, whose `nops migrate up|down|status` reports them. It imports
// nothing of the project, so anything may import it; domain packages do not need to.
package store

import "time"

// MigrationStatus is the state of one embedded schema migration in one database.
type MigrationStatus struct {
	Version   int64     // the numeric prefix of the migration file, e.g. 1 for 00001_users.sql
	Name      string    // the migration file name, e.g. "00001_users.sql"
	Applied   bool      // whether the database has it applied
	AppliedAt time.Time // UTC; zero when not applied
}
