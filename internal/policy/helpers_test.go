package policy_test

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/policy"
)

// Engine.Run starts no goroutine of its own, but the tests run it in one: goleak makes sure each
// returns.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	tenantA = "ten_01jzaaaa000000000000000000"
	tenantB = "ten_01jzbbbb000000000000000000"
)

var noCostEstimate = policy.Options{EstimatedCostLimit: math.MaxUint64}

// newEngine returns a file-only engine holding ps (given as file policies).
func newEngine(t testing.TB, opts policy.Options, ps ...policy.Policy) *policy.Engine {
	t.Helper()
	e, err := policy.NewEngine(nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	var fps []policy.FilePolicy
	for _, p := range ps {
		fps = append(fps, policy.FilePolicy{File: "test.yaml", Policy: p})
	}
	if err := e.SetFilePolicies(fps); err != nil {
		t.Fatalf("SetFilePolicies: %v", err)
	}
	return e
}

func denyP(id, tenantID, expr string) policy.Policy {
	return policy.Policy{ID: id, TenantID: tenantID, Name: "name of " + id, Effect: policy.EffectDeny, Expression: expr, Enabled: true, Version: 1}
}

func allowP(id, tenantID, expr string) policy.Policy {
	p := denyP(id, tenantID, expr)
	p.Effect = policy.EffectAllow
	return p
}

// in returns an input of a principal of tenantID.
func in(tenantID string) policy.Input {
	return policy.Input{
		Principal: policy.Principal{Subject: "usr_1", Role: "OPERATOR", Tenant: tenantID, Scopes: []string{"agents:read"}, Kind: policy.KindUser},
		Resource:  policy.Resource{Tenant: tenantID, Type: "agent", ID: "agt_1", Criticality: "essential"},
		Action:    "agents.update",
		Request:   policy.Request{Time: time.Date(2026, 1, 6, 10, 0, 0, 0, time.UTC), IP: "192.0.2.1", Method: "PUT", Path: "/v1/agents/agt_1"},
	}
}

// wantDecision fails unless d has the expected outcome and deciding policy, and its reason holds
// reason.
func wantDecision(t *testing.T, d policy.Decision, allowed bool, policyID, reason string) {
	t.Helper()
	if d.Allowed != allowed || d.PolicyID != policyID || !strings.Contains(d.Reason, reason) {
		t.Fatalf("decision %+v, want allowed=%v by %q with a reason holding %q", d, allowed, policyID, reason)
	}
}

// fakeStore is an in-memory policy.Store with a generation, compare-and-set writes, unique names
// per tenant, and switches to fail reads.
type fakeStore struct {
	mu       sync.Mutex
	policies map[string]policy.Policy
	gen      int64
	failRead error // returned by PolicyGeneration and AllPolicies when set
	allReads int   // calls of AllPolicies
	tenants  []string
}

func newFakeStore(tenants ...string) *fakeStore {
	return &fakeStore{policies: map[string]policy.Policy{}, tenants: tenants}
}

func (f *fakeStore) PolicyGeneration(context.Context) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failRead != nil {
		return 0, f.failRead
	}
	return f.gen, nil
}

func (f *fakeStore) AllPolicies(context.Context) ([]policy.Policy, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.allReads++
	if f.failRead != nil {
		return nil, f.failRead
	}
	var out []policy.Policy
	for _, p := range f.policies {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b policy.Policy) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

func (f *fakeStore) CreatePolicy(_ context.Context, p policy.Policy) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.policies[p.ID]; ok {
		return errConflict
	}
	if p.TenantID != "" && !slices.Contains(f.tenants, p.TenantID) {
		return errNotFound
	}
	for _, q := range f.policies {
		if q.TenantID == p.TenantID && q.Name == p.Name {
			return errConflict
		}
	}
	f.policies[p.ID] = p
	f.gen++
	return nil
}

func (f *fakeStore) Policy(_ context.Context, id string) (policy.Policy, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.policies[id]
	if !ok {
		return policy.Policy{}, errNotFound
	}
	return p, nil
}

func (f *fakeStore) ListPolicies(_ context.Context, tenantID, after string, limit int) ([]policy.Policy, error) {
	all, _ := f.AllPolicies(context.Background())
	var out []policy.Policy
	for _, p := range all {
		if p.TenantID == tenantID && p.ID > after && len(out) < limit {
			out = append(out, p)
		}
	}
	return out, nil
}

func (f *fakeStore) UpdatePolicy(_ context.Context, p policy.Policy, prev int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, ok := f.policies[p.ID]
	switch {
	case !ok:
		return errNotFound
	case cur.Version != prev:
		return errVersion
	}
	for _, q := range f.policies {
		if q.ID != p.ID && q.TenantID == p.TenantID && q.Name == p.Name {
			return errConflict
		}
	}
	f.policies[p.ID] = p
	f.gen++
	return nil
}

func (f *fakeStore) DeletePolicy(_ context.Context, id string, version int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, ok := f.policies[id]
	switch {
	case !ok:
		return errNotFound
	case cur.Version != version:
		return errVersion
	}
	delete(f.policies, id)
	f.gen++
	return nil
}

// put writes p directly, as another replica would, bumping the generation.
func (f *fakeStore) put(p policy.Policy) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.policies[p.ID] = p
	f.gen++
}

func (f *fakeStore) setFailRead(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failRead = err
}

func (f *fakeStore) reads() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.allReads
}

var (
	errConflict = errs.New(errs.Conflict, "duplicate")
	errNotFound = errs.New(errs.NotFound, "not found")
	errVersion  = errs.Wrap(errs.Conflict, policy.ErrVersionConflict, "version changed")
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// counter returns the sum of the int64 counter name's points whose attributes include attr (any
// when attr is empty).
func counter(t *testing.T, r *sdkmetric.ManualReader, name string, attr attribute.KeyValue) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			sum, ok := m.Data.(metricdata.Sum[int64])
			if !ok {
				t.Fatalf("%s is %T, not an int64 sum", name, m.Data)
			}
			for _, dp := range sum.DataPoints {
				if v, ok := dp.Attributes.Value(attr.Key); attr.Key == "" || ok && v == attr.Value {
					n += dp.Value
				}
			}
		}
	}
	return n
}

var errInjected = errors.New("injected read failure")
