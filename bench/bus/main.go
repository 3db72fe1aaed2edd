// Command bus benchmarks the kernel's event bus — bus.Publish and bus.Subscribe on each adapter
// and durability setting — against the raw client library on the same broker, stream settings
// and load, measured in the same run, so the ratios survive the drift of absolute numbers on
// shared machines. It also measures the physical limit of a power-loss-safe event: the data
// directory's rate of 1 KB appends each followed by fdatasync. Its results are recorded in
// docs/benchmarks.md. It is a program, not a test: nothing here asserts a timing.
//
// Usage:
//
//	go run ./bench/bus -duration 10s -adapters embedded-sync,embedded-async,nats,redis \
//	    -nats-url nats://127.0.0.1:4222 -redis-url redis://127.0.0.1:6379/0
//
// Adapters (-adapters): embedded-sync (natsbus embedded, DurabilitySync: fsync before every
// acknowledgement), embedded-async (natsbus embedded, DurabilityAsync: fsync every SyncInterval),
// nats (natsbus on the external NATS of -nats-url; its durability is the server's own
// configuration) and redis (redisbus on -redis-url).
//
// Implementations (-impls), each on a fresh stream or namespace per phase, deleted afterwards:
//
//   - raw: the client library alone. NATS: nats.go jetstream PublishAsync with a Nats-Msg-Id
//     (window -max-pending) and a durable pull consumer acknowledging each message. Redis: go-redis
//     XADD (MINID ~ like the adapter) pipelined per call, XREADGROUP and an XACK per message.
//   - atomic (NATS servers 2.12+ only): nats.go publishing each call's events as one JetStream
//     atomic batch (headers Nats-Batch-Id, Nats-Batch-Sequence, Nats-Batch-Commit), to show what
//     sharing one fsync per batch gives under SyncAlways.
//   - ours: bus.Publish, and a bus.Subscribe consumer (-consumer-concurrency handlers) whose
//     handler records the event and returns nil.
//
// Loads, each after -warmup of the same load:
//
//   - open loop at each of -rates events/s for -duration: events are due on a fixed schedule and
//     each one's latency runs from the time it was due to its consumption, so a publisher that
//     falls behind shows in the latencies (coordinated omission accounted for). Synchronous
//     publishers (ours, raw Redis, atomic) get due events from a queue served by -publishers
//     goroutines taking up to -batch queued events per call; raw NATS publishes asynchronously
//     from the scheduler itself. A phase that falls more than -drain behind its schedule gives
//     up the rest of it (counted as failed), so an impossible rate does not hold the run up.
//   - closed loop (-max): -publishers goroutines publish as fast as the system takes it (batches
//     of -batch per call, or PublishAsync within its window) for -duration, pausing while
//     -max-backlog events are published and not yet consumed (so the rate is one the consumer
//     keeps up with); the rate is the events consumed divided by the time from the start to the
//     last consumption.
//
// Before each embedded phase the program syncs the file systems (sync(2)), so that a phase does
// not pay for the writeback of what ran before it.
//
// The report is Markdown: the machine, the fsync rate, one table of every phase with ours ÷ raw
// ratios, the CPU time per event of the closed-loop phases (see cpuCost), and the goals
// stated as met or not met.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/nops-kernel/nops/bench/internal/benchkit"
	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/bus/natsbus"
)

// options are the command's flags.
type options struct {
	Adapters            []string
	Impls               []string
	Rates               []int         // open-loop rates, events/s
	Max                 bool          // also measure the maximum rate (closed loop)
	Duration            time.Duration // measured time of each phase
	Warmup              time.Duration // unmeasured load before each phase
	Drain               time.Duration // longest wait for the consumer to catch up after a phase
	PayloadSize         int           // bytes per event
	Publishers          int
	Batch               int
	MaxPending          int // raw NATS PublishAsync window (natsbus's default MaxPending)
	MaxBacklog          int // closed loop: most events published and not yet consumed
	ConsumerConcurrency int // bus.ConsumerConfig.Concurrency of ours
	NATSURL             string
	RedisURL            string
	DataDir             string        // parent of the embedded stores and the fsync probe; "" is the system temp dir
	FsyncDuration       time.Duration // how long the fsync rate is measured

	atomicExternal bool // the external NATS supports atomic batches (found at run time)
}

