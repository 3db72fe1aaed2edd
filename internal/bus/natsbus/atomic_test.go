package natsbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// stored is one message of the event stream as the tests look at it.
type stored struct {
	id, batch, seq, commit string
}

// storedMsgs returns every message of b's event stream, in stream order.
func storedMsgs(t *testing.T, b *Bus) []stored {
	t.Helper()
	ctx := ctxT(t)
	info, err := b.events.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []stored
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		raw, err := b.events.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("GetMsg(%d): %v", seq, err)
		}
		out = append(out, stored{
			id: raw.Header.Get(nats.MsgIdHdr), batch: raw.Header.Get(hdrBatchID),
			seq: raw.Header.Get(hdrBatchSeq), commit: raw.Header.Get(hdrBatchCommit),
		})
	}
	return out
}

func storedIDs(msgs []stored) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.id
	}
	return out
}

// checkBatches fails unless msgs form atomic batches of the given sizes, in order: one batch
// id per batch, sequences 1..n, the commit header on the last message only.
func checkBatches(t *testing.T, msgs []stored, sizes ...int) {
	t.Helper()
	seen := map[string]bool{}
	for _, size := range sizes {
		if len(msgs) < size {
			t.Fatalf("%d messages left, want a batch of %d", len(msgs), size)
		}
		batch := msgs[:size]
		msgs = msgs[size:]
		id := batch[0].batch
		if id == "" || seen[id] {
			t.Fatalf("batch starting with %s has id %q (ids so far %v)", batch[0].id, id, seen)
		}
		seen[id] = true
		for i, m := range batch {
			commit := ""
			if i == size-1 {
				commit = "1"
			}
			if m.batch != id || m.seq != strconv.Itoa(i+1) || m.commit != commit {
				t.Fatalf("message %d of the batch of %d: %+v, want batch %s, seq %d, commit %q", i+1, size, m, id, i+1, commit)
			}
		}
	}
	if len(msgs) > 0 {
		t.Fatalf("%d messages after the batches, first %+v", len(msgs), msgs[0])
	}
}

// checkSingles fails if any of msgs was stored as part of an atomic batch.
func checkSingles(t *testing.T, msgs []stored) {
	t.Helper()
	for _, m := range msgs {
		if m.batch != "" || m.seq != "" || m.commit != "" {
			t.Fatalf("message %s stored with batch headers: %+v", m.id, m)
		}
	}
}

// TestAtomicBatchPublish: with the defaults, a Publish of 100 messages is stored as one atomic
// batch, in order, and consumed in order; one of 15 (below AtomicBatchMin) as single messages.
func TestAtomicBatchPublish(t *testing.T) {
	b := open(t, Config{StoreDir: t.TempDir(), Namespace: "atb"})
	ctx := ctxT(t)
	if !b.atomicOn.Load() || !b.events.CachedInfo().Config.AllowAtomicPublish {
		t.Fatalf("atomic publish not enabled on the embedded server (version %s)", b.nc.ConnectedServerVersion())
	}
	small := testMsgs("small", DefaultAtomicBatchMin-1)
	if err := b.Publish(ctx, small...); err != nil {
		t.Fatalf("Publish(%d): %v", len(small), err)
	}
	big := testMsgs("big", 100)
	if err := b.Publish(ctx, big...); err != nil {
		t.Fatalf("Publish(%d): %v", len(big), err)
	}
	if n := len(b.slots); n != 0 {
		t.Fatalf("%d slots still taken after Publish returned", n)
	}
	msgs := storedMsgs(t, b)
	want := append(ids(small), ids(big)...)
	if diff := cmp.Diff(want, storedIDs(msgs)); diff != "" {
		t.Fatalf("stored ids (-want +got):\n%s", diff)
	}
	checkSingles(t, msgs[:len(small)])
	checkBatches(t, msgs[len(small):], 100)

	got := newCollector()
	subscribe(t, b, "atb", got.handle)
	got.waitAll(t, want)
	if diff := cmp.Diff(want, got.all()); diff != "" {
		t.Fatalf("consumed ids (-want +got):\n%s", diff)
	}
}

// TestAtomicBatchChunks: a Publish larger than the window goes as several batches of equal
// size, each within the window, in order.
func TestAtomicBatchChunks(t *testing.T) {
	b := open(t, Config{StoreDir: t.TempDir(), Namespace: "atc", MaxPending: 8, AtomicBatchMin: 2})
	msgs := testMsgs("c", 20)
	if err := b.Publish(ctxT(t), msgs...); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	got := storedMsgs(t, b)
	if diff := cmp.Diff(ids(msgs), storedIDs(got)); diff != "" {
		t.Fatalf("stored ids (-want +got):\n%s", diff)
	}
	checkBatches(t, got, 7, 7, 6)
}

