package routing_test

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/routing"
)

// The cache runs its store reads in goroutines (singleflight.DoChan): goleak makes sure each ends.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	tenantA = "ten_01jzaaaa000000000000000000"
	tenantB = "ten_01jzbbbb000000000000000000"
	agent1  = "agt_01jz0000000000000000000001"
	agent2  = "agt_01jz0000000000000000000002"
	agent3  = "agt_01jz0000000000000000000003"
)

// fakeStore is an in-memory routing.Store with the adapters' contract: compare-and-set writes,
// known tenants only. Hooks let tests count, fail or block reads and slip in a write between a
// read and the write that follows it.
type fakeStore struct {
	mu      sync.Mutex
	routes  map[[2]string]routing.Route
	tenants []string
	reads   int
	readErr error
	// beforeRead, when set, runs at the start of every Route call, without the lock held.
	beforeRead func()
	// beforeWrite, when set, runs at the start of every write, without the lock held.
	beforeWrite func()
}

func newFakeStore(tenants ...string) *fakeStore {
	return &fakeStore{routes: map[[2]string]routing.Route{}, tenants: tenants}
}

func (f *fakeStore) Route(_ context.Context, tenantID, capability string) (routing.Route, error) {
	f.mu.Lock()
	hook := f.beforeRead
	f.mu.Unlock()
	if hook != nil {
		hook()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	if f.readErr != nil {
		return routing.Route{}, f.readErr
	}
	r, ok := f.routes[[2]string{tenantID, capability}]
	if !ok {
		return routing.Route{}, errs.New(errs.NotFound, "route not found")
	}
	return clone(r), nil
}

func (f *fakeStore) write() {
	f.mu.Lock()
	hook := f.beforeWrite
	f.mu.Unlock()
	if hook != nil {
		hook()
	}
}

func (f *fakeStore) CreateRoute(_ context.Context, r routing.Route) error {
	f.write()
	f.mu.Lock()
	defer f.mu.Unlock()
	if !slices.Contains(f.tenants, r.TenantID) {
		return errs.New(errs.NotFound, "tenant not found")
	}
	k := [2]string{r.TenantID, r.Capability}
	if _, ok := f.routes[k]; ok {
		return errs.Wrap(errs.Conflict, routing.ErrRevisionConflict, "route exists")
	}
	f.routes[k] = clone(r)
	return nil
}

func (f *fakeStore) ListRoutes(_ context.Context, tenantID, after string, limit int) ([]routing.Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []routing.Route
	for k, r := range f.routes {
		if k[0] == tenantID && k[1] > after {
			out = append(out, clone(r))
		}
	}
	slices.SortFunc(out, func(a, b routing.Route) int { return cmp.Compare(a.Capability, b.Capability) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (f *fakeStore) UpdateRoute(_ context.Context, r routing.Route, prev int64) error {
	f.write()
	f.mu.Lock()
	defer f.mu.Unlock()
	k := [2]string{r.TenantID, r.Capability}
	cur, ok := f.routes[k]
	switch {
	case !ok:
		return errs.New(errs.NotFound, "route not found")
	case cur.Revision != prev:
		return errs.Wrap(errs.Conflict, routing.ErrRevisionConflict, "route changed")
	}
	r.CreatedAt = cur.CreatedAt
	f.routes[k] = clone(r)
	return nil
}

func (f *fakeStore) DeleteRoute(_ context.Context, tenantID, capability string, revision int64) error {
	f.write()
	f.mu.Lock()
	defer f.mu.Unlock()
	k := [2]string{tenantID, capability}
	cur, ok := f.routes[k]
	switch {
	case !ok:
		return errs.New(errs.NotFound, "route not found")
	case cur.Revision != revision:
		return errs.Wrap(errs.Conflict, routing.ErrRevisionConflict, "route changed")
	}
	delete(f.routes, k)
	return nil
}

// set stores r directly, as another replica's write would.
func (f *fakeStore) set(r routing.Route) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes[[2]string{r.TenantID, r.Capability}] = clone(r)
}

func (f *fakeStore) remove(tenantID, capability string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.routes, [2]string{tenantID, capability})
}

func (f *fakeStore) readCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

func clone(r routing.Route) routing.Route {
	r.Targets = slices.Clone(r.Targets)
	if r.Hedge != nil {
		h := *r.Hedge
		r.Hedge = &h
	}
	return r
}

// fieldNames returns the fields an errs.Invalid names.
func fieldNames(err error) []string {
	e := errs.As(err)
	if e == nil {
		return nil
	}
	var out []string
	for _, f := range e.Fields {
		out = append(out, f.Name)
	}
	return out
}

// wantCode fails unless err carries code.
func wantCode(t *testing.T, what string, err error, code errs.Code) {
	t.Helper()
	if got := errs.CodeOf(err); got != code {
		t.Fatalf("%s: error %v (code %q), want code %q", what, err, got, code)
	}
}
