// Package storetest is the one conformance suite every storage adapter passes: the SQLite and
// PostgreSQL adapters run Run from their own tests, so both behave the same for the domains that
// use them, migrations included. Only adapter tests import storetest.
package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/store"
	"github.com/nops-kernel/nops/internal/token"
	"github.com/nops-kernel/nops/internal/user"
)

// Store is what an adapter offers: the domains' store interfaces, health and migrations.
type Store interface {
	user.Store
	token.KeyStore
	Ping(ctx context.Context) error
	MigrateUp(ctx context.Context) error
	MigrateDown(ctx context.Context) error
	MigrationStatus(ctx context.Context) ([]store.MigrationStatus, error)
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
}

// migrations are the adapters' embedded migrations, in order. Both adapters ship the same set.
var migrations = []struct {
	version int64
	name    string
}{
	{1, "00001_users.sql"},
	{2, "00002_signing_keys.sql"},
	{3, "00003_tenants.sql"},
	{4, "00004_agents.sql"},
	{5, "00005_api_keys.sql"},
	{6, "00006_audit.sql"},
	{7, "00007_outbox.sql"},
	{8, "00008_idempotency.sql"},
	{9, "00009_relay.sql"},
	{10, "00010_rate_limits.sql"},
	{11, "00011_request_keys.sql"},
	{12, "00012_policies.sql"},
	{13, "00013_tenant_perimeter.sql"},
	{14, "00014_routes.sql"},
	{15, "00015_invocations.sql"},
	{16, "00016_identity.sql"},
	{17, "00017_svid_revocations.sql"},
	{18, "00018_rotation.sql"},
	{19, "00019_flags.sql"},
	{20, "00020_sealed_signing_keys.sql"},
	{21, "00021_mcp_tool_approvals.sql"},
	{22, "00022_api_key_rotate_by.sql"},
}

// Run runs the suite. open must return a fresh store with every migration applied, on a database
// no other test uses, and close it (and remove the database) through t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) Store) {
	t.Run("users", func(t *testing.T) { t.Parallel(); testUsers(t, open) })
	t.Run("signing keys", func(t *testing.T) { t.Parallel(); testSigningKeys(t, open) })
	t.Run("signing key rotation", func(t *testing.T) { t.Parallel(); testSigningKeyRotation(t, open) })
	t.Run("signing key sealing", func(t *testing.T) { t.Parallel(); testSigningKeySealing(t, open) })
	t.Run("ping", func(t *testing.T) {
		t.Parallel()
		if err := open(t).Ping(t.Context()); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	})
	t.Run("migrations", func(t *testing.T) { t.Parallel(); testMigrations(t, open) })
	t.Run("transactions", func(t *testing.T) { t.Parallel(); testTransactions(t, open) })
}

// base is a fixed instant with nanoseconds, in a zone other than UTC, so the suite sees adapters
// normalise both: times come back in UTC, at microsecond precision (PostgreSQL's).
var base = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.FixedZone("UTC+2", 2*60*60))