func TestChunks(t *testing.T) {
	for _, tt := range []struct {
		n, size int
		want    []int
	}{
		{2, 1000, []int{2}}, {1000, 1000, []int{1000}}, {1001, 1000, []int{501, 500}},
		{2500, 1000, []int{834, 834, 832}}, {20, 8, []int{7, 7, 6}}, {9, 3, []int{3, 3, 3}},
	} {
		msgs := make([]*nats.Msg, tt.n)
		var sizes []int
		for _, c := range chunks(msgs, tt.size) {
			sizes = append(sizes, len(c))
		}
		if !slices.Equal(sizes, tt.want) {
			t.Errorf("chunks(%d, %d) = %v, want %v", tt.n, tt.size, sizes, tt.want)
		}
	}
}

// TestAtomicBatchDuplicateFallsBack: a batch with a message id the stream already holds (the
// relay publishing again after a crash), or with one id twice, is rejected by the server and
// published one message at a time: every new message is stored once, in order, and Publish
// succeeds. Later batches are atomic again.
func TestAtomicBatchDuplicateFallsBack(t *testing.T) {
	b := open(t, Config{StoreDir: t.TempDir(), Namespace: "atd"})
	ctx := ctxT(t)
	msgs := testMsgs("d", 20)
	if err := b.Publish(ctx, msgs[3], msgs[7]); err != nil {
		t.Fatalf("Publish of the first two: %v", err)
	}
	if err := b.Publish(ctx, msgs...); err != nil {
		t.Fatalf("Publish with two ids already stored: %v", err)
	}
	inCall := testMsgs("twice", 20)
	inCall[10] = inCall[4]
	if err := b.Publish(ctx, inCall...); err != nil {
		t.Fatalf("Publish with one id twice: %v", err)
	}
	after := testMsgs("after", 20)
	if err := b.Publish(ctx, after...); err != nil {
		t.Fatalf("Publish after the fallbacks: %v", err)
	}
	if n := len(b.slots); n != 0 {
		t.Fatalf("%d slots still taken after Publish returned", n)
	}

	got := storedMsgs(t, b)
	want := []string{msgs[3].ID, msgs[7].ID}
	for i, m := range msgs {
		if i != 3 && i != 7 {
			want = append(want, m.ID)
		}
	}
	for i, m := range inCall {
		if i != 10 {
			want = append(want, m.ID)
		}
	}
	want = append(want, ids(after)...)
	if diff := cmp.Diff(want, storedIDs(got)); diff != "" {
		t.Fatalf("stored ids (-want +got):\n%s", diff)
	}
	fallback := got[:len(want)-len(after)]
	checkSingles(t, fallback)
	checkBatches(t, got[len(fallback):], len(after))
}

// TestAtomicBatchDisabled: a negative AtomicBatchMin, or DurabilityAsync by default, publishes
// one message at a time and leaves atomic publish off on the stream.
func TestAtomicBatchDisabled(t *testing.T) {
	for name, cfg := range map[string]Config{
		"negative": {AtomicBatchMin: -1},
		"async":    {Durability: DurabilityAsync},
	} {
		t.Run(name, func(t *testing.T) {
			cfg.StoreDir, cfg.Namespace = t.TempDir(), "atx"
			b := open(t, cfg)
			if b.atomicOn.Load() || b.events.CachedInfo().Config.AllowAtomicPublish {
				t.Fatalf("atomic publish enabled with %+v", cfg)
			}
			msgs := testMsgs("x", 100)
			if err := b.Publish(ctxT(t), msgs...); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			got := storedMsgs(t, b)
			if diff := cmp.Diff(ids(msgs), storedIDs(got)); diff != "" {
				t.Fatalf("stored ids (-want +got):\n%s", diff)
			}
			checkSingles(t, got)
		})
	}
}

// TestAtomicBatchOldServer: against the shared NATS (before 2.12) the event stream does not ask
// for atomic publish, even when AtomicBatchMin does, and a large Publish goes one message at a
// time.
func TestAtomicBatchOldServer(t *testing.T) {
	url, ns := services.NATSNamespace(t)
	b := open(t, Config{URL: url, Namespace: ns, AtomicBatchMin: 2})
	if serverAtLeast(b.nc.ConnectedServerVersion(), 2, 12) {
		t.Skipf("the shared NATS is %s: it supports atomic batches", b.nc.ConnectedServerVersion())
	}
	if b.allowAtomic || b.atomicOn.Load() {
		t.Fatalf("atomic publish asked of NATS %s", b.nc.ConnectedServerVersion())
	}
	msgs := testMsgs(ns, 40)
	if err := b.Publish(ctxT(t), msgs...); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	got := storedMsgs(t, b)
	if diff := cmp.Diff(ids(msgs), storedIDs(got)); diff != "" {
		t.Fatalf("stored ids (-want +got):\n%s", diff)
	}
	checkSingles(t, got)
}

