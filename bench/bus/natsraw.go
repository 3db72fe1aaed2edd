package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers of JetStream's atomic batch publish (ADR-50, nats-server 2.12+). nats.go v1.55 has no
// API for it, so the baseline sets them itself.
const (
	hdrBatchID     = "Nats-Batch-Id"
	hdrBatchSeq    = "Nats-Batch-Sequence"
	hdrBatchCommit = "Nats-Batch-Commit"
)

// natsRawConfig is the stream the raw baseline creates: the settings natsbus gives its event
// stream, under a namespace of the benchmark's own.
type natsRawConfig struct {
	ns          string // subject prefix and (upper-cased) stream name
	maxAge      time.Duration
	dedup       time.Duration
	replicas    int
	atomic      bool // allow (and use) atomic batch publish
	maxPending  int  // PublishAsync window
	batchPrefix string
}

// natsRaw is the baseline on NATS JetStream: nats.go's jetstream API, no layer of ours. Events
// are published with PublishAsync and a Nats-Msg-Id (the broker's dedup key), or as atomic
// batches, and consumed by a durable pull consumer that acknowledges each message.
type natsRaw struct {
	js      jetstream.JetStream
	stream  string
	subject string
	payload []byte
	rec     *recorder
	cc      jetstream.ConsumeContext
	batches atomic.Int64
	prefix  string
}

var (
	_ asyncPublisher = (*natsRaw)(nil)
	_ publisher      = (*natsRawAtomic)(nil)
)

// openNATSRaw creates the stream and the consumer on nc and starts consuming into rec. Closing
// deletes the stream; nc stays open.
func openNATSRaw(ctx context.Context, nc *nats.Conn, cfg natsRawConfig, payload []byte, rec *recorder) (*natsRaw, error) {
	r := &natsRaw{
		stream:  natsStreamName(cfg.ns, "RAW"),
		subject: cfg.ns + ".events." + benchTenant + "." + benchType,
		payload: payload,
		rec:     rec,
		prefix:  cfg.batchPrefix,
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.maxPending),
		jetstream.WithPublishAsyncTimeout(30*time.Second),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) {
			rec.publishedID(m.Header.Get(jetstream.MsgIDHeader), nil)
		}),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			rec.publishedID(m.Header.Get(jetstream.MsgIDHeader), err)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("raw jetstream: %w", err)
	}
	r.js = js
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:               r.stream,
		Subjects:           []string{cfg.ns + ".events.>", cfg.ns + ".retry.>"},
		Storage:            jetstream.FileStorage,
		Retention:          jetstream.LimitsPolicy,
		MaxAge:             cfg.maxAge,
		Duplicates:         cfg.dedup,
		Replicas:           cfg.replicas,
		AllowAtomicPublish: cfg.atomic,
	})
	if err != nil {
		return nil, fmt.Errorf("raw stream %s: %w", r.stream, err)
	}
	cons, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       "bench",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("raw consumer: %w", err), r.deleteStream())
	}
	r.cc, err = cons.Consume(func(m jetstream.Msg) {
		rec.consumedID(m.Headers().Get(jetstream.MsgIDHeader))
		_ = m.Ack()
	})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("raw consume: %w", err), r.deleteStream())
	}
	return r, nil
}

// natsStreamName is the stream name of namespace ns with a suffix.
func natsStreamName(ns, suffix string) string {
	b := []byte(ns)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b) + "_" + suffix
}

func (r *natsRaw) msg(id string) *nats.Msg {
	m := nats.NewMsg(r.subject)
	m.Data = r.payload
	m.Header.Set(jetstream.MsgIDHeader, id)
	return m
}

func (r *natsRaw) publishAsync(ev event) error {
	// The stall wait is long: a full window is the closed loop's flow control, not a failure.
	_, err := r.js.PublishMsgAsync(r.msg(ev.id), jetstream.WithStallWait(time.Minute))
	return err
}

func (r *natsRaw) wait(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	select {
	case <-r.js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("raw publish: %d acknowledgements still pending: %w", r.js.PublishAsyncPending(), ctx.Err())
	}
}

// close stops the consumer and deletes the stream.
func (r *natsRaw) close() error {
	r.cc.Drain()
	select {
	case <-r.cc.Closed():
	case <-time.After(10 * time.Second):
		r.cc.Stop()
	}
	return r.deleteStream()
}

func (r *natsRaw) deleteStream() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.js.DeleteStream(ctx, r.stream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("delete stream %s: %w", r.stream, err)
	}
	return nil
}

// natsRawAtomic publishes each call's events as one JetStream atomic batch: all but the last
// message without a reply subject, the last one with Nats-Batch-Commit and a request for the
// acknowledgement. Under SyncAlways the server stores a committed batch with one sync
// (nats-server 2.12+, stream.go: "coalesceSync"), instead of one per message.
type natsRawAtomic struct{ r *natsRaw } // not embedded: it must not be an asyncPublisher

func (a natsRawAtomic) publish(ctx context.Context, evs []event) error {
	r := a.r
	if len(evs) == 1 {
		_, err := r.js.PublishMsg(ctx, r.msg(evs[0].id))
		return err
	}
	id := r.prefix + strconv.FormatInt(r.batches.Add(1), 10)
	nc := r.js.Conn()
	for i, ev := range evs {
		m := r.msg(ev.id)
		m.Header.Set(hdrBatchID, id)
		m.Header.Set(hdrBatchSeq, strconv.Itoa(i+1))
		if i < len(evs)-1 {
			if err := nc.PublishMsg(m); err != nil {
				return fmt.Errorf("atomic batch %s message %d: %w", id, i+1, err)
			}
			continue
		}
		m.Header.Set(hdrBatchCommit, "1")
		ack, err := r.js.PublishMsg(ctx, m)
		if err != nil {
			return fmt.Errorf("atomic batch %s commit: %w", id, err)
		}
		if ack.Sequence == 0 {
			return fmt.Errorf("atomic batch %s commit: acknowledged without a sequence", id)
		}
	}
	return nil
}
