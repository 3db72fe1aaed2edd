// Package services gives tests the shared PostgreSQL, Redis and NATS services named by
// NOPS_TEST_POSTGRES_URL, NOPS_TEST_REDIS_URL and NOPS_TEST_NATS_URL. A test asking for a service
// that is not configured is skipped, or fails when NOPS_TEST_REQUIRE_SERVICES=1 (as in CI). Every
// helper hands out something the test owns alone — a fresh database, a key prefix, a unique name —
// and removes it in t.Cleanup, so packages can run in parallel against the same services.
// Only tests import services.
package services

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"

	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

const requireEnv = "NOPS_TEST_REQUIRE_SERVICES"

// lookup returns the URL in env, or skips (or fails, when services are required) the test.
func lookup(t testing.TB, env string) string {
	t.Helper()
	u := os.Getenv(env)
	if u != "" {
		return u
	}
	if os.Getenv(requireEnv) == "1" {
		t.Fatalf("%s is not set and %s=1", env, requireEnv)
	}
	t.Skipf("%s is not set", env)
	return ""
}

// UniqueName returns prefix followed by 12 random hex characters: a name no other test uses.
func UniqueName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// PostgresURL returns the shared server's URL, unchanged.
func PostgresURL(t testing.TB) string {
	t.Helper()
	return lookup(t, "NOPS_TEST_POSTGRES_URL")
}

// Postgres creates a fresh database on the shared PostgreSQL server and returns its URL; the
// database is dropped when the test ends.
func Postgres(t testing.TB) string {
	t.Helper()
	base := PostgresURL(t)
	name := UniqueName("nops_test_")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to %s: %v", redact(base), err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("drop database %s: connect: %v", name, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parse NOPS_TEST_POSTGRES_URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// RedisURL returns the shared Redis URL. Tests must confine their keys to a prefix from
// UniqueName and delete them when done.
func RedisURL(t testing.TB) string {
	t.Helper()
	return lookup(t, "NOPS_TEST_REDIS_URL")
}

// NATSURL returns the shared NATS URL. Tests must use streams and subjects named with
// UniqueName and delete them when done.
func NATSURL(t testing.TB) string {
	t.Helper()
	return lookup(t, "NOPS_TEST_NATS_URL")
}

// HostPort returns the host:port of a service URL, for putting a proxy in front of it.
func HostPort(t testing.TB, raw string) string {
	t.Helper()
	u, err := url.Parse(strings.Split(raw, ",")[0])
	if err != nil || u.Host == "" {
		t.Fatalf("service URL %q has no host", redact(raw))
	}
	return u.Host
}

// WithHost returns raw with its host:port replaced, keeping scheme, credentials, path and query.
func WithHost(t testing.TB, raw, hostport string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("parse service URL: %v", err)
	}
	u.Host = hostport
	return u.String()
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// NATSNamespace returns the shared NATS URL and a bus namespace of the test's own, and deletes
// the namespace's streams ("<NS>_EVENTS", "<NS>_DLQ", with their consumers) when the test ends.
// Call it before opening anything on the namespace, so that its cleanup runs after theirs.
func NATSNamespace(t testing.TB) (url, ns string) {
	t.Helper()
	url = NATSURL(t)
	ns = UniqueName("t")
	t.Cleanup(func() { DeleteNATSStreams(t, url, ns) })
	return url, ns
}

// DeleteNATSStreams deletes the streams of bus namespace ns on the NATS at url, if they exist.
func DeleteNATSStreams(t testing.TB, url, ns string) {
	t.Helper()
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		t.Errorf("delete the streams of namespace %s: %v", ns, err)
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Errorf("delete the streams of namespace %s: %v", ns, err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, suffix := range []string{"_EVENTS", "_DLQ"} {
		name := strings.ToUpper(ns) + suffix
		if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("delete stream %s: %v", name, err)
		}
	}
}

// RedisNamespace returns the shared Redis URL and a namespace of the test's own, whose keys are
// deleted when the test ends (see CleanupRedisNamespace). Call it before opening anything on the
// namespace, so that its cleanup runs after theirs.
func RedisNamespace(t testing.TB) (url, ns string) {
	t.Helper()
	url = RedisURL(t)
	ns = UniqueName("t")
	CleanupRedisNamespace(t, url, ns)
	return url, ns
}

// CleanupRedisNamespace deletes, when the test ends, every key of namespace ns on the Redis at
// url: the bus's keys ("{ns}:…") and the other stores' ("ns:…", e.g. idempotency records).
func CleanupRedisNamespace(t testing.TB, url, ns string) {
	t.Helper()
	t.Cleanup(func() {
		opt, err := redis.ParseURL(url)
		if err != nil {
			t.Errorf("parse the redis url: %v", err)
			return
		}
		c := redis.NewClient(opt)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, pattern := range []string{"{" + ns + "}:*", ns + ":*"} {
			var keys []string
			iter := c.Scan(ctx, 0, pattern, 500).Iterator()
			for iter.Next(ctx) {
				keys = append(keys, iter.Val())
			}
			if err := iter.Err(); err != nil {
				t.Errorf("scan the keys of namespace %s: %v", ns, err)
				return
			}
			for batch := range slices.Chunk(keys, 500) {
				if err := c.Del(ctx, batch...).Err(); err != nil {
					t.Errorf("delete the keys of namespace %s: %v", ns, err)
				}
			}
		}
	})
}
