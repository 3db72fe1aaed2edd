package sqlite

import (
	"testing"

	"github.com/nops-kernel/nops/internal/store/storetest"
)

func TestSecrets(t *testing.T) {
	storetest.RunSecrets(t, func(t *testing.T) storetest.SecretsStore { return openMigrated(t, Config{}) })
}

func TestSigningKeysAtRest(t *testing.T) {
	storetest.RunSigningKeysAtRest(t, func(t *testing.T) storetest.Store { return openMigrated(t, Config{}) },
		func(t *testing.T, s storetest.Store) map[string]storetest.RawSigningKey {
			t.Helper()
			rows, err := s.(*Store).writer.QueryContext(t.Context(), `SELECT id, private_key, sealed_key FROM signing_keys`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			out := map[string]storetest.RawSigningKey{}
			for rows.Next() {
				var (
					id string
					r  storetest.RawSigningKey
				)
				if err := rows.Scan(&id, &r.Private, &r.Sealed); err != nil {
					t.Fatal(err)
				}
				out[id] = r
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			return out
		})
}
