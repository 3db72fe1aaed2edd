// Command invoke benchmarks the invoke API, POST /v1/invoke/{capability}: what routing a call
// through the kernel adds to calling the agent directly or through nginx, what dynamic weights
// buy over static ones on a heterogeneous fleet, and the end-to-end p95 at base and peak load.
// Every figure has a baseline measured in the same run on the same machine.
//
// Usage:
//
//	go build -o /tmp/invoke ./bench/invoke
//	/tmp/invoke -duration 8s -warmup 2s -rate 1000 -concurrency 32 [-phases direct,nginx,kernel,weights,e2e] [-require-nginx]
//	NOPS_BENCH_CPUPROFILE=/tmp/inv.prof /tmp/invoke -phases kernel   # kernel's profiles: /tmp/inv.prof.kernel{,.allocs}
//	go tool pprof -top -cum /tmp/invoke /tmp/inv.prof.kernel
//	go tool pprof -top -sample_index=alloc_space /tmp/invoke /tmp/inv.prof.kernel.allocs
//
// Every server is a process of its own, so that none shares the Go runtime (scheduler, GC) of
// another or of the load generator, which runs in this process: the agents and the kernels
// are this program re-executed with -role agent and -role kernel (children on 127.0.0.1:0 that
// exit when their stdin closes), nginx is the Debian package started with a generated config.
// An agent is an HTTP server that reads the request body, waits its service time and answers a
// ~200-byte JSON document. A kernel runs with the embedded defaults (SQLite, embedded
// JetStream) on a fresh data directory, with the per-IP and in-flight caps lifted since the
// load comes from one address; each phase that needs one starts its own and stops it at its
// end, so no phase pays for the event backlog an earlier one left. A tenant, an ADMIN API key,
// the agents and one allow ABAC policy are created through the API, so every invocation is
// authenticated (X-API-Key), authorised by RBAC and by the policy, and its body validated
// against the capability's input schema; the agents heartbeat every 5 s. Phases (-phases, in
// the order given):
//
//   - direct, nginx, kernel (overhead): clients → the agent; clients → nginx (proxy_pass with
//     proxy_http_version 1.1 and upstream keep-alive) → the agent; clients → the kernel → the
//     agent. Each target gets (a) an open loop at -rate req/s for -duration, reporting p50/p99
//     and the latency nginx and the kernel add to direct's, and (b) a closed loop with
//     -concurrency clients for -duration: the maximum throughput, as ratios kernel÷nginx and
//     kernel÷direct. Without nginx installed the nginx phase is skipped with a message
//     (-require-nginx makes it an error). Repeat direct at the end (-phases
//     direct,nginx,kernel,direct) to see the machine's drift; the added latency is then against
//     the mean of the direct runs.
//   - weights: four agents with service times 5, 20 and 80 ms and one of 5 ms that degrades to
//     200 ms halfway through the measured window, behind a kernel with invoke.balancing static,
//     then behind a fresh kernel with dynamic; an open loop at -weights-rate for
//     -weights-duration each. Reports p50/p95/p99, each half's p95, the share of calls each
//     agent got, and the p95 improvement of dynamic over static.
//   - e2e: three 5 ms agents; open loops at -e2e-base-rate and -e2e-peak-rate, each directly to
//     the agents round-robin and then through the kernel, reporting p95 end to end and the
//     kernel-added p95.
//
// Open loops schedule request i at start + i/rate and measure its latency from that time (not
// from when it was sent), so a server that falls behind is charged for its queue; at most
// -clients requests are in flight (the "lag" column shows how late requests left the
// generator). Latencies are nearest-rank percentiles of every successful request of the measured
// window; -warmup runs before each window unmeasured. All processes share the machine's CPUs.
// It is a program, not a test: nothing here asserts a timing. NOPS_BENCH_CPUPROFILE=<file>
// writes a CPU profile of this process (the load generator) to <file> and of each kernel to
// <file>.<phase> (kernel, weights-static, weights-dynamic, e2e), with each kernel's allocation
// profile in <file>.<phase>.allocs. Results are recorded in
// docs/benchmarks.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nops-kernel/nops/bench/internal/benchkit"
)

