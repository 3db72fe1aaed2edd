package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// event is one message of the load: its id carries the phase prefix, whether it is measured, its
// sequence number and the time it was due, so a consumer needs nothing but the id to record it.
type event struct {
	id       string
	measured bool
}

// eventID builds prefix "-" kind seq "-" at (unix nanoseconds); kind is 'm' for a measured event
// and 'w' for a warm-up one.
func eventID(prefix string, measured bool, seq int, at int64) string {
	b := make([]byte, 0, len(prefix)+48)
	b = append(b, prefix...)
	b = append(b, '-')
	if measured {
		b = append(b, 'm')
	} else {
		b = append(b, 'w')
	}
	b = strconv.AppendInt(b, int64(seq), 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, at, 10)
	return string(b)
}

// parseEventID is eventID's inverse; ok is false for an id of another prefix or form.
func parseEventID(prefix, id string) (measured bool, seq int, at int64, ok bool) {
	rest, found := strings.CutPrefix(id, prefix)
	if !found || len(rest) < 5 || rest[0] != '-' {
		return false, 0, 0, false
	}
	kind := rest[1]
	s, a, found := strings.Cut(rest[2:], "-")
	if !found || (kind != 'm' && kind != 'w') {
		return false, 0, 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return false, 0, 0, false
	}
	at, err = strconv.ParseInt(a, 10, 64)
	if err != nil {
		return false, 0, 0, false
	}
	return kind == 'm', n, at, true
}

// recorder collects what one phase's publishers and consumer report. It is safe for concurrent
// use: the slot of a measured event is written once, by compare-and-swap, so a second delivery
// of the same event shows up as a duplicate.
type recorder struct {
	prefix string
	lat    []atomic.Int64 // per measured sequence number: latency in ns + 1, 0 until consumed

	consumed   atomic.Int64 // measured events consumed (first delivery)
	dups       atomic.Int64 // measured events consumed again
	warm       atomic.Int64 // warm-up events consumed
	foreign    atomic.Int64 // ids of another form or beyond the capacity
	last       atomic.Int64 // unix ns of the latest consumption of a measured event
	sent       atomic.Int64 // events handed to a publish call, warm-up included (closed loop)
	acked      atomic.Int64 // measured events whose publish was acknowledged
	failed     atomic.Int64 // measured events whose publish failed
	warmAcked  atomic.Int64
	warmFailed atomic.Int64

	mu       sync.Mutex
	firstErr error // the first publish error
}

func newRecorder(prefix string, capacity int) *recorder {
	return &recorder{prefix: prefix, lat: make([]atomic.Int64, capacity)}
}

// consumedID records the consumption of the event id, now.
func (r *recorder) consumedID(id string) {
	now := time.Now().UnixNano()
	measured, seq, at, ok := parseEventID(r.prefix, id)
	switch {
	case !ok || (measured && seq >= len(r.lat)):
		r.foreign.Add(1)
		return
	case !measured:
		r.warm.Add(1)
		return
	}
	if !r.lat[seq].CompareAndSwap(0, max(now-at, 0)+1) {
		r.dups.Add(1)
		return
	}
	r.consumed.Add(1)
	for {
		l := r.last.Load()
		if now <= l || r.last.CompareAndSwap(l, now) {
			return
		}
	}
}

// backlog is how many events were handed to publish calls and neither consumed nor failed yet.
func (r *recorder) backlog() int64 {
	return r.sent.Load() - r.consumed.Load() - r.warm.Load() - r.failed.Load() - r.warmFailed.Load()
}

// published records the outcome of publishing evs.
func (r *recorder) published(evs []event, err error) {
	for _, ev := range evs {
		r.publishedOne(ev.measured, err)
	}
}

func (r *recorder) publishedOne(measured bool, err error) {
	switch {
	case err != nil && measured:
		r.failed.Add(1)
	case err != nil:
		r.warmFailed.Add(1)
	case measured:
		r.acked.Add(1)
	default:
		r.warmAcked.Add(1)
	}
	if err != nil {
		r.mu.Lock()
		if r.firstErr == nil {
			r.firstErr = err
		}
		r.mu.Unlock()
	}
}

