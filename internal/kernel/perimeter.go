package kernel

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/metric"

	"github.com/nops-kernel/nops/internal/billing"
	"github.com/nops-kernel/nops/internal/clientip"
	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/httpapi"
	"github.com/nops-kernel/nops/internal/middleware"
	"github.com/nops-kernel/nops/internal/netguard"
	"github.com/nops-kernel/nops/internal/perimeter"
	"github.com/nops-kernel/nops/internal/policy"
	"github.com/nops-kernel/nops/internal/ratelimit"
	"github.com/nops-kernel/nops/internal/reqsig"
	"github.com/nops-kernel/nops/internal/reqsig/redisnonce"
	"github.com/nops-kernel/nops/internal/sealbox"
	"github.com/nops-kernel/nops/internal/tlsconf"
)

// NonceJournalDir is the nonce journal (signing.nonce_store file) under the data directory.
const NonceJournalDir = "nonces"

// openNonceJournal opens the nonce journal of cfg. One kernel per data directory: the journal
// locks its directory, so a second kernel on it fails here rather than accept nonces the first
// one also accepts.
func openNonceJournal(cfg config.Config, logger *slog.Logger) (*reqsig.FileNonces, error) {
	journal, err := reqsig.OpenFileNonces(filepath.Join(cfg.DataDir, NonceJournalDir), reqsig.FileNoncesOptions{
		Durability: reqsig.Durability(cfg.Signing.NonceDurability), SegmentSpan: cfg.Signing.MaxSkew.D(), Logger: logger,
	})
	if err != nil {
		return nil, fmt.Errorf("signing.nonce_store file: %w", err)
	}
	return journal, nil
}

// edge is what guards the HTTP edge: client address resolution, rate limits, in-flight
// caps and load shedding, ABAC policies, TLS, and the connection caps of the listener.
type edge struct {
	clientIP   *clientip.Resolver
	limiter    *ratelimit.Limiter
	overrides  *ratelimit.Overrides
	policies   *policy.Engine
	ipGate     *middleware.Gate
	tenantGate *middleware.Gate
	tls        *tlsconf.Manager // nil: plain HTTP
	signatures *reqsig.Verifier
	nonces     reqsig.NoncePurger // the journal or the database; nil: nonces expire by themselves (Redis)
	usage      *billing.Recorder  // billing.usage events of the agent gateway's calls
	settings   *perimeter.Service // per-tenant settings: required signatures, gateway origins
}

// requireSigned reports whether tenant requires signatures on all its requests.
func (p *edge) requireSigned(tenant string) bool {
	return p.settings.Lookup(tenant).RequireSignatures
}

// gatewayOrigins are the networks tenant's agents may reach the gateway from.
func (p *edge) gatewayOrigins(tenant string) []netip.Prefix {
	return p.settings.Lookup(tenant).GatewayOrigins
}

// onGatewayUsage hands the usage of one gateway call to the billing recorder (never blocking:
// a full queue drops and counts).
func (p *edge) onGatewayUsage(u httpapi.GatewayUsage) {
	p.usage.Record(billing.Usage{
		Tenant: u.Tenant, AgentID: u.Agent, Source: billing.SourceGateway, Route: u.Route, RequestID: u.RequestID,
		Status: u.Status, RequestBytes: u.RequestBytes, ResponseBytes: u.ResponseBytes,
		StartedAt: u.StartedAt, Duration: u.Duration,
	})
}

