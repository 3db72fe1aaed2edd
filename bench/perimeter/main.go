// Command perimeter benchmarks the cost of the kernel's security perimeter on an authenticated
// read, GET /v1/agents/{id} with X-API-Key, in one run on one machine. Its phases (-phases, in
// the order given; the default runs them all and bare twice):
//
//   - static: an http.Server on 127.0.0.1:0 whose only handler writes the agent document the
//     kernel returned, as bytes kept in memory (no middleware, no database): the ceiling of the
//     machine and the client, a reference only;
//   - bare: "the same handler with no middleware", the baseline of the goal: an http.Server
//     whose handler does what the kernel's GET /v1/agents/{id} handler does once the perimeter
//     has admitted the request: the registry read (registry.Service.Get over a second handle on
//     the off kernel's own SQLite database) and the JSON encoding of the contract's Agent
//     document with its ETag. No authentication, validation, limits, logs, metrics or traces;
//   - off: a kernel with the perimeter features off (no per-IP, tenant or principal limits, no
//     policies, unsigned requests; API-key authentication, RBAC, request validation, logs,
//     metrics, traces and the handler's database read remain);
//   - full: a kernel with the whole chain: per-IP, per-tenant and per-principal rate limits (set
//     high enough never to refuse, so every request is counted), one deny policy and one allow
//     policy evaluated on each request, and every request signed (RFC 9421, hmac-sha256, fresh
//     nonce claimed in the nonce store: the nonce journal, the default on SQLite, with
//     signing.nonce_durability full, the default, or Redis with -redis-url);
//   - full-process: the same with signing.nonce_durability process (the journal appends its
//     claims without waiting for the fsync; with -redis-url the counters stay in Redis and the
//     nonces go to the journal, where the setting applies).
//
// The second bare run shows the machine's drift. Apart from HTTP, the program also times
// reqsig.Verifier.Verify alone (key lookup in memory, nonces in memory) on -verify-n signed
// requests.
//
// For every phase the report gives the process's CPU time per request over the measured window
// (kernel and load generator share the process: a figure that drifts less with the machine's
// load than throughput does), and for the kernel phases the means of the kernel's own stage
// histograms over the window, scraped from its /metrics: the whole request in the server
// (http.server.request.duration), the nonce claim (nops.reqsig.nonce_claim.duration: for the
// database, the wait for the group commit and the commit) and the two rate-limit checks
// (nops_ratelimit_check_duration_seconds, by stage). -profile <prefix> writes CPU, block and
// mutex profiles of each phase's measured window (and the allocations so far).
//
// Usage:
//
//	go run ./bench/perimeter -duration 8s -warmup 2s -concurrency 16 [-redis-url redis://127.0.0.1:6379/0] [-phases off,full] [-profile /tmp/perim]
//
// Each phase runs -concurrency client goroutines in a closed loop; the client runs on the same
// machine as the server. The full phase's signatures (one fresh nonce each) are made before its
// clock starts and kept outside the Go heap, as a load generator replays prepared requests
// (-presign, the default; see signatures for why outside the heap): signing
// is the client's work, which a real client does on its own machine, and made inline it took
// about 8 % of the CPU of the full phase (session 4's profile), on the two CPUs the kernel under
// test shares with the client. The kernel still verifies every signature and claims every nonce
// in the phase. When the prepared signatures run out the rest are made inline, and the report
// says how many; -presign=false signs every request inline, as the runs before session 4 did.
//
// Latencies are those of every request (nearest-rank percentiles). Ratios are against the mean
// of the bare runs. It is a program, not a test: nothing here asserts a timing.
// NOPS_BENCH_CPUPROFILE=<file> writes a CPU profile of the whole run. Results are recorded in
// docs/benchmarks.md.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/redis/go-redis/v9"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/nops-kernel/nops/bench/internal/benchkit"
	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/httpapi/gen"
	"github.com/nops-kernel/nops/internal/kernel"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/reqsig"
	"github.com/nops-kernel/nops/internal/store/sqlite"
)