func main() { benchkit.Main("bus", parseFlags, run) }

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("bus", flag.ContinueOnError)
	var o options
	adapters := fs.String("adapters", adEmbeddedSync+","+adEmbeddedAsync, "adapters to measure, comma-separated: "+strings.Join(allAdapters, ", "))
	impls := fs.String("impls", strings.Join(allImpls, ","), "implementations to measure, comma-separated: "+strings.Join(allImpls, ", "))
	rates := fs.String("rates", "1000,2000,5000", "open-loop rates in events/s, comma-separated; empty for none")
	fs.BoolVar(&o.Max, "max", true, "also measure the maximum sustained rate (closed loop)")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "measured time of each phase")
	fs.DurationVar(&o.Warmup, "warmup", time.Second, "unmeasured load before each phase")
	fs.DurationVar(&o.Drain, "drain", 20*time.Second, "longest wait for the consumer to catch up after a phase's publishing")
	fs.IntVar(&o.PayloadSize, "payload", 1024, "bytes per event (a CloudEvent padded to this size)")
	fs.IntVar(&o.Publishers, "publishers", 8, "goroutines publishing")
	fs.IntVar(&o.Batch, "batch", 512, "most events per publish call (closed loop: every call); the default makes -publishers × -batch equal to the raw PublishAsync window, so ours and raw have as many events in flight")
	fs.IntVar(&o.MaxPending, "max-pending", natsbus.DefaultMaxPending, "raw NATS: PublishAsync window (natsbus's default MaxPending)")
	fs.IntVar(&o.MaxBacklog, "max-backlog", 4096, "closed loop: publishers wait while this many events are published and not yet consumed")
	fs.IntVar(&o.ConsumerConcurrency, "consumer-concurrency", 16, "ours: handlers running at once (bus.ConsumerConfig.Concurrency)")
	fs.StringVar(&o.NATSURL, "nats-url", "", "external NATS for the nats adapter; a uniquely named stream/namespace is created and deleted per phase")
	fs.StringVar(&o.RedisURL, "redis-url", "", "Redis for the redis adapter; keys under a unique prefix, deleted per phase")
	fs.StringVar(&o.DataDir, "data-dir", "", "where the embedded stores and the fsync probe file are created (removed at the end); default the system temp dir")
	fs.DurationVar(&o.FsyncDuration, "fsync-duration", 5*time.Second, "how long the disk's fsync rate is measured; 0 skips it")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if o.Adapters, err = pickList("-adapters", *adapters, allAdapters); err != nil {
		return options{}, err
	}
	if o.Impls, err = pickList("-impls", *impls, allImpls); err != nil {
		return options{}, err
	}
	for r := range strings.SplitSeq(*rates, ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		n, err := strconv.Atoi(r)
		if err != nil || n < 1 || n > 1_000_000 {
			return options{}, fmt.Errorf("-rates: %q is not a rate between 1 and 1000000", r)
		}
		if !slices.Contains(o.Rates, n) {
			o.Rates = append(o.Rates, n)
		}
	}
	switch {
	case len(o.Rates) == 0 && !o.Max:
		return options{}, errors.New("nothing to measure: no -rates and -max=false")
	case o.Duration <= 0:
		return options{}, errors.New("-duration must be positive")
	case o.Warmup < 0:
		return options{}, errors.New("-warmup must not be negative")
	case o.Drain <= 0:
		return options{}, errors.New("-drain must be positive")
	case o.FsyncDuration < 0:
		return options{}, errors.New("-fsync-duration must not be negative")
	case o.PayloadSize < 256 || o.PayloadSize > bus.MaxPayload:
		return options{}, fmt.Errorf("-payload must be between 256 and %d bytes", bus.MaxPayload)
	case o.Publishers < 1:
		return options{}, errors.New("-publishers must be at least 1")
	case o.Batch < 1 || o.Batch > 1000:
		// 1000 is JetStream's largest atomic batch.
		return options{}, errors.New("-batch must be between 1 and 1000")
	case o.MaxPending < 1:
		return options{}, errors.New("-max-pending must be at least 1")
	case o.MaxBacklog < 1:
		return options{}, errors.New("-max-backlog must be at least 1")
	case o.ConsumerConcurrency < 1:
		return options{}, errors.New("-consumer-concurrency must be at least 1")
	case slices.Contains(o.Adapters, adNATS) && o.NATSURL == "":
		return options{}, errors.New("-nats-url is required to measure nats")
	case slices.Contains(o.Adapters, adRedis) && o.RedisURL == "":
		return options{}, errors.New("-redis-url is required to measure redis")
	}
	return o, nil
}

