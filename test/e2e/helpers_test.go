package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"testing"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

func newEd25519(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

// forEachStore runs test against the embedded SQLite store and against PostgreSQL (a fresh
// database on NOPS_TEST_POSTGRES_URL; skipped, or failed when services are required, without it).
func forEachStore(t *testing.T, test func(t *testing.T, store func(*config.Config))) {
	t.Run("sqlite", func(t *testing.T) { test(t, func(*config.Config) {}) })
	t.Run("postgres", func(t *testing.T) {
		url := services.Postgres(t)
		test(t, func(c *config.Config) { c.Database.URL = url })
	})
}