// publishedID is published for the event id (asynchronous acknowledgements).
func (r *recorder) publishedID(id string, err error) {
	measured, _, _, ok := parseEventID(r.prefix, id)
	if !ok {
		measured = true // count it where it shows
	}
	r.publishedOne(measured, err)
}

// latencies returns the latencies of the consumed measured events, sorted.
func (r *recorder) latencies() []time.Duration {
	out := make([]time.Duration, 0, r.consumed.Load())
	for i := range r.lat {
		if v := r.lat[i].Load(); v != 0 {
			out = append(out, time.Duration(v-1))
		}
	}
	slices.Sort(out)
	return out
}

// waitConsumed polls until the consumer caught up with the acknowledged events (measured and
// warm-up when warm is set), or until timeout; it reports whether it caught up.
func waitConsumed(ctx context.Context, r *recorder, warm bool, timeout time.Duration) bool {
	done := func() bool {
		if warm {
			return r.warm.Load() >= r.warmAcked.Load()
		}
		return r.consumed.Load() >= r.acked.Load()
	}
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !done() {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return true
}

// publisher is a system's synchronous publish: it returns once the broker acknowledged evs.
type publisher interface {
	publish(ctx context.Context, evs []event) error
}

// asyncPublisher is a system's asynchronous publish: publishAsync returns once ev is sent (or
// when the window of unacknowledged publishes has room again); the outcome goes to the recorder
// the system was opened with. wait returns once every publish is settled.
type asyncPublisher interface {
	publishAsync(ev event) error
	wait(ctx context.Context) error
}

// loadSettings shape one phase's load.
type loadSettings struct {
	rate       int           // events/s for the open loop; 0 for the closed loop (maximum rate)
	warmup     time.Duration // unmeasured load before the measured window
	duration   time.Duration // the measured window
	publishers int           // goroutines calling publish
	batch      int           // most events per publish call
	drain      time.Duration // how long to wait for the consumer to catch up after publishing
	backlog    int           // closed loop: most events published and not yet consumed
}

// phaseStats is what one phase measured.
type phaseStats struct {
	events     int64           // measured events offered (open loop) or published (closed loop)
	acked      int64           // ... whose publish was acknowledged
	failed     int64           // ... whose publish failed
	consumed   int64           // ... consumed
	dups       int64           // second deliveries of measured events
	elapsed    time.Duration   // from the start of the measured window to the last consumption
	pubElapsed time.Duration   // from the start of the measured window to the last acknowledgement
	lat        []time.Duration // per consumed event, sorted
	lag        []time.Duration // open loop: how late the generator sent each event, sorted
	caughtUp   bool            // the consumer caught up within the drain time
	firstErr   error           // the first publish error
}

func (s phaseStats) rate() float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(s.consumed) / s.elapsed.Seconds()
}

func (s phaseStats) publishRate() float64 {
	if s.pubElapsed <= 0 {
		return 0
	}
	return float64(s.acked) / s.pubElapsed.Seconds()
}