// pickList parses a comma-separated list of names from known, without repeats, in known's order.
func pickList(flagName, list string, known []string) ([]string, error) {
	var picked []string
	for s := range strings.SplitSeq(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(known, s) {
			return nil, fmt.Errorf("%s: unknown name %q (want %s)", flagName, s, strings.Join(known, ", "))
		}
		picked = append(picked, s)
	}
	var out []string
	for _, k := range known {
		if slices.Contains(picked, k) {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: nothing named", flagName)
	}
	return out, nil
}

// run measures everything o asks for and writes the Markdown report to w, progress to progress.
// It returns an error when a phase failed; the report then says which.
func run(ctx context.Context, o options, w, progress io.Writer) (err error) {
	e := &env{o: o, payload: cloudEvent(o.PayloadSize), logger: slog.New(slog.DiscardHandler)}
	dataDir := o.DataDir
	if dataDir == "" {
		dataDir = os.TempDir()
	}
	rep := report{o: o, machine: machineLine(dataDir)}
	if slices.Contains(o.Adapters, adRedis) {
		opt, err := redis.ParseURL(o.RedisURL)
		if err != nil {
			return errors.New("-redis-url: not a valid Redis URL")
		}
		rdb := redis.NewClient(opt)
		defer func() { err = errors.Join(err, rdb.Close()) }()
		e.rdb = rdb
		line, err := redisLine(ctx, rdb, opt.Addr)
		if err != nil {
			return err
		}
		rep.services = append(rep.services, line)
	}
	if slices.Contains(o.Adapters, adNATS) {
		nc, err := nats.Connect(o.NATSURL, nats.Name("nops-bench-raw"))
		if err != nil {
			return fmt.Errorf("connect to nats %s: %w", urlHost(o.NATSURL), redactURLError(err, o.NATSURL))
		}
		defer nc.Close()
		e.nc = nc
		var line string
		line, e.o.atomicExternal = natsLine(nc, urlHost(o.NATSURL))
		rep.services = append(rep.services, line)
	}
	if slices.Contains(o.Adapters, adEmbeddedSync) || slices.Contains(o.Adapters, adEmbeddedAsync) {
		rep.services = append(rep.services, fmt.Sprintf("Embedded NATS: nats-server %s in the process (natsbus), store in %s.", server.VERSION, dataDir))
	}
	rep.services = append(rep.services, fmt.Sprintf("Clients: nats.go %s, go-redis %s.", nats.Version, redis.Version()))

	if o.FsyncDuration > 0 {
		fmt.Fprintf(progress, "disk: fdatasync rate in %s for %s\n", dataDir, o.FsyncDuration)
		d, err := measureDisk(ctx, dataDir, o.PayloadSize, o.FsyncDuration)
		if err != nil {
			return err
		}
		rep.disk = &d
	}

	var failed []string
	for _, a := range o.Adapters {
		loads := slices.Clone(o.Rates)
		if o.Max {
			loads = append(loads, 0)
		}
		for _, rate := range loads {
			for _, impl := range implsOf(e.o, a) {
				fmt.Fprintf(progress, "%s: %s, %s\n", a, impl, loadLabel(o, impl, a, rate))
				res := e.phase(ctx, a, impl, rate)
				if res.err != nil {
					failed = append(failed, fmt.Sprintf("%s/%s/%s", a, impl, loadLabel(o, impl, a, rate)))
					fmt.Fprintf(progress, "  failed: %v\n", res.err)
				} else {
					st := res.st
					fmt.Fprintf(progress, "  %.0f events/s consumed (%.0f published/s), p50 %s, p99 %s, generator lag p99 %s; unconsumed %d, failed %d\n",
						st.rate(), st.publishRate(), benchkit.Ms(pct(st.lat, 0.5)), benchkit.Ms(pct(st.lat, 0.99)), benchkit.Ms(pct(st.lag, 0.99)), unconsumed(st), st.failed)
				}
				rep.results = append(rep.results, res)
				if ctx.Err() != nil {
					rep.write(w)
					return ctx.Err()
				}
			}
		}
	}
	rep.write(w)
	if len(failed) > 0 {
		return fmt.Errorf("%d phase(s) failed: %s", len(failed), strings.Join(failed, "; "))
	}
	return nil
}

// result is one phase: an implementation on an adapter under one load.
type result struct {
	adapter, impl string
	rate          int // 0: closed loop
	st            phaseStats
	cpu           cpuCost
	err           error
}

// phase measures impl on adapter a under one load, on a system opened for it alone.
func (e *env) phase(ctx context.Context, a, impl string, rate int) result {
	res := result{adapter: a, impl: impl, rate: rate}
	ls := loadSettings{rate: rate, warmup: e.o.Warmup, duration: e.o.Duration, publishers: e.o.Publishers, batch: e.o.Batch, drain: e.o.Drain, backlog: e.o.MaxBacklog}
	capacity := int(int64(rate) * int64(e.o.Duration) / int64(time.Second))
	if rate == 0 {
		// Room for 200,000 events/s: the closed loop stops early beyond that.
		capacity = max(int(e.o.Duration.Seconds()*200_000), 10_000)
	}
	rec := newRecorder(benchkit.UniqueName("e"), capacity)
	var rdb redis.UniversalClient
	switch a {
	case adRedis:
		rdb = e.rdb
	case adEmbeddedSync, adEmbeddedAsync:
		// Start on a disk with nothing left to write back, from the phase before or otherwise.
		syncDisks()
	}
	meter := startCPU(ctx, rdb)
	sys, err := e.open(ctx, a, impl, rec)
	if err != nil {
		res.err = err
		return res
	}
	if rate > 0 {
		res.st, err = openLoop(ctx, rec, sys.pub, ls)
	} else {
		res.st, err = closedLoop(ctx, rec, sys.pub, ls)
	}
	res.err = errors.Join(err, sys.close())
	res.cpu = meter.stop(ctx, rec.consumed.Load()+rec.warm.Load())
	if res.err == nil && res.st.consumed == 0 {
		res.err = errors.New("no event was consumed")
	}
	return res
}

// machineLine describes the machine: CPU, cores, Go, kernel, the data directory's file system and
// the date.
func machineLine(dataDir string) string {
	return fmt.Sprintf("Machine: %s; %d CPUs, GOMAXPROCS %d; %s %s/%s; Linux %s; data dir %s (%s); %s.",
		benchkit.CPUModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH,
		readTrim("/proc/sys/kernel/osrelease", "unknown"), dataDir, mountOf(dataDir), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
}

func readTrim(path, fallback string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fallback
	}
	return strings.TrimSpace(string(b))
}

// mountOf returns "<fstype> on <device>" of the mount holding dir, from /proc/mounts.
func mountOf(dir string) string {
	abs, err := filepath.EvalSymlinks(dir)
	if err != nil {
		abs = dir
	}
	f, err := os.Open("/proc/mounts")
	if err != nil {
		return "file system unknown"
	}
	defer f.Close()
	best, desc := "", "file system unknown"
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 {
			continue
		}
		mnt := fields[1]
		if (abs == mnt || strings.HasPrefix(abs, strings.TrimSuffix(mnt, "/")+"/")) && len(mnt) >= len(best) {
			best, desc = mnt, fields[2]+" on "+fields[0]
		}
	}
	return desc
}

