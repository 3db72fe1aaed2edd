// Command registry benchmarks the agent registry's write paths — heartbeats and audited
// registrations — on the embedded SQLite store and on PostgreSQL, each against a bare upsert of
// the same agent row measured in the same run, on the same database, so that the ratio survives
// the drift of absolute numbers on shared machines. Its results are recorded in
// docs/benchmarks.md. It is a program, not a test: nothing here asserts a timing.
//
// Usage:
//
//	go run ./bench/registry -store sqlite,postgres -duration 8s -concurrency 16 -agents 1000 -variants \
//	    -pg-url 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable'
//
// For each store it opens and migrates a fresh database the way the kernel does (kernel.OpenStore
// with the default configuration, then MigrateUp; for PostgreSQL a uniquely named database created
// on the server -pg-url names and dropped at the end), assembles the tenant, registry, API key and
// control services as internal/kernel/domains.go does, registers -agents agents, and then runs,
// with -concurrency goroutines for -duration each (after -warmup):
//
//  1. baseline: a bare UPDATE of one agent row's heartbeat_at, load and status, straight through
//     database/sql (SQLite: modernc, the adapter's pragmas — WAL, synchronous=FULL, busy timeout —
//     and one writer connection like the adapter) or a pgx pool the size of the kernel's;
//  2. heartbeats through control.Control.Heartbeat: a transaction with the registry's heartbeat
//     statement(s) and the agent.heartbeat outbox event, on random registered agents;
//  3. audited registrations through control.Control.RegisterAgent: the agent row, its capability
//     rows, the agent.registered outbox event and the audit record (RFC 6962 tree hashes), in
//     one transaction;
//  4. the baseline again, to show how far the machine drifted during the run.
//
// Ratios are against the mean of the two baseline runs. Latencies are those of every operation,
// kept in a per-goroutine slice and sorted at the end (nearest-rank percentiles). With
// -background (the default) the kernel's status sweeper and audit checkpoint signer run during the
// heartbeat and registration phases as they do in the kernel (not during the baselines). With
// -variants it also measures bare-upsert settings the product does NOT use (SQLite
// synchronous=NORMAL, batched commits; PostgreSQL synchronous_commit=off), to size what a change
// of durability or batching could buy. -cpuprofile-dir writes a CPU profile of each phase.
package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver of the baseline, as the adapter uses

	"github.com/nops-kernel/nops/bench/internal/benchkit"
	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/kernel"
	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/tenant"
)

// options are the command's flags.
type options struct {
	Stores      []string      // "sqlite", "postgres"
	Duration    time.Duration // measured time of each phase
	Warmup      time.Duration // unmeasured run before each phase
	Concurrency int           // goroutines per phase
	Agents      int           // agents registered before the heartbeat phase
	Tenants     int           // tenants the agents are spread over
	PGURL       string        // server on which a fresh database is created
	DataDir     string        // parent of the SQLite data directory; "" is the system temp dir
	Background  bool          // run the sweeper and checkpoint signer during the phases
	Variants    bool          // also measure bare-upsert settings the product does not use
	ProfileDir  string        // where a CPU profile of each measured phase is written; "" for none
}