// TestAtomicBatchBackpressure: a batch needs as many free slots as it has messages; without
// them for PublishTimeout (or until the context's deadline) it fails with backpressure and
// gives back the slots it took.
func TestAtomicBatchBackpressure(t *testing.T) {
	const timeout = 200 * time.Millisecond
	b := open(t, Config{StoreDir: t.TempDir(), Namespace: "atp", MaxPending: 8, AtomicBatchMin: 2, PublishTimeout: timeout})
	// Five of eight slots taken: the first batch of 7 finds three.
	for range 5 {
		b.slots <- struct{}{}
	}
	msgs := testMsgs("p", 20)
	start := time.Now()
	err := b.Publish(context.Background(), msgs...)
	if !errors.Is(err, bus.ErrBackpressure) || !errs.Is(err, errs.Unavailable) {
		t.Fatalf("Publish with a full window = %v, want an unavailable error wrapping bus.ErrBackpressure", err)
	}
	t.Logf("backpressure after %s (PublishTimeout %s): %v", time.Since(start), timeout, err)
	if n := len(b.slots); n != 5 {
		t.Fatalf("%d slots taken after the failed Publish, want the 5 taken before", n)
	}

	b.cfg.PublishTimeout = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := b.Publish(ctx, msgs...); !errors.Is(err, bus.ErrBackpressure) {
		t.Fatalf("Publish with a full window and a context deadline = %v, want bus.ErrBackpressure", err)
	}
	cancelled, cancelNow := context.WithCancel(context.Background())
	cancelNow()
	if err := b.Publish(cancelled, msgs...); err == nil || errors.Is(err, bus.ErrBackpressure) {
		t.Fatalf("Publish with a cancelled context = %v, want the cancellation", err)
	}
	if n := len(b.slots); n != 5 {
		t.Fatalf("%d slots taken after the failed Publish, want the 5 taken before", n)
	}
	b.releaseN(5)
	if err := b.Publish(ctxT(t), msgs...); err != nil {
		t.Fatalf("Publish with room: %v", err)
	}
	checkBatches(t, storedMsgs(t, b), 7, 7, 6)
}

// TestAtomicBatchConcurrent: more concurrent batches than the server keeps in flight per stream
// (50): the ones it turns away are published one by one, and every message is stored once.
func TestAtomicBatchConcurrent(t *testing.T) {
	b := open(t, Config{StoreDir: t.TempDir(), Namespace: "atm", Durability: DurabilityAsync, AtomicBatchMin: DefaultAtomicBatchMin})
	const publishers, each = 64, 20
	var wg sync.WaitGroup
	errc := make(chan error, publishers)
	for p := range publishers {
		wg.Go(func() {
			if err := b.Publish(ctxT(t), testMsgs(fmt.Sprintf("m%d", p), each)...); err != nil {
				errc <- err
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("Publish: %v", err)
	}
	got := storedMsgs(t, b)
	if len(got) != publishers*each {
		t.Fatalf("stream holds %d messages, want %d", len(got), publishers*each)
	}
	n := map[string]int{}
	batched := 0
	for _, m := range got {
		n[m.id]++
		if m.batch != "" {
			batched++
		}
	}
	for p := range publishers {
		for _, id := range ids(testMsgs(fmt.Sprintf("m%d", p), each)) {
			if n[id] != 1 {
				t.Fatalf("%s stored %d times", id, n[id])
			}
		}
	}
	t.Logf("%d of %d messages stored in atomic batches", batched, len(got))
}

// TestBatchOutcome: how the answer to a commit is judged.
func TestBatchOutcome(t *testing.T) {
	reply := func(s string) *nats.Msg { return &nats.Msg{Data: []byte(s)} }
	for name, tt := range map[string]struct {
		reply     *nats.Msg
		err       error
		again     bool
		code      errs.Code
		atomicOff bool
	}{
		"stored":          {reply: reply(`{"stream":"S","seq":12,"batch":"B","count":3}`)},
		"duplicate id":    {reply: reply(`{"stream":"S","error":{"code":400,"err_code":10201,"description":"atomic publish batch contains duplicate message id"}}`), again: true},
		"too many":        {reply: reply(`{"error":{"code":429,"err_code":10210,"description":"atomic publish too many inflight"}}`), again: true},
		"unreadable":      {reply: reply(`not json`), again: true},
		"single ack":      {reply: reply(`{"stream":"S","seq":12}`), again: true, atomicOff: true},
		"wrong count":     {reply: reply(`{"stream":"S","seq":12,"batch":"B","count":2}`), again: true, atomicOff: true},
		"wrong batch":     {reply: reply(`{"stream":"S","seq":12,"batch":"C","count":3}`), again: true, atomicOff: true},
		"no answer":       {err: context.DeadlineExceeded, code: errs.Unavailable},
		"no responders":   {err: nats.ErrNoResponders, code: errs.Unavailable},
		"connection gone": {err: nats.ErrConnectionClosed, code: errs.Unavailable},
	} {
		t.Run(name, func(t *testing.T) {
			b := newBus(Config{StoreDir: t.TempDir()}.withDefaults(), testLogger(t))
			b.atomicOn.Store(true)
			again, err := b.batchOutcome("B", 3, "ns.events.t.x", tt.reply, tt.err)
			if again != tt.again {
				t.Errorf("again = %v, want %v", again, tt.again)
			}
			if tt.code == "" && err != nil || tt.code != "" && !errs.Is(err, tt.code) {
				t.Errorf("error = %v, want code %q", err, tt.code)
			}
			if b.atomicOn.Load() == tt.atomicOff {
				t.Errorf("atomic publish on = %v after the answer", b.atomicOn.Load())
			}
		})
	}
}
