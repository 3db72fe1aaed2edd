package tenant_test

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/tenant"
)

// fakeStore is an in-memory tenant.Store that keeps the contract an SQL adapter keeps, including
// the foreign key from agents to tenants, with hooks for the races the service must survive.
type fakeStore struct {
	mu      sync.Mutex
	tenants map[string]tenant.Tenant
	agents  map[string][]string // tenant ID → agent IDs

	// beforeUpdate, when set, runs at the start of UpdateTenant (without the lock held), so a
	// test can change the tenant between the service's read and its write.
	beforeUpdate func()
	// beforeDelete, when set, runs at the start of DeleteTenant (without the lock held).
	beforeDelete func()
	updates      int
}

var _ tenant.Store = (*fakeStore)(nil)

func newFakeStore() *fakeStore {
	return &fakeStore{tenants: map[string]tenant.Tenant{}, agents: map[string][]string{}}
}

func (f *fakeStore) CreateTenant(_ context.Context, t tenant.Tenant) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, o := range f.tenants {
		if o.Name == t.Name || o.ID == t.ID {
			return errs.New(errs.Conflict, "duplicate tenant")
		}
	}
	f.tenants[t.ID] = t
	return nil
}

func (f *fakeStore) TenantByID(_ context.Context, id string) (tenant.Tenant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tenants[id]
	if !ok {
		return tenant.Tenant{}, errs.New(errs.NotFound, "tenant %s not found", id)
	}
	return t, nil
}

func (f *fakeStore) ListTenants(_ context.Context, after *tenant.Cursor, limit int) ([]tenant.Tenant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var all []tenant.Tenant
	for _, t := range f.tenants {
		all = append(all, t)
	}
	slices.SortFunc(all, compareTenants)
	var out []tenant.Tenant
	for _, t := range all {
		if after != nil && compareTenants(t, tenant.Tenant{CreatedAt: after.CreatedAt, ID: after.ID}) <= 0 {
			continue
		}
		if len(out) == limit {
			break
		}
		out = append(out, t)
	}
	return out, nil
}

func compareTenants(a, b tenant.Tenant) int {
	if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
		return c
	}
	return cmp.Compare(a.ID, b.ID)
}

func (f *fakeStore) UpdateTenant(_ context.Context, t tenant.Tenant, prevVersion int64) error {
	if f.beforeUpdate != nil {
		f.beforeUpdate()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, ok := f.tenants[t.ID]
	if !ok {
		return errs.New(errs.NotFound, "tenant %s not found", t.ID)
	}
	if cur.Version != prevVersion {
		return errs.Wrap(errs.Conflict, tenant.ErrVersionConflict, "version changed")
	}
	cur.DisplayName, cur.Status, cur.UpdatedAt, cur.Version = t.DisplayName, t.Status, t.UpdatedAt, t.Version
	f.tenants[t.ID] = cur
	f.updates++
	return nil
}

func (f *fakeStore) CountAgents(_ context.Context, tenantID string) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return int64(len(f.agents[tenantID])), nil
}

func (f *fakeStore) DeleteTenantAgents(_ context.Context, tenantID string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := f.agents[tenantID]
	delete(f.agents, tenantID)
	return ids, nil
}

func (f *fakeStore) DeleteTenant(_ context.Context, id string) error {
	if f.beforeDelete != nil {
		f.beforeDelete()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.tenants[id]; !ok {
		return errs.New(errs.NotFound, "tenant %s not found", id)
	}
	if len(f.agents[id]) > 0 {
		return errs.New(errs.Conflict, "foreign key: agents reference tenant %s", id)
	}
	delete(f.tenants, id)
	return nil
}

// addAgents gives the tenant n agents, as the registry would.
func (f *fakeStore) addAgents(tenantID string, n int) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for i := range n {
		id := fmt.Sprintf("agt_%s_%d", tenantID, len(f.agents[tenantID])+i)
		ids = append(ids, id)
	}
	f.agents[tenantID] = append(f.agents[tenantID], ids...)
	return ids
}