func main() { benchkit.Main("registry", parseFlags, run) }

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("registry", flag.ContinueOnError)
	var o options
	stores := fs.String("store", "sqlite", "stores to measure, comma-separated: sqlite, postgres")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "measured time of each phase")
	fs.DurationVar(&o.Warmup, "warmup", time.Second, "unmeasured run before each phase")
	fs.IntVar(&o.Concurrency, "concurrency", 16, "goroutines per phase")
	fs.IntVar(&o.Agents, "agents", 1000, "agents registered before the heartbeat phase")
	fs.IntVar(&o.Tenants, "tenants", 1, "tenants the agents and registrations are spread over")
	fs.StringVar(&o.PGURL, "pg-url", "", "PostgreSQL server URL; a uniquely named database is created on it and dropped at the end")
	fs.StringVar(&o.DataDir, "data-dir", "", "where the SQLite data directory is created (removed at the end); default the system temp dir")
	fs.BoolVar(&o.Background, "background", true, "run the kernel's status sweeper and audit checkpoint signer during the heartbeat and registration phases")
	fs.BoolVar(&o.Variants, "variants", false, "also measure bare upserts with settings the product does not use (less durability, batching)")
	fs.StringVar(&o.ProfileDir, "cpuprofile-dir", "", "write a CPU profile of each measured phase (warm-up excluded) into this directory")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for s := range strings.SplitSeq(*stores, ",") {
		switch s = strings.TrimSpace(s); s {
		case "sqlite", "postgres":
			if !slices.Contains(o.Stores, s) {
				o.Stores = append(o.Stores, s)
			}
		default:
			return options{}, fmt.Errorf("-store: unknown store %q (want sqlite, postgres)", s)
		}
	}
	switch {
	case len(o.Stores) == 0:
		return options{}, errors.New("-store: no store named")
	case o.Duration <= 0:
		return options{}, errors.New("-duration must be positive")
	case o.Warmup < 0:
		return options{}, errors.New("-warmup must not be negative")
	case o.Concurrency < 1:
		return options{}, errors.New("-concurrency must be at least 1")
	case o.Agents < 1:
		return options{}, errors.New("-agents must be at least 1")
	case o.Tenants < 1:
		return options{}, errors.New("-tenants must be at least 1")
	case slices.Contains(o.Stores, "postgres") && o.PGURL == "":
		return options{}, errors.New("-pg-url is required to measure postgres")
	}
	return o, nil
}

