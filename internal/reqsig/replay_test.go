package reqsig_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/redisconn"
	"github.com/nops-kernel/nops/internal/reqsig"
	"github.com/nops-kernel/nops/internal/reqsig/redisnonce"
	"github.com/nops-kernel/nops/internal/store/postgres"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// TestReplayAfterRestart: a nonce accepted before the kernel restarts is refused after it — the
// SQLite store keeps it in the database file.
func TestReplayAfterRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nops.db")
	c := newClock(t0)

	first := openSQLite(t, path)
	seed(t, first)
	keys := newKeys(t, first, c, reqsig.KeysOptions{})
	_, signer := createHMAC(t, keys, "")
	r, body := sign(t, postJSON, signer, t0, "")
	if _, err := newVerifier(t, keys, first, c, reqsig.Config{}).Verify(context.Background(), r, body); err != nil {
		t.Fatalf("Verify before the restart: %v", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	second := openSQLite(t, path)
	keys = newKeys(t, second, c, reqsig.KeysOptions{})
	r, body = replay(t, r, body)
	_, err := newVerifier(t, keys, second, c, reqsig.Config{}).Verify(context.Background(), r, body)
	wantRefusal(t, err, reqsig.CodeReplay, "nonce already used")
}

// TestReplayAcrossRedisReplicas: two verifiers (replicas) with clients of their own on one Redis
// namespace; what one accepted, the other refuses.
func TestReplayAcrossRedisReplicas(t *testing.T) {
	url, ns := services.RedisNamespace(t)
	s := openSQLite(t, "")
	seed(t, s)
	c := newClock(t0)
	keys := newKeys(t, s, c, reqsig.KeysOptions{CacheTTL: reqsig.MaxCacheTTL})
	_, hmacSigner := createHMAC(t, keys, "")
	_, edSigner := createEd25519(t, keys)
	var replicas []*reqsig.Verifier
	for range 2 {
		client, err := redisconn.Open(t.Context(), redisconn.Config{URL: url})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = client.Close() })
		replicas = append(replicas, newVerifier(t, keys, redisnonce.New(client, ns+":nonce:"), c, reqsig.Config{}))
	}
	for _, signer := range []reqsig.SignerKey{hmacSigner, edSigner} {
		t.Run(string(signer.Alg), func(t *testing.T) {
			r, body := sign(t, postJSON, signer, t0, "")
			if _, err := replicas[0].Verify(context.Background(), r, body); err != nil {
				t.Fatalf("replica 0: %v", err)
			}
			r, body = replay(t, r, body)
			_, err := replicas[1].Verify(context.Background(), r, body)
			wantRefusal(t, err, reqsig.CodeReplay, "nonce already used")
		})
	}
}

// TestReplayAcrossPostgresReplicas: two kernels (stores with pools of their own) on one
// PostgreSQL database; what one accepted, the other refuses.
func TestReplayAcrossPostgresReplicas(t *testing.T) {
	url := services.Postgres(t)
	c := newClock(t0)
	var (
		stores []*postgres.Store
		keys   []*reqsig.Keys
	)
	for range 2 {
		s, err := postgres.Open(t.Context(), postgres.Config{URL: url}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		stores = append(stores, s)
		keys = append(keys, newKeys(t, s, c, reqsig.KeysOptions{}))
	}
	if err := stores[0].MigrateUp(t.Context()); err != nil {
		t.Fatal(err)
	}
	seed(t, stores[0])
	_, signer := createEd25519(t, keys[0])
	r, body := sign(t, postJSON, signer, t0, "")
	if _, err := newVerifier(t, keys[0], stores[0], c, reqsig.Config{}).Verify(context.Background(), r, body); err != nil {
		t.Fatalf("replica 0: %v", err)
	}
	r, body = replay(t, r, body)
	_, err := newVerifier(t, keys[1], stores[1], c, reqsig.Config{}).Verify(context.Background(), r, body)
	wantRefusal(t, err, reqsig.CodeReplay, "nonce already used")
}

// replay returns a copy of a received request, as an attacker who captured it sends it again.
func replay(t testing.TB, r *http.Request, body []byte) (*http.Request, []byte) {
	t.Helper()
	c := r.Clone(context.Background())
	c.Body = io.NopCloser(bytes.NewReader(body))
	return c, bytes.Clone(body)
}

// TestGroupCommitSQLite: concurrent claims on the SQLite store, grouped into shared
// transactions, accept each nonce exactly once, and what they accepted is refused after a
// restart, under either durability.
func TestGroupCommitSQLite(t *testing.T) {
	for _, d := range []reqsig.Durability{reqsig.DurabilityFull, reqsig.DurabilityProcess} {
		t.Run(string(d), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "nops.db")
			st := openSQLite(t, path)
			claimOnce(t, st, st, d)
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			again := openSQLite(t, path)
			claimedBefore(t, again, again, d)
		})
	}
}