// options are the command's flags.
type options struct {
	role       string        // "" (the bench), "agent" or "kernel"
	addr       string        // agent: listen address
	name       string        // agent: its name in answers
	delay      time.Duration // agent: initial service time
	balancing  string        // kernel: invoke.balancing
	cpuprofile string        // kernel: CPU profile file

	duration, warmup time.Duration
	rate             float64
	concurrency      int
	clients          int
	weightsRate      float64
	weightsDuration  time.Duration
	e2eBaseRate      float64
	e2ePeakRate      float64
	nginx            string
	requireNginx     bool
	phases           []string
}

var knownPhases = []string{"direct", "nginx", "kernel", "weights", "e2e"}

func parse(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("invoke", flag.ContinueOnError)
	fs.StringVar(&o.role, "role", "", `"agent" or "kernel": one of the processes the bench starts itself`)
	fs.StringVar(&o.addr, "addr", "127.0.0.1:0", "agent: listen address")
	fs.StringVar(&o.name, "name", "agent", "agent: name in its answers")
	fs.DurationVar(&o.delay, "delay", 0, "agent: initial service time")
	fs.StringVar(&o.balancing, "balancing", "dynamic", "kernel: invoke.balancing, dynamic or static")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "kernel: write a CPU profile of the kernel process here")
	fs.DurationVar(&o.duration, "duration", 8*time.Second, "measured window of each overhead and e2e run")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured run before each measured window")
	fs.Float64Var(&o.rate, "rate", 1000, "overhead: open-loop arrival rate, req/s")
	fs.IntVar(&o.concurrency, "concurrency", 32, "overhead: closed-loop clients (maximum throughput)")
	fs.IntVar(&o.clients, "clients", 512, "open loops: requests in flight at most (worker goroutines)")
	fs.Float64Var(&o.weightsRate, "weights-rate", 150, "weights: open-loop arrival rate, req/s")
	fs.DurationVar(&o.weightsDuration, "weights-duration", 20*time.Second, "weights: measured window of each balancing mode")
	fs.Float64Var(&o.e2eBaseRate, "e2e-base-rate", 200, "e2e: base load, req/s")
	fs.Float64Var(&o.e2ePeakRate, "e2e-peak-rate", 1000, "e2e: peak load, req/s")
	fs.StringVar(&o.nginx, "nginx", "nginx", "nginx binary (looked up on PATH, then /usr/sbin)")
	fs.BoolVar(&o.requireNginx, "require-nginx", false, "fail, instead of skipping the nginx phase, when nginx is not installed")
	phases := fs.String("phases", strings.Join(knownPhases, ","), "phases to run, in order: "+strings.Join(knownPhases, ", "))
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch o.role {
	case "agent", "kernel":
		return o, nil
	case "":
	default:
		return o, fmt.Errorf("-role: unknown role %q (known: agent, kernel)", o.role)
	}
	if o.duration <= 0 || o.warmup < 0 || o.weightsDuration <= 0 {
		return o, errors.New("-duration and -weights-duration must be positive, -warmup not negative")
	}
	if o.rate <= 0 || o.weightsRate <= 0 || o.e2eBaseRate <= 0 || o.e2ePeakRate <= 0 {
		return o, errors.New("-rate, -weights-rate, -e2e-base-rate and -e2e-peak-rate must be positive")
	}
	if o.concurrency < 1 || o.clients < 1 {
		return o, errors.New("-concurrency and -clients must be positive")
	}
	for p := range strings.SplitSeq(*phases, ",") {
		p = strings.TrimSpace(p)
		if !slices.Contains(knownPhases, p) {
			return o, fmt.Errorf("-phases: unknown phase %q (known: %s)", p, strings.Join(knownPhases, ", "))
		}
		o.phases = append(o.phases, p)
	}
	return o, nil
}

func main() { benchkit.Main("invoke", parse, run) }

// Capabilities of the phases.
const (
	capEcho    = "bench.echo" // overhead: one agent, no service time
	capWork    = "bench.work" // weights: the heterogeneous fleet
	capE2E     = "bench.e2e"  // e2e: three 5 ms agents
	degradedTo = 200 * time.Millisecond
)

// weightsDelays are the weights phase's service times; the last agent degrades to degradedTo.
var weightsDelays = []time.Duration{5 * time.Millisecond, 20 * time.Millisecond, 80 * time.Millisecond, 5 * time.Millisecond}

// e2eDelay is the e2e phase agents' service time.
const e2eDelay = 5 * time.Millisecond