type options struct {
	duration, warmup time.Duration
	concurrency      int
	redisURL         string
	verifyN          int
	presign          bool
	phases           []string
	profile          string // file prefix of the per-phase CPU, block and mutex profiles; "" none
}

var knownPhases = []string{"static", "bare", "off", "full", "full-process"}

func parse(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("perimeter", flag.ContinueOnError)
	fs.DurationVar(&o.duration, "duration", 8*time.Second, "measured time of each phase")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured time before each phase")
	fs.IntVar(&o.concurrency, "concurrency", 16, "client goroutines")
	fs.StringVar(&o.redisURL, "redis-url", "", "full phase: Redis for rate-limit counters and nonces (keys under a unique prefix, deleted by expiry); empty: memory counters and the nonce journal (the default on SQLite)")
	fs.IntVar(&o.verifyN, "verify-n", 20000, "signatures verified in the Verify-alone measurement")
	fs.BoolVar(&o.presign, "presign", true, "full phase: sign the requests before the phase's clock starts (false: sign each request inline)")
	fs.StringVar(&o.profile, "profile", "", "write CPU, block and mutex profiles of each phase's measured window to <prefix>.<phase>.{cpu,block,mutex}, and the allocations so far to <prefix>.<phase>.allocs (block, mutex and allocation profiles accumulate over the phases: profile one phase at a time with -phases, or compare with pprof -base)")
	phases := fs.String("phases", "static,bare,off,full,full-process,bare", "phases to run, in order: static, bare, off, full, full-process")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.concurrency < 1 || o.duration <= 0 || o.verifyN < 1 {
		return o, errors.New("-concurrency, -duration and -verify-n must be positive")
	}
	for p := range strings.SplitSeq(*phases, ",") {
		if !slices.Contains(knownPhases, p) {
			return o, fmt.Errorf("-phases: unknown phase %q (known: %s)", p, strings.Join(knownPhases, ", "))
		}
		o.phases = append(o.phases, p)
	}
	return o, nil
}

func main() { benchkit.Main("perimeter", parse, run) }

const password = "bench-admin-password-0123"

// target is one server under load and how to make its requests.
type target struct {
	name      string
	url       string // of the agent
	key       string // X-API-Key
	sign      *reqsig.SignerKey
	presigned *signatures // of GET url, made before the phase, one nonce each
	dir       string      // the kernel's data directory
	tenant    string      // of the agent
	metrics   string      // the kernel's /metrics; "" for the static and bare servers
}

type result struct {
	name           string
	n, errors      int
	inlineSigned   int // full phase: requests signed inline because the prepared signatures ran out
	elapsed        time.Duration
	p50, p95, p99  time.Duration
	rps            float64
	firstErrStatus string
	window         window // CPU and stage times of the measured window
}

