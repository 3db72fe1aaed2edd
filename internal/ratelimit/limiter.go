package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/nops-kernel/nops/internal/errs"
)

const meterName = "github.com/nops-kernel/nops/internal/ratelimit"

// Names of the base rules, as they appear in RateLimit headers, metrics and audit reasons.
// A route-class rule is named ClassRulePrefix + the class unless its config names it.
const (
	RuleGlobal       = "global"
	RulePerIP        = "per_ip"
	RulePerTenant    = "per_tenant"
	RulePerPrincipal = "per_principal"
	RuleRoute        = "route"
	ClassRulePrefix  = "class_"
)

// Defaults of Config.
const (
	DefaultIPLimit      = 100
	DefaultIPPeriod     = time.Minute
	DefaultIPv6Prefix   = 64
	DefaultRedisTimeout = 250 * time.Millisecond
	DefaultRedisRetry   = time.Second
)

// Config is what the kernel's configuration says about rate limits. A rule with Limit 0 is off.
type Config struct {
	Global       Rule // key "global": every request of every client
	PerIP        Rule // key "ip:<address>", or "ip:<prefix>" for IPv6 (see IPv6Prefix)
	PerTenant    Rule // key "tenant:<id>", authenticated requests of a tenant
	PerPrincipal Rule // key "principal:<subject>", authenticated requests of one principal
	// Classes are the route-class rules, by class name ("read", "write", "admin", "auth", ...:
	// the lead maps routes to classes). Each counts per caller: key
	// "class:<class>:principal:<subject>", or "class:<class>:ip:<address>" without a principal.
	Classes map[string]Rule
	// Overrides from the configuration; the admin API's (Options.Overrides) win over them for
	// the same kind and target.
	Overrides []OverrideInput
	// IPv6Prefix is how many leading bits of an IPv6 client address form its per-IP key: a
	// client usually holds a whole /64, and counting each address apart would let it rotate
	// through 2^64 buckets. 0: DefaultIPv6Prefix; 128 counts every address apart.
	IPv6Prefix int
	// RedisPrefix is where counters live in Redis; "": DefaultRedisPrefix.
	RedisPrefix string
	// RedisTimeout bounds one Redis round trip; past it the request is decided locally.
	// 0: DefaultRedisTimeout.
	RedisTimeout time.Duration
	// RedisRetry is how long after a Redis failure requests go straight to the local store
	// before one tries Redis again. 0: DefaultRedisRetry.
	RedisRetry time.Duration
	// MaxKeys bounds the local store (NewMemoryStore); 0: DefaultMaxKeys.
	MaxKeys int
	// AuditQueue and AuditMaxKeys size the block auditor (AuditorOptions); 0: their defaults.
	AuditQueue   int
	AuditMaxKeys int
}

// DefaultConfig returns the defaults the issue asks for: 100 requests a minute per client IP and
// nothing else limited until configured.
func DefaultConfig() Config {
	return Config{PerIP: Rule{Name: RulePerIP, Limit: DefaultIPLimit, Period: DefaultIPPeriod}}
}

var classPattern = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)

