// Package kernel is the composition root: it builds every component of a kernel process from a
// config.Config — telemetry, the state store, the event bus, Redis, tokens, logins, the HTTP API —
// and runs the HTTP server until its context ends. cmd/nops and the end-to-end tests use it the
// same way: New, Run, Close. Only cmd/ and tests import kernel.
//
// Concurrency: Run is called once; Close may be called from any goroutine, once Run has returned
// or instead of it.
package kernel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/redis/go-redis/v9"
	"golang.org/x/mod/sumdb/note"

	"github.com/nops-kernel/nops/internal/auth"
	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/chaos"
	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/consumers"
	"github.com/nops-kernel/nops/internal/degrade"
	"github.com/nops-kernel/nops/internal/egress"
	"github.com/nops-kernel/nops/internal/flags"
	"github.com/nops-kernel/nops/internal/health"
	"github.com/nops-kernel/nops/internal/httpapi"
	"github.com/nops-kernel/nops/internal/idempotency"
	"github.com/nops-kernel/nops/internal/idempotency/redisstore"
	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/invoke"
	"github.com/nops-kernel/nops/internal/mcpserver"
	"github.com/nops-kernel/nops/internal/mtls"
	"github.com/nops-kernel/nops/internal/redisconn"
	"github.com/nops-kernel/nops/internal/relay"
	"github.com/nops-kernel/nops/internal/reqsig"
	"github.com/nops-kernel/nops/internal/telemetry"
	"github.com/nops-kernel/nops/internal/token"
)

// Options are New's optional settings; the zero value works.
type Options struct {
	Logger     *slog.Logger // nil: JSON logs on stderr at cfg.Log.Level
	Out        io.Writer    // where a generated admin password is shown once; nil: stderr
	Listener   net.Listener // nil: listen on cfg.HTTP.Addr
	Version    string
	Commit     string
	BcryptCost int // 0: bcrypt's default; tests lower it
}

// Kernel is one running kernel process.
type Kernel struct {
	cfg    config.Config
	logger *slog.Logger
	ln     net.Listener
	srv    *http.Server
	gwLn   net.Listener // the Zero Agent Gateway's; nil when off
	gwSrv  *http.Server
	tel    *telemetry.Telemetry
	st     Store
	dom    *domains
	perim  *edge
	invoke *invoke.Service
	async  *invoke.Async               // async invocations (Prefer: respond-async)
	ca     *identity.CA                // the built-in CA of workload identity
	wid    identity.Source             // this kernel's own SVID and trust bundle
	widRun func(context.Context) error // renews wid; nil when its provider renews by itself
	tokens *token.Service              // access tokens; its keys rotate (the "signing keys" job reloads them)
	flags  *featureFlags               // feature flags: evaluator, OpenFeature client (flags.go)

	// The mTLS listener (mtls.go); all nil when http.mtls_addr is empty.
	mtls    *mtls.Server
	mtlsLn  net.Listener
	mtlsSrv *http.Server

	bus         bus.Bus
	chaos       *chaos.Chaos      // the chaos toggles' rules of this replica (chaos.go)
	gate        *egress.Gate      // every outbound connection's egress gate (egress.go)
	egressAudit *egressAudit      // its audit records and rollback actions
	idem        idempotency.Store // Idempotency-Key records: st, or Redis
	relay       *relay.Relay
	degrade     *degrade.Monitor // the degraded modes (degrade.go)
	consumers   []consumers.Spec

	closeOnce sync.Once
	closers   []func() error // in opening order; Close runs them backwards
	closeErr  error
}

