package registry_test

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/tenant"
)

type agentKey struct{ tenant, id string }

// fakeStore is an in-memory registry.Store keeping the contract an SQL adapter keeps: rows keyed
// by (tenant, id), unique (tenant, name), a foreign key to tenants, compare-and-set writes. Agents
// are stored as deep copies (through JSON for the free-form fields), as a database would.
type fakeStore struct {
	mu      sync.Mutex
	tenants map[string]tenant.Status
	agents  map[agentKey]registry.Agent

	// beforeWrite, when set, runs at the start of UpdateAgent, DeleteAgent and SetAgentStatus
	// without the lock held, so a test can change the agent between the service's read and its
	// write.
	beforeWrite func()
	// leak, when set, makes AgentByID, ListAgents and RoutingCandidates ignore the tenant, as a
	// buggy adapter would; the service must still not return another tenant's agent.
	leak bool
	// sloppy, when set, makes ListAgents ignore the capability and RoutingCandidates ignore
	// capability and heartbeat age, as a buggy adapter would; the service must still apply
	// the rules.
	sloppy bool

	lastListQuery registry.ListQuery
	listCalls     int
	writes        int
}

var _ registry.Store = (*fakeStore)(nil)

func newFakeStore(tenants ...string) *fakeStore {
	f := &fakeStore{tenants: map[string]tenant.Status{}, agents: map[agentKey]registry.Agent{}}
	for _, t := range tenants {
		f.tenants[t] = tenant.StatusActive
	}
	return f
}

func (f *fakeStore) setTenantStatus(id string, s tenant.Status) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tenants[id] = s
}

// put stores a directly, bypassing the service.
func (f *fakeStore) put(a registry.Agent) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.agents[agentKey{a.TenantID, a.ID}] = deepCopy(a)
}

// stored returns the stored agent as is (stored status, not derived).
func (f *fakeStore) stored(tenantID, id string) (registry.Agent, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.agents[agentKey{tenantID, id}]
	return deepCopy(a), ok
}

func deepCopy(a registry.Agent) registry.Agent {
	roundTrip := func(in, out any) {
		b, err := json.Marshal(in)
		if err != nil {
			panic(err)
		}
		if err := json.Unmarshal(b, out); err != nil {
			panic(err)
		}
	}
	var caps []registry.Capability
	roundTrip(a.Capabilities, &caps)
	var labels map[string]string
	roundTrip(a.Labels, &labels)
	var meta map[string]any
	roundTrip(a.Metadata, &meta)
	var load registry.Load
	roundTrip(a.Load, &load)
	a.Capabilities, a.Labels, a.Metadata, a.Load = caps, labels, meta, load
	return a
}

func (f *fakeStore) CreateAgent(_ context.Context, a registry.Agent) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.tenants[a.TenantID]; !ok {
		return errs.New(errs.NotFound, "tenant %s not found", a.TenantID)
	}
	for k, o := range f.agents {
		if k.id == a.ID || k.tenant == a.TenantID && o.Name == a.Name {
			return errs.New(errs.Conflict, "unique violation")
		}
	}
	f.agents[agentKey{a.TenantID, a.ID}] = deepCopy(a)
	f.writes++
	return nil
}

func (f *fakeStore) find(tenantID, id string) (registry.Agent, bool) {
	if f.leak {
		for k, a := range f.agents {
			if k.id == id {
				return a, true
			}
		}
		return registry.Agent{}, false
	}
	a, ok := f.agents[agentKey{tenantID, id}]
	return a, ok
}

func (f *fakeStore) AgentByID(_ context.Context, tenantID, id string) (registry.Agent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.find(tenantID, id)
	if !ok {
		return registry.Agent{}, errs.New(errs.NotFound, "agent %s not found", id)
	}
	return deepCopy(a), nil
}

func compareAgents(a, b registry.Agent) int {
	if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
		return c
	}
	return cmp.Compare(a.ID, b.ID)
}

