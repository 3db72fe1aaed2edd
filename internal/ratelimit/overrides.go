package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/tenant"
)

// OverrideKind says which rule an override replaces, and for what.
type OverrideKind string

// The kinds of override.
const (
	// KindCIDR replaces the per-IP rule for the client addresses in a prefix ("10.0.0.0/8");
	// the longest matching prefix wins.
	KindCIDR OverrideKind = "cidr"
	// KindTenant replaces the per-tenant rule of one tenant (its ID).
	KindTenant OverrideKind = "tenant"
	// KindRoute replaces the route-class rule on one route ("GET /v1/agents/{id}", the
	// ServeMux pattern), counted per caller like class rules.
	KindRoute OverrideKind = "route"
)

// OverrideIDPrefix starts every override ID.
const OverrideIDPrefix = "rlo_"

// DefaultRefreshInterval is how often Overrides.Run reloads the table when given 0: other
// replicas see an admin's change within it.
const DefaultRefreshInterval = 2 * time.Second

// Override is a rate-limit override managed through the admin API. Limit 0 means unlimited: the
// target is exempt from the rule the override replaces.
type Override struct {
	ID        string
	Kind      OverrideKind
	Target    string
	Limit     int
	Period    time.Duration
	Burst     int
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Rule returns the rule the override stands for, named after the rule it replaces.
func (o Override) Rule() Rule {
	return Rule{Name: o.Kind.ruleName(), Limit: o.Limit, Period: o.Period, Burst: o.Burst}
}

func (k OverrideKind) ruleName() string {
	switch k {
	case KindCIDR:
		return RulePerIP
	case KindTenant:
		return RulePerTenant
	}
	return RuleRoute
}

// OverrideInput is what an admin (or the configuration) says of an override.
type OverrideInput struct {
	Kind   OverrideKind
	Target string
	Limit  int
	Period time.Duration
	Burst  int
}

var routePattern = regexp.MustCompile(`^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) /[!-~]{0,255}$`)

// Validate checks the input and returns it with its target in canonical form (a bare address
// becomes a /32 or /128 prefix). Errors are errs.Field naming prefix + "kind", "target", "limit",
// "period" or "burst".
func (in OverrideInput) Validate(prefix string) (OverrideInput, error) {
	switch in.Kind {
	case KindCIDR:
		p, err := parseCIDRTarget(in.Target)
		if err != nil {
			return in, errs.Field(prefix+"target", err.Error())
		}
		in.Target = p.String()
	case KindTenant:
		if !tenant.ValidID(in.Target) {
			return in, errs.Field(prefix+"target", "must be a tenant ID")
		}
	case KindRoute:
		if !routePattern.MatchString(in.Target) {
			return in, errs.Field(prefix+"target", `must be a route pattern: an upper-case method, one space and a path starting with "/", e.g. "GET /v1/agents"`)
		}
	default:
		return in, errs.Field(prefix+"kind", `must be "cidr", "tenant" or "route"`)
	}
	r := Rule{Limit: in.Limit, Period: in.Period, Burst: in.Burst}
	if r.Period == 0 {
		return in, errs.Field(prefix+"period", fmt.Sprintf("must be between %s and %s", MinPeriod, MaxPeriod))
	}
	if err := r.Validate(prefix); err != nil {
		return in, err
	}
	return in, nil
}

func parseCIDRTarget(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix", s)
	}
	if p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set; the prefix is %s", s, p.Masked())
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped prefix; give the IPv4 prefix", s)
	}
	return p, nil
}

// ValidOverrideID reports whether id is an override ID: OverrideIDPrefix and a lower-case ULID.
func ValidOverrideID(id string) bool {
	rest, ok := strings.CutPrefix(id, OverrideIDPrefix)
	if !ok || len(rest) != ulid.EncodedSize || strings.ToLower(rest) != rest {
		return false
	}
	_, err := ulid.ParseStrict(strings.ToUpper(rest))
	return err == nil
}

func newOverrideID() string { return OverrideIDPrefix + strings.ToLower(ulid.Make().String()) }