// run measures every store in o and writes a Markdown report to w, progress to progress.
func run(ctx context.Context, o options, w, progress io.Writer) error {
	fmt.Fprintf(w, "Machine: %s; %d CPUs, GOMAXPROCS %d; %s %s/%s.\n",
		benchkit.CPUModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(w, "Settings: concurrency %d, %d agents over %d tenant(s), %s per phase after %s warm-up, background work %v.\n",
		o.Concurrency, o.Agents, o.Tenants, o.Duration, o.Warmup, benchkit.OnOff(o.Background))
	for _, name := range o.Stores {
		rep, err := benchStore(ctx, o, name, progress)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		rep.write(w)
	}
	return nil
}

// target is one store under test: the kernel's store and a bare connection to the same database.
type target struct {
	name     string
	cfg      config.Config
	st       kernel.Store
	upsert   upserter // the baseline
	variants []variant
	close    func() error
}

// upserter writes one agent row's heartbeat columns without anything of the kernel around it.
type upserter func(ctx context.Context, tenantID, agentID string, at time.Time, load []byte) error

// variant is a baseline with settings the product does not use. rows is how many rows one
// operation writes.
type variant struct {
	label string
	rows  int
	op    func(ctx context.Context, pick func() seeded) error
}

// seeded is one registered agent.
type seeded struct{ tenant, id string }

func benchStore(ctx context.Context, o options, name string, progress io.Writer) (rep report, err error) {
	logger := slog.New(slog.DiscardHandler)
	var t *target
	switch name {
	case "sqlite":
		t, err = openSQLite(ctx, o, logger)
	case "postgres":
		t, err = openPostgres(ctx, o, logger)
	}
	if err != nil {
		return report{}, err
	}
	defer func() {
		if cerr := t.close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("clean up: %w", cerr))
		}
	}()
	if err := t.st.MigrateUp(ctx); err != nil {
		return report{}, fmt.Errorf("migrate: %w", err)
	}
	d, err := buildDomains(t.cfg, t.st, logger)
	if err != nil {
		return report{}, err
	}
	defer func() {
		if cerr := d.close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("clean up: %w", cerr))
		}
	}()
	tenants := make([]string, o.Tenants)
	for i := range tenants {
		tn, err := d.control.CreateTenant(actorCtx(ctx, "usr_admin"), tenant.CreateInput{Name: fmt.Sprintf("bench-%d", i), DisplayName: "Benchmark tenant"})
		if err != nil {
			return report{}, fmt.Errorf("create tenant: %w", err)
		}
		tenants[i] = tn.ID
	}

	fmt.Fprintf(progress, "%s: registering %d agents\n", name, o.Agents)
	agents, err := seedAgents(ctx, d.control, tenants, o.Agents, o.Concurrency)
	if err != nil {
		return report{}, err
	}
	pick := func() seeded { return agents[mrand.IntN(len(agents))] }

	rep = report{store: name}
	phases := []struct {
		label string
		file  string // profile name
		op    func(ctx context.Context) error
		base  bool
	}{
		{"bare upsert (baseline, before)", "baseline-before", func(ctx context.Context) error {
			a := pick()
			return t.upsert(ctx, a.tenant, a.id, time.Now(), heartbeatLoadJSON())
		}, true},
		{"heartbeat: control.Heartbeat", "heartbeat", func(ctx context.Context) error {
			a := pick()
			_, err := d.control.Heartbeat(actorCtx(ctx, a.id), a.tenant, a.id, heartbeatInput())
			return err
		}, false},
		{"audited registration: control.RegisterAgent", "register", func() func(ctx context.Context) error {
			var seq atomic.Int64
			return func(ctx context.Context) error {
				n := seq.Add(1)
				tn := tenants[int(n)%len(tenants)]
				_, err := d.control.RegisterAgent(actorCtx(ctx, "usr_bench"), tn, agentInput(fmt.Sprintf("reg-%d", n)))
				return err
			}
		}(), false},
		{"bare upsert (baseline, after)", "baseline-after", func(ctx context.Context) error {
			a := pick()
			return t.upsert(ctx, a.tenant, a.id, time.Now(), heartbeatLoadJSON())
		}, true},
	}
	for _, ph := range phases {
		fmt.Fprintf(progress, "%s: %s\n", name, ph.label)
		// The kernel's background work runs beside the kernel's paths only: a baseline is the
		// bare statement, and a sweep holding the write lock would only slow it down.
		stopBackground := func() error { return nil }
		if o.Background && !ph.base {
			stopBackground = d.background(ctx, t.cfg, t.st)
		}
		// Group commit of heartbeats is part of the kernel's heartbeat path, not background
		// work: its writers run whenever the kernel's paths are measured (as kernel.Run does).
		stopBeats := func() {}
		if !ph.base {
			beatCtx, cancel := context.WithCancel(ctx)
			var wg sync.WaitGroup
			wg.Go(func() { _ = d.control.RunHeartbeats(beatCtx, heartbeatWriters(t.cfg)) })
			stopBeats = func() { cancel(); wg.Wait() }
		}
		res, err := measure(ctx, o, name+"-"+ph.file+".pprof", ph.op)
		stopBeats()
		if err = errors.Join(err, stopBackground()); err != nil {
			return report{}, fmt.Errorf("%s: %w", ph.label, err)
		}
		res.label, res.baseline, res.rows = ph.label, ph.base, 1
		rep.results = append(rep.results, res)
	}
	if o.Variants {
		for i, v := range t.variants {
			fmt.Fprintf(progress, "%s: %s\n", name, v.label)
			res, err := measure(ctx, o, fmt.Sprintf("%s-variant-%d.pprof", name, i+1), func(ctx context.Context) error { return v.op(ctx, pick) })
			if err != nil {
				return report{}, fmt.Errorf("%s: %w", v.label, err)
			}
			res.label, res.rows, res.variant = v.label, v.rows, true
			rep.results = append(rep.results, res)
		}
	}
	return rep, nil
}