func (f *fakeStore) ListAgents(_ context.Context, tenantID string, q registry.ListQuery) ([]registry.Agent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastListQuery = q
	f.listCalls++
	var all []registry.Agent
	for k, a := range f.agents {
		if (f.leak || k.tenant == tenantID) && (q.Capability == "" || a.HasCapability(q.Capability) || f.sloppy) {
			all = append(all, a)
		}
	}
	slices.SortFunc(all, compareAgents)
	out := []registry.Agent{}
	for _, a := range all {
		if q.After != nil && compareAgents(a, registry.Agent{CreatedAt: q.After.CreatedAt, ID: q.After.ID}) <= 0 {
			continue
		}
		if len(out) == q.Limit {
			break
		}
		out = append(out, deepCopy(a))
	}
	return out, nil
}

func (f *fakeStore) UpdateAgent(_ context.Context, a registry.Agent, prevRevision int64) error {
	if f.beforeWrite != nil {
		f.beforeWrite()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k := agentKey{a.TenantID, a.ID}
	cur, ok := f.agents[k]
	if !ok {
		return errs.New(errs.NotFound, "agent %s not found", a.ID)
	}
	if cur.Revision != prevRevision {
		return errs.Wrap(errs.Conflict, registry.ErrPreconditionFailed, "revision changed")
	}
	for ok, o := range f.agents {
		if ok.tenant == a.TenantID && ok.id != a.ID && o.Name == a.Name {
			return errs.New(errs.Conflict, "unique violation")
		}
	}
	c := deepCopy(a)
	cur.Name, cur.Version, cur.Capabilities, cur.Endpoint = c.Name, c.Version, c.Capabilities, c.Endpoint
	cur.Labels, cur.Metadata, cur.Criticality = c.Labels, c.Metadata, c.Criticality
	cur.UpdatedAt, cur.Revision = c.UpdatedAt, c.Revision
	f.agents[k] = cur
	f.writes++
	return nil
}

func (f *fakeStore) DeleteAgent(_ context.Context, tenantID, id string, revision int64) error {
	if f.beforeWrite != nil {
		f.beforeWrite()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k := agentKey{tenantID, id}
	cur, ok := f.agents[k]
	if !ok {
		return errs.New(errs.NotFound, "agent %s not found", id)
	}
	if cur.Revision != revision {
		return errs.Wrap(errs.Conflict, registry.ErrPreconditionFailed, "revision changed")
	}
	delete(f.agents, k)
	f.writes++
	return nil
}

func (f *fakeStore) Heartbeat(_ context.Context, tenantID, id string, at time.Time, load registry.Load) (registry.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := agentKey{tenantID, id}
	cur, ok := f.agents[k]
	if !ok {
		return "", errs.New(errs.NotFound, "agent %s not found", id)
	}
	prev := cur.Status
	cur.HeartbeatAt, cur.Load, cur.Status = at, load, registry.StatusHealthy
	f.agents[k] = deepCopy(cur)
	return prev, nil
}

func (f *fakeStore) SetAgentStatus(_ context.Context, c registry.StatusChange) (bool, error) {
	if f.beforeWrite != nil {
		f.beforeWrite()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k := agentKey{c.TenantID, c.AgentID}
	cur, ok := f.agents[k]
	if !ok || cur.Status != c.From || !cur.HeartbeatAt.Equal(c.HeartbeatAt) {
		return false, nil
	}
	cur.Status = c.To
	f.agents[k] = cur
	f.writes++
	return true, nil
}

func (f *fakeStore) SweepCandidates(_ context.Context, staleAt, zombieAt time.Time, limit int) ([]registry.Agent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []registry.Agent
	for _, a := range f.agents {
		hb := a.HeartbeatAt
		due := hb.After(staleAt) && a.Status != registry.StatusHealthy ||
			!hb.After(staleAt) && hb.After(zombieAt) && a.Status != registry.StatusStale ||
			!hb.After(zombieAt) && a.Status != registry.StatusZombie
		if due {
			out = append(out, deepCopy(a))
		}
	}
	slices.SortFunc(out, compareAgents)
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (f *fakeStore) RoutingCandidates(_ context.Context, tenantID, capability string, heartbeatAfter time.Time, limit int) ([]registry.Candidate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []registry.Candidate
	for k, a := range f.agents {
		match := a.HasCapability(capability) && a.HeartbeatAt.After(heartbeatAfter)
		if (f.leak || k.tenant == tenantID) && (match || f.sloppy) {
			out = append(out, registry.Candidate{Agent: deepCopy(a), TenantStatus: f.tenants[k.tenant]})
		}
	}
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}