// Validate checks every rule, class name and override. Field names are relative to the
// rate-limit section: "per_ip.limit", "classes.auth.period", "overrides[2].target", ...
func (c Config) Validate() error {
	for _, r := range []struct {
		name string
		rule Rule
	}{{"global", c.Global}, {"per_ip", c.PerIP}, {"per_tenant", c.PerTenant}, {"per_principal", c.PerPrincipal}} {
		if err := r.rule.Validate(r.name + "."); err != nil {
			return err
		}
	}
	for _, class := range slices.Sorted(maps.Keys(c.Classes)) {
		if !classPattern.MatchString(class) {
			return errs.Field("classes", fmt.Sprintf("class %q must be 1 to 32 characters from a-z, 0-9, '_' and '-', starting with a letter", class))
		}
		if err := c.Classes[class].Validate("classes." + class + "."); err != nil {
			return err
		}
	}
	for i, o := range c.Overrides {
		if _, err := o.Validate(fmt.Sprintf("overrides[%d].", i)); err != nil {
			return err
		}
	}
	for _, r := range append([]Rule{c.Global, c.PerIP, c.PerTenant, c.PerPrincipal}, slices.Collect(maps.Values(c.Classes))...) {
		if r.Name != "" && !classPattern.MatchString(r.Name) {
			return errs.Field("name", fmt.Sprintf("rule name %q must be 1 to 32 characters from a-z, 0-9, '_' and '-', starting with a letter", r.Name))
		}
	}
	switch {
	case c.IPv6Prefix != 0 && (c.IPv6Prefix < 32 || c.IPv6Prefix > 128):
		return errs.Field("ipv6_prefix", "must be between 32 and 128")
	case c.RedisTimeout < 0:
		return errs.Field("redis_timeout", "must not be negative")
	case c.RedisRetry < 0:
		return errs.Field("redis_retry", "must not be negative")
	case c.MaxKeys < 0:
		return errs.Field("max_keys", "must not be negative")
	case c.AuditQueue < 0:
		return errs.Field("audit_queue", "must not be negative")
	case c.AuditMaxKeys < 0:
		return errs.Field("audit_max_keys", "must not be negative")
	}
	return nil
}

// Options are the Limiter's optional dependencies; the zero value limits in memory.
type Options struct {
	// Redis shares the counters among replicas; nil: this process's memory only. Pass a nil
	// interface, not a typed nil pointer.
	Redis         redis.UniversalClient
	Logger        *slog.Logger
	MeterProvider metric.MeterProvider
	Now           func() time.Time // nil: time.Now
	// Recorder receives aggregated block records; nil: blocks are not audited.
	Recorder Recorder
	// Overrides are the admin API's overrides; nil: only the configuration's.
	Overrides *Overrides
}

// Request is what the limiter needs to know of a request.
type Request struct {
	IP        netip.Addr // the client address (internal/clientip); invalid: all such share "ip:unknown"
	Tenant    string     // the authenticated tenant; "" without one (and for SUPER_ADMIN)
	Principal string     // the authenticated principal's subject; "" before/without authentication
	// Route is the matched ServeMux pattern, "GET /v1/agents/{id}", which route overrides
	// name; RouteClass the class the lead maps it to ("" for none).
	Route, RouteClass string
}

// Limiter decides whether a request may pass. See the package doc for the rules it applies.
//
// Concurrency: safe for concurrent use. Run (the block auditor's writer) runs at most once.
type Limiter struct {
	cfg     Config
	opts    Options
	log     *slog.Logger
	static  *table
	local   *MemoryStore
	shared  *RedisStore // nil without Redis
	auditor *BlockAuditor

	redisUp atomic.Bool
	retryAt atomic.Int64 // Unix ns; while now is before it, requests skip Redis

	requests, blocked, degraded metric.Int64Counter
	checkTime                   metric.Float64Histogram
	checkAttrs                  [2][2]metric.MeasurementOption // [stage IP, principal][local, redis]
	redisGauge                  metric.Registration
	attrCache                   sync.Map // attrKey → metric.MeasurementOption
	closeOnce                   sync.Once
	closeErr                    error
}

