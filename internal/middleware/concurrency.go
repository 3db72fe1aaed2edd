package middleware

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/nops-kernel/nops/internal/errs"
)

// Criticality is how much a request matters when the server sheds load: best_effort requests are
// refused first, then essential ones, critical ones only at the hard cap. The values are those of
// an agent's criticality in the registry (registry.Criticality converts with a string
// conversion).
type Criticality string

// The criticalities, least important last.
const (
	Critical   Criticality = "critical"
	Essential  Criticality = "essential"
	BestEffort Criticality = "best_effort"
)

// Valid reports whether c is one of the three criticalities.
func (c Criticality) Valid() bool { return c == Critical || c == Essential || c == BestEffort }

type criticalityKey struct{}

// WithCriticality returns ctx carrying c, for gates applied further in (the tenant gate in the
// dispatcher) to reuse the edge's classification.
func WithCriticality(ctx context.Context, c Criticality) context.Context {
	return context.WithValue(ctx, criticalityKey{}, c)
}

// CriticalityFromContext returns the criticality Concurrency classified the request with, and
// false when none was.
func CriticalityFromContext(ctx context.Context) (Criticality, bool) {
	c, ok := ctx.Value(criticalityKey{}).(Criticality)
	return c, ok
}

// GateConfig sizes a Gate. A zero limit disables what it limits.
type GateConfig struct {
	// Name labels the gate's metrics (gate="ip", gate="tenant").
	Name string
	// PerKey caps the requests in flight for one key (one client IP, one tenant): the next one
	// is refused with rate_limited (429). Zero: no per-key cap.
	PerKey int
	// Max is the hard cap of requests in flight through the gate: at Max even critical requests
	// are refused with unavailable (503). Zero: no global budget and no load shedding.
	Max int
	// EssentialMax: essential and best_effort requests are refused (shed) once this many
	// requests are in flight. Zero: 90% of Max. At most Max.
	EssentialMax int
	// BestEffortMax: best_effort requests are refused (shed) once this many requests are in
	// flight. Zero: 75% of Max. At most EssentialMax.
	BestEffortMax int
	// RetryAfter is the Retry-After of a refusal. Zero: one second.
	RetryAfter time.Duration
}

// Gate admits or refuses requests by key and criticality and counts those in flight. One Gate
// is shared by every request it governs: the edge's, keyed by client IP, through Concurrency;
// the tenant's, keyed by tenant, called by the dispatcher once authentication named the tenant.
//
// Concurrency: safe for concurrent use; one mutex guards the counts (held for a map update, never
// across I/O or a metric call).
type Gate struct {
	cfg    GateConfig
	limits map[Criticality]int
	gateKV attribute.KeyValue
	// gateAttrs is gateKV as a measurement option, built once: building an attribute set sorts,
	// hashes and allocates, twice per admitted request otherwise.
	gateAttrs metric.MeasurementOption
	mu        sync.Mutex
	total     int
	perKey    map[string]int
	active    metric.Int64UpDownCounter
	shedN     atomic.Uint64 // requests shed so far (the degraded-mode monitor reads it)
	shed      metric.Int64Counter
	limited   metric.Int64Counter
}

// NewGate returns a Gate. mp may be nil (no metrics).
func NewGate(cfg GateConfig, mp metric.MeterProvider) (*Gate, error) {
	if cfg.PerKey < 0 || cfg.Max < 0 || cfg.EssentialMax < 0 || cfg.BestEffortMax < 0 || cfg.RetryAfter < 0 {
		return nil, fmt.Errorf("gate %q: limits must not be negative", cfg.Name)
	}
	if cfg.Max == 0 && (cfg.EssentialMax != 0 || cfg.BestEffortMax != 0) {
		return nil, fmt.Errorf("gate %q: shedding thresholds need a hard cap (max)", cfg.Name)
	}
	if cfg.Max > 0 {
		if cfg.EssentialMax == 0 {
			cfg.EssentialMax = max(1, cfg.Max*9/10)
		}
		if cfg.BestEffortMax == 0 {
			cfg.BestEffortMax = max(1, min(cfg.EssentialMax, cfg.Max*3/4))
		}
		if cfg.EssentialMax > cfg.Max || cfg.BestEffortMax > cfg.EssentialMax {
			return nil, fmt.Errorf("gate %q: want best_effort_max (%d) <= essential_max (%d) <= max (%d)",
				cfg.Name, cfg.BestEffortMax, cfg.EssentialMax, cfg.Max)
		}
	}
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = time.Second
	}
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	g := &Gate{
		cfg:    cfg,
		limits: map[Criticality]int{Critical: cfg.Max, Essential: cfg.EssentialMax, BestEffort: cfg.BestEffortMax},
		gateKV: attribute.String("gate", cfg.Name),
		perKey: map[string]int{},
	}
	g.gateAttrs = metric.WithAttributeSet(attribute.NewSet(g.gateKV))
	meter := mp.Meter(meterName)
	var err error
	if g.active, err = meter.Int64UpDownCounter("nops_inflight_requests", metric.WithUnit("{request}"),
		metric.WithDescription("Requests in flight through a concurrency gate.")); err != nil {
		return nil, fmt.Errorf("gate %q: create in-flight gauge: %w", cfg.Name, err)
	}
	if g.shed, err = meter.Int64Counter("nops_load_shed_total",
		metric.WithDescription("Requests refused by load shedding, by gate and criticality class.")); err != nil {
		return nil, fmt.Errorf("gate %q: create shed counter: %w", cfg.Name, err)
	}
	if g.limited, err = meter.Int64Counter("nops_concurrency_limited_total",
		metric.WithDescription("Requests refused because their key (client IP, tenant) had too many in flight.")); err != nil {
		return nil, fmt.Errorf("gate %q: create per-key counter: %w", cfg.Name, err)
	}
	return g, nil
}