func run(ctx context.Context, o options, stdout, stderr io.Writer) error {
	switch o.role {
	case "agent":
		return runAgent(ctx, o, stdout)
	case "kernel":
		return runKernel(ctx, o, stdout)
	}
	stderr = &lockedWriter{w: stderr} // the agents' and nginx's stderr are copied into it too
	n := 1
	if slices.Contains(o.phases, "e2e") {
		n = 3
	}
	if slices.Contains(o.phases, "weights") {
		n = len(weightsDelays)
	}
	var cs children
	defer func() { cs.stop() }()
	for i := range n {
		c, err := startAgent(ctx, fmt.Sprintf("agent-%d", i), stderr)
		if err != nil {
			return err
		}
		cs = append(cs, c)
	}
	b := &bench{o: o, cs: cs, stderr: stderr, profile: os.Getenv(envProfile), rep: &report{o: o, start: time.Now().UTC(), load: loadAvg()}}
	defer b.close()
	fmt.Fprintf(stderr, "invoke bench: %d agent processes; %s windows after %s warm-up\n", len(cs), o.duration, o.warmup)
	for _, p := range o.phases {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var err error
		switch p {
		case "direct", "nginx", "kernel":
			err = b.overhead(ctx, p)
		case "weights":
			err = b.weights(ctx)
		case "e2e":
			err = b.e2e(ctx)
		}
		if err != nil {
			return fmt.Errorf("%s phase: %w", p, err)
		}
	}
	b.rep.write(stdout)
	return nil
}

// lockedWriter serialises writes from the bench and from the copying goroutines of its
// children's stderr.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// bench is the state of one run: the agent processes, nginx started on first use, and the
// results. Each kernel phase starts its own kernel on a fresh data directory and closes it at
// the end, so that no phase pays for the outbox backlog (usage and completion events) an
// earlier one left.
type bench struct {
	o       options
	cs      children
	stderr  io.Writer
	ngx     *proxy
	rep     *report
	profile string // NOPS_BENCH_CPUPROFILE
}

// kernelProfile is where the kernel of phase writes its CPU profile: next to the bench's own
// (NOPS_BENCH_CPUPROFILE=<file> → <file>.kernel, <file>.weights-static, …), or nowhere.
func (b *bench) kernelProfile(phase string) string {
	if b.profile == "" {
		return ""
	}
	return b.profile + "." + phase
}

func (b *bench) close() {
	if b.ngx != nil {
		b.ngx.stop()
	}
}

func apiKeyHeader(key string) http.Header { return http.Header{"X-Api-Key": {key}} }

// overhead runs the open and closed loops against one target of the overhead phase.
func (b *bench) overhead(ctx context.Context, name string) error {
	if err := b.cs[0].setDelay(ctx, 0); err != nil {
		return err
	}
	tg := target{name: name}
	var k *kernelRun // the kernel phase's
	switch name {
	case "direct":
		tg.urls = []string{b.cs[0].URL() + "/invoke/" + capEcho}
	case "nginx":
		if b.ngx == nil {
			bin, err := findNginx(b.o.nginx)
			if err != nil {
				msg := fmt.Sprintf("%v: install it (Debian/Ubuntu: apt-get install -y nginx) or pass -nginx <path>", err)
				if b.o.requireNginx {
					return errors.New(msg)
				}
				fmt.Fprintf(b.stderr, "  nginx: skipped, %s\n", msg)
				b.rep.nginxSkipped = msg
				return nil
			}
			if b.ngx, err = startNginx(ctx, bin, b.cs[0].addr, b.stderr); err != nil {
				return err
			}
			b.rep.nginxVersion = nginxVersion(bin)
		}
		tg.urls = []string{b.ngx.url + "/invoke/" + capEcho}
	case "kernel":
		var err error
		k, err = startKernel(ctx, "dynamic", []agentSpec{{name: "echo", endpoint: b.cs[0].URL(), capability: capEcho}}, b.kernelProfile("kernel"), b.stderr)
		if err != nil {
			return err
		}
		defer k.close()
		tg.urls, tg.header = []string{k.invokeURL(capEcho)}, apiKeyHeader(k.key)
	}
	open := openLoop(ctx, tg, b.o.rate, b.o.warmup, b.o.duration, b.o.clients)
	fmt.Fprintf(b.stderr, "  %s open loop %.0f req/s: %.0f done/s, p50 %s p99 %s, %d errors (load average %s)\n", name, b.o.rate, open.rps(), benchkit.Ms(open.pct(50)), benchkit.Ms(open.pct(99)), open.errors, loadAvg())
	closed := closedLoop(ctx, tg, b.o.concurrency, b.o.warmup, b.o.duration)
	fmt.Fprintf(b.stderr, "  %s closed loop x%d: %.0f req/s, p50 %s p99 %s, %d errors (load average %s)\n", name, b.o.concurrency, closed.rps(), benchkit.Ms(closed.pct(50)), benchkit.Ms(closed.pct(99)), closed.errors, loadAvg())
	run := overheadRun{name: name, open: open, closed: closed}
	if k != nil {
		var err error
		if run.usage, run.drained, err = k.drain(ctx); err != nil {
			return err
		}
		fmt.Fprintf(b.stderr, "  %s: %d billing.usage events counted, the last %s after the load\n", name, run.usage, benchkit.Ms(run.drained))
	}
	b.rep.overhead = append(b.rep.overhead, run)
	return nil
}