func run(ctx context.Context, o options, stdout, stderr io.Writer) error {
	logger := slog.New(slog.DiscardHandler)
	// The off kernel always runs: the static and bare phases serve its agent.
	off, closeOff, err := startKernel(ctx, o, "off", logger)
	if err != nil {
		return fmt.Errorf("perimeter off: %w", err)
	}
	defer closeOff()
	targets := map[string]target{"off": off}
	for _, mode := range []string{"full", "full-process"} {
		if !slices.Contains(o.phases, mode) {
			continue
		}
		full, closeFull, err := startKernel(ctx, o, mode, logger)
		if err != nil {
			return fmt.Errorf("%s perimeter: %w", mode, err)
		}
		defer closeFull()
		targets[mode] = full
	}
	if slices.Contains(o.phases, "static") {
		static, closeStatic, err := startStatic(ctx, off)
		if err != nil {
			return err
		}
		defer closeStatic()
		targets["static"] = static
	}
	if slices.Contains(o.phases, "bare") {
		bare, closeBare, err := startBare(ctx, off)
		if err != nil {
			return fmt.Errorf("bare handler: %w", err)
		}
		defer closeBare()
		targets["bare"] = bare
	}

	fmt.Fprintf(stderr, "perimeter bench: %d goroutines, %s per phase after %s warm-up\n", o.concurrency, o.duration, o.warmup)
	var results []result
	for _, p := range o.phases {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		tg := targets[p]
		if tg.sign != nil && o.presign {
			// Enough for the fastest phase so far (or 20,000 req/s) with a margin, at most
			// maxPresigned; made before the clock starts.
			rate := 20000.0
			for _, r := range results {
				rate = max(rate, r.rps)
			}
			n := min(int(rate*1.3*(o.warmup+o.duration).Seconds())+o.concurrency, maxPresigned)
			sigs, err := presign(tg, n)
			if err != nil {
				return fmt.Errorf("%s: sign requests: %w", p, err)
			}
			tg.presigned = sigs
		}
		r := load(ctx, o, tg)
		if tg.presigned != nil {
			if err := tg.presigned.free(); err != nil {
				return fmt.Errorf("%s: free the signatures: %w", p, err)
			}
		}
		fmt.Fprintf(stderr, "  %s: %.0f req/s, p50 %s p99 %s, %d errors\n", r.name, r.rps, benchkit.Ms(r.p50), benchkit.Ms(r.p99), r.errors)
		results = append(results, r)
	}
	verify, err := verifyAlone(o.verifyN)
	if err != nil {
		return err
	}
	report(stdout, o, results, verify)
	return nil
}

// startKernel starts a kernel with the perimeter off, or on ("full"; "full-process": with
// signing.nonce_durability process), creates a tenant, an ADMIN API key, an agent (and, on, a
// request key), and returns the target of GET /v1/agents/{id}.
func startKernel(ctx context.Context, o options, mode string, logger *slog.Logger) (target, func(), error) {
	on := mode != "off"
	dir, err := os.MkdirTemp("", "nops-bench-perimeter-")
	if err != nil {
		return target{}, nil, err
	}
	cfg := config.Default()
	var ns string // the Redis namespace of this target, "" without Redis
	cfg.DataDir, cfg.HTTP.Addr, cfg.Auth.BootstrapAdminPassword = dir, "127.0.0.1:0", password
	cfg.Log.Level = "error"
	cfg.Limits.InFlightPerIP, cfg.Limits.InFlightMax, cfg.Limits.InFlightPerTenant = 100000, 100000, 100000
	cfg.Limits.MaxConnsPerIP = 100000
	name := mode
	cfg.Limits.PerIP = ""
	if mode == "full-process" {
		cfg.Signing.NonceDurability = "process"
	}
	if on {
		// Never refusing, but counted on every request.
		cfg.Limits.PerIP, cfg.Limits.PerTenant, cfg.Limits.PerPrincipal = "1000000/1s", "1000000/1s", "1000000/1s"
		pdir := filepath.Join(dir, "policies")
		if err := os.Mkdir(pdir, 0o700); err != nil {
			return target{}, nil, err
		}
		pol := `policies:
  - name: frozen-agents
    effect: deny
    expression: resource.labels.?lock.orValue("") == "frozen" && request.method != "GET"
  - name: signed-reads
    effect: allow
    expression: request.signed || principal.role in ["ADMIN", "SUPER_ADMIN"]
`
		if err := os.WriteFile(filepath.Join(pdir, "policies.yaml"), []byte(pol), 0o600); err != nil {
			return target{}, nil, err
		}
		cfg.Policy.Dir = pdir
		if o.redisURL != "" && mode == "full-process" {
			// Process durability is of the local nonce stores: the counters alone in Redis.
			cfg.Signing.NonceStore = "file"
		}
		if o.redisURL != "" {
			cfg.Redis.URL = o.redisURL
			ns = benchkit.UniqueName("bench")
			cfg.Bus.Namespace, cfg.Limits.RedisPrefix = ns, ns+":rl:"
		}
	}
	k, err := kernel.New(ctx, cfg, kernel.Options{Logger: logger, Out: io.Discard, Version: "bench", Commit: "bench", BcryptCost: bcrypt.MinCost})
	if err != nil {
		return target{}, nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- k.Run(rctx) }()
	closeFn := func() {
		cancel()
		<-done
		_ = k.Close()
		_ = os.RemoveAll(dir)
		if ns != "" {
			// The nonces and counters the run left in the shared Redis (they would expire, but
			// a benchmark cleans up after itself).
			if opt, err := redis.ParseURL(o.redisURL); err == nil {
				rdb := redis.NewClient(opt)
				_ = benchkit.DeleteRedisKeys(ctx, rdb, ns)
				_ = rdb.Close()
			}
		}
	}
	base := "http://" + k.Addr()
	tg, err := setup(ctx, base, on)
	if err != nil {
		closeFn()
		return target{}, nil, err
	}
	tg.name, tg.dir, tg.metrics = name, dir, base+"/metrics"
	return tg, closeFn, nil
}