// actorCtx carries what the HTTP perimeter would put in the context of an authenticated request,
// so audit records name an actor and a request as they do in the kernel.
func actorCtx(ctx context.Context, subject string) context.Context {
	if subject != "" {
		ctx = principal.NewContext(ctx, principal.Principal{Subject: subject, Roles: []string{"ADMIN"}})
	}
	return control.WithRequest(ctx, control.Request{IP: "127.0.0.1", RequestID: "req_bench", Digest: audit.DigestRequest([]byte(`{"bench":true}`))})
}

// seedAgents registers n agents over tenants through control, with concurrency goroutines.
func seedAgents(ctx context.Context, ctl *control.Control, tenants []string, n, concurrency int) ([]seeded, error) {
	out := make([]seeded, n)
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range min(concurrency, n) {
		g.Go(func() error {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return nil
				}
				tn := tenants[i%len(tenants)]
				a, err := ctl.RegisterAgent(actorCtx(gctx, "usr_bench"), tn, agentInput(fmt.Sprintf("seed-%d", i)))
				if err != nil {
					return fmt.Errorf("register seed agent %d: %w", i, err)
				}
				out[i] = seeded{tenant: tn, id: a.ID}
			}
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// agentInput is a typical registration: two capabilities with small JSON Schemas, labels and
// metadata.
func agentInput(name string) registry.AgentInput {
	return registry.AgentInput{
		Name:    name,
		Version: "1.4.2",
		Capabilities: []registry.Capability{
			{
				Name:         "text.summarize",
				Description:  "Summarises a document.",
				InputSchema:  json.RawMessage(`{"type":"object","properties":{"text":{"type":"string","maxLength":100000},"max_words":{"type":"integer","minimum":1}},"required":["text"]}`),
				OutputSchema: json.RawMessage(`{"type":"object","properties":{"summary":{"type":"string"}},"required":["summary"]}`),
			},
			{
				Name:         "text.translate",
				Description:  "Translates a document.",
				InputSchema:  json.RawMessage(`{"type":"object","properties":{"text":{"type":"string"},"to":{"type":"string","pattern":"^[a-z]{2}$"}},"required":["text","to"]}`),
				OutputSchema: json.RawMessage(`{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}`),
			},
		},
		Endpoint:    "https://agents.example.com/" + name,
		Labels:      map[string]string{"team": "bench", "region": "eu-west"},
		Metadata:    map[string]any{"owner": "bench", "build": map[string]any{"commit": "0123abcd"}},
		Criticality: registry.CriticalityEssential,
	}
}

// heartbeatInput carries every load figure, as a busy agent reports them.
func heartbeatInput() registry.HeartbeatInput {
	inFlight, free := int64(3), int64(61)
	p50, p95, errRate := 12.5, 48.0, 0.002
	return registry.HeartbeatInput{InFlight: &inFlight, P50Ms: &p50, P95Ms: &p95, ErrorRate: &errRate, FreeCapacity: &free}
}

// heartbeatLoadJSON is the load column the heartbeat path writes for heartbeatInput, encoded per
// operation as the adapter does.
func heartbeatLoadJSON() []byte {
	b, err := json.Marshal(heartbeatInput().Load())
	if err != nil {
		panic(err) // a struct of numbers always encodes
	}
	return b
}

// domains is the part of internal/kernel/domains.go's assembly the measured paths use, built the
// same way over the same store; the pepper and the checkpoint key live in a temporary directory.
type domains struct {
	control     *control.Control
	signer      *audit.Signer
	checkpoints *audit.Checkpointer
	keyDir      string
}

func buildDomains(cfg config.Config, st kernel.Store, logger *slog.Logger) (*domains, error) {
	d := &domains{}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	pepper, err := apikey.PepperFromConfig("bench", hex.EncodeToString(secret))
	if err != nil {
		return nil, fmt.Errorf("pepper: %w", err)
	}
	peppers, err := apikey.NewPeppers(pepper)
	if err != nil {
		return nil, fmt.Errorf("pepper: %w", err)
	}
	usage := apikey.NewUsageRecorder(st, apikey.UsageOptions{Interval: cfg.APIKeys.UsageFlush.D(), Logger: logger})
	keys, err := apikey.NewService(st, peppers, time.Now, logger, apikey.Options{Usage: usage})
	if err != nil {
		return nil, fmt.Errorf("api key service: %w", err)
	}
	tenants, err := tenant.NewService(st, tenant.Config{})
	if err != nil {
		return nil, fmt.Errorf("tenant service: %w", err)
	}
	agents, err := registry.NewService(st, registry.Config{TTL: registry.TTLs{Stale: cfg.Registry.StaleAfter.D(), Zombie: cfg.Registry.ZombieAfter.D()}})
	if err != nil {
		return nil, fmt.Errorf("registry service: %w", err)
	}
	d.keyDir, err = os.MkdirTemp("", "nops-bench-keys-")
	if err != nil {
		return nil, fmt.Errorf("checkpoint key directory: %w", err)
	}
	d.signer, _, err = audit.LoadOrCreateSigner(filepath.Join(d.keyDir, "audit-signing.key"), cfg.Audit.KeyName)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("audit signing key: %w", err), os.RemoveAll(d.keyDir))
	}
	d.checkpoints, err = audit.NewCheckpointer(audit.Policy{EveryRecords: cfg.Audit.CheckpointEvery, Interval: cfg.Audit.CheckpointInterval.D()}, time.Now)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("audit checkpoints: %w", err), os.RemoveAll(d.keyDir))
	}
	d.control = control.New(st, tenants, agents, keys, control.Options{Logger: logger, Appended: d.checkpoints.Appended, HeartbeatBatch: cfg.Registry.HeartbeatBatch})
	return d, nil
}