// TestGroupCommitPostgresProcess: the same on PostgreSQL with process durability (commits with
// synchronous_commit off), the restart being a new pool.
func TestGroupCommitPostgresProcess(t *testing.T) {
	url := services.Postgres(t)
	open := func() *postgres.Store {
		s, err := postgres.Open(t.Context(), postgres.Config{URL: url}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	st := open()
	if err := st.MigrateUp(t.Context()); err != nil {
		t.Fatal(err)
	}
	key := "key_" + reqsig.NewNonce() // of this test alone: the database is shared
	claimOnceKey(t, st, st, reqsig.DurabilityProcess, key)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	again := open()
	claimedBeforeKey(t, again, again, reqsig.DurabilityProcess, key)
}

const groupClaimers, groupNonces = 32, 8

func claimOnce(t *testing.T, st reqsig.NonceStore, tx reqsig.TxRunner, d reqsig.Durability) {
	t.Helper()
	claimOnceKey(t, st, tx, d, "key_A")
}

func claimedBefore(t *testing.T, st reqsig.NonceStore, tx reqsig.TxRunner, d reqsig.Durability) {
	t.Helper()
	claimedBeforeKey(t, st, tx, d, "key_A")
}

// claimOnceKey claims groupNonces nonces of key, each groupClaimers/groupNonces times
// concurrently, and checks that each was accepted once.
func claimOnceKey(t *testing.T, st reqsig.NonceStore, tx reqsig.TxRunner, d reqsig.Durability, key string) {
	t.Helper()
	g, err := reqsig.NewGroupCommitNonces(st, tx, d)
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg       sync.WaitGroup
		accepted [groupNonces]atomic.Int64
	)
	for i := range groupClaimers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := i % groupNonces
			ok, err := g.ClaimNonce(context.Background(), key, fmt.Sprint("n", n), t0.Add(time.Minute), t0)
			if err != nil {
				t.Error(err)
			}
			if ok {
				accepted[n].Add(1)
			}
		}()
	}
	wg.Wait()
	for n := range groupNonces {
		if got := accepted[n].Load(); got != 1 {
			t.Fatalf("nonce n%d claimed %d times concurrently: accepted %d times, want 1", n, groupClaimers/groupNonces, got)
		}
	}
}

// claimedBeforeKey checks that every nonce claimOnceKey accepted is refused.
func claimedBeforeKey(t *testing.T, st reqsig.NonceStore, tx reqsig.TxRunner, d reqsig.Durability, key string) {
	t.Helper()
	g, err := reqsig.NewGroupCommitNonces(st, tx, d)
	if err != nil {
		t.Fatal(err)
	}
	for n := range groupNonces {
		if ok, err := g.ClaimNonce(context.Background(), key, fmt.Sprint("n", n), t0.Add(time.Minute), t0); ok || err != nil {
			t.Fatalf("nonce n%d after a restart: ok %v err %v", n, ok, err)
		}
	}
}