// stored is what an adapter returns for a time it was given.
func stored(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func testUsers(t *testing.T, open func(t *testing.T) Store) {
	t.Run("round trip", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		tests := []struct {
			name string
			in   user.User
		}{
			{"super admin without tenant", user.User{
				ID: "usr_01", Username: "admin", PasswordHash: []byte("$2a$10$hash-admin"),
				Roles: []string{user.RoleSuperAdmin}, CreatedAt: base, UpdatedAt: base.Add(time.Hour),
			}},
			{"tenant user with roles", user.User{
				ID: "usr_02", Username: "alice", PasswordHash: []byte{0x00, 0xff, 0x10},
				Roles: []string{user.RoleAdmin, user.RoleViewer}, TenantID: "ten_01",
				CreatedAt: base.Add(time.Minute), UpdatedAt: base.Add(2 * time.Minute),
			}},
			{"no roles", user.User{
				ID: "usr_03", Username: "Bob ünïcode", PasswordHash: []byte("h"), TenantID: "ten_02",
				CreatedAt: base.UTC(), UpdatedAt: base.UTC(),
			}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx := t.Context()
				if err := s.CreateUser(ctx, tt.in); err != nil {
					t.Fatalf("CreateUser: %v", err)
				}
				got, err := s.UserByUsername(ctx, tt.in.Username)
				if err != nil {
					t.Fatalf("UserByUsername: %v", err)
				}
				want := tt.in
				want.CreatedAt, want.UpdatedAt = stored(tt.in.CreatedAt), stored(tt.in.UpdatedAt)
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("user (-want +got):\n%s", diff)
				}
				checkUTC(t, "CreatedAt", got.CreatedAt)
				checkUTC(t, "UpdatedAt", got.UpdatedAt)
			})
		}
	})

	t.Run("conflicts", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		first := user.User{ID: "usr_10", Username: "carol", PasswordHash: []byte("h"), CreatedAt: base, UpdatedAt: base}
		if err := s.CreateUser(t.Context(), first); err != nil {
			t.Fatalf("CreateUser: %v", err)
		}
		tests := []struct {
			name string
			in   user.User
		}{
			{"same username", user.User{ID: "usr_11", Username: "carol", PasswordHash: []byte("other"), CreatedAt: base, UpdatedAt: base}},
			{"same id", user.User{ID: "usr_10", Username: "dave", PasswordHash: []byte("other"), CreatedAt: base, UpdatedAt: base}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := s.CreateUser(t.Context(), tt.in)
				if got := errs.CodeOf(err); got != errs.Conflict {
					t.Fatalf("CreateUser error code = %q (%v), want %q", got, err, errs.Conflict)
				}
			})
		}
		got, err := s.UserByUsername(t.Context(), "carol")
		if err != nil {
			t.Fatalf("UserByUsername: %v", err)
		}
		if diff := cmp.Diff(first.PasswordHash, got.PasswordHash); diff != "" {
			t.Errorf("a rejected duplicate changed the stored user (-want +got):\n%s", diff)
		}
	})

	t.Run("unknown username", func(t *testing.T) {
		t.Parallel()
		_, err := open(t).UserByUsername(t.Context(), "nobody")
		if got := errs.CodeOf(err); got != errs.NotFound {
			t.Fatalf("UserByUsername error code = %q (%v), want %q", got, err, errs.NotFound)
		}
	})
}

func testSigningKeys(t *testing.T, open func(t *testing.T) Store) {
	t.Run("listed oldest first", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		keys, err := s.SigningKeys(ctx)
		if err != nil {
			t.Fatalf("SigningKeys on an empty store: %v", err)
		}
		if len(keys) != 0 {
			t.Fatalf("SigningKeys on an empty store = %v, want none", keys)
		}
		whole := base.Truncate(time.Second)
		// Inserted out of order. Two share a creation time (the ID breaks the tie), and one sits
		// on a whole second just before one with a fraction, which text ordering of times
		// formatted without a fixed-width fraction would put the wrong way round.
		in := []token.SigningKey{
			{ID: "key_d", Algorithm: "RS256", Private: []byte("rsa-der"), CreatedAt: whole.Add(2 * time.Second)},
			{ID: "key_c", Algorithm: "HS256", Private: []byte("secret"), CreatedAt: whole.Add(500 * time.Millisecond)},
			{ID: "key_b", Algorithm: "ES256", Private: []byte{0x30, 0x00, 0xff}, CreatedAt: whole},
			{ID: "key_a", Algorithm: "EdDSA", Private: []byte("ed25519-der"), CreatedAt: whole},
			{ID: "key_e", Algorithm: "EdDSA", Private: []byte("older"), CreatedAt: base.Add(-24 * time.Hour)},
		}
		for _, k := range in {
			if err := s.CreateSigningKey(ctx, k); err != nil {
				t.Fatalf("CreateSigningKey(%s): %v", k.ID, err)
			}
		}
		got, err := s.SigningKeys(ctx)
		if err != nil {
			t.Fatalf("SigningKeys: %v", err)
		}
		byID := map[string]token.SigningKey{}
		for _, k := range in {
			k.CreatedAt = stored(k.CreatedAt)
			byID[k.ID] = k
		}
		var want []token.SigningKey
		for _, id := range []string{"key_e", "key_a", "key_b", "key_c", "key_d"} {
			want = append(want, byID[id])
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("SigningKeys (-want +got):\n%s", diff)
		}
		for _, k := range got {
			checkUTC(t, k.ID+" CreatedAt", k.CreatedAt)
		}
	})

	t.Run("duplicate id", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		k := token.SigningKey{ID: "key_dup", Algorithm: "EdDSA", Private: []byte("one"), CreatedAt: base}
		if err := s.CreateSigningKey(t.Context(), k); err != nil {
			t.Fatalf("CreateSigningKey: %v", err)
		}
		k.Private = []byte("two")
		err := s.CreateSigningKey(t.Context(), k)
		if got := errs.CodeOf(err); got != errs.Conflict {
			t.Fatalf("second CreateSigningKey error code = %q (%v), want %q", got, err, errs.Conflict)
		}
	})
}