// background runs the kernel's status sweeper and checkpoint signer (internal/kernel/domains.go,
// sweepLoop and checkpointLoop) until the returned function is called, which reports the first
// error either met.
// heartbeatWriters mirrors internal/kernel: one group-commit writer on SQLite, four on PostgreSQL.
func heartbeatWriters(cfg config.Config) int {
	if cfg.Database.URL == "" {
		return 1
	}
	return 4
}

func (d *domains) background(ctx context.Context, cfg config.Config, st kernel.Store) func() error {
	ctx, cancel := context.WithCancel(ctx)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		if ctx.Err() != nil {
			return
		}
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	every := func(interval time.Duration, work func()) {
		wg.Go(func() {
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				work()
			}
		})
	}
	every(cfg.Registry.SweepInterval.D(), func() {
		for {
			changes, err := d.control.Sweep(ctx, 500)
			if err != nil {
				fail(fmt.Errorf("sweep: %w", err))
				return
			}
			if len(changes) < 500 {
				return
			}
		}
	})
	every(time.Second, func() {
		for _, tree := range d.checkpoints.Due() {
			cp, err := audit.SignCheckpoint(ctx, st, d.signer, tree)
			if err != nil {
				fail(fmt.Errorf("sign checkpoint of %s: %w", tree, err))
				continue
			}
			d.checkpoints.Signed(tree, cp.Size)
		}
	})
	return func() error {
		cancel()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return firstErr
	}
}

// close removes the checkpoint key.
func (d *domains) close() error { return os.RemoveAll(d.keyDir) }

// result is one measured phase.
type result struct {
	label    string
	baseline bool // one of the runs the ratios are taken against
	variant  bool // a setting the product does not use
	rows     int  // rows one operation writes
	ops      int
	elapsed  time.Duration
	lat      []time.Duration // sorted
}

func (r result) perSecond() float64 { return float64(r.ops) / r.elapsed.Seconds() }

