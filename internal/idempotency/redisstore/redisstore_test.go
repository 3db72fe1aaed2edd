package redisstore_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/idempotency"
	"github.com/nops-kernel/nops/internal/idempotency/redisstore"
	"github.com/nops-kernel/nops/internal/redisconn"
	"github.com/nops-kernel/nops/internal/store/storetest"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// open returns a store under a prefix of its own on the shared Redis; its keys are deleted and
// its client closed when the test ends.
func open(t *testing.T) (*redisstore.Store, *redis.Client, string) {
	t.Helper()
	c, err := redisconn.Open(t.Context(), redisconn.Config{URL: services.RedisURL(t)})
	if err != nil {
		t.Fatalf("open redis: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	prefix := services.UniqueName("nopstest_") + ":idem:"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			if err := c.Del(ctx, iter.Val()).Err(); err != nil {
				t.Errorf("delete %s: %v", iter.Val(), err)
			}
		}
		if err := iter.Err(); err != nil {
			t.Errorf("scan %s*: %v", prefix, err)
		}
	})
	return redisstore.New(c, prefix), c, prefix
}

func TestConformance(t *testing.T) {
	storetest.RunIdempotency(t, func(t *testing.T) idempotency.Store {
		s, _, _ := open(t)
		return s
	}, storetest.IdempotencyOptions{})
}

// TestLayout checks where a record lives and that Redis expires it at its ExpiresAt.
func TestLayout(t *testing.T) {
	s, c, prefix := open(t)
	ctx := t.Context()
	now := time.Now().Truncate(time.Microsecond)
	scope := idempotency.Scope{Tenant: "ten_01", Principal: "usr_01"}
	r := idempotency.Record{
		Scope: scope, Key: "k1", Fingerprint: idempotency.FingerprintRequest(http.MethodPost, "/v1/agents", "", nil),
		Token: idempotency.NewToken(), State: idempotency.InFlight,
		CreatedAt: now, LockedUntil: now.Add(time.Minute), ExpiresAt: now.Add(time.Hour).Add(123 * time.Microsecond),
	}
	if _, ok, err := s.ReserveIdempotencyKey(ctx, r, now); err != nil || !ok {
		t.Fatalf("ReserveIdempotencyKey = %v, %v", ok, err)
	}
	key := s.Key(scope, "k1")
	if !strings.HasPrefix(key, prefix+"ten_01:") {
		t.Errorf("record key %q does not start with the prefix and the tenant", key)
	}
	// Rounded up to the millisecond: a record never vanishes before its ExpiresAt.
	wantMS := (r.ExpiresAt.UnixMicro() + 999) / 1000
	check := func(what string) {
		t.Helper()
		got, err := c.PExpireTime(ctx, key).Result()
		if err != nil {
			t.Fatalf("PEXPIRETIME: %v", err)
		}
		if got.Milliseconds() != wantMS {
			t.Errorf("%s: record expires at %d ms, want %d", what, got.Milliseconds(), wantMS)
		}
	}
	check("reserved")
	expires := r.ExpiresAt.Add(time.Hour)
	wantMS = (expires.UnixMicro() + 999) / 1000
	if err := s.CompleteIdempotencyKey(ctx, scope, "k1", r.Token, idempotency.Response{Status: 201}, expires); err != nil {
		t.Fatalf("CompleteIdempotencyKey: %v", err)
	}
	check("completed")

	// Principal and key are hashed apart: moving the boundary between them is another record.
	if s.Key(idempotency.Scope{Tenant: "ten_01", Principal: "usr_0"}, "1k1") == key {
		t.Error("two scopes share a record key")
	}
}
