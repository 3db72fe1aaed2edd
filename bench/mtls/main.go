// Command mtls benchmarks workload identity (issue 7) against a real kernel (embedded SQLite,
// started in the process as bench/perimeter does) in one run on one machine. The kernel serves
// its API over HTTPS (http.tls.cert_file/key_file: an ECDSA P-256 leaf and intermediate made
// for the run) and its mTLS listener (http.mtls_addr: its own SVID, also P-256 leaf and
// intermediate, the client's SVID required). An agent is enrolled first: tenant, agent, API key
// bound to the agent, SVID issued through POST /v1/identity/svid. Then, for each -requests kind:
//
//   - new connections (no keep-alive): -concurrency clients in a closed loop, each request on a
//     new TCP connection with a full TLS 1.3 handshake (no session tickets kept), plain TLS to
//     the API listener vs mTLS (the agent's SVID) to the mTLS listener;
//   - kept-alive: the same request on connections kept open (one per client), TLS vs mTLS.
//
// Requests: healthz (GET /healthz, no credential: the same handler behind both listeners, the
// difference is the transport) and whoami (GET /v1/auth/whoami, authenticated: the agent-bound
// API key over TLS, the SVID over mTLS, so the difference also holds the two authentications).
//
// Then SVID issuance: POST /v1/identity/svid over the HTTPS API listener (kept-alive) with the
// agent-bound API key and a fresh CSR per call (the CSRs are made before the phase's clock
// starts), against its baseline, the kernel's identity CA signing in the process
// (identity.DecodeCSR + CA.Sign, no HTTP, authentication or audit record) over a cycled pool of
// CSRs.
//
// Every pair alternates A/B -rounds times (TLS, mTLS, TLS, mTLS, …) so that both sides see the
// same machine noise; ratios are of the sums over the rounds. Latencies are those of every
// request of the measured windows (nearest-rank percentiles); CPU per operation is the whole
// process's (kernel and client share it) over the measured window.
//
// Usage:
//
//	go run ./bench/mtls -duration 5s -warmup 1s -concurrency 16 -rounds 2 [-requests healthz,whoami] [-svid=true]
//
// It is a program, not a test: nothing here asserts a timing. NOPS_BENCH_CPUPROFILE=<file>
// writes a CPU profile of the whole run. Results are recorded in docs/benchmarks.md.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nops-kernel/nops/bench/internal/benchkit"
)

type options struct {
	duration, warmup time.Duration
	concurrency      int
	rounds           int
	requests         []string
	svid             bool
	svidConcurrency  int
}

var knownRequests = map[string]string{"healthz": "/healthz", "whoami": "/v1/auth/whoami"}

func parse(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("mtls", flag.ContinueOnError)
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "measured time of each phase")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured time before each phase")
	fs.IntVar(&o.concurrency, "concurrency", 16, "client goroutines of the connection phases")
	fs.IntVar(&o.svidConcurrency, "svid-concurrency", 8, "client goroutines of the SVID issuance phases")
	fs.IntVar(&o.rounds, "rounds", 2, "A/B rounds of every pair of phases")
	fs.BoolVar(&o.svid, "svid", true, "run the SVID issuance phases")
	reqs := fs.String("requests", "healthz,whoami", "requests of the connection phases: healthz (GET /healthz), whoami (GET /v1/auth/whoami); empty: none")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.duration <= 0 || o.warmup < 0 || o.concurrency < 1 || o.svidConcurrency < 1 || o.rounds < 1 {
		return o, errors.New("-duration, -concurrency, -svid-concurrency and -rounds must be positive, -warmup not negative")
	}
	for r := range strings.SplitSeq(*reqs, ",") {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		if _, ok := knownRequests[r]; !ok {
			return o, fmt.Errorf("-requests: unknown request %q (known: healthz, whoami)", r)
		}
		if !slices.Contains(o.requests, r) {
			o.requests = append(o.requests, r)
		}
	}
	return o, nil
}

func main() { benchkit.Main("mtls", parse, run) }

// result is one phase's measured window.
type result struct {
	group    string // "new healthz", "kept-alive whoami", "svid"
	side     string // baseline ("tls", "CA.Sign alone") or measured ("mtls", "POST /v1/identity/svid")
	base     bool   // the baseline side of its group
	lats     []time.Duration
	errors   int
	firstErr string
	cpu      time.Duration // process CPU over the measured window
	window   time.Duration
	note     string // key exchange, resumptions, inline CSRs
}

