package redisnonce_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/redisconn"
	"github.com/nops-kernel/nops/internal/reqsig"
	"github.com/nops-kernel/nops/internal/reqsig/redisnonce"
	"github.com/nops-kernel/nops/internal/store/storetest"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// open returns a store under a namespace of its own on the shared Redis; its keys are deleted
// and its client closed when the test ends.
func open(t *testing.T) (*redisnonce.Store, *redis.Client, string) {
	t.Helper()
	url, ns := services.RedisNamespace(t)
	c, err := redisconn.Open(t.Context(), redisconn.Config{URL: url})
	if err != nil {
		t.Fatalf("open redis: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	prefix := ns + ":nonce:"
	return redisnonce.New(c, prefix), c, prefix
}

func TestConformance(t *testing.T) {
	storetest.RunNonces(t, func(t *testing.T) reqsig.NonceStore {
		s, _, _ := open(t)
		return s
	}, storetest.NonceOptions{})
}

// TestLayout checks where a record lives and that Redis expires it no earlier than expiresAt.
func TestLayout(t *testing.T) {
	s, c, prefix := open(t)
	ctx := t.Context()
	now := time.Now()
	until := now.Add(90*time.Second + 300*time.Microsecond)
	ok, err := s.ClaimNonce(ctx, "rk_01", "n:1", until, now)
	if err != nil || !ok {
		t.Fatalf("ClaimNonce = %v, %v", ok, err)
	}
	key := prefix + "rk_01:n:1"
	if s.Key("rk_01", "n:1") != key {
		t.Fatalf("Key = %q, want %q", s.Key("rk_01", "n:1"), key)
	}
	ttl, err := c.PTTL(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	// Rounded up to the millisecond; Redis may have counted down a little since.
	if ttl > 90*time.Second+time.Millisecond || ttl < 80*time.Second {
		t.Fatalf("PTTL = %v, want about 90.001s", ttl)
	}
	// A record dead on arrival is written with the shortest expiry and says true, as SQL does.
	ok, err = s.ClaimNonce(ctx, "rk_01", "late", now.Add(-time.Second), now)
	if err != nil || !ok {
		t.Fatalf("ClaimNonce of a dead record = %v, %v", ok, err)
	}
}
