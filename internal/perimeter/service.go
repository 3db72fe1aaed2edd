package perimeter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/tenant"
)

// DefaultRefreshInterval is how often Run re-reads the settings when given 0: the time within
// which replicas converge on a change made through another replica.
const DefaultRefreshInterval = 2 * time.Second

// putAttempts bounds how often an unconditional Put re-reads settings that changed between its
// read and its compare-and-set write.
const putAttempts = 3

// Store persists perimeter settings. Methods work inside whatever transaction the adapter bound
// to ctx; none opens its own. Times are UTC with microsecond precision and round-trip exactly.
type Store interface {
	// Perimeter returns the stored settings of the tenant, or an errs.NotFound when it has none.
	Perimeter(ctx context.Context, tenantID string) (Settings, error)
	// PutPerimeter writes s where the stored version is prevVersion, prevVersion 0 meaning "no
	// row yet" (an insert). It returns an errs.Conflict wrapping ErrVersionConflict when the
	// stored version differs (a row exists for an insert), and an errs.NotFound when the tenant
	// does not exist (an insert) or has no row any more (an update).
	PutPerimeter(ctx context.Context, s Settings, prevVersion int64) error
	// AllPerimeters returns every stored row, in tenant order.
	AllPerimeters(ctx context.Context) ([]Settings, error)
	// PerimeterGeneration returns a number that changes whenever a row is written or deleted (a
	// tenant's deletion included), in this or any other replica: one cheap read per refresh.
	PerimeterGeneration(ctx context.Context) (int64, error)
}

// Options are a Service's optional settings; the zero value works.
type Options struct {
	Now           func() time.Time     // nil: time.Now
	Logger        *slog.Logger         // nil: discard
	MeterProvider metric.MeterProvider // nil: no metrics
}

// Change is the outcome of Put: the settings before and after. Changed is false when the input
// equalled the stored settings; then nothing was written.
type Change struct {
	Before, After Settings
	Changed       bool
}

// Service reads and writes perimeter settings and keeps the snapshot the request path reads.
// Create it with NewService.
//
// Concurrency: safe for concurrent use. Lookup takes no lock; Refresh is serialised by a mutex.
type Service struct {
	store Store
	now   func() time.Time
	log   *slog.Logger

	cur       atomic.Pointer[snapshot]
	refreshMu sync.Mutex

	refreshFailures metric.Int64Counter
}

// snapshot is one immutable view of every tenant's stored settings.
type snapshot struct {
	loaded     bool
	generation int64
	byTenant   map[string]Settings
}