// call sends one JSON request and decodes a 2xx answer into out.
func call(ctx context.Context, method, url string, body any, out any, headers ...string) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func setup(ctx context.Context, base string, on bool) (target, error) {
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := call(ctx, "POST", base+"/v1/auth/token", map[string]string{"username": "admin", "password": password}, &tok); err != nil {
		return target{}, err
	}
	admin := []string{"Authorization", "Bearer " + tok.AccessToken}
	var ten struct {
		ID string `json:"id"`
	}
	if err := call(ctx, "POST", base+"/v1/tenants", map[string]string{"name": "bench", "display_name": "Bench"}, &ten, admin...); err != nil {
		return target{}, err
	}
	var key struct {
		Secret string `json:"secret"`
	}
	if err := call(ctx, "POST", base+"/v1/api-keys?tenant="+ten.ID, map[string]string{"name": "bench", "role": "ADMIN"}, &key, admin...); err != nil {
		return target{}, err
	}
	apiKey := []string{"X-API-Key", key.Secret}
	var agent struct {
		ID string `json:"id"`
	}
	spec := map[string]any{"name": "bench", "version": "v1.0.0", "endpoint": "https://agents.example.com/bench", "criticality": "essential",
		"labels": map[string]string{"env": "prod"}, "capabilities": []map[string]any{{"name": "text.summarize", "description": "x", "input_schema": map[string]any{"type": "object"}}}}
	if err := call(ctx, "POST", base+"/v1/agents", spec, &agent, apiKey...); err != nil {
		return target{}, err
	}
	tg := target{url: base + "/v1/agents/" + agent.ID, key: key.Secret, tenant: ten.ID}
	if on {
		var rk struct {
			ID     string `json:"id"`
			Secret string `json:"secret"`
		}
		if err := call(ctx, "POST", base+"/v1/request-keys", map[string]string{"alg": "hmac-sha256", "name": "bench"}, &rk, apiKey...); err != nil {
			return target{}, err
		}
		secret, err := reqsig.DecodeSecret(rk.Secret)
		if err != nil {
			return target{}, err
		}
		tg.sign = &reqsig.SignerKey{ID: rk.ID, Alg: reqsig.AlgHMACSHA256, Secret: secret}
	}
	return tg, nil
}

// startStatic serves, without any middleware, the agent document the kernel of tg returns, as
// bytes kept in memory.
func startStatic(ctx context.Context, tg target) (target, func(), error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", tg.url, nil)
	req.Header.Set("X-API-Key", tg.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return target{}, nil, err
	}
	doc, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	url, closeFn, err := serve(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	}))
	if err != nil {
		return target{}, nil, err
	}
	return target{name: "static", url: url + "/v1/agents/x", key: tg.key}, closeFn, nil
}