// weights runs the heterogeneous fleet behind a static kernel, then a dynamic one.
func (b *bench) weights(ctx context.Context) error {
	names := []string{"w-5ms", "w-20ms", "w-80ms", "w-5ms-then-200ms"}
	for _, mode := range []string{"static", "dynamic"} {
		if err := b.cs.setDelays(ctx, weightsDelays...); err != nil {
			return err
		}
		var specs []agentSpec
		for i, c := range b.cs[:len(weightsDelays)] {
			specs = append(specs, agentSpec{name: names[i], endpoint: c.URL(), capability: capWork})
		}
		k, err := startKernel(ctx, mode, specs, b.kernelProfile("weights-"+mode), b.stderr)
		if err != nil {
			return err
		}
		degraded := make(chan error, 1)
		tg := target{name: mode, urls: []string{k.invokeURL(capWork)}, header: apiKeyHeader(k.key)}
		r := openLoop(ctx, tg, b.o.weightsRate, b.o.warmup, b.o.weightsDuration, b.o.clients, event{
			at: b.o.weightsDuration / 2,
			do: func() { degraded <- b.cs[len(weightsDelays)-1].setDelay(ctx, degradedTo) },
		})
		k.close()
		select {
		case err := <-degraded:
			if err != nil {
				return err
			}
		default:
			if ctx.Err() == nil {
				return errors.New("the degradation did not happen during the run")
			}
		}
		fmt.Fprintf(b.stderr, "  weights %s: p50 %s p95 %s p99 %s, %d errors\n", mode, benchkit.Ms(r.pct(50)), benchkit.Ms(r.pct(95)), benchkit.Ms(r.pct(99)), r.errors)
		b.rep.weights = append(b.rep.weights, weightsRun{mode: mode, r: r, agents: k.agents, names: names, split: b.o.weightsDuration / 2})
	}
	return nil
}

// e2e runs the 5 ms agents directly (round-robin) and through the kernel at base and peak load.
func (b *bench) e2e(ctx context.Context) error {
	if err := b.cs.setDelays(ctx, e2eDelay, e2eDelay, e2eDelay); err != nil {
		return err
	}
	var direct []string
	var specs []agentSpec
	for i, c := range b.cs[:3] {
		direct = append(direct, c.URL()+"/invoke/"+capE2E)
		specs = append(specs, agentSpec{name: fmt.Sprintf("e2e-%d", i+1), endpoint: c.URL(), capability: capE2E})
	}
	k, err := startKernel(ctx, "dynamic", specs, b.kernelProfile("e2e"), b.stderr)
	if err != nil {
		return err
	}
	defer k.close()
	for _, l := range []struct {
		name string
		rate float64
	}{{"base", b.o.e2eBaseRate}, {"peak", b.o.e2ePeakRate}} {
		d := openLoop(ctx, target{name: "direct", urls: direct}, l.rate, b.o.warmup, b.o.duration, b.o.clients)
		kr := openLoop(ctx, target{name: "kernel", urls: []string{k.invokeURL(capE2E)}, header: apiKeyHeader(k.key)}, l.rate, b.o.warmup, b.o.duration, b.o.clients)
		fmt.Fprintf(b.stderr, "  e2e %s %.0f req/s: direct p95 %s, kernel p95 %s (%d errors)\n", l.name, l.rate, benchkit.Ms(d.pct(95)), benchkit.Ms(kr.pct(95)), kr.errors)
		b.rep.e2e = append(b.rep.e2e, e2eRun{load: l.name, direct: d, kernel: kr})
	}
	return nil
}
