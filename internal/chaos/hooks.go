package chaos

import (
	"context"
	"net"
	"net/http"

	"github.com/redis/go-redis/v9"

	"github.com/nops-kernel/nops/internal/bus"
)

// Transport returns next with the Agent faults applied before each request is sent: an injected
// error is returned by RoundTrip, as a failed dial or a reset connection would be, so the invoke
// engine's retries, breakers and outlier ejection see a transport failure and the agent is never
// reached.
func (c *Chaos) Transport(next http.RoundTripper) http.RoundTripper {
	return roundTripper{c: c, next: next}
}

type roundTripper struct {
	c    *Chaos
	next http.RoundTripper
}

func (t roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := t.c.Inject(r.Context(), Agent); err != nil {
		if r.Body != nil {
			_ = r.Body.Close() // RoundTrip must close the body, even on errors
		}
		return nil, err
	}
	return t.next.RoundTrip(r)
}

// Bus returns b with the Bus faults applied to every Publish (the outbox relay's, and the direct
// publishes of the kernel): an injected error fails the publish before the broker sees it, so the
// relay keeps the events in the outbox and retries them.
func (c *Chaos) Bus(b bus.Bus) bus.Bus { return chaosBus{Bus: b, c: c} }

type chaosBus struct {
	bus.Bus
	c *Chaos
}

func (b chaosBus) Publish(ctx context.Context, msgs ...bus.Message) error {
	if err := b.c.Inject(ctx, Bus); err != nil {
		return err
	}
	return b.Bus.Publish(ctx, msgs...)
}

// RedisHook returns a go-redis hook that applies the Redis faults to every command and pipeline
// of the client it is added to (redis.Client.AddHook): the rate limiter, the nonce and
// idempotency stores, and the Redis bus when the bus is Redis. Dials are not affected.
func (c *Chaos) RedisHook() redis.Hook { return redisHook{c: c} }

type redisHook struct{ c *Chaos }

func (h redisHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (h redisHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if err := h.c.Inject(ctx, Redis); err != nil {
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

func (h redisHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if err := h.c.Inject(ctx, Redis); err != nil {
			for _, cmd := range cmds {
				cmd.SetErr(err)
			}
			return err
		}
		return next(ctx, cmds)
	}
}
