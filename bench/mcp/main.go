// Command mcp measures the overhead of an MCP tools/call over a direct POST /v1/invoke of the
// same capability, in one run on one machine. It starts a real kernel in the process (embedded
// SQLite and JetStream in a temporary directory, plain HTTP on loopback) and a real agent (an
// HTTP server on loopback answering a ~200-byte JSON document), enrols a tenant, an ADMIN API key
// and the agent, and approves its tool. Then, -rounds times, it alternates three kinds of call of
// capability bench.echo with the same body, each for -duration after -warmup, with -concurrency
// clients in a closed loop:
//
//   - invoke: POST /v1/invoke/bench.echo (the baseline);
//   - mcp-raw: POST /mcp with one JSON-RPC tools/call, as a minimal client sends it (no session:
//     the server is stateless), so the difference to invoke is the server's MCP work — the
//     request's tool list (registry, approvals, policies), the SDK's JSON-RPC handling, the call's
//     audit record;
//   - mcp-sdk: the official MCP Go SDK client (one session per client, CallTool), which adds the
//     client library's own cost.
//
// Ratios are of the sums over the rounds (mean latency and throughput against invoke); latencies
// are those of every call of the measured windows (nearest-rank percentiles).
//
// Usage:
//
//	go run ./bench/mcp -duration 5s -warmup 1s -concurrency 8 -rounds 3
//
// It is a program, not a test: nothing here asserts a timing. NOPS_BENCH_CPUPROFILE=<file>
// writes a CPU profile of the whole run. Results are recorded in docs/benchmarks.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nops-kernel/nops/bench/internal/benchkit"
)

type options struct {
	duration, warmup time.Duration
	concurrency      int
	rounds           int
	kinds            []string
}

var allKinds = []string{"invoke", "mcp-raw", "mcp-sdk"}

func parse(args []string) (options, error) {
	fs := flag.NewFlagSet("mcp", flag.ContinueOnError)
	o := options{}
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "measured window of each kind, per round")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured calls before each window")
	fs.IntVar(&o.concurrency, "concurrency", 8, "clients in a closed loop")
	fs.IntVar(&o.rounds, "rounds", 3, "alternations of the kinds")
	kinds := fs.String("kinds", strings.Join(allKinds, ","), "kinds of call to measure, of "+strings.Join(allKinds, ","))
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	for k := range strings.SplitSeq(*kinds, ",") {
		if !slices.Contains(allKinds, k) {
			return o, fmt.Errorf("unknown kind %q", k)
		}
		o.kinds = append(o.kinds, k)
	}
	if o.duration <= 0 || o.concurrency <= 0 || o.rounds <= 0 || len(o.kinds) == 0 || !slices.Contains(o.kinds, "invoke") {
		return o, fmt.Errorf("-duration, -concurrency and -rounds must be positive, and -kinds must hold invoke (the baseline)")
	}
	return o, nil
}

func main() { benchkit.Main("mcp", parse, run) }

// caller makes one call; worker i of a window uses its own caller.
type caller func(ctx context.Context) error

// result is one kind's measured calls, over every round.
type result struct {
	kind    string
	lat     []time.Duration
	errors  int
	elapsed time.Duration // sum of the measured windows
}

func run(ctx context.Context, o options, stdout, stderr io.Writer) error {
	b, err := startBench(ctx)
	if err != nil {
		return err
	}
	defer b.close()
	results := map[string]*result{}
	for _, k := range o.kinds {
		results[k] = &result{kind: k}
	}
	for round := 1; round <= o.rounds; round++ {
		for _, kind := range o.kinds {
			callers, closeAll, err := b.callers(ctx, kind, o.concurrency)
			if err != nil {
				return fmt.Errorf("%s clients: %w", kind, err)
			}
			lat, errs, elapsed := window(ctx, callers, o.warmup, o.duration)
			closeAll()
			r := results[kind]
			r.lat = append(r.lat, lat...)
			r.errors += errs
			r.elapsed += elapsed
			fmt.Fprintf(stderr, "round %d %-8s %6d calls %4d errors %s\n", round, kind, len(lat), errs, benchkit.Ms(mean(lat)))
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	report(stdout, o, results)
	return nil
}

// window runs callers in a closed loop: warmup unmeasured, then d measured.
func window(ctx context.Context, callers []caller, warmup, d time.Duration) ([]time.Duration, int, time.Duration) {
	var measuring atomic.Bool
	stop := make(chan struct{})
	var mu sync.Mutex
	var all []time.Duration
	var errs atomic.Int64
	var wg sync.WaitGroup
	for _, call := range callers {
		wg.Go(func() {
			var mine []time.Duration
			for {
				select {
				case <-stop:
					mu.Lock()
					all = append(all, mine...)
					mu.Unlock()
					return
				default:
				}
				start := time.Now()
				err := call(ctx)
				on := measuring.Load()
				if err != nil {
					if on {
						errs.Add(1)
					}
					continue
				}
				if on {
					mine = append(mine, time.Since(start))
				}
			}
		})
	}
	time.Sleep(warmup)
	measuring.Store(true)
	start := time.Now()
	time.Sleep(d)
	measuring.Store(false)
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	return all, int(errs.Load()), elapsed
}

func mean(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return sum / time.Duration(len(ds))
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func report(w io.Writer, o options, rs map[string]*result) {
	fmt.Fprintf(w, "MCP tools/call vs POST /v1/invoke — %s, %d CPUs, %s\n", benchkit.CPUModel(), runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(w, "closed loop, %d clients, %d rounds × %s (+%s warm-up) per kind, alternating\n\n", o.concurrency, o.rounds, o.duration, o.warmup)
	base := rs["invoke"]
	baseTput := float64(len(base.lat)) / base.elapsed.Seconds()
	fmt.Fprintln(w, "| kind | calls | errors | calls/s | mean | p50 | p99 | mean vs invoke | calls/s vs invoke |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	for _, k := range o.kinds {
		r := rs[k]
		tput := float64(len(r.lat)) / r.elapsed.Seconds()
		fmt.Fprintf(w, "| %s | %d | %d | %.0f | %s | %s | %s | %s | %s |\n", k, len(r.lat), r.errors, tput,
			benchkit.Ms(mean(r.lat)), benchkit.Ms(pct(r.lat, 50)), benchkit.Ms(pct(r.lat, 99)),
			benchkit.Ratio(float64(mean(r.lat)), float64(mean(base.lat))), benchkit.Ratio(tput, baseTput))
	}
}
