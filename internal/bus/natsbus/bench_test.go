package natsbus

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nops-kernel/nops/internal/bus"
)

// BenchmarkPublish measures Publish on the embedded server (1 KB events, 4 concurrent
// publishers) under each durability setting and batch size, next to the raw client (async
// publishes of the same messages on the same stream) as the baseline. Batches of 100 go as
// atomic batches by default ("bus") and one message at a time with AtomicBatchMin -1
// ("bus-singles"):
//
//	go test -run '^$' -bench Publish -benchtime 20000x ./internal/bus/natsbus/
func BenchmarkPublish(b *testing.B) {
	payload := make([]byte, 1024)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	for _, d := range []Durability{DurabilitySync, DurabilityAsync} {
		for _, batch := range []int{1, 100} {
			b.Run(fmt.Sprintf("%s/batch=%d/bus", d, batch), func(b *testing.B) {
				bb := benchBus(b, d, 0)
				benchParallel(b, batch, func(ctx context.Context, msgs []bus.Message) error {
					return bb.Publish(ctx, msgs...)
				}, payload)
			})
			if batch >= DefaultAtomicBatchMin {
				b.Run(fmt.Sprintf("%s/batch=%d/bus-singles", d, batch), func(b *testing.B) {
					bb := benchBus(b, d, -1)
					benchParallel(b, batch, func(ctx context.Context, msgs []bus.Message) error {
						return bb.Publish(ctx, msgs...)
					}, payload)
				})
			}
			b.Run(fmt.Sprintf("%s/batch=%d/raw", d, batch), func(b *testing.B) {
				bb := benchBus(b, d, 0)
				js, err := jetstream.New(bb.Conn())
				if err != nil {
					b.Fatal(err)
				}
				benchParallel(b, batch, func(ctx context.Context, msgs []bus.Message) error {
					futures := make([]jetstream.PubAckFuture, len(msgs))
					for i, m := range msgs {
						f, err := js.PublishMsgAsync(&nats.Msg{Subject: bb.subj.Event(m.Tenant, m.Type), Data: m.Payload,
							Header: nats.Header{jetstream.MsgIDHeader: {m.ID}}})
						if err != nil {
							return err
						}
						futures[i] = f
					}
					for _, f := range futures {
						select {
						case <-f.Ok():
						case err := <-f.Err():
							return err
						}
					}
					return nil
				}, payload)
			})
		}
	}
}

func benchBus(b *testing.B, d Durability, atomicBatchMin int) *Bus {
	b.Helper()
	bb, err := Open(context.Background(), Config{StoreDir: b.TempDir(), Durability: d, Namespace: "bench", DedupWindow: 0, AtomicBatchMin: atomicBatchMin}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bb.Close() })
	return bb
}

func benchParallel(b *testing.B, batch int, publish func(context.Context, []bus.Message) error, payload []byte) {
	const publishers = 4
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	var wg sync.WaitGroup
	per := (b.N + publishers - 1) / publishers
	for p := range publishers {
		wg.Go(func() {
			for i := 0; i < per; i += batch {
				n := min(batch, per-i)
				msgs := make([]bus.Message, n)
				for j := range msgs {
					msgs[j] = bus.Message{ID: fmt.Sprintf("p%d-%d", p, i+j), Tenant: testTenant, Type: testType, Payload: payload}
				}
				if err := publish(context.Background(), msgs); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(publishers*per)/b.Elapsed().Seconds(), "events/s")
}