// New builds a kernel from cfg. On error everything opened so far is closed again.
func New(ctx context.Context, cfg config.Config, opts Options) (_ *Kernel, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(cfg.Log.Level)); err != nil {
			return nil, fmt.Errorf("log level: %w", err)
		}
		opts.Logger = telemetry.NewLogger(os.Stderr, lvl)
	}
	if opts.Out == nil {
		opts.Out = os.Stderr
	}
	k := &Kernel{cfg: cfg, logger: opts.Logger}
	defer func() {
		if err != nil {
			_ = k.Close()
		}
	}()
	startedAt := time.Now()

	// The egress gate exists first: every outbound connection goes through it, the OTLP
	// exporter's included (egress.go, docs/egress.md). A tampered signed allow-list stops here.
	if k.gate, err = buildGate(cfg, k.logger); err != nil {
		return nil, fmt.Errorf("egress: %w", err)
	}
	k.tel, err = telemetry.Setup(ctx, telemetry.Options{ServiceName: cfg.Telemetry.ServiceName, Version: opts.Version, Commit: opts.Commit, Logger: k.logger, OTLPClient: otlpClient(k.gate)})
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	if err := k.gate.Instrument(k.tel.MeterProvider().Meter("nops/egress")); err != nil {
		return nil, err
	}
	k.closers = append(k.closers, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return k.tel.Shutdown(ctx)
	})

	// The chaos toggles (docs/chaos.md): with chaos.enabled the database, bus, Redis and agent
	// calls pass through k.chaos, whose rules only a SUPER_ADMIN sets; off, nothing is wrapped.
	if k.chaos, err = chaos.New(cfg.Chaos.Enabled, k.tel.MeterProvider().Meter("nops/chaos")); err != nil {
		return nil, err
	}

	// With the nonce journal (signing.nonce_store file, the default on SQLite) one kernel owns
	// the data directory: the journal locks its directory before anything else is opened, so a
	// second kernel on the directory stops here, before it touches the database or the bus.
	var journal *reqsig.FileNonces
	if cfg.NonceStoreKind() == "file" {
		if journal, err = openNonceJournal(cfg, k.logger); err != nil {
			return nil, err
		}
		k.closers = append(k.closers, journal.Close)
	}

	st, err := OpenStore(ctx, cfg, k.logger)
	if err != nil {
		return nil, err
	}
	k.closers = append(k.closers, st.Close)
	if err := st.MigrateUp(ctx); err != nil {
		return nil, fmt.Errorf("migrate database: %w", err)
	}
	if cfg.Chaos.Enabled {
		st = chaosStore{Store: st, chaos: k.chaos}
	}
	k.st = st

	checks := []health.Check{{Name: "database", Probe: st.Ping}}
	var rc *redis.Client
	if cfg.Redis.URL != "" {
		rc, err = redisconn.Open(ctx, redisconn.Config{URL: cfg.Redis.URL, DialTimeout: cfg.Redis.DialTimeout.D(), PoolSize: cfg.Redis.PoolSize})
		if err != nil {
			return nil, fmt.Errorf("redis: %w", err)
		}
		k.closers = append(k.closers, rc.Close)
		if cfg.Chaos.Enabled {
			rc.AddHook(k.chaos.RedisHook())
		}
	}

	ins, err := bus.NewInstruments(bus.InstrumentOptions{
		Meter:      k.tel.MeterProvider().Meter("nops/bus"),
		Tracer:     k.tel.TracerProvider().Tracer("nops/bus"),
		Propagator: k.tel.Propagator(),
		Warn:       k.logger.Warn,
	})
	if err != nil {
		return nil, fmt.Errorf("event bus metrics: %w", err)
	}
	k.bus, err = openBus(ctx, cfg, rc, ins, k.logger)
	if err != nil {
		return nil, fmt.Errorf("event bus: %w", err)
	}
	k.closers = append(k.closers, k.bus.Close)
	if cfg.Chaos.Enabled {
		k.bus = k.chaos.Bus(k.bus)
	}
	checks = append(checks, health.Check{Name: "bus", Probe: k.bus.Ping})
	if rc != nil {
		checks = append(checks, health.Check{Name: "redis", Probe: func(ctx context.Context) error { return rc.Ping(ctx).Err() }})
	}
	k.relay, err = relay.New(st, st, k.bus, relay.Options{
		Batch:        cfg.Outbox.Batch,
		PollInterval: cfg.Outbox.PollInterval.D(),
		LeaseTTL:     cfg.Outbox.LeaseTTL.D(),
		Retention:    cfg.Outbox.Retention.D(),
		Inbox:        st,
		// An event replayed from the stream after its claim was purged would be applied twice.
		InboxRetention: max(cfg.Outbox.Retention.D(), cfg.Bus.Retention.D()),
		Logger:         k.logger,
		Meter:          k.tel.MeterProvider().Meter("nops/outbox"),
		// bus_down forced on by its flag holds the relay (bus maintenance); k.degrade is set
		// before Run starts the relay.
		Hold: func() bool { return k.degrade != nil && k.degrade.Status().Forced(degrade.BusDown) },
	})
	if err != nil {
		return nil, fmt.Errorf("outbox relay: %w", err)
	}
	// Idempotency-Key records live in Redis when configured (store redis, or auto with a
	// redis.url), else in the database.
	if cfg.Idempotency.Store == "redis" || (cfg.Idempotency.Store == "auto" && rc != nil) {
		k.idem = redisstore.New(rc, cfg.Bus.Namespace+":idem:")
	} else {
		k.idem = st
	}
	checker := health.New(checks, health.Options{TTL: cfg.Health.CacheTTL.D(), Timeout: cfg.Health.CheckTimeout.D(), Logger: k.logger})

	// The key files come first: the key-encryption key seals the token signing keys, as it seals
	// the CA's keys and the request-signing secrets (secrets.go).
	secrets, err := openSecretFiles(cfg, k.tel.MeterProvider().Meter("nops/registry"), k.logger)
	if err != nil {
		return nil, err
	}
	tokens, err := token.New(ctx, st, token.Config{
		Issuer:      cfg.Auth.Issuer,
		Audience:    cfg.Auth.Audience,
		Algorithm:   cfg.Auth.SigningAlg,
		HS256Secret: []byte(cfg.Auth.HS256Secret),
		TTL:         cfg.Auth.TokenTTL.D(),
		Leeway:      cfg.Auth.Leeway.D(),
		// Rotation: a new key is published this long before it signs; replicas reload the keys
		// (the "signing keys" job) at least that often.
		PublishDelay:   cfg.Auth.KeyPublishDelay.D(),
		ReloadInterval: cfg.Auth.KeyReloadInterval.D(),
		// Sealed at rest with signing.kek_file; a key sealed under another file stops the start.
		Sealer: secrets.kek,
	}, k.logger)
	if err != nil {
		return nil, fmt.Errorf("token service: %w", err)
	}
	k.tokens = tokens
	if err := auth.Bootstrap(ctx, st, cfg.Auth.BootstrapAdminPassword, opts.BcryptCost, opts.Out, k.logger, time.Now()); err != nil {
		return nil, err
	}
	k.dom, err = buildDomains(cfg, st, secrets, k.gate, k.relay.Notify, k.tel.MeterProvider().Meter("nops/registry"), k.logger)
	if err != nil {
		return nil, err
	}
	k.dom.control.SigningKeys = tokens // rotated through control, audited (rotation.go there)
	k.dom.control.Chaos = k.chaos      // set through control, audited (chaos.go there)
	if k.flags, err = buildFlags(ctx, cfg, st, k.dom.control, k.tel.MeterProvider().Meter("nops/flags"), k.logger); err != nil {
		return nil, fmt.Errorf("feature flags: %w", err)
	}
	k.closers = append(k.closers, k.flags.close)
	k.consumers = consumers.Kernel(st, consumerOptions(cfg, k.dom.control, k.logger).WithMeter(k.tel.MeterProvider().Meter("nops/consumers")))
	if err := bus.RegisterGauges(k.tel.MeterProvider().Meter("nops/bus"), k.bus, func() []string { return consumerNames(k.consumers) }); err != nil {
		return nil, fmt.Errorf("event bus gauges: %w", err)
	}
	perim, perimClosers, err := buildPerimeter(ctx, cfg, st, rc, journal, k.dom.control, k.dom.secrets.kek, k.relay.Notify, k.tel.MeterProvider(), k.logger)
	k.closers = append(k.closers, perimClosers...)
	if err != nil {
		return nil, err
	}
	k.perim = perim
	// The kernel's own SVID is built before the invoke engine: it presents it to https agents.
	identityAPI, err := k.buildWorkloadIdentity(ctx, cfg, st) // the built-in CA, or SPIRE (identity.go)
	if err != nil {
		return nil, err
	}
	if cfg.HTTP.MTLSAddr != "" {
		if k.mtls, err = buildMTLSServer(ctx, cfg, k.wid, st, k.tel.MeterProvider(), k.logger); err != nil {
			return nil, fmt.Errorf("mtls listener: %w", err)
		}
		k.closers = append(k.closers, k.mtls.Close)
	}
	k.egressAudit = newEgressAudit(k.gate, k.dom.control, k.logger)
	k.closers = append(k.closers, k.egressAudit.Close)
	// Degraded modes shed best-effort agents (built below, before anything is served).
	admitAgent := func(ctx context.Context, class string) error {
		if k.degrade == nil {
			return nil
		}
		return k.degrade.AdmitAgent(ctx, class)
	}
	k.invoke, err = buildInvoke(cfg, k.chaos, k.dom.control, k.gate, k.egressAudit, admitAgent, k.dom.routes, perim.usage, k.wid, k.tel.MeterProvider(), k.tel.Propagator(), k.logger)
	if err != nil {
		return nil, fmt.Errorf("invoke: %w", err)
	}
	if k.async, err = buildAsync(cfg, k.invoke, st, k.relay.Notify, k.logger); err != nil {
		return nil, fmt.Errorf("async invocations: %w", err)
	}
	k.consumers = append(k.consumers, asyncConsumer(consumerOptions(cfg, k.dom.control, k.logger), k.async))
	mcpSrv, err := mcpserver.New(mcpserver.Deps{
		Agents:       k.dom.control.Agents,
		Invoke:       k.invoke,
		Approvals:    st,
		Audit:        k.dom.control,
		DLQ:          k.bus,
		Logger:       k.logger,
		Version:      opts.Version,
		MaxBodyBytes: cfg.HTTP.MaxBodyBytes,
	})
	if err != nil {
		return nil, fmt.Errorf("mcp server: %w", err)
	}
	if k.degrade, err = k.buildDegrade(checker, perim.ipGate); err != nil {
		return nil, fmt.Errorf("degraded modes: %w", err)
	}
	logins, err := auth.New(st, tokens, auth.Options{Logger: k.logger, Meter: k.tel.MeterProvider().Meter("nops/auth"), BcryptCost: opts.BcryptCost, APIKeys: k.dom.keys})
	if err != nil {
		return nil, fmt.Errorf("login service: %w", err)
	}

	handler, err := httpapi.NewHandler(httpapi.Deps{
		Logger:      k.logger,
		Config:      cfg,
		Health:      checker,
		Degrade:     k.degrade,
		Keys:        tokens,
		Login:       logins,
		Verifier:    tokens,
		Control:     k.dom.control,
		APIKeys:     k.dom.keys,
		Usage:       k.dom.usage,
		AuditLog:    st,
		AuditKeys:   note.VerifierList(k.dom.signer.Verifier()),
		AuditKey:    k.dom.verifierKey,
		Idempotency: k.idem,
		Invoke:      invoker{k.invoke, k.async},
		MCP:         mcpSrv,
		Flags:       k.flags.eval,
		Identity:    identityAPI,
		Revocations: st,
		Revoker:     k.revoker(),
		Secrets:     k.dom.secrets.source(st),
		Bus:         k.bus,
		EventStats:  st,
		Consumers:   consumerNames(k.consumers),
		Guards: httpapi.Guards{
			ClientIP:       perim.clientIP,
			Limiter:        perim.limiter,
			Policies:       perim.policies,
			IPGate:         perim.ipGate,
			TenantGate:     perim.tenantGate,
			HSTSMaxAge:     cfg.HTTP.TLS.HSTSMaxAge.D(),
			Signatures:     perim.signatures,
			OnGatewayUsage: perim.onGatewayUsage,
			RequireSigned:  perim.requireSigned,
			GatewayOrigins: perim.gatewayOrigins,
		},
		TracerProvider: k.tel.TracerProvider(),
		MeterProvider:  k.tel.MeterProvider(),
		Propagator:     k.tel.Propagator(),
		Metrics:        k.tel.MetricsHandler(),
		Version:        opts.Version,
		Commit:         opts.Commit,
		StartedAt:      startedAt,
	})
	if err != nil {
		return nil, err
	}

	k.ln = opts.Listener
	if k.ln == nil {
		k.ln, err = net.Listen("tcp", cfg.HTTP.Addr)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", cfg.HTTP.Addr, err)
		}
	}
	raw := k.ln
	k.closers = append(k.closers, func() error {
		if err := raw.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	})
	if k.ln, err = perim.listener(cfg, k.ln, k.tel.MeterProvider(), k.logger); err != nil {
		return nil, fmt.Errorf("listener: %w", err)
	}
	// Named once the address is known; not a replay target, so not in Deps.Consumers.
	k.consumers = append(k.consumers, k.flags.consumer(replicaName(k.ln.Addr().String())))
	k.srv = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout.D(),
		ReadTimeout:       cfg.HTTP.ReadTimeout.D(),
		WriteTimeout:      cfg.HTTP.WriteTimeout.D(),
		IdleTimeout:       cfg.HTTP.IdleTimeout.D(),
		MaxHeaderBytes:    cfg.HTTP.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(k.logger.Handler(), slog.LevelWarn),
	}
	if cfg.HTTP.GatewayAddr != "" {
		gw, err := net.Listen("tcp", cfg.HTTP.GatewayAddr)
		if err != nil {
			return nil, fmt.Errorf("listen on %s (http.gateway_addr): %w", cfg.HTTP.GatewayAddr, err)
		}
		k.closers = append(k.closers, func() error {
			if err := gw.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				return err
			}
			return nil
		})
		if k.gwLn, err = perim.listener(cfg, gw, k.tel.MeterProvider(), k.logger); err != nil {
			return nil, fmt.Errorf("gateway listener: %w", err)
		}
		k.gwSrv = &http.Server{
			Handler:           httpapi.Gateway(handler),
			ReadHeaderTimeout: k.srv.ReadHeaderTimeout,
			ReadTimeout:       k.srv.ReadTimeout,
			WriteTimeout:      k.srv.WriteTimeout,
			IdleTimeout:       k.srv.IdleTimeout,
			MaxHeaderBytes:    k.srv.MaxHeaderBytes,
			ErrorLog:          k.srv.ErrorLog,
		}
	}
	if cfg.HTTP.MTLSAddr != "" {
		if err := k.listenMTLS(cfg, handler); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// Invoker returns the invoke engine (tests look at its balancer).
func (k *Kernel) Invoker() *invoke.Service { return k.invoke }

// GatewayAddr returns the address of the Zero Agent Gateway listener, "" when it is off.
func (k *Kernel) GatewayAddr() string {
	if k.gwLn == nil {
		return ""
	}
	return k.gwLn.Addr().String()
}

// Flags returns the OpenFeature client over the kernel's feature flags: kernel code and add-ons
// evaluate flags through it with the tenant id as the targeting key (docs/flags.md).
func (k *Kernel) Flags() *openfeature.Client { return k.flags.client }

// FlagEvaluator returns the in-memory evaluator of the kernel's feature flags.
func (k *Kernel) FlagEvaluator() *flags.Evaluator { return k.flags.eval }

// Degradation returns the degraded-mode monitor (tests read its status and run rounds).
func (k *Kernel) Degradation() *degrade.Monitor { return k.degrade }

// Bus returns the kernel's event bus (tests read the stream through it).
func (k *Kernel) Bus() bus.Bus { return k.bus }

// Reload re-reads what can change without a restart: the TLS certificate and key files (a
// no-op on plain HTTP), the API-key pepper file, the key-encryption key file and the signed
// egress allow-list (egress.allowlist_file). A broken file
// is refused and what it would replace keeps serving; the error names it.
func (k *Kernel) Reload(ctx context.Context) error {
	var secretsErr error // the pepper and key-encryption key files (secrets.go)
	if k.dom != nil {
		secretsErr = k.dom.secrets.reload()
	}
	if k.gate != nil { // the signed egress allow-list (egress.go)
		if _, err := k.gate.Reload(ctx); err != nil {
			secretsErr = errors.Join(secretsErr, err)
		}
	}
	if k.perim == nil || k.perim.tls == nil {
		return secretsErr
	}
	return errors.Join(secretsErr, k.perim.tls.Reload(ctx))
}

// Addr returns the address the HTTP API listens on.
func (k *Kernel) Addr() string { return k.ln.Addr().String() }

// Run serves HTTP and runs the background work (registry sweeps, audit checkpoints, API key
// usage flushes) until ctx ends; then it stops accepting, waits up to http.shutdown_timeout for
// in-flight requests, stops the background work (flushing what it holds) and returns. It does
// not close the components: call Close after it.
func (k *Kernel) Run(ctx context.Context) error {
	k.logger.InfoContext(ctx, "nops kernel serving", "addr", k.Addr(), "database", databaseKind(k.cfg), "bus", busKind(k.cfg), "redis", k.cfg.Redis.URL != "")
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	var wg sync.WaitGroup
	jobs := map[string]func(context.Context) error{
		"registry sweep":    k.sweepLoop,
		"audit checkpoints": k.checkpointLoop,
		"api key usage":     k.dom.usage.Run,
		"api key re-digest": k.dom.redigest.Run,
		"heartbeats": func(ctx context.Context) error {
			return k.dom.control.RunHeartbeats(ctx, heartbeatWriters(k.cfg))
		},
		"outbox relay":      k.relay.Run,
		"degraded modes":    k.degrade.Run,
		"feature flags":     k.flags.eval.Run,
		"async invocations": k.async.Run,
		"idempotency purge": func(ctx context.Context) error {
			return idempotency.RunPurger(ctx, k.idem, idempotency.PurgeOptions{Logger: k.logger})
		},
		"consumers": func(ctx context.Context) error {
			return runConsumers(ctx, k.bus, k.consumers, k.cfg.HTTP.ShutdownTimeout.D(), k.logger)
		},
	}
	if k.ca != nil { // nil in SPIRE mode
		jobs["identity ca"] = k.ca.Run
	}
	jobs["signing keys"] = k.tokens.Run // keys rotated on other replicas, retirements
	if k.widRun != nil {
		jobs["kernel svid"] = k.widRun
	}
	if k.mtls != nil {
		jobs["mtls revocations"] = k.mtls.Run
	}
	if k.cfg.Egress.AllowlistFile != "" && k.cfg.Egress.AllowlistReloadPeriod > 0 {
		jobs["egress allow-list"] = func(ctx context.Context) error {
			k.gate.Run(ctx, k.cfg.Egress.AllowlistReloadPeriod.D()) // a refused file is logged, audited and counted
			return nil
		}
	}
	maps.Copy(jobs, k.perim.jobs(k.cfg))
	maps.Copy(jobs, k.dom.secrets.jobs(k.cfg)) // reloads of the pepper and key-encryption key files
	for name, job := range jobs {
		wg.Go(func() {
			if err := job(bg); err != nil && bg.Err() == nil {
				k.logger.Error("background job stopped", "job", name, "error", err)
			}
		})
	}
	errc := make(chan error, 1)
	go func() { errc <- k.perim.serve(k.srv, k.ln) }()
	if k.gwSrv != nil {
		k.logger.InfoContext(ctx, "nops agent gateway serving", "addr", k.GatewayAddr())
		go func() {
			if err := k.perim.serve(k.gwSrv, k.gwLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				k.logger.Error("agent gateway listener stopped", "error", err)
			}
		}()
	}
	if k.mtlsSrv != nil {
		go k.serveMTLS(ctx)
	}
	var serveErr error
	select {
	case serveErr = <-errc:
	case <-ctx.Done():
	}
	if serveErr == nil {
		k.logger.Info("shutting down: draining in-flight requests", "timeout", k.cfg.HTTP.ShutdownTimeout.String())
		sctx, cancel := context.WithTimeout(context.Background(), k.cfg.HTTP.ShutdownTimeout.D())
		defer cancel()
		if k.gwSrv != nil {
			if err := k.gwSrv.Shutdown(sctx); err != nil {
				_ = k.gwSrv.Close()
			}
		}
		if k.mtlsSrv != nil {
			if err := k.mtlsSrv.Shutdown(sctx); err != nil {
				_ = k.mtlsSrv.Close()
			}
		}
		if err := k.srv.Shutdown(sctx); err != nil {
			_ = k.srv.Close()
			serveErr = fmt.Errorf("drain in-flight requests: %w", err)
		}
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) && serveErr == nil {
			serveErr = err
		}
	}
	stopBG()
	wg.Wait()
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("http server: %w", serveErr)
	}
	return nil
}

// Close releases every component in reverse order of opening: the listener, the bus, the store,
// then telemetry (flushed last so it records the rest). Safe to call more than once.
func (k *Kernel) Close() error {
	k.closeOnce.Do(func() {
		if k.srv != nil {
			_ = k.srv.Close()
		}
		if k.gwSrv != nil {
			_ = k.gwSrv.Close()
		}
		if k.mtlsSrv != nil {
			_ = k.mtlsSrv.Close()
		}
		var errsList []error
		for i := len(k.closers) - 1; i >= 0; i-- {
			if err := k.closers[i](); err != nil {
				errsList = append(errsList, err)
			}
		}
		k.closeErr = errors.Join(errsList...)
	})
	return k.closeErr
}

func databaseKind(c config.Config) string {
	if c.Database.URL != "" {
		return "postgres"
	}
	return "sqlite"
}

func busKind(c config.Config) string {
	if c.Bus.Kind == "redis" {
		return "redis-streams"
	}
	if c.Bus.NATSURL != "" {
		return "nats"
	}
	return "embedded-jetstream"
}