// NewService returns a Service over store, whose snapshot is empty (every tenant at the
// defaults) until the first Refresh.
func NewService(store Store, opts Options) (*Service, error) {
	if store == nil {
		return nil, errors.New("new perimeter service: nil store")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MeterProvider == nil {
		opts.MeterProvider = noop.NewMeterProvider()
	}
	failures, err := opts.MeterProvider.Meter("github.com/nops-kernel/nops/internal/perimeter").Int64Counter(
		"nops_perimeter_refresh_failures_total",
		metric.WithDescription("Refreshes of the perimeter settings snapshot that failed; the previous snapshot stayed in force."))
	if err != nil {
		return nil, fmt.Errorf("new perimeter service: %w", err)
	}
	s := &Service{store: store, now: opts.Now, log: opts.Logger, refreshFailures: failures}
	s.cur.Store(&snapshot{byTenant: map[string]Settings{}})
	return s, nil
}

// clock returns now in UTC at the microsecond, the precision both SQL stores keep.
func (s *Service) clock() time.Time { return s.now().UTC().Truncate(time.Microsecond) }

func notFound() error { return errs.New(errs.NotFound, "tenant not found") }

// Get returns the tenant's settings from the store: the defaults (version 0) when it never set
// them. It does not check that the tenant exists; a malformed tenant ID is an errs.NotFound.
func (s *Service) Get(ctx context.Context, tenantID string) (Settings, error) {
	if !tenant.ValidID(tenantID) {
		return Settings{}, notFound()
	}
	st, err := s.store.Perimeter(ctx, tenantID)
	switch {
	case errs.Is(err, errs.NotFound):
		return Settings{TenantID: tenantID}, nil
	case err != nil:
		return Settings{}, fmt.Errorf("get perimeter of %s: %w", tenantID, err)
	}
	return st, nil
}

// Put replaces the tenant's settings with in. ifMatch is the request's optional If-Match value
// (see CheckIfMatch). An unknown tenant is an errs.NotFound. Put writes to the store only: the
// caller refreshes the snapshot once its transaction committed (internal/control does).
func (s *Service) Put(ctx context.Context, tenantID string, in Input, ifMatch string) (Change, error) {
	if !tenant.ValidID(tenantID) {
		return Change{}, notFound()
	}
	origins, err := ParseOrigins(in.GatewayOrigins, "body.")
	if err != nil {
		return Change{}, err
	}
	// A lost compare-and-set is retried unless the caller named the version it read.
	tag := strings.Trim(ifMatch, " \t")
	conditional := tag != "" && tag != "*"
	for range putAttempts {
		cur, err := s.Get(ctx, tenantID)
		if err != nil {
			return Change{}, err
		}
		if err := CheckIfMatch(ifMatch, cur); err != nil {
			return Change{}, err
		}
		after := Settings{TenantID: tenantID, RequireSignatures: in.RequireSignatures, GatewayOrigins: origins}
		if after.equal(cur) {
			return Change{Before: cur, After: cur}, nil
		}
		after.Version, after.UpdatedAt = cur.Version+1, s.clock()
		err = s.store.PutPerimeter(ctx, after, cur.Version)
		switch {
		case err == nil:
			s.log.InfoContext(ctx, "tenant perimeter updated", "tenant", tenantID, "version", after.Version,
				"require_signatures", after.RequireSignatures, "gateway_origins", len(after.GatewayOrigins))
			return Change{Before: cur, After: after, Changed: true}, nil
		case errs.Is(err, errs.NotFound):
			return Change{}, errs.Wrap(errs.NotFound, err, "tenant not found")
		case !errors.Is(err, ErrVersionConflict):
			return Change{}, fmt.Errorf("put perimeter of %s: %w", tenantID, err)
		case conditional:
			return Change{}, errs.Wrap(errs.PreconditionFailed, err, "the perimeter settings were changed since they were read; get them again and retry")
		}
	}
	return Change{}, errs.New(errs.Conflict, "the perimeter settings of %s kept changing; retry", tenantID)
}

// Lookup returns the tenant's settings as of the last Refresh, the defaults when it has none:
// the request path's read, with no I/O and no lock. The returned GatewayOrigins is shared with
// the snapshot and must not be modified.
func (s *Service) Lookup(tenantID string) Settings {
	if st, ok := s.cur.Load().byTenant[tenantID]; ok {
		return st
	}
	return Settings{TenantID: tenantID}
}

// Loaded reports whether a Refresh has succeeded, i.e. whether Lookup answers from the store.
func (s *Service) Loaded() bool { return s.cur.Load().loaded }

// Refresh re-reads the stored settings when the store's generation says they changed, and
// publishes them. On failure the snapshot in force stays.
func (s *Service) Refresh(ctx context.Context) error {
	s.refreshMu.Lock()
	defer s.refreshMu.Unlock()
	if err := s.refresh(ctx); err != nil {
		s.refreshFailures.Add(ctx, 1)
		return err
	}
	return nil
}

func (s *Service) refresh(ctx context.Context) error {
	old := s.cur.Load()
	gen, err := s.store.PerimeterGeneration(ctx)
	if err != nil {
		return fmt.Errorf("refresh perimeter settings: %w", err)
	}
	if old.loaded && gen == old.generation {
		return nil
	}
	all, err := s.store.AllPerimeters(ctx)
	if err != nil {
		return fmt.Errorf("refresh perimeter settings: %w", err)
	}
	m := make(map[string]Settings, len(all))
	for _, st := range all {
		m[st.TenantID] = st
	}
	// The generation was read first: a change landing between the two reads is in the map, and
	// the next refresh reads it again (the generation moved), which is harmless.
	s.cur.Store(&snapshot{loaded: true, generation: gen, byTenant: m})
	return nil
}

// Run refreshes at once and then every interval (0: DefaultRefreshInterval) until ctx ends, and
// returns nil then. Failed refreshes are logged and counted, and retried on the next tick.
func (s *Service) Run(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = DefaultRefreshInterval
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if err := s.Refresh(ctx); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "perimeter settings not refreshed; the previous ones stay in force", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
