package redisconn

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestOpenAndUse(t *testing.T) {
	ctx := ctxT(t)
	c, err := Open(ctx, Config{URL: services.RedisURL(t), PoolSize: 4})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	key := services.UniqueName("redisconn_test:") + ":greeting"
	t.Cleanup(func() {
		if err := c.Del(context.Background(), key).Err(); err != nil {
			t.Errorf("delete %s: %v", key, err)
		}
	})
	if err := c.Set(ctx, key, "hello", time.Minute).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	got, err := c.Get(ctx, key).Result()
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	if got != "hello" {
		t.Fatalf("GET = %q", got)
	}
	if err := Ping(ctx, c); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if got := c.Options().PoolSize; got != 4 {
		t.Fatalf("PoolSize = %d, want 4", got)
	}
}

func TestPingClosedClient(t *testing.T) {
	c, err := Open(ctxT(t), Config{URL: services.RedisURL(t)})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	c.Close()
	if err := Ping(ctxT(t), c); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("Ping on a closed client = %v, want unavailable", err)
	}
}

func TestOptions(t *testing.T) {
	type got struct {
		Addr                        string
		DB, PoolSize, DialerRetries int
		Dial, Read, Write, Pool     time.Duration
		ContextTimeoutEnabled       bool
		Maint                       maintnotifications.Mode
	}
	plain := redis.NewClient(&redis.Options{})
	defaultPool := plain.Options().PoolSize
	plain.Close()
	tests := []struct {
		name string
		cfg  Config
		want got
	}{
		{
			name: "defaults",
			cfg:  Config{URL: "redis://127.0.0.1:6379/0"},
			want: got{Addr: "127.0.0.1:6379", PoolSize: defaultPool, DialerRetries: 1, Dial: 2 * time.Second, Read: 2 * time.Second, Write: 2 * time.Second, Pool: 3 * time.Second},
		},
		{
			name: "config wins over url",
			cfg:  Config{URL: "redis://h:1/3?dial_timeout=7s&pool_size=9", DialTimeout: 500 * time.Millisecond, PoolSize: 5},
			want: got{Addr: "h:1", DB: 3, PoolSize: 5, DialerRetries: 1, Dial: 500 * time.Millisecond, Read: 2 * time.Second, Write: 2 * time.Second, Pool: 3 * time.Second},
		},
		{
			name: "url wins over defaults",
			cfg:  Config{URL: "redis://h:1/0?dial_timeout=7s&read_timeout=4s&write_timeout=5s&pool_timeout=6s&pool_size=9"},
			want: got{Addr: "h:1", PoolSize: 9, DialerRetries: 1, Dial: 7 * time.Second, Read: 4 * time.Second, Write: 5 * time.Second, Pool: 6 * time.Second},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opt, _, err := options(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			// NewClient fills library defaults (pool size) the way Open will see them.
			c := redis.NewClient(opt)
			defer c.Close()
			o := c.Options()
			tt.want.ContextTimeoutEnabled = true
			tt.want.Maint = maintnotifications.ModeDisabled
			g := got{o.Addr, o.DB, o.PoolSize, o.DialerRetries, o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout, o.ContextTimeoutEnabled, o.MaintNotificationsConfig.Mode}
			if diff := cmp.Diff(tt.want, g); diff != "" {
				t.Fatalf("options (-want +got):\n%s", diff)
			}
		})
	}
}

func TestOpenFailuresDoNotLeakCredentials(t *testing.T) {
	real := services.HostPort(t, services.RedisURL(t))
	tests := []struct {
		name, url, secret, want string
	}{
		{"unreachable", "redis://alice:s3cr3t-pw@127.0.0.1:1/0", "s3cr3t-pw", "127.0.0.1:1/0"},
		{"wrong password", "redis://nops-no-such-user:s3cr3t-pw@" + real + "/0", "s3cr3t-pw", real},
		{"malformed", "redis://alice:pa%zzword@127.0.0.1:1/0", "pa%zzword", "malformed"},
		{"bad scheme", "http://alice:s3cr3t-pw@127.0.0.1:1/0", "s3cr3t-pw", "scheme"},
		{"bad db", "redis://alice:s3cr3t-pw@127.0.0.1:1/s3cr3t-pw", "s3cr3t-pw", "database"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			c, err := Open(context.Background(), Config{URL: tt.url, DialTimeout: 500 * time.Millisecond})
			if err == nil {
				c.Close()
				t.Fatal("Open succeeded")
			}
			if strings.Contains(err.Error(), tt.secret) {
				t.Fatalf("error leaks a credential: %v", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not mention %q", err, tt.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("Open took %s", d)
			}
			t.Logf("error: %v", err)
		})
	}
}

// TestOpenHonoursContextDeadline proves commands stop at the caller's deadline: the server
// accepts connections and never answers, and the 2 s read timeout must not be waited for.
func TestOpenHonoursContextDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	defer func() {
		ln.Close()
		wg.Wait()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	c, err := Open(ctx, Config{URL: "redis://" + ln.Addr().String() + "/0"})
	if err == nil {
		c.Close()
		t.Fatal("Open succeeded against a silent server")
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Fatalf("Open took %s with a 300ms deadline", d)
	}
}