// New returns a limiter. It validates cfg.
func New(cfg Config, opts Options) (*Limiter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.IPv6Prefix == 0 {
		cfg.IPv6Prefix = DefaultIPv6Prefix
	}
	if cfg.RedisPrefix == "" {
		cfg.RedisPrefix = DefaultRedisPrefix
	}
	if cfg.RedisTimeout == 0 {
		cfg.RedisTimeout = DefaultRedisTimeout
	}
	if cfg.RedisRetry == 0 {
		cfg.RedisRetry = DefaultRedisRetry
	}
	cfg.Global.Name = nameOr(cfg.Global.Name, RuleGlobal)
	cfg.PerIP.Name = nameOr(cfg.PerIP.Name, RulePerIP)
	cfg.PerTenant.Name = nameOr(cfg.PerTenant.Name, RulePerTenant)
	cfg.PerPrincipal.Name = nameOr(cfg.PerPrincipal.Name, RulePerPrincipal)
	classes := make(map[string]Rule, len(cfg.Classes))
	for class, r := range cfg.Classes {
		r.Name = nameOr(r.Name, ClassRulePrefix+class)
		classes[class] = r
	}
	cfg.Classes = classes
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MeterProvider == nil {
		opts.MeterProvider = noop.NewMeterProvider()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	static := make([]Override, 0, len(cfg.Overrides))
	for _, in := range cfg.Overrides {
		static = append(static, Override{Kind: in.Kind, Target: in.Target, Limit: in.Limit, Period: in.Period, Burst: in.Burst})
	}
	l := &Limiter{
		cfg: cfg, opts: opts, log: opts.Logger.With(slog.String("component", "ratelimit")),
		static: newTable(static, opts.Logger), local: NewMemoryStore(cfg.MaxKeys),
	}
	l.redisUp.Store(true)
	aopts := AuditorOptions{QueueSize: cfg.AuditQueue, MaxKeys: cfg.AuditMaxKeys, Logger: l.log, MeterProvider: opts.MeterProvider}
	if opts.Redis != nil {
		l.shared = NewRedisStore(opts.Redis, cfg.RedisPrefix)
		client, prefix := opts.Redis, cfg.RedisPrefix+"audit:"
		aopts.Claim = func(ctx context.Context, name string, ttl time.Duration) (bool, error) {
			return client.SetNX(ctx, prefix+name, 1, ttl).Result()
		}
	}
	var err error
	if l.auditor, err = NewBlockAuditor(opts.Recorder, aopts); err != nil {
		return nil, err
	}
	if err := l.instruments(); err != nil {
		return nil, fmt.Errorf("rate limit metrics: %w", err)
	}
	return l, nil
}

func nameOr(name, def string) string {
	if name == "" {
		return def
	}
	return name
}

func (l *Limiter) instruments() error {
	m := l.opts.MeterProvider.Meter(meterName)
	var err error
	if l.requests, err = m.Int64Counter("nops_ratelimit_requests_total",
		metric.WithDescription("Requests checked by the rate limiter, by decision (allowed, blocked) and the rule reported.")); err != nil {
		return err
	}
	if l.blocked, err = m.Int64Counter("nops_ratelimit_blocked_total",
		metric.WithDescription("Requests refused by the rate limiter, by tenant (\"\" unauthenticated) and rule.")); err != nil {
		return err
	}
	if l.degraded, err = m.Int64Counter("nops_ratelimit_degraded_total",
		metric.WithDescription("Requests decided by this replica alone because Redis failed or was recently down.")); err != nil {
		return err
	}
	if l.checkTime, err = m.Float64Histogram("nops_ratelimit_check_duration_seconds", metric.WithUnit("s"),
		metric.WithDescription("Time of one rate-limit check (all its rules at once), by stage (ip: before authentication; principal: after) and the store that decided (memory, or redis: one round trip)."),
		metric.WithExplicitBucketBoundaries(0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.25)); err != nil {
		return err
	}
	for i, stage := range []string{"ip", "principal"} {
		for j, store := range []string{"memory", "redis"} {
			l.checkAttrs[i][j] = metric.WithAttributeSet(attribute.NewSet(attribute.String("stage", stage), attribute.String("store", store)))
		}
	}
	if l.shared == nil {
		return nil
	}
	up, err := m.Int64ObservableGauge("nops_ratelimit_redis_up",
		metric.WithDescription("1 while the rate limiter's Redis answers, 0 while it limits locally."))
	if err != nil {
		return err
	}
	l.redisGauge, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		v := int64(0)
		if l.redisUp.Load() {
			v = 1
		}
		o.ObserveInt64(up, v)
		return nil
	}, up)
	return err
}

// Run writes the aggregated block records until ctx ends or Close is called (see
// BlockAuditor.Run). The kernel runs it next to the server.
func (l *Limiter) Run(ctx context.Context) error { return l.auditor.Run(ctx) }

// Close drains the block records and unregisters the Redis gauge's callback. It may be called
// more than once.
func (l *Limiter) Close() error {
	err := l.auditor.Close()
	l.closeOnce.Do(func() {
		if l.redisGauge != nil {
			l.closeErr = l.redisGauge.Unregister()
		}
	})
	if err == nil {
		err = l.closeErr
	}
	return err
}

