package postgres

import (
	"context"
	"testing"

	"github.com/nops-kernel/nops/internal/reqsig"
	"github.com/nops-kernel/nops/internal/store/storetest"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

func TestRequestKeys(t *testing.T) {
	storetest.RunRequestKeys(t, func(t *testing.T) storetest.RequestKeyStore {
		s := openTest(t, Config{URL: services.Postgres(t), MaxConns: 16})
		if err := s.MigrateUp(t.Context()); err != nil {
			t.Fatalf("MigrateUp: %v", err)
		}
		return s
	})
}

func TestNonces(t *testing.T) {
	storetest.RunNonces(t, func(t *testing.T) reqsig.NonceStore {
		s := openTest(t, Config{URL: services.Postgres(t), MaxConns: 20})
		if err := s.MigrateUp(t.Context()); err != nil {
			t.Fatalf("MigrateUp: %v", err)
		}
		return s
	}, storetest.NonceOptions{
		CountRecords: func(ctx context.Context, s reqsig.NonceStore) (int, error) {
			var n int
			err := s.(*Store).pool.QueryRow(ctx, `SELECT count(*) FROM request_nonces`).Scan(&n)
			return n, err
		},
	})
}
