package redisbus

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/bus/bustest"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/testutil/faultproxy"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// proxied returns a fault proxy in front of the shared Redis and a client connected through
// it; query adds go-redis URL options.
func proxied(t *testing.T, query url.Values) (*faultproxy.Proxy, *redis.Client) {
	t.Helper()
	raw := services.RedisURL(t)
	p := faultproxy.New(t, services.HostPort(t, raw))
	u, err := url.Parse(services.WithHost(t, raw, p.Addr()))
	if err != nil {
		t.Fatalf("parse the proxied URL: %v", err)
	}
	q := u.Query()
	for k, v := range query {
		q[k] = v
	}
	u.RawQuery = q.Encode()
	return p, client(t, u.String())
}

// TestBackpressure: with MaxPending 1 and Redis cut off, a publish holding the only place keeps
// retrying, and the next one gives up after PublishTimeout with a backpressure error (503 +
// Retry-After for HTTP callers). Once Redis is back the first publish completes.
func TestBackpressure(t *testing.T) {
	// Retry for as long as the caller's ctx allows: the first publish stays in flight.
	p, c := proxied(t, url.Values{"max_retries": {"100000"}, "min_retry_backoff": {"10ms"}, "max_retry_backoff": {"20ms"}})
	ns := bustest.Namespace(t)
	services.CleanupRedisNamespace(t, services.RedisURL(t), ns)
	b := openBus(t, Config{Client: c, Namespace: ns, MaxPending: 1, PublishTimeout: 200 * time.Millisecond, Logger: testLogger(t)})

	p.Cut()
	firstCtx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first := make(chan error, 1)
	go func() { first <- b.Publish(firstCtx, msg("bp-first")) }()
	eventually(t, "the first publish to hold the window", func() bool {
		if !b.window.TryAcquire(1) {
			return true
		}
		b.window.Release(1)
		return false
	})

	began := time.Now()
	err := b.Publish(ctxT(t), msg("bp-second"))
	waited := time.Since(began)
	if !errors.Is(err, bus.ErrBackpressure) || !errs.Is(err, errs.Unavailable) {
		t.Fatalf("the second publish = %v, want backpressure (unavailable)", err)
	}
	if e := errs.As(err); e == nil || e.RetryAfter <= 0 {
		t.Errorf("backpressure error %v has no Retry-After", err)
	}
	if waited < 200*time.Millisecond {
		t.Errorf("gave up after %s, before PublishTimeout", waited)
	}
	t.Logf("backpressure after %s: %v", waited, err)

	// The first publish may be stuck on a connection dialled during the outage until its ctx
	// ends (the client's retries are unbounded here): end it, which frees the window.
	p.Restore()
	cancel()
	if err := <-first; err != nil {
		t.Logf("the first publish, cancelled: %v", err)
	}
	eventually(t, "a publish to succeed after the outage", func() bool {
		return b.Publish(ctxT(t), msg("bp-third")) == nil
	})
}

// TestOutageAndReconnect: Redis is cut off while events are published and consumed; once it is
// back, the bus reconnects by itself, publishing resumes, and every event whose publish was
// acknowledged is consumed.
func TestOutageAndReconnect(t *testing.T) {
	p, c := proxied(t, nil)
	ns := bustest.Namespace(t)
	services.CleanupRedisNamespace(t, services.RedisURL(t), ns)
	b := openBus(t, Config{Client: c, Namespace: ns, Logger: testLogger(t)})

	var mu sync.Mutex
	consumed := map[string]int{}
	subscribe(t, b, bus.ConsumerConfig{Name: "survivor", Concurrency: 4}, func(_ context.Context, d bus.Delivery) error {
		mu.Lock()
		consumed[d.ID]++
		mu.Unlock()
		return nil
	})

	var (
		pmu       sync.Mutex
		acked     []string
		failures  int
		restoreAt time.Time
		resumedIn time.Duration
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			id := fmt.Sprintf("evt-%d", i)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := b.Publish(ctx, msg(id))
			cancel()
			pmu.Lock()
			if err == nil {
				acked = append(acked, id)
				if !restoreAt.IsZero() && resumedIn == 0 {
					resumedIn = time.Since(restoreAt)
				}
			} else {
				failures++
			}
			pmu.Unlock()
		}
	}()
	state := func() (int, int, time.Duration) {
		pmu.Lock()
		defer pmu.Unlock()
		return len(acked), failures, resumedIn
	}

	eventually(t, "publishing to run", func() bool { n, _, _ := state(); return n >= 100 })
	p.Cut()
	eventually(t, "publishes to fail", func() bool { _, f, _ := state(); return f >= 3 })
	pmu.Lock()
	restoreAt = time.Now()
	pmu.Unlock()
	p.Restore()
	eventually(t, "publishing to resume", func() bool { _, _, r := state(); return r > 0 })
	before, _, resumed := state()
	eventually(t, "more publishes", func() bool { n, _, _ := state(); return n >= before+100 })
	close(stop)
	<-done

	n, f, _ := state()
	t.Logf("publishing resumed %s after Redis came back (goal < 3s); %d acknowledged, %d failed during the outage", resumed, n, f)
	if resumed > 30*time.Second {
		t.Errorf("publishing resumed only %s after Redis came back", resumed)
	}
	pmu.Lock()
	ids := append([]string(nil), acked...)
	pmu.Unlock()
	eventually(t, "every acknowledged event to be consumed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			if consumed[id] == 0 {
				return false
			}
		}
		return true
	})
}