// pct returns the nearest-rank q-quantile of the latencies.
func (r result) pct(q float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	i := int(q*float64(len(r.lat))+0.999999) - 1
	return r.lat[min(max(i, 0), len(r.lat)-1)]
}

// measure runs op after an unmeasured warm-up, profiling the measured run into
// o.ProfileDir/profile when o.ProfileDir is set.
func measure(ctx context.Context, o options, profile string, op func(ctx context.Context) error) (res result, err error) {
	if o.Warmup > 0 {
		if _, err := drive(ctx, o.Concurrency, o.Warmup, op); err != nil {
			return result{}, fmt.Errorf("warm-up: %w", err)
		}
	}
	if o.ProfileDir != "" {
		f, err := os.Create(filepath.Join(o.ProfileDir, profile))
		if err != nil {
			return result{}, fmt.Errorf("cpu profile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return result{}, errors.Join(fmt.Errorf("cpu profile: %w", err), f.Close())
		}
		defer func() {
			pprof.StopCPUProfile()
			if cerr := f.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("cpu profile: %w", cerr))
			}
		}()
	}
	return drive(ctx, o.Concurrency, o.Duration, op)
}

// drive runs op in n goroutines, each starting operations until d has passed, and returns every
// latency. The elapsed time runs until the last operation has finished. The first error stops
// every goroutine and is returned.
func drive(ctx context.Context, n int, d time.Duration, op func(ctx context.Context) error) (result, error) {
	lats := make([][]time.Duration, n)
	g, gctx := errgroup.WithContext(ctx)
	start := time.Now()
	deadline := start.Add(d)
	for w := range n {
		g.Go(func() error {
			// Sized for ~20,000 operations/s shared by n goroutines; append grows it past that.
			l := make([]time.Duration, 0, max(1024, int(d.Seconds()*20000)/n))
			for gctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(deadline) {
					break
				}
				if err := op(gctx); err != nil {
					return err
				}
				l = append(l, time.Since(t0))
			}
			lats[w] = l
			return gctx.Err()
		})
	}
	err := g.Wait()
	elapsed := time.Since(start)
	if err != nil {
		return result{}, err
	}
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	slices.Sort(all)
	return result{ops: len(all), elapsed: elapsed, lat: all}, nil
}

// report is one store's results.
type report struct {
	store   string
	results []result
}

// baselineRate is the mean rate of the baseline runs.
func (rep report) baselineRate() (float64, time.Duration) {
	var (
		sum float64
		p99 time.Duration
		n   int
	)
	for _, r := range rep.results {
		if r.baseline {
			sum += r.perSecond()
			p99 += r.pct(0.99)
			n++
		}
	}
	if n == 0 {
		return 0, 0
	}
	return sum / float64(n), p99 / time.Duration(n)
}

// goal of issue 3 for heartbeats on the embedded store.
const (
	goalRate = 5000
	goalP99  = 10 * time.Millisecond
)

func (rep report) write(w io.Writer) {
	base, baseP99 := rep.baselineRate()
	fmt.Fprintf(w, "\n### %s\n\n", rep.store)
	fmt.Fprintln(w, "| operation | ops | ops/s | p50 | p95 | p99 | max | ops/s vs baseline | p99 vs baseline |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rep.results {
		label := r.label
		rate := r.perSecond()
		if r.rows > 1 {
			label = fmt.Sprintf("%s (%d rows/op)", label, r.rows)
		}
		if r.variant {
			label += " — not the product's setting"
		}
		fmt.Fprintf(w, "| %s | %d | %.0f | %s | %s | %s | %s | %s | %s |\n", label, r.ops, rate,
			benchkit.Ms(r.pct(0.50)), benchkit.Ms(r.pct(0.95)), benchkit.Ms(r.pct(0.99)), benchkit.Ms(r.pct(1)),
			benchkit.Ratio(rate*float64(r.rows), base), benchkit.Ratio(float64(r.pct(0.99)), float64(baseP99)))
	}
	fmt.Fprintf(w, "\nRatios are against the mean of the two baseline runs (%.0f ops/s, p99 %s); for variants writing several rows per operation the ops/s ratio counts rows.\n", base, benchkit.Ms(baseP99))
	for _, r := range rep.results {
		if rep.store != "sqlite" || !strings.HasPrefix(r.label, "heartbeat") {
			continue
		}
		p99 := r.pct(0.99)
		met := r.perSecond() >= goalRate && p99 < goalP99
		verdict := "met"
		if !met {
			verdict = "NOT met"
		}
		fmt.Fprintf(w, "Heartbeat goal of the embedded store (≥ %d/s with p99 < %s on 2 cores): %s — %.0f/s (%.0f%% of the goal rate), p99 %s.\n",
			goalRate, benchkit.Ms(goalP99), verdict, r.perSecond(), 100*r.perSecond()/goalRate, benchkit.Ms(p99))
	}
}