// Config returns the gate's configuration with the defaults filled in.
func (g *Gate) Config() GateConfig { return g.cfg }

// InFlight returns the number of requests admitted and not yet released.
func (g *Gate) InFlight() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.total
}

// Shed returns how many requests the gate has shed (refused by class threshold) since it was
// made.
func (g *Gate) Shed() uint64 { return g.shedN.Load() }

// Saturated reports whether best-effort requests would be shed now: the requests in flight
// reached BestEffortMax. Always false without a hard cap (Max 0).
func (g *Gate) Saturated() bool {
	if g.cfg.Max == 0 {
		return false
	}
	return g.InFlight() >= g.cfg.BestEffortMax
}

// Acquire admits one request of class for key, or refuses it. On admission it returns release,
// which the caller must call exactly once when the request is over (in a defer, so a panic
// releases too; further calls do nothing). An unknown or empty class counts as best_effort. An
// empty key escapes the per-key cap (only the global budget applies).
//
// Refusals: a key at PerKey gets an *errs.Error rate_limited (429), whatever its class; when the
// requests in flight reached the class's threshold the request is shed with unavailable (503).
// Both carry RetryAfter.
func (g *Gate) Acquire(ctx context.Context, key string, class Criticality) (release func(), err error) {
	if !class.Valid() {
		class = BestEffort
	}
	perKey := g.cfg.PerKey > 0 && key != ""
	g.mu.Lock()
	switch {
	case perKey && g.perKey[key] >= g.cfg.PerKey:
		g.mu.Unlock()
		g.limited.Add(ctx, 1, g.gateAttrs)
		return nil, &errs.Error{Code: errs.RateLimited, Message: "too many concurrent requests from this client", RetryAfter: g.cfg.RetryAfter}
	case g.cfg.Max > 0 && g.total >= g.limits[class]:
		g.mu.Unlock()
		g.shedN.Add(1)
		g.shed.Add(ctx, 1, metric.WithAttributes(g.gateKV, attribute.String("class", string(class))))
		return nil, &errs.Error{Code: errs.Unavailable, Message: "the server is overloaded; retry later", RetryAfter: g.cfg.RetryAfter}
	}
	g.total++
	if perKey {
		g.perKey[key]++
	}
	g.mu.Unlock()
	g.active.Add(ctx, 1, g.gateAttrs)

	var released atomic.Bool
	return func() {
		if !released.CompareAndSwap(false, true) {
			return
		}
		g.mu.Lock()
		g.total--
		if perKey {
			if n := g.perKey[key] - 1; n > 0 {
				g.perKey[key] = n
			} else {
				delete(g.perKey, key) // the map holds only keys with requests in flight
			}
		}
		g.mu.Unlock()
		g.active.Add(context.WithoutCancel(ctx), -1, g.gateAttrs)
	}, nil
}

// ConcurrencyOptions tell Concurrency how to key and classify a request.
type ConcurrencyOptions struct {
	// Key returns the request's client key. Nil: PeerKey (the direct peer's address); behind
	// trusted proxies pass the resolved client IP instead.
	Key func(*http.Request) string
	// Class returns the request's criticality, decided by the server (never by a client header,
	// or every client would claim critical). Nil: Essential for every request.
	Class func(*http.Request) Criticality
}

// Concurrency admits each request through g (see Gate.Acquire) and releases it when the inner
// handler returns or panics. A refusal is handed to onError (429 or 503 with Retry-After) without
// calling the inner handler. The request's class travels on in its context
// (CriticalityFromContext).
//
// A request holds its slot for as long as its handler runs: long-lived streams (event streams,
// websockets) should be exempted by the caller or given a gate of their own.
func Concurrency(g *Gate, opts ConcurrencyOptions, onError ErrorWriter) func(http.Handler) http.Handler {
	if opts.Key == nil {
		opts.Key = PeerKey
	}
	if opts.Class == nil {
		opts.Class = func(*http.Request) Criticality { return Essential }
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			class := opts.Class(r)
			release, err := g.Acquire(r.Context(), opts.Key(r), class)
			if err != nil {
				onError(w, r, err)
				return
			}
			defer release()
			next.ServeHTTP(w, r.WithContext(WithCriticality(r.Context(), class)))
		})
	}
}

// PeerKey keys a request by its direct peer's IP address (r.RemoteAddr, never a header). IPv6
// addresses are grouped by /64, the block one subscriber usually holds, so one client cannot
// multiply its share by rotating addresses inside it. It returns "" when RemoteAddr is not an IP.
func PeerKey(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return ""
	}
	return AddrKey(addr)
}

// AddrKey is PeerKey's grouping of one address: the IPv4 address itself (IPv4-mapped IPv6
// addresses unmapped), or the IPv6 /64 prefix.
func AddrKey(addr netip.Addr) string {
	addr = addr.Unmap().WithZone("")
	if addr.Is4() {
		return addr.String()
	}
	p, err := addr.Prefix(64)
	if err != nil {
		return ""
	}
	return p.String()
}