// OverrideStore persists overrides. Methods work inside whatever transaction the adapter bound to
// ctx. Times are UTC with microsecond precision and round-trip exactly.
type OverrideStore interface {
	// ListRateLimitOverrides returns every override, ordered by kind then target.
	ListRateLimitOverrides(ctx context.Context) ([]Override, error)
	// PutRateLimitOverride inserts o, or, when an override of the same kind and target exists,
	// replaces its limit, period, burst and UpdatedAt and keeps its ID and CreatedAt. It returns
	// the stored override. An ID taken by another target is an errs.Conflict.
	PutRateLimitOverride(ctx context.Context, o Override) (Override, error)
	// DeleteRateLimitOverride deletes the override and returns it, or an errs.NotFound.
	DeleteRateLimitOverride(ctx context.Context, id string) (Override, error)
}

// OverridesOptions are Overrides' optional settings; the zero value works.
type OverridesOptions struct {
	Now    func() time.Time // nil: time.Now
	Logger *slog.Logger     // nil: discard
}

// Overrides manages the rate-limit overrides set through the admin API and keeps a cache of
// them that the Limiter reads on every request without a lock: an immutable table behind an
// atomic pointer, replaced whole by Refresh. Put and Delete change the store only; the caller
// refreshes once its transaction has committed (internal/control does), and Run refreshes every
// interval, so all replicas converge within it.
//
// Concurrency: safe for concurrent use. Refreshes are serialised, so an older read never
// replaces a newer one.
type Overrides struct {
	store     OverrideStore
	opts      OverridesOptions
	cur       atomic.Pointer[overrideSet]
	refreshMu sync.Mutex
}

// overrideSet is one immutable snapshot: the list and its lookup table.
type overrideSet struct {
	list []Override
	t    *table
}

// NewOverrides returns the service over store, with an empty cache until the first Refresh.
func NewOverrides(store OverrideStore, opts OverridesOptions) *Overrides {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	o := &Overrides{store: store, opts: opts}
	o.cur.Store(&overrideSet{t: newTable(nil, nil)})
	return o
}

// Put validates in and stores it (an upsert by kind and target). It does not refresh the cache.
func (o *Overrides) Put(ctx context.Context, in OverrideInput) (Override, error) {
	in, err := in.Validate("")
	if err != nil {
		return Override{}, err
	}
	now := o.opts.Now().UTC().Truncate(time.Microsecond)
	stored, err := o.store.PutRateLimitOverride(ctx, Override{
		ID: newOverrideID(), Kind: in.Kind, Target: in.Target, Limit: in.Limit, Period: in.Period, Burst: in.Burst,
		CreatedAt: now, UpdatedAt: now,
	})
	if err != nil {
		return Override{}, fmt.Errorf("put rate limit override %s %s: %w", in.Kind, in.Target, err)
	}
	return stored, nil
}

// Delete deletes the override and returns it. An unknown or malformed ID is an errs.NotFound.
// It does not refresh the cache.
func (o *Overrides) Delete(ctx context.Context, id string) (Override, error) {
	if !ValidOverrideID(id) {
		return Override{}, errs.New(errs.NotFound, "rate limit override %s not found", id)
	}
	d, err := o.store.DeleteRateLimitOverride(ctx, id)
	if err != nil {
		return Override{}, fmt.Errorf("delete rate limit override %s: %w", id, err)
	}
	return d, nil
}

// List returns every stored override, ordered by kind then target (from the store, not the
// cache).
func (o *Overrides) List(ctx context.Context) ([]Override, error) {
	list, err := o.store.ListRateLimitOverrides(ctx)
	if err != nil {
		return nil, fmt.Errorf("list rate limit overrides: %w", err)
	}
	return list, nil
}