// sqliteTimeFormat and sqliteDSN copy the adapter's (internal/store/sqlite: timeFormat, dsn), so
// that the baseline writes the same text and runs with the same pragmas.
const sqliteTimeFormat = "2006-01-02T15:04:05.000000000Z07:00"

func sqliteDSN(path string, busy time.Duration, synchronous string) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busy.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous("+synchronous+")")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	return path + "?" + q.Encode()
}

const sqliteUpsert = `UPDATE agents SET heartbeat_at = ?, load = ?, status = 'healthy' WHERE tenant_id = ? AND id = ?`

// openSQLite opens the kernel's SQLite store in a fresh data directory, and a bare writer
// connection to the same file for the baseline.
func openSQLite(ctx context.Context, o options, logger *slog.Logger) (*target, error) {
	dir, err := os.MkdirTemp(o.DataDir, "nops-bench-")
	if err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	cfg := config.Default()
	cfg.DataDir = dir
	st, err := kernel.OpenStore(ctx, cfg, logger)
	if err != nil {
		return nil, errors.Join(err, os.RemoveAll(dir))
	}
	path := filepath.Join(dir, kernel.SQLiteFile)
	openWriter := func(synchronous string) (*sql.DB, error) {
		db, err := sql.Open("sqlite", sqliteDSN(path, cfg.Database.BusyTimeout.D(), synchronous))
		if err != nil {
			return nil, err
		}
		db.SetMaxOpenConns(1)
		db.SetMaxIdleConns(1)
		return db, nil
	}
	full, err := openWriter("FULL")
	if err != nil {
		return nil, errors.Join(fmt.Errorf("baseline connection: %w", err), st.Close(), os.RemoveAll(dir))
	}
	normal, err := openWriter("NORMAL")
	if err != nil {
		return nil, errors.Join(fmt.Errorf("baseline connection: %w", err), full.Close(), st.Close(), os.RemoveAll(dir))
	}
	update := func(db *sql.DB) upserter {
		return func(ctx context.Context, tenantID, agentID string, at time.Time, load []byte) error {
			res, err := db.ExecContext(ctx, sqliteUpsert, at.UTC().Truncate(time.Microsecond).Format(sqliteTimeFormat), string(load), tenantID, agentID)
			if err != nil {
				return err
			}
			return oneRow(res.RowsAffected())
		}
	}
	const batch = 32
	t := &target{
		name:   "sqlite",
		cfg:    cfg,
		st:     st,
		upsert: update(full),
		variants: []variant{
			{label: "bare upsert, synchronous=NORMAL", rows: 1, op: func(ctx context.Context, pick func() seeded) error {
				a := pick()
				return update(normal)(ctx, a.tenant, a.id, time.Now(), heartbeatLoadJSON())
			}},
			{label: fmt.Sprintf("bare upsert, %d per transaction, synchronous=FULL", batch), rows: batch, op: func(ctx context.Context, pick func() seeded) error {
				tx, err := full.BeginTx(ctx, nil)
				if err != nil {
					return err
				}
				for range batch {
					a := pick()
					if _, err := tx.ExecContext(ctx, sqliteUpsert, time.Now().UTC().Truncate(time.Microsecond).Format(sqliteTimeFormat), string(heartbeatLoadJSON()), a.tenant, a.id); err != nil {
						return errors.Join(err, tx.Rollback())
					}
				}
				return tx.Commit()
			}},
		},
	}
	t.close = func() error { return errors.Join(normal.Close(), full.Close(), st.Close(), os.RemoveAll(dir)) }
	return t, nil
}