// startBare serves GET /v1/agents/{agent_id} the way the kernel's handler does once the request
// is admitted, without any middleware: registry.Service.Get over the kernel's own SQLite
// database (a second handle on its file, as a second process would open it), then the contract's
// Agent document encoded as JSON with its ETag. The tenant is tg's, as the kernel takes it from
// the authenticated principal.
func startBare(ctx context.Context, tg target) (target, func(), error) {
	st, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(tg.dir, kernel.SQLiteFile)}, nil)
	if err != nil {
		return target{}, nil, err
	}
	agents, err := registry.NewService(st, registry.Config{})
	if err != nil {
		_ = st.Close()
		return target{}, nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/agents/{agent_id}", func(w http.ResponseWriter, r *http.Request) {
		a, err := agents.Get(r.Context(), tg.tenant, r.PathValue("agent_id"))
		if err != nil {
			http.Error(w, "agent not found", http.StatusNotFound)
			return
		}
		doc, err := agentDoc(a)
		if err != nil {
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("ETag", a.ETag())
		w.WriteHeader(http.StatusOK)
		_ = json.NewEncoder(w).Encode(doc)
	})
	url, closeFn, err := serve(mux)
	if err != nil {
		_ = st.Close()
		return target{}, nil, err
	}
	agentID := tg.url[strings.LastIndex(tg.url, "/")+1:]
	return target{name: "bare", url: url + "/v1/agents/" + agentID, key: tg.key}, func() { closeFn(); _ = st.Close() }, nil
}

// agentDoc renders an agent as the kernel's handler does (internal/httpapi agentOut): labels,
// metadata and load always objects, capabilities always an array, schemas decoded.
func agentDoc(a registry.Agent) (gen.Agent, error) {
	out := gen.Agent{
		Id: a.ID, Tenant: a.TenantID, Name: a.Name, Version: a.Version,
		Capabilities: make([]gen.Capability, 0, len(a.Capabilities)),
		Endpoint:     a.Endpoint, Labels: map[string]string{}, Metadata: map[string]any{},
		Criticality: gen.AgentCriticality(a.Criticality), Status: gen.AgentStatus(a.Status),
		HeartbeatAt: a.HeartbeatAt.UTC(),
		Load: gen.Load{InFlight: a.Load.InFlight, P50Ms: a.Load.P50Ms, P95Ms: a.Load.P95Ms,
			ErrorRate: a.Load.ErrorRate, FreeCapacity: a.Load.FreeCapacity},
		CreatedAt: a.CreatedAt.UTC(), UpdatedAt: a.UpdatedAt.UTC(), Revision: a.Revision,
	}
	maps.Copy(out.Labels, a.Labels)
	maps.Copy(out.Metadata, a.Metadata)
	for _, c := range a.Capabilities {
		gc := gen.Capability{Name: c.Name}
		if c.Description != "" {
			gc.Description = &c.Description
		}
		for _, s := range []struct {
			raw json.RawMessage
			to  **map[string]any
		}{{c.InputSchema, &gc.InputSchema}, {c.OutputSchema, &gc.OutputSchema}} {
			if len(s.raw) == 0 {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal(s.raw, &m); err != nil {
				return gen.Agent{}, err
			}
			if m != nil {
				*s.to = &m
			}
		}
		out.Capabilities = append(out.Capabilities, gc)
	}
	return out, nil
}

// serve runs h on 127.0.0.1:0 and returns its base URL and how to stop it.
func serve(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: h}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }, nil
}

