package redisbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/bus/bustest"
	"github.com/nops-kernel/nops/internal/redisconn"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// The benchmarks split bench/bus's closed loop into its two halves, so a change can be judged
// on the side it touches: publishing alone (BenchmarkPublish) and consuming a filled stream
// alone (BenchmarkConsume), each next to go-redis without our layer on the same Redis. Besides
// events/s they report the Redis server's CPU time per event (INFO cpu, the whole server: run
// them on an otherwise quiet Redis), which does not depend on how busy the client machine is:
//
//	go test -run '^$' -bench . -benchtime 100000x ./internal/bus/redisbus/

const (
	benchPublishers = 8
	benchBatch      = 512
	benchPayload    = 1024
)

// BenchmarkPublish: 8 publishers × 512 events per call, like bench/bus's closed loop. "raw" is
// one XADD per event (fields id and data, MINID trimming), pipelined per call: bench/bus's
// baseline.
func BenchmarkPublish(b *testing.B) {
	payload := benchPayloadBytes()
	b.Run("bus", func(b *testing.B) {
		bb, rdb := benchBus(b)
		benchPublish(b, rdb, func(ctx context.Context, msgs []bus.Message) error { return bb.Publish(ctx, msgs...) }, payload)
	})
	b.Run("raw", func(b *testing.B) {
		bb, rdb := benchBus(b)
		key := bb.keys.events()
		benchPublish(b, rdb, func(ctx context.Context, msgs []bus.Message) error {
			minID := strconv.FormatInt(time.Now().Add(-DefaultRetention).UnixMilli(), 10)
			_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, m := range msgs {
					p.XAdd(ctx, &redis.XAddArgs{Stream: key, MinID: minID, Approx: true, Values: []any{"id", m.ID, "data", m.Payload}})
				}
				return nil
			})
			return err
		}, payload)
	})
}

// BenchmarkConsume: b.N events published beforehand (not timed), then consumed by one
// subscription with 16 handlers that return nil ("bus"), or by one XREADGROUP COUNT 256 loop
// with an XACK per event in one pipeline per read ("raw", bench/bus's baseline).
func BenchmarkConsume(b *testing.B) {
	payload := benchPayloadBytes()
	b.Run("bus", func(b *testing.B) {
		bb, rdb := benchBus(b)
		fill(b, bb, payload)
		var n atomic.Int64
		done := make(chan struct{})
		cpu0 := redisCPU(b, rdb)
		b.ResetTimer()
		sub, err := bb.Subscribe(context.Background(), bus.ConsumerConfig{Name: "bench", Concurrency: 16},
			func(context.Context, bus.Delivery) error {
				if n.Add(1) == int64(b.N) {
					close(done)
				}
				return nil
			})
		if err != nil {
			b.Fatal(err)
		}
		<-done
		b.StopTimer()
		reportRate(b, rdb, cpu0, b.N)
		if err := sub.Stop(context.Background()); err != nil {
			b.Fatal(err)
		}
	})
	b.Run("raw", func(b *testing.B) {
		bb, rdb := benchBus(b)
		fill(b, bb, payload)
		ctx := context.Background()
		key := bb.keys.events()
		if err := rdb.XGroupCreate(ctx, key, "raw", "0").Err(); err != nil {
			b.Fatal(err)
		}
		cpu0 := redisCPU(b, rdb)
		b.ResetTimer()
		for got := 0; got < b.N; {
			res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "raw", Consumer: "raw-1", Streams: []string{key, ">"}, Count: 256}).Result()
			if err != nil {
				b.Fatal(err)
			}
			_, err = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, m := range res[0].Messages {
					got++
					p.XAck(ctx, key, "raw", m.ID)
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		reportRate(b, rdb, cpu0, b.N)
	})
}

func benchPayloadBytes() []byte {
	p := make([]byte, benchPayload)
	for i := range p {
		p[i] = 'a' + byte(i%26)
	}
	return p
}

// benchBus opens a bus on a fresh namespace, deleted when the benchmark ends.
func benchBus(b *testing.B) (*Bus, *redis.Client) {
	b.Helper()
	url := services.RedisURL(b)
	rdb, err := redisconn.Open(context.Background(), redisconn.Config{URL: url})
	if err != nil {
		b.Fatal(err)
	}
	ns := bustest.Namespace(b)
	services.CleanupRedisNamespace(b, url, ns)
	bb, err := Open(context.Background(), Config{Client: rdb, Namespace: ns})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := bb.Close(); err != nil {
			b.Error(err)
		}
		rdb.Close()
	})
	return bb, rdb
}

func benchPublish(b *testing.B, rdb *redis.Client, publish func(context.Context, []bus.Message) error, payload []byte) {
	b.SetBytes(int64(len(payload)))
	per := (b.N + benchPublishers - 1) / benchPublishers
	cpu0 := redisCPU(b, rdb)
	b.ResetTimer()
	var wg sync.WaitGroup
	errc := make(chan error, benchPublishers)
	for p := range benchPublishers {
		wg.Go(func() {
			for i := 0; i < per; i += benchBatch {
				msgs := make([]bus.Message, min(benchBatch, per-i))
				for j := range msgs {
					msgs[j] = bus.Message{ID: fmt.Sprintf("p%d-%d", p, i+j), Tenant: "bench", Type: "nops.bench.event.v1", Payload: payload}
				}
				if err := publish(context.Background(), msgs); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	close(errc)
	if err := errors.Join(func() (l []error) {
		for err := range errc {
			l = append(l, err)
		}
		return l
	}()...); err != nil {
		b.Fatal(err)
	}
	reportRate(b, rdb, cpu0, benchPublishers*per)
}

// fill publishes b.N events (not timed).
func fill(b *testing.B, bb *Bus, payload []byte) {
	b.Helper()
	for i := 0; i < b.N; i += benchBatch {
		msgs := make([]bus.Message, min(benchBatch, b.N-i))
		for j := range msgs {
			msgs[j] = bus.Message{ID: fmt.Sprintf("f-%d", i+j), Tenant: "bench", Type: "nops.bench.event.v1", Payload: payload}
		}
		if err := bb.Publish(context.Background(), msgs...); err != nil {
			b.Fatal(err)
		}
	}
}

// reportRate reports the events/s of n events and the Redis server's CPU time per event.
func reportRate(b *testing.B, rdb *redis.Client, cpu0 time.Duration, n int) {
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64((redisCPU(b, rdb)-cpu0).Microseconds())/float64(n), "redis-µs/event")
}

// redisCPU is the Redis server's CPU time so far (user + system, INFO cpu).
func redisCPU(b *testing.B, rdb *redis.Client) time.Duration {
	b.Helper()
	info, err := rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	for _, f := range []string{"used_cpu_user", "used_cpu_sys"} {
		s, err := strconv.ParseFloat(infoField(info, f), 64)
		if err != nil {
			b.Fatalf("INFO cpu %s: %v", f, err)
		}
		total += time.Duration(s * float64(time.Second))
	}
	return total
}