func oneRow(n int64, err error) error {
	if err != nil {
		return err
	}
	if n != 1 {
		return fmt.Errorf("upsert wrote %d rows, want 1", n)
	}
	return nil
}

const pgUpsert = `UPDATE agents SET heartbeat_at = $3, load = $4, status = 'healthy' WHERE tenant_id = $1 AND id = $2`

// openPostgres creates a uniquely named database on the server o.PGURL names, opens the kernel's
// store on it, and a bare pgx pool of the kernel's size for the baseline. Closing drops the
// database.
func openPostgres(ctx context.Context, o options, logger *slog.Logger) (*target, error) {
	name := benchkit.UniqueName("nops_bench_")
	u, err := url.Parse(o.PGURL)
	if err != nil {
		return nil, errors.New("-pg-url: invalid URL")
	}
	admin, err := pgx.Connect(ctx, o.PGURL)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", u.Redacted(), err)
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return nil, errors.Join(fmt.Errorf("create database %s: %w", name, err), admin.Close(ctx))
	}
	drop := func() error {
		// The run's context may be cancelled by now (an interrupt): the drop gets its own.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		if err != nil {
			err = fmt.Errorf("drop database %s: %w", name, err)
		}
		return errors.Join(err, admin.Close(ctx))
	}
	u.Path = "/" + name
	cfg := config.Default()
	cfg.Database.URL = u.String()
	st, err := kernel.OpenStore(ctx, cfg, logger)
	if err != nil {
		return nil, errors.Join(err, drop())
	}
	openPool := func(params map[string]string) (*pgxpool.Pool, error) {
		pcfg, err := pgxpool.ParseConfig(cfg.Database.URL)
		if err != nil {
			return nil, err
		}
		pcfg.MaxConns, pcfg.MinConns = cfg.Database.MaxConns, cfg.Database.MinConns
		pcfg.ConnConfig.RuntimeParams["timezone"] = "UTC"
		for k, v := range params {
			pcfg.ConnConfig.RuntimeParams[k] = v
		}
		return pgxpool.NewWithConfig(ctx, pcfg)
	}
	pool, err := openPool(nil)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("baseline pool: %w", err), st.Close(), drop())
	}
	async, err := openPool(map[string]string{"synchronous_commit": "off"})
	if err != nil {
		pool.Close()
		return nil, errors.Join(fmt.Errorf("baseline pool: %w", err), st.Close(), drop())
	}
	update := func(p *pgxpool.Pool) upserter {
		return func(ctx context.Context, tenantID, agentID string, at time.Time, load []byte) error {
			tag, err := p.Exec(ctx, pgUpsert, tenantID, agentID, at, string(load))
			return oneRow(tag.RowsAffected(), err)
		}
	}
	t := &target{
		name:   "postgres",
		cfg:    cfg,
		st:     st,
		upsert: update(pool),
		variants: []variant{
			{label: "bare upsert, synchronous_commit=off", rows: 1, op: func(ctx context.Context, pick func() seeded) error {
				a := pick()
				return update(async)(ctx, a.tenant, a.id, time.Now(), heartbeatLoadJSON())
			}},
		},
	}
	t.close = func() error {
		async.Close()
		pool.Close()
		return errors.Join(st.Close(), drop())
	}
	return t, nil
}