// Which rules a check applies.
const (
	stageIP = 1 << iota
	stagePrincipal
)

// Check applies every rule that fits the request (see the package doc) in one round trip.
func (l *Limiter) Check(ctx context.Context, req Request) Decision {
	return l.check(ctx, req, stageIP|stagePrincipal)
}

// CheckIP applies the global ceiling and the per-IP rule: the check before authentication, so
// that credential guessing is limited too.
func (l *Limiter) CheckIP(ctx context.Context, req Request) Decision {
	return l.check(ctx, req, stageIP)
}

// CheckPrincipal applies the per-tenant, per-principal and route-class (or route override)
// rules: the check after authentication. Called without a principal it applies only the class
// rule, counted per IP.
func (l *Limiter) CheckPrincipal(ctx context.Context, req Request) Decision {
	return l.check(ctx, req, stagePrincipal)
}

// cellInfo is a cell and the audit tree its blocks go to.
type cellInfo struct {
	Cell
	auditTenant string
}

func (l *Limiter) check(ctx context.Context, req Request, stages int) Decision {
	var buf [5]cellInfo
	infos := l.cells(buf[:0], req, stages)
	if len(infos) == 0 {
		d := Decision{Allowed: true}
		l.count(ctx, req, d)
		return d
	}
	cells := make([]Cell, len(infos))
	for i := range infos {
		cells[i] = infos[i].Cell
	}
	now := l.opts.Now()
	start := time.Now()
	ds, degraded := l.take(ctx, cells, now)
	stage, store := 0, 0
	if stages&stageIP == 0 {
		stage = 1
	}
	if l.shared != nil && !degraded {
		store = 1
	}
	l.checkTime.Record(ctx, time.Since(start).Seconds(), l.checkAttrs[stage][store])
	pick := -1
	for i, d := range ds {
		if !d.Allowed {
			pick = i
			break
		}
		if pick < 0 || d.Remaining < ds[pick].Remaining {
			pick = i
		}
	}
	d := ds[pick]
	d.Degraded = degraded
	l.count(ctx, req, d)
	if !d.Allowed {
		l.auditor.Block(ctx, infos[pick].auditTenant, d.Key, infos[pick].Rule, now)
	}
	return d
}

// cells lists the enabled rules of the stages for req, in the order refusals are reported.
func (l *Limiter) cells(out []cellInfo, req Request, stages int) []cellInfo {
	add := func(key string, r Rule, auditTenant string) {
		if r.Enabled() {
			out = append(out, cellInfo{Cell{Key: key, Rule: r}, auditTenant})
		}
	}
	dyn := l.opts.Overrides.table()
	if stages&stageIP != 0 {
		add("global", l.cfg.Global, "")
		add(l.ipKey(req.IP), l.ipRule(dyn, req.IP), "")
	}
	if stages&stagePrincipal != 0 {
		caller, callerTenant := l.ipKey(req.IP), ""
		if req.Tenant != "" {
			r, ok := dyn.tenants[req.Tenant]
			if !ok {
				r, ok = l.static.tenants[req.Tenant]
			}
			if !ok {
				r = l.cfg.PerTenant
			}
			add("tenant:"+req.Tenant, r, req.Tenant)
		}
		if req.Principal != "" {
			caller, callerTenant = "principal:"+req.Principal, req.Tenant
			add(caller, l.cfg.PerPrincipal, req.Tenant)
		}
		if req.Route != "" {
			r, ok := dyn.routes[req.Route]
			if !ok {
				r, ok = l.static.routes[req.Route]
			}
			if ok {
				add("route:"+req.Route+":"+caller, r, callerTenant)
				return out
			}
		}
		if req.RouteClass != "" {
			add("class:"+req.RouteClass+":"+caller, l.cfg.Classes[req.RouteClass], callerTenant)
		}
	}
	return out
}