// pct returns the nearest-rank q-quantile of sorted durations.
func pct(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// openLoop offers ls.rate events per second on a fixed schedule, warm-up first, and measures each
// measured event's latency from the time it was due — not from when it was sent — to its
// consumption, so that a publisher falling behind shows in the latencies (no coordinated
// omission). A synchronous publisher gets the due events through a queue served by
// ls.publishers goroutines, each taking up to ls.batch queued events per call; an asynchronous
// one is called by the scheduler itself.
func openLoop(ctx context.Context, r *recorder, pub any, ls loadSettings) (phaseStats, error) {
	interval := func(i int) time.Duration { return time.Duration(int64(i) * int64(time.Second) / int64(ls.rate)) }
	nWarm := int(int64(ls.rate) * int64(ls.warmup) / int64(time.Second))
	nMeas := len(r.lat)
	var (
		send   func(ev event) error
		finish func() error
	)
	switch p := pub.(type) {
	case asyncPublisher: // checked first: an asynchronous publisher is never driven synchronously
		send = p.publishAsync
		finish = func() error { return p.wait(ctx) }
	case publisher:
		due := make(chan event, nWarm+nMeas)
		var (
			wg      sync.WaitGroup
			abandon atomic.Bool
		)
		for range ls.publishers {
			wg.Go(func() { serveQueue(ctx, r, p, due, ls.batch, &abandon) })
		}
		send = func(ev event) error { due <- ev; return nil }
		finish = func() error {
			close(due)
			// The publishers get ls.drain to empty the queue; what is left then is abandoned.
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			timer := time.NewTimer(ls.drain)
			defer timer.Stop()
			select {
			case <-done:
			case <-timer.C:
				abandon.Store(true)
				<-done
			}
			return nil
		}
	default:
		return phaseStats{}, fmt.Errorf("open loop: %T publishes neither synchronously nor asynchronously", pub)
	}

	lag := make([]time.Duration, 0, nMeas)
	start := time.Now().Add(10 * time.Millisecond)
	measStart := start.Add(interval(nWarm))
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var sendErr error
	for i := 0; i < nWarm+nMeas && sendErr == nil; i++ {
		at := start.Add(interval(i))
		if time.Since(at) > ls.drain {
			// Hopelessly behind: the rest of the schedule is abandoned, not waited for.
			for j := i; j < nWarm+nMeas; j++ {
				r.publishedOne(j >= nWarm, errAbandoned)
			}
			break
		}
		if d := time.Until(at); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				sendErr = ctx.Err()
				continue
			case <-timer.C:
			}
		}
		measured := i >= nWarm
		seq := i
		if measured {
			seq = i - nWarm
		}
		ev := event{id: eventID(r.prefix, measured, seq, at.UnixNano()), measured: measured}
		if measured {
			lag = append(lag, time.Since(at))
		}
		if err := send(ev); err != nil {
			// An asynchronous publish refused outright: count it as failed and go on.
			r.publishedOne(measured, err)
		}
	}
	if err := finish(); err != nil && sendErr == nil {
		sendErr = err
	}
	pubEnd := time.Now()
	if sendErr != nil {
		return phaseStats{}, sendErr
	}
	caughtUp := waitConsumed(ctx, r, false, ls.drain)
	slices.Sort(lag)
	st := collect(r, int64(nMeas), measStart)
	st.lag, st.caughtUp, st.pubElapsed = lag, caughtUp, pubEnd.Sub(measStart)
	return st, ctx.Err()
}

// errAbandoned marks the events of an open loop that were never published because the system
// fell too far behind.
var errAbandoned = errors.New("not published: the load fell more than the drain time behind its schedule")

// serveQueue publishes the events of due, up to batch per call, until due is closed. Once abandon
// is set it records the events left as failed instead of publishing them.
func serveQueue(ctx context.Context, r *recorder, p publisher, due <-chan event, batch int, abandon *atomic.Bool) {
	evs := make([]event, 0, batch)
	for ev := range due {
		evs = append(evs[:0], ev)
	fill:
		for len(evs) < batch {
			select {
			case ev, ok := <-due:
				if !ok {
					break fill
				}
				evs = append(evs, ev)
			default:
				break fill
			}
		}
		if abandon.Load() {
			r.published(evs, errAbandoned)
			continue
		}
		r.published(evs, p.publish(ctx, evs))
	}
}

