package reqsig_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/reqsig"
	"github.com/nops-kernel/nops/internal/store/storetest"
)

func openFileNonces(t testing.TB, dir string, d reqsig.Durability, now func() time.Time) *reqsig.FileNonces {
	t.Helper()
	f, err := reqsig.OpenFileNonces(dir, reqsig.FileNoncesOptions{Durability: d, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// The nonce journal passes the NonceStore conformance suite under either durability.
func TestFileNoncesConformance(t *testing.T) {
	for _, d := range []reqsig.Durability{reqsig.DurabilityFull, reqsig.DurabilityProcess} {
		t.Run(string(d), func(t *testing.T) {
			storetest.RunNonces(t, func(t *testing.T) reqsig.NonceStore { return openFileNonces(t, t.TempDir(), d, nil) },
				storetest.NonceOptions{CountRecords: func(_ context.Context, s reqsig.NonceStore) (int, error) {
					return reqsig.LiveNonces(s.(*reqsig.FileNonces)), nil
				}})
		})
	}
}

// TestReplayAfterRestartFileNonces: a signature accepted before the kernel restarts is refused
// after it when the nonces are in the journal, under either durability.
func TestReplayAfterRestartFileNonces(t *testing.T) {
	for _, d := range []reqsig.Durability{reqsig.DurabilityFull, reqsig.DurabilityProcess} {
		t.Run(string(d), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "nonces")
			c := newClock(t0)
			st := openSQLite(t, filepath.Join(t.TempDir(), "nops.db"))
			seed(t, st)
			keys := newKeys(t, st, c, reqsig.KeysOptions{})
			_, signer := createHMAC(t, keys, "")

			first := openFileNonces(t, dir, d, c.Now)
			r, body := sign(t, postJSON, signer, t0, "")
			if _, err := newVerifier(t, keys, first, c, reqsig.Config{NonceDurability: d}).Verify(context.Background(), r, body); err != nil {
				t.Fatalf("Verify before the restart: %v", err)
			}
			if err := first.Close(); err != nil {
				t.Fatal(err)
			}
			second := openFileNonces(t, dir, d, c.Now)
			r, body = replay(t, r, body)
			_, err := newVerifier(t, keys, second, c, reqsig.Config{}).Verify(context.Background(), r, body)
			wantRefusal(t, err, reqsig.CodeReplay, "nonce already used")
		})
	}
}