// urlHost is the host:port of a URL, for display: never its credentials.
func urlHost(raw string) string {
	first, _, _ := strings.Cut(raw, ",")
	u, err := url.Parse(strings.TrimSpace(first))
	if err != nil || u.Host == "" {
		return "(unparsable URL)"
	}
	return u.Host
}

// redactURLError removes raw's password (or token) from err's text.
func redactURLError(err error, raw string) error {
	u, perr := url.Parse(raw)
	if perr != nil || u.User == nil {
		return err
	}
	secret := u.User.Username()
	if pw, ok := u.User.Password(); ok {
		secret = pw
	}
	if secret == "" {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), secret, "REDACTED"))
}

// natsLine describes the external NATS and reports whether it supports atomic batch publish
// (2.12+).
func natsLine(nc *nats.Conn, host string) (string, bool) {
	v := nc.ConnectedServerVersion()
	atomic := versionAtLeast(v, 2, 12)
	support := "no atomic batch publish (needs 2.12+)"
	if atomic {
		support = "atomic batch publish supported"
	}
	return fmt.Sprintf("External NATS: nats-server %s at %s; its JetStream durability is its own configuration (sync_interval; the benchmark does not set it); %s.", v, host, support), atomic
}

// versionAtLeast reports whether the version "x.y.z" is at least major.minor.
func versionAtLeast(v string, major, minor int) bool {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || (ma == major && mi >= minor)
}

// redisLine describes the Redis server and what its persistence makes of an acknowledged event.
func redisLine(ctx context.Context, rdb *redis.Client, addr string) (string, error) {
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		return "", fmt.Errorf("redis %s: %w", addr, err)
	}
	version := "unknown"
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			version = v
		}
	}
	get := func(key string) string {
		m, err := rdb.ConfigGet(ctx, key).Result()
		if err != nil {
			return "?"
		}
		return m[key]
	}
	aof, fsync, save := get("appendonly"), get("appendfsync"), get("save")
	var meaning string
	switch {
	case aof == "yes" && fsync == "always":
		meaning = "an acknowledged event survives a power loss"
	case aof == "yes":
		meaning = "an acknowledged event survives a Redis crash; a power loss can lose about the last second"
	case aof == "no" && save == "":
		meaning = "no persistence: acknowledged events do not survive a Redis restart"
	case aof == "no" && save != "?":
		meaning = "RDB snapshots only: a Redis restart loses the events since the last snapshot"
	default:
		meaning = "persistence settings unreadable (CONFIG GET refused)"
	}
	return fmt.Sprintf("Redis: %s at %s; appendonly=%s, appendfsync=%s, save=%q: %s.", version, addr, aof, fsync, save, meaning), nil
}
