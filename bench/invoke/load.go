package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// requestBody is every call's body (about 100 bytes of JSON valid against inputSchema).
const requestBody = `{"text":"The quick brown fox jumps over the lazy dog; the quick brown fox jumps over the lazy dog."}`

// requestTimeout bounds one request of the load; a request still running at the end of a phase
// is waited for (and counted), never abandoned.
const requestTimeout = 30 * time.Second

// target is where one load run sends its requests.
type target struct {
	name   string
	urls   []string    // request i goes to urls[i % len(urls)] (round-robin)
	header http.Header // X-API-Key for the kernel
}

// sample is one successful request of a measured window.
type sample struct {
	at    time.Duration // scheduled (open loop) or sent (closed loop) time, from the window's start
	lat   time.Duration // open loop: from the scheduled send time (no coordinated omission)
	agent string        // the Nops-Agent-Id answer header, "" without the kernel
}

// result is one load run.
type result struct {
	name     string
	open     bool
	rate     float64       // offered rate (open loop)
	window   time.Duration // measured window
	samples  []sample
	lats     []time.Duration // sorted latencies of samples
	lags     []time.Duration // open loop: sorted delays between scheduled and actual send
	errors   int
	firstErr string
}

// rps is the completed requests per second of the measured window.
func (r result) rps() float64 { return float64(len(r.lats)) / r.window.Seconds() }

// pct is the nearest-rank p-th percentile of the run's latencies.
func (r result) pct(p int) time.Duration { return pct(r.lats, p) }

// pct returns the nearest-rank p-th percentile of sorted s, 0 for an empty s.
func pct(s []time.Duration, p int) time.Duration {
	if len(s) == 0 {
		return 0
	}
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}

// newClient is a client with enough idle connections per host for n concurrent requests.
func newClient(n int) (*http.Client, func()) {
	tr := &http.Transport{MaxIdleConns: n * 2, MaxIdleConnsPerHost: n * 2, IdleConnTimeout: 90 * time.Second, DisableCompression: true}
	return &http.Client{Transport: tr, Timeout: requestTimeout}, tr.CloseIdleConnections
}

// send makes request i of tg and returns its status and the agent that answered.
func send(ctx context.Context, client *http.Client, tg target, i int) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tg.urls[i%len(tg.urls)], strings.NewReader(requestBody))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range tg.header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Nops-Agent-Id"), err
}

// event is something to do at a point of a measured window (the weights phase degrades an
// agent halfway).
type event struct {
	at time.Duration
	do func()
}

// collector gathers the workers' samples.
type collector struct {
	mu       sync.Mutex
	samples  []sample
	lags     []time.Duration
	errors   int
	firstErr string
}

func (c *collector) add(s []sample, lags []time.Duration, errors int, firstErr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.samples = append(c.samples, s...)
	c.lags = append(c.lags, lags...)
	c.errors += errors
	if c.firstErr == "" {
		c.firstErr = firstErr
	}
}

func (c *collector) result(name string, open bool, rate float64, window time.Duration) result {
	r := result{name: name, open: open, rate: rate, window: window, samples: c.samples, lags: c.lags, errors: c.errors, firstErr: c.firstErr}
	slices.SortFunc(r.samples, func(a, b sample) int { return int(a.at - b.at) })
	r.lats = make([]time.Duration, len(r.samples))
	for i, s := range r.samples {
		r.lats[i] = s.lat
	}
	slices.Sort(r.lats)
	slices.Sort(r.lags)
	return r
}

// openLoop offers tg a fixed arrival rate: request i is due at start + i/rate, whatever happened
// to the earlier ones, and is handed to one of at most clients worker goroutines. Its latency is
// measured from the time it was due, so a server that falls behind is charged for the queue it
// causes (no coordinated omission), including any wait for a free worker. The first warmup is
// not measured; events run at their offsets into the measured window.
func openLoop(ctx context.Context, tg target, rate float64, warmup, window time.Duration, clients int, events ...event) result {
	client, closeIdle := newClient(clients)
	defer closeIdle()
	type job struct {
		i   int
		due time.Time
	}
	jobs := make(chan job, clients)
	var col collector
	start := time.Now()
	measureFrom := start.Add(warmup)
	end := measureFrom.Add(window)
	for _, e := range events {
		t := time.AfterFunc(time.Until(measureFrom.Add(e.at)), e.do)
		defer t.Stop()
	}
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			var mine []sample
			var lags []time.Duration
			var bad int
			var first string
			for j := range jobs {
				sent := time.Now()
				code, agent, err := send(ctx, client, tg, j.i)
				done := time.Now()
				if j.due.Before(measureFrom) {
					continue
				}
				if err != nil || code != http.StatusOK {
					bad++
					if first == "" {
						first = fmt.Sprintf("status %d, error %v", code, err)
					}
					continue
				}
				mine = append(mine, sample{at: j.due.Sub(measureFrom), lat: done.Sub(j.due), agent: agent})
				lags = append(lags, sent.Sub(j.due))
			}
			col.add(mine, lags, bad, first)
		})
	}
	interval := time.Duration(float64(time.Second) / rate)
	timer := time.NewTimer(0)
	<-timer.C
dispatch:
	for i := 0; ; i++ {
		due := start.Add(time.Duration(i) * interval)
		if !due.Before(end) {
			break
		}
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				break dispatch
			case <-timer.C:
			}
		}
		select {
		case jobs <- job{i: i, due: due}:
		case <-ctx.Done():
			break dispatch
		}
	}
	close(jobs)
	wg.Wait()
	return col.result(tg.name, true, rate, window)
}

// closedLoop runs concurrency clients each sending its next request as soon as the previous one
// is answered: the maximum throughput of tg. The first warmup is not measured.
func closedLoop(ctx context.Context, tg target, concurrency int, warmup, window time.Duration) result {
	client, closeIdle := newClient(concurrency)
	defer closeIdle()
	var col collector
	start := time.Now()
	measureFrom, end := start.Add(warmup), start.Add(warmup+window)
	var wg sync.WaitGroup
	for w := range concurrency {
		wg.Go(func() {
			var mine []sample
			var bad int
			var first string
			for i := w; ctx.Err() == nil; i += concurrency {
				t0 := time.Now()
				if !t0.Before(end) {
					break
				}
				code, agent, err := send(ctx, client, tg, i)
				d := time.Since(t0)
				if t0.Before(measureFrom) {
					continue
				}
				if err != nil || code != http.StatusOK {
					bad++
					if first == "" {
						first = fmt.Sprintf("status %d, error %v", code, err)
					}
					continue
				}
				mine = append(mine, sample{at: t0.Sub(measureFrom), lat: d, agent: agent})
			}
			col.add(mine, nil, bad, first)
		})
	}
	wg.Wait()
	return col.result(tg.name, false, 0, window)
}