func testMigrations(t *testing.T, open func(t *testing.T) Store) {
	t.Run("status lists every migration applied", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		s := open(t)
		checkStatus(t, s, start, len(migrations))
		// Up on an up-to-date database is a no-op.
		if err := s.MigrateUp(t.Context()); err != nil {
			t.Fatalf("second MigrateUp: %v", err)
		}
		checkStatus(t, s, start, len(migrations))
	})

	t.Run("down then up keeps the rows of surviving tables", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		s := open(t)
		ctx := t.Context()
		users := make([]user.User, 20)
		for i := range users {
			users[i] = user.User{
				ID: fmt.Sprintf("usr_%02d", i), Username: fmt.Sprintf("user-%02d", i),
				PasswordHash: []byte(fmt.Sprintf("hash-%02d", i)), Roles: []string{user.RoleOperator},
				CreatedAt: base.Add(time.Duration(i) * time.Second), UpdatedAt: base.Add(time.Duration(i) * time.Minute),
			}
			if i%2 == 0 {
				users[i].TenantID = fmt.Sprintf("ten_%02d", i)
			}
			if err := s.CreateUser(ctx, users[i]); err != nil {
				t.Fatalf("CreateUser: %v", err)
			}
		}
		for i := range 3 {
			k := token.SigningKey{ID: fmt.Sprintf("key_%d", i), Algorithm: "EdDSA", Private: []byte{byte(i)}, CreatedAt: base}
			if err := s.CreateSigningKey(ctx, k); err != nil {
				t.Fatalf("CreateSigningKey: %v", err)
			}
		}
		before := readUsers(t, s, users)
		keysBefore, err := s.SigningKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}

		// Step down through every migration after signing_keys: users and keys must be untouched
		// after each step.
		for applied := len(migrations) - 1; applied >= 2; applied-- {
			if err := s.MigrateDown(ctx); err != nil {
				t.Fatalf("MigrateDown to %d: %v", applied, err)
			}
			checkStatus(t, s, start, applied)
			if diff := cmp.Diff(before, readUsers(t, s, users)); diff != "" {
				t.Fatalf("users after MigrateDown to %d (-before +after):\n%s", applied, diff)
			}
			// Below 00020 the table lacks columns SigningKeys reads (rotation's of 00018, sealed_key).
			if applied < 20 {
				continue
			}
			keys, err := s.SigningKeys(ctx)
			if err != nil {
				t.Fatalf("SigningKeys after MigrateDown to %d: %v", applied, err)
			}
			if diff := cmp.Diff(keysBefore, keys); diff != "" {
				t.Fatalf("signing keys after MigrateDown to %d (-before +after):\n%s", applied, diff)
			}
		}
		// One more step drops signing_keys only: users must be untouched.
		if err := s.MigrateDown(ctx); err != nil {
			t.Fatalf("MigrateDown: %v", err)
		}
		checkStatus(t, s, start, 1)
		if diff := cmp.Diff(before, readUsers(t, s, users)); diff != "" {
			t.Fatalf("users after MigrateDown (-before +after):\n%s", diff)
		}
		if _, err := s.SigningKeys(ctx); err == nil {
			t.Fatal("SigningKeys after reverting its migration succeeded, want an error")
		}

		if err := s.MigrateUp(ctx); err != nil {
			t.Fatalf("MigrateUp: %v", err)
		}
		checkStatus(t, s, start, len(migrations))
		if diff := cmp.Diff(before, readUsers(t, s, users)); diff != "" {
			t.Fatalf("users after MigrateDown and MigrateUp (-before +after):\n%s", diff)
		}
		checkKeysUsable(t, s)

		// All the way down and back up again.
		for range len(migrations) {
			if err := s.MigrateDown(ctx); err != nil {
				t.Fatalf("MigrateDown: %v", err)
			}
		}
		checkStatus(t, s, start, 0)
		if err := s.MigrateDown(ctx); errs.CodeOf(err) != errs.Conflict {
			t.Fatalf("MigrateDown with nothing applied: error %v, want code %q", err, errs.Conflict)
		}
		if err := s.MigrateUp(ctx); err != nil {
			t.Fatalf("MigrateUp from zero: %v", err)
		}
		checkStatus(t, s, start, len(migrations))
		if _, err := s.UserByUsername(ctx, users[0].Username); errs.CodeOf(err) != errs.NotFound {
			t.Fatalf("UserByUsername after recreating users: error %v, want code %q", err, errs.NotFound)
		}
		if err := s.CreateUser(ctx, users[0]); err != nil {
			t.Fatalf("CreateUser after recreating users: %v", err)
		}
		checkKeysUsable(t, s)
	})
}

