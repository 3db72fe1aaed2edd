// Package redisconn opens the kernel's one shared Redis client (go-redis) with the timeouts the
// kernel relies on: a command against a Redis that is down or unreachable fails within seconds
// and honours its context's deadline, instead of waiting the library's defaults.
//
// Only adapters that need Redis (caches, the Redis event bus) and internal/kernel import
// redisconn.
//
// Secrets: the URL may carry a user and password. They never appear in errors: messages name the
// server by host:port/db only.
//
// Concurrency: the returned *redis.Client is safe for concurrent use; close it once, at shutdown.
package redisconn

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/nops-kernel/nops/internal/errs"
)

// Defaults for values neither Config nor the URL's query sets.
const (
	DefaultDialTimeout  = 2 * time.Second
	DefaultReadTimeout  = 2 * time.Second
	DefaultWriteTimeout = 2 * time.Second
	// DefaultPoolTimeout bounds the wait for a free connection when every one is busy.
	DefaultPoolTimeout = 3 * time.Second
)

// Config is what the kernel's configuration says about Redis.
type Config struct {
	// URL is redis://[user:password@]host:port/db or rediss:// for TLS. go-redis query
	// parameters (dial_timeout, read_timeout, pool_size, ...) are honoured.
	URL string
	// DialTimeout bounds establishing one connection. Zero: the URL's dial_timeout, else 2 s.
	DialTimeout time.Duration
	// PoolSize is the number of connections kept. Zero: the URL's pool_size, else go-redis's
	// default (10 per CPU).
	PoolSize int
}

// Open builds the client and pings Redis once, so a wrong URL or an unreachable server fails at
// start. The ping is bounded by ctx and by DialTimeout + read timeout.
func Open(ctx context.Context, cfg Config) (*redis.Client, error) {
	opt, secrets, err := options(cfg)
	if err != nil {
		return nil, err
	}
	where := fmt.Sprintf("%s/%d", opt.Addr, opt.DB)
	c := redis.NewClient(opt)
	ctx, cancel := context.WithTimeout(ctx, opt.DialTimeout+opt.ReadTimeout)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		return nil, errs.Redact(fmt.Errorf("ping redis %s: %w", where, err), secrets...)
	}
	return c, nil
}

// Ping checks that Redis answers. Errors carry errs.Unavailable.
func Ping(ctx context.Context, c *redis.Client) error {
	if err := c.Ping(ctx).Err(); err != nil {
		return errs.Wrap(errs.Unavailable, fmt.Errorf("ping redis: %w", err), "redis unavailable")
	}
	return nil
}

// options parses cfg.URL and applies the kernel's timeouts. It also returns the URL's secrets, to
// scrub from later errors.
func options(cfg Config) (*redis.Options, []string, error) {
	// url.Parse errors quote the whole URL, credentials included, and go-redis returns them
	// as they are: parse first and report only that the URL is malformed.
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, nil, errors.New("parse redis url: malformed URL")
	}
	var secrets []string
	if u.User != nil {
		if pw, ok := u.User.Password(); ok {
			secrets = append(secrets, pw, url.QueryEscape(pw))
		} else {
			name := u.User.Username()
			secrets = append(secrets, name, url.QueryEscape(name))
		}
	}
	opt, err := redis.ParseURL(cfg.URL)
	if err != nil {
		return nil, nil, errs.Redact(fmt.Errorf("parse redis url: %w", err), secrets...)
	}
	if cfg.DialTimeout > 0 {
		opt.DialTimeout = cfg.DialTimeout
	} else if opt.DialTimeout == 0 {
		opt.DialTimeout = DefaultDialTimeout
	}
	if opt.ReadTimeout == 0 {
		opt.ReadTimeout = DefaultReadTimeout
	}
	if opt.WriteTimeout == 0 {
		opt.WriteTimeout = DefaultWriteTimeout
	}
	if opt.PoolTimeout == 0 {
		opt.PoolTimeout = DefaultPoolTimeout
	}
	if cfg.PoolSize > 0 {
		opt.PoolSize = cfg.PoolSize
	}
	// Callers' deadlines (a readiness probe's timeout, a request's budget) must cut a command
	// short; go-redis ignores them unless told.
	opt.ContextTimeoutEnabled = true
	// One dial per attempt: commands are already retried (MaxRetries), and go-redis's default of
	// five dials per attempt multiplies how long a caller waits on a Redis that is down.
	opt.DialerRetries = 1
	// Maintenance notifications exist for Redis Enterprise/Cloud; "auto" would send a command
	// the open-source server rejects on every new connection.
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return opt, secrets, nil
}