// closedLoop publishes as fast as the system takes it for ls.warmup (unmeasured) and then for
// ls.duration, with ls.publishers goroutines: synchronous publishers send batches of ls.batch
// events per call, asynchronous ones one event per call within their window of unacknowledged
// publishes. A publisher also waits while ls.backlog events are published and not yet consumed,
// so a consumer slower than the publishers slows them down instead of piling up a backlog. The
// rate is the measured events consumed over the time from the start of the measured run to the
// last consumption: what the system sustains end to end.
func closedLoop(ctx context.Context, r *recorder, pub any, ls loadSettings) (phaseStats, error) {
	run := func(measured bool, d time.Duration) (time.Time, time.Time, error) {
		var next atomic.Int64
		capacity := int64(len(r.lat))
		if !measured {
			capacity = 1 << 62
		}
		start := time.Now()
		deadline := start.Add(d)
		var wg sync.WaitGroup
		// room waits until the backlog is below ls.backlog, or the run is over.
		room := func() bool {
			if r.backlog() < int64(ls.backlog) {
				return true
			}
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			for r.backlog() >= int64(ls.backlog) {
				if ctx.Err() != nil || !time.Now().Before(deadline) {
					return false
				}
				<-tick.C
			}
			return true
		}
		take := func(n int) (int, int) {
			first := next.Add(int64(n)) - int64(n)
			if first >= capacity {
				return 0, 0
			}
			return int(first), int(min(first+int64(n), capacity) - first)
		}
		switch p := pub.(type) {
		case asyncPublisher:
			for range ls.publishers {
				wg.Go(func() {
					for ctx.Err() == nil && time.Now().Before(deadline) && room() {
						seq, n := take(1)
						if n == 0 {
							return
						}
						r.sent.Add(1)
						ev := event{id: eventID(r.prefix, measured, seq, time.Now().UnixNano()), measured: measured}
						if err := p.publishAsync(ev); err != nil {
							r.publishedOne(measured, err)
						}
					}
				})
			}
			wg.Wait()
			if err := p.wait(ctx); err != nil {
				return start, time.Now(), err
			}
		case publisher:
			for range ls.publishers {
				wg.Go(func() {
					evs := make([]event, 0, ls.batch)
					for ctx.Err() == nil && time.Now().Before(deadline) && room() {
						seq, n := take(ls.batch)
						if n == 0 {
							return
						}
						r.sent.Add(int64(n))
						now := time.Now().UnixNano()
						evs = evs[:0]
						for i := range n {
							evs = append(evs, event{id: eventID(r.prefix, measured, seq+i, now), measured: measured})
						}
						r.published(evs, p.publish(ctx, evs))
					}
				})
			}
			wg.Wait()
		default:
			return start, start, fmt.Errorf("closed loop: %T publishes neither synchronously nor asynchronously", pub)
		}
		return start, time.Now(), ctx.Err()
	}
	if ls.warmup > 0 {
		if _, _, err := run(false, ls.warmup); err != nil {
			return phaseStats{}, fmt.Errorf("warm-up: %w", err)
		}
		// The warm-up's backlog must not be consumed during the measured run.
		if !waitConsumed(ctx, r, true, ls.drain) {
			return phaseStats{}, errors.Join(ctx.Err(), fmt.Errorf("warm-up: the consumer did not catch up within %s (%d of %d events)", ls.drain, r.warm.Load(), r.warmAcked.Load()))
		}
	}
	start, pubEnd, err := run(true, ls.duration)
	if err != nil {
		return phaseStats{}, err
	}
	caughtUp := waitConsumed(ctx, r, false, ls.drain)
	st := collect(r, r.acked.Load()+r.failed.Load(), start)
	st.pubElapsed, st.caughtUp = pubEnd.Sub(start), caughtUp
	return st, ctx.Err()
}

func collect(r *recorder, events int64, start time.Time) phaseStats {
	st := phaseStats{
		events:   events,
		acked:    r.acked.Load(),
		failed:   r.failed.Load(),
		consumed: r.consumed.Load(),
		dups:     r.dups.Load(),
		lat:      r.latencies(),
	}
	r.mu.Lock()
	st.firstErr = r.firstErr
	r.mu.Unlock()
	if last := r.last.Load(); last != 0 {
		st.elapsed = time.Unix(0, last).Sub(start)
	}
	return st
}