// buildPerimeter builds the perimeter's parts and hands the managed ones (overrides, policies)
// to ctl, whose audited use cases change them. rc may be nil (counters in memory).
func buildPerimeter(ctx context.Context, cfg config.Config, st Store, rc *redis.Client, journal *reqsig.FileNonces, ctl *control.Control, kek *sealbox.FileKeyring, enqueued func(), mp metric.MeterProvider, logger *slog.Logger) (*edge, []func() error, error) {
	p := &edge{}
	var closers []func() error
	var err error
	if p.usage, err = billing.NewRecorder(st, billing.Options{Logger: logger, Meter: mp.Meter("nops/billing"), Enqueued: enqueued}); err != nil {
		return nil, nil, fmt.Errorf("billing recorder: %w", err)
	}
	proxies, err := config.ParsePrefixList(cfg.Limits.TrustedProxies)
	if err != nil {
		return nil, nil, fmt.Errorf("limits.trusted_proxies: %w", err)
	}
	p.clientIP = clientip.New(proxies)

	rlCfg, err := rateLimitConfig(cfg.Limits)
	if err != nil {
		return nil, nil, err
	}
	p.overrides = ratelimit.NewOverrides(st, ratelimit.OverridesOptions{Logger: logger})
	if err := p.overrides.Refresh(ctx); err != nil {
		return nil, nil, fmt.Errorf("rate-limit overrides: %w", err)
	}
	ctl.RateLimits = p.overrides
	opts := ratelimit.Options{Logger: logger, MeterProvider: mp, Recorder: ctl, Overrides: p.overrides}
	if rc != nil {
		opts.Redis = rc
	}
	if p.limiter, err = ratelimit.New(rlCfg, opts); err != nil {
		return nil, nil, fmt.Errorf("rate limiter: %w", err)
	}
	closers = append(closers, p.limiter.Close)

	if p.policies, err = policy.NewEngine(st, policy.Options{CostLimit: uint64(cfg.Policy.CostLimit), Logger: logger, Meter: mp.Meter("nops/policy")}); err != nil {
		return nil, closers, fmt.Errorf("policy engine: %w", err)
	}
	if cfg.Policy.Dir != "" {
		if err := p.policies.LoadDir(cfg.Policy.Dir); err != nil {
			return nil, closers, fmt.Errorf("policy.dir: %w", err)
		}
	}
	if err := p.policies.Refresh(ctx); err != nil {
		return nil, closers, fmt.Errorf("policies: %w", err)
	}
	svc, err := policy.NewService(st, p.policies, policy.ServiceOptions{Logger: logger})
	if err != nil {
		return nil, closers, fmt.Errorf("policy service: %w", err)
	}
	ctl.Policies = svc

	// HMAC secrets are sealed with signing.kek_file, reloaded when it changes (secrets.go).
	keys, err := reqsig.NewKeys(st, kek, reqsig.KeysOptions{Logger: logger, CacheTTL: cfg.Signing.CacheTTL.D()})
	if err != nil {
		return nil, closers, fmt.Errorf("request-signing keys: %w", err)
	}
	ctl.RequestKeys = keys
	var nonces reqsig.NonceStore = st
	durability := reqsig.Durability(cfg.Signing.NonceDurability) // of the journal or the database
	switch cfg.NonceStoreKind() {
	case "redis":
		nonces, durability = redisnonce.New(rc, cfg.Bus.Namespace+":nonce:"), ""
	case "file":
		nonces, p.nonces = journal, journal // opened (and locked) first thing by New
	default:
		p.nonces = st
	}
	if p.signatures, err = reqsig.NewVerifier(keys, nonces, reqsig.Config{
		MaxSkew: cfg.Signing.MaxSkew.D(), Scheme: cfg.Signing.Scheme, NonceDurability: durability, Logger: logger, MeterProvider: mp,
	}); err != nil {
		return nil, closers, fmt.Errorf("request signatures: %w", err)
	}

	if p.settings, err = perimeter.NewService(st, perimeter.Options{Logger: logger, MeterProvider: mp}); err != nil {
		return nil, closers, fmt.Errorf("tenant perimeter settings: %w", err)
	}
	if err := p.settings.Refresh(ctx); err != nil {
		return nil, closers, fmt.Errorf("tenant perimeter settings: %w", err)
	}
	ctl.Perimeter = p.settings

	if p.ipGate, err = middleware.NewGate(middleware.GateConfig{Name: "ip", PerKey: cfg.Limits.InFlightPerIP, Max: cfg.Limits.InFlightMax}, mp); err != nil {
		return nil, closers, fmt.Errorf("in-flight gate: %w", err)
	}
	if p.tenantGate, err = middleware.NewGate(middleware.GateConfig{Name: "tenant", PerKey: cfg.Limits.InFlightPerTenant}, mp); err != nil {
		return nil, closers, fmt.Errorf("tenant in-flight gate: %w", err)
	}

	if cfg.HTTP.TLS.Enabled() {
		p.tls, err = tlsconf.New(ctx, tlsconf.Config{
			CertFile: cfg.HTTP.TLS.CertFile, KeyFile: cfg.HTTP.TLS.KeyFile, DevCert: cfg.HTTP.TLS.DevCert,
			DataDir: cfg.DataDir, ReloadInterval: cfg.HTTP.TLS.ReloadInterval.D(),
		}, tlsconf.Options{Logger: logger, MeterProvider: mp})
		if err != nil {
			return nil, closers, fmt.Errorf("tls: %w", err)
		}
		closers = append(closers, p.tls.Close)
	}
	return p, closers, nil
}