func (r result) rate() float64 { return float64(len(r.lats)) / r.window.Seconds() }

func run(ctx context.Context, o options, stdout, stderr io.Writer) error {
	loadBefore := loadAvg()
	b, err := startBench(ctx)
	if err != nil {
		return fmt.Errorf("start the kernel: %w", err)
	}
	defer b.close()
	fmt.Fprintf(stderr, "mtls bench: %d clients (%d for SVIDs), %s per phase after %s warm-up, %d A/B rounds; load average %s\n",
		o.concurrency, o.svidConcurrency, o.duration, o.warmup, o.rounds, loadBefore)
	var rs []result
	add := func(r result) {
		fmt.Fprintf(stderr, "  %s / %s: %.0f/s, p50 %s p99 %s, %d errors %s\n", r.group, r.side, r.rate(), benchkit.Ms(pct(r.lats, 50)), benchkit.Ms(pct(r.lats, 99)), r.errors, r.note)
		rs = append(rs, r)
	}
	for _, keep := range []bool{false, true} {
		for _, req := range o.requests {
			group := "new connection, " + req
			if keep {
				group = "kept-alive, " + req
			}
			for range o.rounds {
				for _, mtls := range []bool{false, true} {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					add(b.httpPhase(ctx, o, group, req, keep, mtls))
				}
			}
		}
	}
	if o.svid {
		for range o.rounds {
			for _, api := range []bool{false, true} {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				r, err := b.svidPhase(ctx, o, api, rs)
				if err != nil {
					return err
				}
				add(r)
			}
		}
	}
	report(stdout, o, rs, loadBefore, loadAvg())
	return nil
}