// readUsers reads back every user in want by username.
func readUsers(t *testing.T, s Store, want []user.User) []user.User {
	t.Helper()
	out := make([]user.User, 0, len(want))
	for _, u := range want {
		got, err := s.UserByUsername(t.Context(), u.Username)
		if err != nil {
			t.Fatalf("UserByUsername(%q): %v", u.Username, err)
		}
		out = append(out, got)
	}
	return out
}

// checkKeysUsable checks that a freshly created signing_keys table is empty, accepts a key and
// lists it.
func checkKeysUsable(t *testing.T, s Store) {
	t.Helper()
	ctx := t.Context()
	keys, err := s.SigningKeys(ctx)
	if err != nil {
		t.Fatalf("SigningKeys: %v", err)
	}
	if len(keys) != 0 {
		t.Fatalf("SigningKeys on a recreated table = %d keys, want none", len(keys))
	}
	k := token.SigningKey{ID: "key_new", Algorithm: "ES256", Private: []byte("p"), CreatedAt: base}
	if err := s.CreateSigningKey(ctx, k); err != nil {
		t.Fatalf("CreateSigningKey: %v", err)
	}
	keys, err = s.SigningKeys(ctx)
	if err != nil {
		t.Fatalf("SigningKeys: %v", err)
	}
	k.CreatedAt = stored(k.CreatedAt)
	if diff := cmp.Diff([]token.SigningKey{k}, keys); diff != "" {
		t.Fatalf("SigningKeys (-want +got):\n%s", diff)
	}
}

// checkStatus checks that exactly the first applied migrations are applied, at a time between
// start (less a margin: some databases record whole seconds) and now.
func checkStatus(t *testing.T, s Store, start time.Time, applied int) {
	t.Helper()
	got, err := s.MigrationStatus(t.Context())
	if err != nil {
		t.Fatalf("MigrationStatus: %v", err)
	}
	if len(got) != len(migrations) {
		t.Fatalf("MigrationStatus = %+v, want %d migrations", got, len(migrations))
	}
	earliest, latest := start.Add(-2*time.Second), time.Now().Add(2*time.Second)
	for i, m := range migrations {
		g := got[i]
		want := store.MigrationStatus{Version: m.version, Name: m.name, Applied: i < applied, AppliedAt: g.AppliedAt}
		if diff := cmp.Diff(want, g); diff != "" {
			t.Errorf("migration %d status (-want +got):\n%s", m.version, diff)
		}
		if !want.Applied {
			if !g.AppliedAt.IsZero() {
				t.Errorf("migration %d is not applied but has AppliedAt %v", m.version, g.AppliedAt)
			}
			continue
		}
		if g.AppliedAt.Before(earliest) || g.AppliedAt.After(latest) {
			t.Errorf("migration %d AppliedAt = %v, want between %v and %v", m.version, g.AppliedAt, earliest, latest)
		}
		checkUTC(t, fmt.Sprintf("migration %d AppliedAt", m.version), g.AppliedAt)
	}
}

// checkUTC fails unless tm is in UTC: cmp compares times with Equal, which ignores the location.
func checkUTC(t *testing.T, what string, tm time.Time) {
	t.Helper()
	if tm.Location() != time.UTC {
		t.Errorf("%s location = %v, want UTC", what, tm.Location())
	}
}