// load runs o.concurrency closed-loop clients against tg for o.warmup, then o.duration measured.
func load(ctx context.Context, o options, tg target) result {
	tr := &http.Transport{MaxIdleConnsPerHost: o.concurrency * 2, MaxConnsPerHost: o.concurrency * 2}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var next, inline atomic.Int64 // the next prepared signature; requests signed inline
	one := func() (int, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", tg.url, nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("X-API-Key", tg.key)
		if tg.sign != nil {
			if input, sig, ok := tg.presigned.get(next.Add(1) - 1); ok {
				req.Header.Set("Signature-Input", input)
				req.Header.Set("Signature", sig)
			} else {
				inline.Add(1)
				if err := reqsig.Sign(req, nil, *tg.sign, time.Now(), ""); err != nil {
					return 0, err
				}
			}
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	var (
		mu      sync.Mutex
		lats    []time.Duration
		errs    int
		firstSt string
		wg      sync.WaitGroup
	)
	start := time.Now()
	measureFrom, end := start.Add(o.warmup), start.Add(o.warmup+o.duration)
	// At the start of the measured window: the first snapshot (CPU, stage histograms) and the
	// profiles; at its end (after the clients stopped), the second.
	var (
		winMu    sync.Mutex
		first    snapshot
		started  bool
		prof     *phaseProfile
		profErr  error
		winTimer = time.AfterFunc(o.warmup, func() {
			winMu.Lock()
			defer winMu.Unlock()
			first, started = takeSnapshot(ctx, tg.metrics), true
			if o.profile != "" {
				prof, profErr = startPhaseProfile(o.profile + "." + tg.name)
			}
		})
	)
	var win window
	defer func() {
		if err := errors.Join(profErr, prof.stop()); err != nil {
			fmt.Fprintf(os.Stderr, "perimeter bench: profile of %s: %v\n", tg.name, err)
		}
	}()
	closeWindow := func() {
		winTimer.Stop()
		winMu.Lock()
		defer winMu.Unlock()
		if started {
			win = between(first, takeSnapshot(ctx, tg.metrics))
		}
	}
	for range o.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			var bad int
			var st string
			for ctx.Err() == nil {
				t0 := time.Now()
				if t0.After(end) {
					break
				}
				code, err := one()
				d := time.Since(t0)
				if t0.Before(measureFrom) {
					continue
				}
				if err != nil || code != http.StatusOK {
					bad++
					if st == "" {
						st = fmt.Sprintf("%d %v", code, err)
					}
					continue
				}
				mine = append(mine, d)
			}
			mu.Lock()
			lats = append(lats, mine...)
			errs += bad
			if firstSt == "" {
				firstSt = st
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	closeWindow()
	slices.Sort(lats)
	r := result{name: tg.name, n: len(lats), errors: errs, elapsed: o.duration, firstErrStatus: firstSt, inlineSigned: int(inline.Load()), window: win}
	if tg.presigned == nil && tg.sign != nil {
		r.inlineSigned = -1 // every request: -presign=false
	}
	r.rps = float64(r.n) / o.duration.Seconds()
	r.p50, r.p95, r.p99 = pct(lats, 50), pct(lats, 95), pct(lats, 99)
	return r
}

// signatures are the two header fields reqsig.Sign adds to a GET without a body, made before a
// phase, in memory outside the Go heap: a heap of that size (tens of MB) would space the garbage
// collector's cycles further apart than the kernel's own heap does in the other phases, and so
// make the full phase look cheaper than it is. For one key and URL every signature has the same
// length (created has ten digits, the nonce 22 characters, the HMAC 32 bytes), so record i is at
// i × (len(input) + len(signature)).
type signatures struct {
	mem                 []byte // mmap'ed, n records
	n, inputLen, sigLen int
}

// maxPresigned bounds the signatures made before a phase (about 200 bytes each).
const maxPresigned = 400000

// presign makes n signatures of GET tg.url, each with a fresh nonce, created now: well within
// the kernel's allowed skew (300 s) for the length of a phase.
func presign(tg target, n int) (*signatures, error) {
	now := time.Now()
	one := func() (string, string, error) {
		req, err := http.NewRequest("GET", tg.url, nil)
		if err != nil {
			return "", "", err
		}
		req.Header.Set("X-API-Key", tg.key)
		if err := reqsig.Sign(req, nil, *tg.sign, now, ""); err != nil {
			return "", "", err
		}
		return req.Header.Get("Signature-Input"), req.Header.Get("Signature"), nil
	}
	input, sig, err := one()
	if err != nil {
		return nil, err
	}
	s := &signatures{n: n, inputLen: len(input), sigLen: len(sig)}
	if s.mem, err = syscall.Mmap(-1, 0, n*(s.inputLen+s.sigLen), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE); err != nil {
		return nil, fmt.Errorf("map memory for %d signatures: %w", n, err)
	}
	for i := range n {
		if i > 0 {
			if input, sig, err = one(); err != nil {
				return nil, errors.Join(err, s.free())
			}
		}
		if len(input) != s.inputLen || len(sig) != s.sigLen {
			return nil, errors.Join(fmt.Errorf("signature %d is %d+%d bytes, the first %d+%d", i, len(input), len(sig), s.inputLen, s.sigLen), s.free())
		}
		rec := s.mem[i*(s.inputLen+s.sigLen):]
		copy(rec, input)
		copy(rec[s.inputLen:], sig)
	}
	return s, nil
}

// get returns the header fields of signature i (copied into the heap, as a client reading
// prepared requests copies them), or false when there is none.
func (s *signatures) get(i int64) (input, sig string, ok bool) {
	if s == nil || i < 0 || i >= int64(s.n) {
		return "", "", false
	}
	rec := s.mem[int(i)*(s.inputLen+s.sigLen):]
	return string(rec[:s.inputLen]), string(rec[s.inputLen : s.inputLen+s.sigLen]), true
}

// free unmaps the signatures' memory; s is unusable afterwards.
func (s *signatures) free() error {
	if s.mem == nil {
		return nil
	}
	err := syscall.Munmap(s.mem)
	s.mem, s.n = nil, 0
	return err
}

func pct(s []time.Duration, p int) time.Duration {
	if len(s) == 0 {
		return 0
	}
	i := (len(s)*p + 99) / 100 // nearest rank
	return s[max(i-1, 0)]
}

// staticKey is a KeyLookup of one key in memory.
type staticKey struct{ m reqsig.Material }

func (s staticKey) Lookup(context.Context, string) (reqsig.Material, error) { return s.m, nil }

// verifyAlone times Verifier.Verify on n freshly signed GET requests (hmac-sha256, memory
// nonces, key in memory): the cryptographic and parsing cost of a verification.
func verifyAlone(n int) ([]time.Duration, error) {
	secret := bytes.Repeat([]byte{7}, reqsig.SecretLen)
	id, err := reqsig.NewID(time.Now())
	if err != nil {
		return nil, err
	}
	key := reqsig.SignerKey{ID: id, Alg: reqsig.AlgHMACSHA256, Secret: secret}
	v, err := reqsig.NewVerifier(staticKey{reqsig.Material{Key: reqsig.Key{ID: id, TenantID: "ten_bench", Alg: reqsig.AlgHMACSHA256}, Secret: secret}},
		&reqsig.MemoryNonces{}, reqsig.Config{})
	if err != nil {
		return nil, err
	}
	lats := make([]time.Duration, 0, n)
	for range n {
		req, _ := http.NewRequest("GET", "http://127.0.0.1:8080/v1/agents/agt_01jz8y3w6v6r3b5q8x9k2m4n7a", nil)
		req.Header.Set("X-API-Key", "nops_bench")
		if err := reqsig.Sign(req, nil, key, time.Now(), ""); err != nil {
			return nil, err
		}
		req.RemoteAddr = "127.0.0.1:1"
		t0 := time.Now()
		_, err := v.Verify(context.Background(), req, nil)
		lats = append(lats, time.Since(t0))
		if err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
	}
	slices.Sort(lats)
	return lats, nil
}

func report(w io.Writer, o options, rs []result, verify []time.Duration) {
	var bare float64
	var bares int
	for _, r := range rs {
		if r.name == "bare" {
			bare += r.rps
			bares++
		}
	}
	if bares > 0 {
		bare /= float64(bares)
	}
	store := "nonce journal (signing.nonce_store auto: file on SQLite), rate-limit counters in memory"
	if o.redisURL != "" {
		store = "Redis nonce store and rate-limit counters"
	}
	fmt.Fprintf(w, "Machine: %s, %d CPUs, %s/%s, %s. Full chain: %s.\n\n", benchkit.CPUModel(), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), store)
	fmt.Fprintln(w, "| phase | requests | errors | req/s | p50 | p95 | p99 | vs bare | CPU/request |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	seen := map[string]bool{}
	for _, r := range rs {
		name := r.name
		if seen[name] {
			name += " (again)"
		}
		seen[r.name] = true
		fmt.Fprintf(w, "| %s | %d | %d | %.0f | %s | %s | %s | %s | %s |\n", name, r.n, r.errors, r.rps, benchkit.Ms(r.p50), benchkit.Ms(r.p95), benchkit.Ms(r.p99), benchkit.Ratio(r.rps, bare), cpuPer(r))
	}
	fmt.Fprintln(w, "\nCPU/request: CPU time of the whole process (kernel and load generator: one process) over the measured window, per request.")
	fmt.Fprintln(w, "\nStage times of the kernel phases, means over the measured window from the kernel's own histograms:")
	fmt.Fprintln(w, "\n| phase | request in the server | nonce claim | rate limit, IP stage | rate limit, caller stage |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, r := range rs {
		if len(r.window.stages) == 0 {
			continue
		}
		st := func(series string) string {
			v, ok := r.window.stages[series]
			if !ok {
				return "–"
			}
			return fmtUs(v.mean())
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", r.name, st(seriesRequest), st(seriesNonceClaim), st(seriesLimitIP), st(seriesLimitCaller))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "\nreqsig.Verifier.Verify alone (%d hmac-sha256 GETs, key and nonces in memory): p50 %s, p95 %s, p99 %s\n\n",
		len(verify), fmtUs(pct(verify, 50)), fmtUs(pct(verify, 95)), fmtUs(pct(verify, 99)))
	var full, fullProcess, off result
	for _, r := range rs {
		switch r.name {
		case "full":
			full = r
		case "full-process":
			fullProcess = r
		case "off":
			off = r
		}
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**not met**"
	}
	fmt.Fprintln(w, "| goal | measured | verdict |")
	fmt.Fprintln(w, "|---|---|---|")
	fmt.Fprintf(w, "| signature verification p95 < 0.2 ms | %s | %s |\n", fmtUs(pct(verify, 95)), verdict(pct(verify, 95) < 200*time.Microsecond))
	if full.n > 0 && bare > 0 {
		fmt.Fprintf(w, "| full chain ≥ 60 %% of the bare handler's throughput (nonce durability full, the default) | %.0f vs %.0f req/s (%s) | %s |\n", full.rps, bare, benchkit.Ratio(full.rps, bare), verdict(full.rps >= 0.6*bare))
	}
	if fullProcess.n > 0 && bare > 0 {
		fmt.Fprintf(w, "| full chain ≥ 60 %% of the bare handler's throughput (nonce durability process) | %.0f vs %.0f req/s (%s) | %s |\n", fullProcess.rps, bare, benchkit.Ratio(fullProcess.rps, bare), verdict(fullProcess.rps >= 0.6*bare))
	}
	if off.n > 0 && bare > 0 {
		fmt.Fprintf(w, "| (for reading) perimeter off vs the bare handler | %.0f vs %.0f req/s (%s) | |\n", off.rps, bare, benchkit.Ratio(off.rps, bare))
	}
	if full.n > 0 && off.n > 0 {
		fmt.Fprintf(w, "| (for reading) full chain vs perimeter off | %.0f vs %.0f req/s (%s) | |\n", full.rps, off.rps, benchkit.Ratio(full.rps, off.rps))
	}
	for _, r := range rs {
		switch {
		case r.inlineSigned < 0:
			fmt.Fprintf(w, "\n%s: every request signed inline by the client (-presign=false)\n", r.name)
		case r.inlineSigned > 0:
			fmt.Fprintf(w, "\n%s: signatures made before the phase ran out: %d requests signed inline\n", r.name, r.inlineSigned)
		}
	}
	for _, r := range rs {
		if r.errors > 0 {
			fmt.Fprintf(w, "\n%s: %d failed requests, first: %s\n", r.name, r.errors, r.firstErrStatus)
		}
	}
}

// cpuPer is the process's CPU time per request of r's measured window.
func cpuPer(r result) string {
	if r.n == 0 || r.window.cpu == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f µs", float64(r.window.cpu)/float64(r.n)/float64(time.Microsecond))
}

func fmtUs(d time.Duration) string {
	return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond))
}