// httpPhase runs GET <request> over TLS (API listener, the agent's API key when the request
// needs one) or mTLS (the mTLS listener, the agent's SVID), on new or kept-alive connections.
func (b *bench) httpPhase(ctx context.Context, o options, group, req string, keep, mtls bool) result {
	base, cfg, side := b.tlsBase, b.tlsCfg.Clone(), "tls"
	if mtls {
		base, cfg, side = b.mtlsBase, b.mtlsCfg.Clone(), "mtls"
	}
	// HTTP/1.1 on both (no NextProtos); no ClientSessionCache: every new connection is a full
	// handshake.
	tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: !keep, MaxIdleConnsPerHost: o.concurrency, MaxConnsPerHost: o.concurrency}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	url := base + knownRequests[req]
	withKey := req != "healthz" && !mtls
	var resumed, conns atomic.Int64
	var curve atomic.Value
	r := closedLoop(ctx, o.concurrency, o.warmup, o.duration, func(context.Context) error {
		hr, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if withKey {
			hr.Header.Set("X-API-Key", b.agentKey)
		}
		resp, err := client.Do(hr)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.TLS != nil {
			if resp.TLS.DidResume {
				resumed.Add(1)
			}
			conns.Add(1)
			curve.Store(fmt.Sprintf("%s, %s", tls.VersionName(resp.TLS.Version), resp.TLS.CurveID))
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	r.group, r.side, r.base = group, side, !mtls
	kx, _ := curve.Load().(string)
	r.note = kx
	if !keep {
		r.note += fmt.Sprintf(", %d resumed", resumed.Load())
	}
	return r
}

// maxCSRs bounds the CSRs made before an issuance phase.
const maxCSRs = 60000

// svidPhase runs the SVID issuance through the API (api) or its baseline, CA.Sign alone.
func (b *bench) svidPhase(ctx context.Context, o options, api bool, before []result) (result, error) {
	if !api {
		// The CA does not care whether a CSR is fresh: a pool, cycled.
		pool, err := makeCSRs(1024)
		if err != nil {
			return result{}, err
		}
		var next atomic.Int64
		r := closedLoop(ctx, o.svidConcurrency, o.warmup, o.duration, func(context.Context) error {
			return b.signAlone(pool[(next.Add(1)-1)%int64(len(pool))])
		})
		r.group, r.side, r.base, r.note = "svid", "CA.Sign alone", true, "(pool of 1024 CSRs, cycled)"
		return r, nil
	}
	// Enough fresh CSRs for the fastest issuance phase so far (or 2,000/s) with a margin.
	rate := 2000.0
	for _, r := range before {
		if r.group == "svid" && !r.base {
			rate = max(rate, r.rate())
		}
	}
	csrs, err := makeCSRs(min(int(rate*1.5*(o.warmup+o.duration).Seconds())+o.svidConcurrency, maxCSRs))
	if err != nil {
		return result{}, err
	}
	c := b.setupClient()
	c.Transport.(*http.Transport).MaxIdleConnsPerHost = o.svidConcurrency
	defer c.CloseIdleConnections()
	var next, inline atomic.Int64
	r := closedLoopTimed(ctx, o.svidConcurrency, o.warmup, o.duration, func(ctx context.Context) (time.Duration, error) {
		i := next.Add(1) - 1
		var csr string
		if i < int64(len(csrs)) {
			csr = csrs[i]
		} else {
			inline.Add(1)
			_, pemCSR, err := newCSR()
			if err != nil {
				return 0, err
			}
			csr = pemCSR
		}
		t0 := time.Now()
		var sv svidAnswer
		err := call(ctx, c, "POST", b.tlsBase+"/v1/identity/svid", map[string]string{"csr": csr}, &sv, "X-API-Key", b.agentKey)
		if err == nil && sv.SPIFFEID != b.agentID.String() {
			err = fmt.Errorf("issued %s, want %s", sv.SPIFFEID, b.agentID)
		}
		return time.Since(t0), err
	})
	r.group, r.side = "svid", "POST /v1/identity/svid"
	r.note = fmt.Sprintf("(%d fresh CSRs made before the phase", len(csrs))
	if n := inline.Load(); n > 0 {
		r.note += fmt.Sprintf(", %d more made inline", n)
	}
	r.note += ")"
	return r, nil
}

// makeCSRs makes n PEM CSRs of fresh P-256 keys on every CPU.
func makeCSRs(n int) ([]string, error) {
	out := make([]string, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	var next atomic.Int64
	for range runtime.NumCPU() {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				_, csr, err := newCSR()
				if err != nil {
					mu.Lock()
					first = cmpErr(first, err)
					mu.Unlock()
					return
				}
				out[i] = csr
			}
		})
	}
	wg.Wait()
	return out, first
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// closedLoop runs op in conc goroutines, each calling it again as soon as it returns, for warmup
// and then d, and returns the latencies of the calls started in the measured window.
func closedLoop(ctx context.Context, conc int, warmup, d time.Duration, op func(context.Context) error) result {
	return closedLoopTimed(ctx, conc, warmup, d, func(ctx context.Context) (time.Duration, error) {
		t0 := time.Now()
		err := op(ctx)
		return time.Since(t0), err
	})
}

// closedLoopTimed is closedLoop for operations that time themselves (to leave out their own
// preparation).
func closedLoopTimed(ctx context.Context, conc int, warmup, d time.Duration, op func(context.Context) (time.Duration, error)) result {
	var (
		mu       sync.Mutex
		lats     []time.Duration
		bad      int
		firstErr string
		wg       sync.WaitGroup
		cpu0     time.Duration
	)
	start := time.Now()
	measureFrom, end := start.Add(warmup), start.Add(warmup+d)
	timer := time.AfterFunc(warmup, func() {
		mu.Lock()
		cpu0 = processCPU()
		mu.Unlock()
	})
	for range conc {
		wg.Go(func() {
			var mine []time.Duration
			var n int
			var e string
			for ctx.Err() == nil {
				t0 := time.Now()
				if t0.After(end) {
					break
				}
				lat, err := op(ctx)
				if t0.Before(measureFrom) {
					continue
				}
				if err != nil {
					n++
					if e == "" {
						e = err.Error()
					}
					continue
				}
				mine = append(mine, lat)
			}
			mu.Lock()
			lats = append(lats, mine...)
			bad += n
			if firstErr == "" {
				firstErr = e
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	timer.Stop()
	cpu1 := processCPU()
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lats)
	r := result{lats: lats, errors: bad, firstErr: firstErr, window: d}
	if cpu0 > 0 {
		r.cpu = cpu1 - cpu0
	}
	return r
}

// processCPU is the user and system CPU time of the process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadAvg returns the 1, 5 and 15 min load averages of /proc/loadavg, or "unknown".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// pct is the nearest-rank percentile p of sorted s.
func pct(s []time.Duration, p int) time.Duration {
	if len(s) == 0 {
		return 0
	}
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}