// Get returns one stored override, or an errs.NotFound.
func (o *Overrides) Get(ctx context.Context, id string) (Override, error) {
	if ValidOverrideID(id) {
		list, err := o.List(ctx)
		if err != nil {
			return Override{}, err
		}
		if i := slices.IndexFunc(list, func(x Override) bool { return x.ID == id }); i >= 0 {
			return list[i], nil
		}
	}
	return Override{}, errs.New(errs.NotFound, "rate limit override %s not found", id)
}

// Cached returns the overrides the limiter currently applies.
func (o *Overrides) Cached() []Override {
	if o == nil {
		return nil
	}
	return slices.Clone(o.cur.Load().list)
}

// Refresh reloads the cache from the store. On failure the previous cache stays.
func (o *Overrides) Refresh(ctx context.Context) error {
	o.refreshMu.Lock()
	defer o.refreshMu.Unlock()
	list, err := o.store.ListRateLimitOverrides(ctx)
	if err != nil {
		return fmt.Errorf("refresh rate limit overrides: %w", err)
	}
	o.cur.Store(&overrideSet{list: list, t: newTable(list, o.opts.Logger)})
	return nil
}

// Run refreshes at once and then every interval (0: DefaultRefreshInterval) until ctx ends, and
// returns nil then. Failed refreshes are logged and retried on the next tick.
func (o *Overrides) Run(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = DefaultRefreshInterval
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if err := o.Refresh(ctx); err != nil && ctx.Err() == nil {
			o.opts.Logger.WarnContext(ctx, "rate limit overrides not refreshed; the previous ones stay in force", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// table returns the current lookup table; an empty one for a nil Overrides.
func (o *Overrides) table() *table {
	if o == nil {
		return emptyTable
	}
	return o.cur.Load().t
}

var emptyTable = newTable(nil, nil)

// table is an immutable lookup structure over overrides.
type table struct {
	v4, v6  prefixSet
	tenants map[string]Rule
	routes  map[string]Rule
}

// prefixSet finds the longest prefix containing an address: one map probe per distinct prefix
// length present, longest first.
type prefixSet struct {
	bits  []int
	rules map[netip.Prefix]Rule
}

// newTable builds a table; entries that do not validate (rows edited behind the API's back) are
// skipped and logged when logger is not nil. For one kind and target, the later entry wins.
func newTable(list []Override, logger *slog.Logger) *table {
	t := &table{
		v4: prefixSet{rules: map[netip.Prefix]Rule{}}, v6: prefixSet{rules: map[netip.Prefix]Rule{}},
		tenants: map[string]Rule{}, routes: map[string]Rule{},
	}
	for _, o := range list {
		in, err := OverrideInput{Kind: o.Kind, Target: o.Target, Limit: o.Limit, Period: o.Period, Burst: o.Burst}.Validate("")
		if err != nil {
			if logger != nil {
				logger.Warn("rate limit override ignored", "id", o.ID, "kind", string(o.Kind), "target", o.Target, "error", err)
			}
			continue
		}
		r := o.Rule()
		switch in.Kind {
		case KindCIDR:
			p := netip.MustParsePrefix(in.Target)
			set := &t.v6
			if p.Addr().Is4() {
				set = &t.v4
			}
			set.rules[p] = r
			if !slices.Contains(set.bits, p.Bits()) {
				set.bits = append(set.bits, p.Bits())
			}
		case KindTenant:
			t.tenants[in.Target] = r
		case KindRoute:
			t.routes[in.Target] = r
		}
	}
	for _, set := range []*prefixSet{&t.v4, &t.v6} {
		slices.SortFunc(set.bits, func(a, b int) int { return b - a })
	}
	return t
}

// cidr returns the rule of the longest prefix containing a, and that prefix's length.
func (t *table) cidr(a netip.Addr) (Rule, int, bool) {
	if !a.IsValid() {
		return Rule{}, 0, false
	}
	a = a.Unmap().WithZone("")
	set := &t.v6
	if a.Is4() {
		set = &t.v4
	}
	for _, b := range set.bits {
		p, err := a.Prefix(b)
		if err != nil {
			continue
		}
		if r, ok := set.rules[p]; ok {
			return r, b, true
		}
	}
	return Rule{}, 0, false
}