// jobs are the perimeter's background work: the block auditor, the refresh of overrides and
// policies written through other replicas, and the reload of changed certificate files.
func (p *edge) jobs(cfg config.Config) map[string]func(context.Context) error {
	every := cfg.Policy.RefreshInterval.D()
	jobs := map[string]func(context.Context) error{
		"billing usage":        p.usage.Run,
		"rate-limit audit":     p.limiter.Run,
		"rate-limit overrides": func(ctx context.Context) error { return p.overrides.Run(ctx, every) },
		"policies":             func(ctx context.Context) error { return p.policies.Run(ctx, every) },
		"perimeter settings":   func(ctx context.Context) error { return p.settings.Run(ctx, every) },
	}
	if p.tls != nil {
		jobs["tls reload"] = p.tls.Run
	}
	if p.nonces != nil {
		jobs["nonce purge"] = func(ctx context.Context) error { return reqsig.RunNoncePurger(ctx, p.nonces, reqsig.PurgeOptions{}) }
	}
	return jobs
}

// listener wraps ln with the connection caps (per client IP and in total) and the write-stall
// timeout that cuts slow readers.
func (p *edge) listener(cfg config.Config, ln net.Listener, mp metric.MeterProvider, logger *slog.Logger) (net.Listener, error) {
	return netguard.NewListener(ln, netguard.Config{
		MaxConnsPerIP:     cfg.Limits.MaxConnsPerIP,
		MaxConns:          cfg.Limits.MaxConns,
		WriteStallTimeout: cfg.HTTP.WriteStallTimeout.D(),
	}, netguard.Options{Logger: logger, MeterProvider: mp})
}

// serve runs srv on ln: HTTPS when TLS is configured.
func (p *edge) serve(srv *http.Server, ln net.Listener) error {
	if p.tls == nil {
		return srv.Serve(ln)
	}
	srv.TLSConfig = p.tls.TLSConfig()
	return srv.ServeTLS(ln, "", "")
}

// rateLimitConfig turns the limits section into the limiter's rules.
func rateLimitConfig(l config.LimitsConfig) (ratelimit.Config, error) {
	rule := func(path, name, s string) (ratelimit.Rule, error) {
		r, err := config.ParseRateRule(s)
		if err != nil {
			return ratelimit.Rule{}, fmt.Errorf("%s: %w", path, err)
		}
		return ratelimit.Rule{Name: name, Limit: r.Limit, Period: r.Period, Burst: r.Burst}, nil
	}
	var c ratelimit.Config
	var err error
	if c.Global, err = rule("limits.global", "global", l.Global); err != nil {
		return c, err
	}
	if c.PerIP, err = rule("limits.per_ip", "per_ip", l.PerIP); err != nil {
		return c, err
	}
	if c.PerTenant, err = rule("limits.per_tenant", "per_tenant", l.PerTenant); err != nil {
		return c, err
	}
	if c.PerPrincipal, err = rule("limits.per_principal", "per_principal", l.PerPrincipal); err != nil {
		return c, err
	}
	classes, err := config.ParseRateRules(l.Classes)
	if err != nil {
		return c, fmt.Errorf("limits.classes: %w", err)
	}
	c.Classes = map[string]ratelimit.Rule{}
	for _, cl := range classes {
		c.Classes[cl.Name] = ratelimit.Rule{Name: "class_" + cl.Name, Limit: cl.Rule.Limit, Period: cl.Rule.Period, Burst: cl.Rule.Burst}
	}
	overrides, err := config.ParseRateRules(l.Overrides)
	if err != nil {
		return c, fmt.Errorf("limits.overrides: %w", err)
	}
	for _, o := range overrides {
		kind, target, _ := strings.Cut(o.Name, ":")
		in, err := ratelimit.OverrideInput{Kind: ratelimit.OverrideKind(kind), Target: target, Limit: o.Rule.Limit, Period: o.Rule.Period, Burst: o.Rule.Burst}.Validate("")
		if err != nil {
			return c, fmt.Errorf("limits.overrides: %s: %w", o.Name, err)
		}
		c.Overrides = append(c.Overrides, in)
	}
	c.RedisPrefix = l.RedisPrefix
	return c, nil
}