// ipRule is the per-IP rule for a: the longest CIDR override containing it (the admin API's on
// a tie), else the configured rule.
func (l *Limiter) ipRule(dyn *table, a netip.Addr) Rule {
	dr, db, dok := dyn.cidr(a)
	sr, sb, sok := l.static.cidr(a)
	switch {
	case dok && (!sok || db >= sb):
		return dr
	case sok:
		return sr
	}
	return l.cfg.PerIP
}

// ipKey is the per-IP counter of a.
func (l *Limiter) ipKey(a netip.Addr) string {
	if !a.IsValid() {
		return "ip:unknown"
	}
	a = a.Unmap().WithZone("")
	if a.Is6() && l.cfg.IPv6Prefix < 128 {
		p, _ := a.Prefix(l.cfg.IPv6Prefix)
		return "ip:" + p.String()
	}
	return "ip:" + a.String()
}

// take asks Redis when it is configured and not known to be down, and the local store
// otherwise; degraded reports that Redis was configured but not used.
func (l *Limiter) take(ctx context.Context, cells []Cell, now time.Time) (ds []Decision, degraded bool) {
	if l.shared != nil && l.useRedis(now) {
		rctx, cancel := context.WithTimeout(ctx, l.cfg.RedisTimeout)
		ds, err := l.shared.TakeAll(rctx, cells, now)
		cancel()
		if err == nil {
			l.redisOK(ctx)
			return ds, false
		}
		if ctx.Err() == nil { // the request's own end is no sign of Redis failing
			l.redisFailed(ctx, err, now)
		}
	}
	ds, err := l.local.TakeAll(ctx, cells, now)
	if err != nil {
		// Only a bug gets here (cells are built distinct and valid): let the request through
		// rather than fail every request, and say so loudly.
		l.log.ErrorContext(ctx, "rate limit check failed; request allowed", "error", err)
		ds = make([]Decision, len(cells))
		for i, c := range cells {
			ds[i] = Decision{Allowed: true, Rule: c.Rule.Name, Key: c.Key}
		}
	}
	if l.shared != nil {
		l.degraded.Add(ctx, 1)
		return ds, true
	}
	return ds, false
}

// useRedis reports whether this request should ask Redis: yes while it is up; while it is down,
// only the one request that claims the next retry time.
func (l *Limiter) useRedis(now time.Time) bool {
	at := l.retryAt.Load()
	if at == 0 {
		return true
	}
	if now.UnixNano() < at {
		return false
	}
	return l.retryAt.CompareAndSwap(at, now.Add(l.cfg.RedisRetry).UnixNano())
}

func (l *Limiter) redisOK(ctx context.Context) {
	l.retryAt.Store(0)
	if !l.redisUp.Swap(true) {
		l.log.InfoContext(ctx, "rate limiter: redis answers again; limits are shared again")
	}
}

func (l *Limiter) redisFailed(ctx context.Context, err error, now time.Time) {
	l.retryAt.Store(now.Add(l.cfg.RedisRetry).UnixNano())
	if l.redisUp.Swap(false) {
		l.log.WarnContext(ctx, "rate limiter: redis failed; limiting locally per replica until it answers", "error", err)
	}
}

func (l *Limiter) count(ctx context.Context, req Request, d Decision) {
	decision := "allowed"
	if !d.Allowed {
		decision = "blocked"
		l.blocked.Add(ctx, 1, l.attrs("tenant", req.Tenant, d.Rule))
	}
	l.requests.Add(ctx, 1, l.attrs("decision", decision, d.Rule))
}

// attrKey names one attribute set of the counters.
type attrKey struct{ name, value, rule string }

// attrs returns the measurement option for {name=value, rule=rule}, built once per combination:
// building an attribute set sorts and allocates, too much to do twice per request. The
// combinations are bounded by the rule names, the two decisions and the tenants.
func (l *Limiter) attrs(name, value, rule string) metric.MeasurementOption {
	k := attrKey{name, value, rule}
	if o, ok := l.attrCache.Load(k); ok {
		return o.(metric.MeasurementOption)
	}
	o := metric.WithAttributeSet(attribute.NewSet(attribute.String(name, value), attribute.String("rule", rule)))
	l.attrCache.Store(k, o)
	return o
}
